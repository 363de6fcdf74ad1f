"""VL-RewardBench schema: column sets, the official id → category rule, and row checks.

Shared by the loader and the writer in :mod:`explore.data.vlrewardbench`. Column sets come
from the hub dataset card's ``dataset_info`` (current revision, and old revision 60630ac...).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Annotated, Any

from pydantic import AfterValidator, ConfigDict, TypeAdapter, ValidationError, with_config
from typing_extensions import NotRequired, TypedDict  # pydantic validates these on Python < 3.12

from explore.errors import SchemaError

CURRENT_COLUMNS = (
    "id", "query", "response", "image", "human_ranking", "models", "judge", "rationale",
    "query_source", "ground_truth",
)
OLD_COLUMNS = CURRENT_COLUMNS[:-1] + ("meta", "human_error_analysis", "ground_truth")

# Official category mapping: github.com/vl-rewardbench/VL_RewardBench, cal.py,
# get_dataset_from_id() (id → subset) and group_mapping in distribution_dataset()
# (subset → category). The id prefix is everything before the first "_" or "-" (whichever
# comes first; the whole id if neither occurs), compared case-sensitively for exact equality;
# anything unmatched is "vlfeedback" → general. At commit 7918386178b59895c9c40522c9878554f91be60e
# the POVID branch reads `id_predix.lower() == 'povid'` (a NameError typo); the fixed line,
# copied verbatim by downstream evaluators, is `id_prefix == 'hallucination'` (POVID ids look
# like "hallucination_pair-3921"). An earlier cal.py grouped by the image folder instead
# (images/povid/..., images/rlaif-v/...) with the same group_mapping.
_SUBSET_BY_PREFIX = {
    "RLAIF": "rlaif-v",
    "RLHF": "rlhf-v",
    "mathverse": "reasoning_tasks",
    "mmmu": "reasoning_tasks",
    "wildvision": "wildvision-battle",
    "hallucination": "povid",
}
_DEFAULT_SUBSET = "vlfeedback"
_CATEGORY_BY_SUBSET = {
    "vlfeedback": "general",
    "povid": "hallucination",
    "reasoning_tasks": "reasoning",
    "rlhf-v": "hallucination",
    "rlaif-v": "hallucination",
    "wildvision-battle": "general",
}
CATEGORIES = ("general", "hallucination", "reasoning")


def subset_from_id(example_id: str) -> str:
    """Source subset of an example, from its id prefix, exactly as the official cal.py does.

    One of "rlaif-v", "rlhf-v", "reasoning_tasks", "wildvision-battle", "povid" or
    "vlfeedback" (everything else, e.g. "LRVInstruction-000000007746").
    """
    cuts = [index for index in (example_id.find("_"), example_id.find("-")) if index != -1]
    prefix = example_id[: min(cuts)] if cuts else example_id
    if prefix in _SUBSET_BY_PREFIX:
        return _SUBSET_BY_PREFIX[prefix]
    return _DEFAULT_SUBSET  # cal.py's final `else` branch


def category_from_id(example_id: str) -> str:
    """Category "general", "hallucination" or "reasoning" of a VL-RewardBench id (official rule)."""
    return _CATEGORY_BY_SUBSET[subset_from_id(example_id)]


def check_columns(names: list[str], label: str) -> str:
    """Return "current" or "old"; otherwise raise listing missing and unexpected columns."""
    found = set(names)
    if found == set(CURRENT_COLUMNS):
        return "current"
    if found == set(OLD_COLUMNS):
        return "old"
    expected = OLD_COLUMNS if found & {"meta", "human_error_analysis"} else CURRENT_COLUMNS
    missing = [name for name in expected if name not in found]
    unexpected = sorted(found - set(expected))
    problems = []
    if missing:
        problems.append(f"missing columns {missing}")
    if unexpected:
        problems.append(f"unexpected columns {unexpected}")
    raise SchemaError(
        f"{label}: {' and '.join(problems)}; expected the VL-RewardBench columns "
        f"{list(CURRENT_COLUMNS)} (older revisions add 'meta' and 'human_error_analysis')"
    )


def check_keys(row: Mapping[str, Any], where: str) -> None:
    if not isinstance(row, Mapping):
        raise SchemaError(f"{where}: is {type(row).__name__}, expected a dict of columns")
    missing = [name for name in CURRENT_COLUMNS if name not in row]
    unexpected = sorted(set(row) - set(CURRENT_COLUMNS))
    if missing or unexpected:
        raise SchemaError(
            f"{where}: missing keys {missing}, unexpected keys {unexpected}; "
            f"each row needs exactly {list(CURRENT_COLUMNS)}"
        )


def _non_empty(value: str) -> str:
    if not value:
        raise ValueError("empty")
    return value


def _two(value: Sequence[str]) -> Sequence[str]:
    if len(value) != 2:
        raise ValueError("not two")
    return value


def _ranking(value: Sequence[int]) -> Sequence[int]:
    if sorted(value) != [0, 1]:
        raise ValueError("not a ranking of two")
    return value


Strings = list[str] | tuple[str, ...]  # pyarrow gives lists; a writer's caller may pass tuples
Ints = list[int] | tuple[int, ...]


@with_config(ConfigDict(strict=True, extra="ignore"))  # strict: "0" is not an int, True is not an int
class Row(TypedDict):
    """The values of one VL-RewardBench row (the image is checked when it is decoded). ``models`` and the
    text columns may be null; ``meta`` and ``human_error_analysis`` exist only in the old schema."""

    id: Annotated[str, AfterValidator(_non_empty)]
    query: str
    response: Annotated[Strings, AfterValidator(_two)]
    human_ranking: Annotated[Ints, AfterValidator(_ranking)]
    models: NotRequired[Strings | None]
    human_error_analysis: NotRequired[Strings | None]
    judge: NotRequired[str | None]
    rationale: NotRequired[str | None]
    query_source: NotRequired[str | None]
    ground_truth: NotRequired[str | None]
    meta: NotRequired[str | None]


# What each column must hold, for the one-line error (named by pydantic's first problem).
_RULES = {
    "id": "must be a non-empty string",
    "query": "must be a string",
    "response": "must be a list of 2 strings (the two candidate answers)",
    "human_ranking": "must be the ints [0, 1] (first answer preferred) or [1, 0]",
    "models": "must be a list of strings",
    "human_error_analysis": "must be a list of strings",
    **{name: "must be a string or null" for name in ("judge", "rationale", "query_source", "ground_truth", "meta")},
}
_ROW = TypeAdapter(Row)


def check_row(row: Mapping[str, Any], where: str) -> None:
    """Check the values of one row (not the image) against :class:`Row`, naming the row and column on failure."""
    try:
        _ROW.validate_python(row)
    except ValidationError as err:
        loc = err.errors()[0]["loc"]
        if not loc:
            raise SchemaError(f"{where}: is {type(row).__name__}, expected a dict of columns") from None
        column = loc[0]
        raise SchemaError(f"{where}: column {column!r} {_RULES[column]}, got {_short(row[column])}") from None


def row_label(label: str, index: int, row: Any) -> str:
    has_id = isinstance(row, Mapping) and "id" in row and isinstance(row["id"], str)
    return f"{label} row {index} (id {row['id']!r})" if has_id else f"{label} row {index}"


def _short(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."

"""Checks shared by the data loaders; each failure is a one-line user-facing error.

A JSON file's structure is a pydantic schema: ``TypedDict`` classes marked :func:`record` (strict types,
other keys ignored), validated by pydantic as the configs are (:class:`~explore.config.StrictModel`).
:func:`parse_file` validates a file and turns pydantic's first problem into one line that names the file,
the entry and the key, e.g.
``COCO captions file x.json, images[1]: missing keys ['file_name']; each entry needs ['id', 'file_name']``.
TypedDicts, not BaseModels: the entries stay dicts, and validating VQAv2's 214 K annotations (2.1 M answers)
took 3 s against 28 s with a model instance per entry (measured side by side).
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any, TypeVar, get_args, get_type_hints

from pydantic import ConfigDict, TypeAdapter, ValidationError, with_config

from explore.errors import ConfigError, ExploreError, SchemaError

T = TypeVar("T")

# A JSON object in a data file: strict types ("420" is not an int, true is not an int), other keys ignored.
record = with_config(ConfigDict(strict=True, extra="ignore"))


def read_json(path: str | Path, what: str) -> Any:
    """Parse a JSON file; ``what`` names it in errors (e.g. "VQAv2 questions file")."""
    path = Path(path)
    if not path.is_file():
        state = "is a folder, not a file" if path.is_dir() else "not found"
        raise ExploreError(f"{what} {path}: {state}; pass the path of the JSON file")
    try:
        with path.open(encoding="utf-8") as handle:
            return json.load(handle)
    except json.JSONDecodeError as exc:
        raise SchemaError(
            f"{what} {path}: invalid JSON at line {exc.lineno} column {exc.colno} ({exc.msg}); "
            "is the download complete?"
        ) from None
    except UnicodeDecodeError:
        raise SchemaError(f"{what} {path}: not UTF-8 text; is this really a JSON file?") from None


def parse_file(schema: type[T], data: Any, where: str) -> T:
    """Validate ``data`` (a parsed JSON file) as ``schema`` (a :func:`record` TypedDict); SchemaError with one
    line naming ``where`` otherwise. Returns ``data`` as validated (the same dicts and lists)."""
    try:
        return _adapter(schema).validate_python(data)
    except ValidationError as err:
        raise SchemaError(describe(err, schema, where)) from None


@cache
def _adapter(schema: type) -> TypeAdapter:
    return TypeAdapter(schema)


def describe(err: ValidationError, schema: type, where: str) -> str:
    """One line for the first problem of ``err``: the entry (``images[1]``, ``annotations[1].answers[3]``),
    what is missing or mistyped, and what was expected."""
    errors = err.errors()
    first = errors[0]
    loc, value = tuple(first["loc"]), first.get("input")
    parent, key = loc[:-1], loc[-1] if loc else None
    at = f"{where}, {_path(parent)}" if parent else where
    if first["type"] in ("model_type", "dict_type"):  # not a JSON object
        return f"{where}: top level is {type(value).__name__}, expected a JSON object" if not loc else \
            f"{where}, {_path(loc)}: is {type(value).__name__}, expected a JSON object"  # fmt: skip
    if first["type"] == "missing":
        if not parent:
            return f"{where}: missing top-level key {key!r}; found keys {sorted(value)}"
        missing = [e["loc"][-1] for e in errors if e["type"] == "missing" and tuple(e["loc"][:-1]) == parent]
        owner = _schema_at(schema, parent)
        required = [key for key in get_type_hints(owner) if key in owner.__required_keys__] if owner else []
        return f"{at}: missing keys {missing}; each entry needs {required}"
    if first["type"] == "list_type":
        return f"{at}: {key!r} is {type(value).__name__}, expected a list"
    expected = _expected(schema, loc) or first["msg"]
    return f"{at}: {key!r} is {type(value).__name__} {value!r:.40}, expected {expected}"


def check_limit(limit: int | None) -> None:
    """``limit`` must be None (everything) or a positive int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive int or None, got {limit!r}")


def _path(loc: tuple) -> str:
    """("annotations", 1, "answers", 3) → "annotations[1].answers[3]"."""
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _is_schema(value: Any) -> bool:
    return isinstance(value, type) and hasattr(value, "__required_keys__")  # a TypedDict


def _schema_at(schema: type, loc: tuple) -> type | None:
    """The TypedDict of the entry at ``loc`` (list indices step into the list's item type)."""
    current: Any = schema
    for part in loc:
        if isinstance(part, int):
            current = next(iter(get_args(current)), None)
        elif _is_schema(current) and part in get_type_hints(current):
            current = get_type_hints(current)[part]
        else:
            return None
    return current if _is_schema(current) else None


def _expected(schema: type, loc: tuple) -> str | None:
    owner = _schema_at(schema, loc[:-1])
    annotation = get_type_hints(owner).get(loc[-1]) if owner else None
    return annotation.__name__ if isinstance(annotation, type) else None

"""Small checks shared by the data loaders; each failure is a one-line user-facing error."""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from explore.errors import ConfigError, ExploreError, SchemaError


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


def require_list_field(data: Any, key: str, where: str) -> list:
    """Return ``data[key]`` where ``data`` must be an object and ``data[key]`` a list."""
    if not isinstance(data, Mapping):
        raise SchemaError(f"{where}: top level is {type(data).__name__}, expected a JSON object")
    if key not in data:
        raise SchemaError(f"{where}: missing top-level key {key!r}; found keys {sorted(data)}")
    value = data[key]
    if not isinstance(value, list):
        raise SchemaError(f"{where}: {key!r} is {type(value).__name__}, expected a list")
    return value


def require_keys(record: Any, required: Iterable[str], where: str) -> None:
    """Check ``record`` is an object with every key in ``required``; list the missing ones."""
    if not isinstance(record, Mapping):
        raise SchemaError(f"{where}: is {type(record).__name__}, expected a JSON object")
    required = list(required)
    missing = [key for key in required if key not in record]
    if missing:
        raise SchemaError(f"{where}: missing keys {missing}; each entry needs {required}")


def require_type(record: Mapping, key: str, types: type | tuple[type, ...], where: str) -> Any:
    """Return ``record[key]``, checking its type (bool is not accepted as int)."""
    value = record[key]
    allowed = types if isinstance(types, tuple) else (types,)
    if isinstance(value, bool) and bool not in allowed:
        ok = False
    else:
        ok = isinstance(value, allowed)
    if not ok:
        names = " or ".join(t.__name__ for t in allowed)
        raise SchemaError(f"{where}: {key!r} is {type(value).__name__} {value!r:.40}, expected {names}")
    return value


def check_limit(limit: int | None) -> None:
    """``limit`` must be None (everything) or a positive int."""
    if limit is not None and (isinstance(limit, bool) or not isinstance(limit, int) or limit < 1):
        raise ConfigError(f"limit must be a positive int or None, got {limit!r}")

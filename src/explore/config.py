"""Validated YAML configs.

Configs are pydantic models that forbid unknown keys; :func:`load_yaml_config` turns every
validation problem into one line that names the file, the key and the fix (for an unknown key,
the list of allowed keys), so a typo can never silently become a default.
"""

from __future__ import annotations

from pathlib import Path
from typing import TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, ValidationError

from explore.errors import ConfigError

ConfigT = TypeVar("ConfigT", bound=BaseModel)


class StrictModel(BaseModel):
    """Base for config sections: unknown keys are errors, values are immutable after loading."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _model_at(model: type[BaseModel], loc: tuple) -> type[BaseModel] | None:
    """The config class that owns the key at ``loc`` (to list its allowed keys)."""
    current: type[BaseModel] | None = model
    for part in loc[:-1]:
        if current is None or isinstance(part, int):
            continue
        field = current.model_fields.get(str(part))
        if field is None:
            return None
        annotation = field.annotation
        candidates = [annotation, *getattr(annotation, "__args__", ())]
        current = next((c for c in candidates if isinstance(c, type) and issubclass(c, BaseModel)), None)
    return current


def format_validation_error(err: ValidationError, model: type[BaseModel], source: str) -> str:
    """One line describing the first validation problem of ``err``."""
    first = err.errors()[0]
    loc = tuple(first["loc"])
    key = ".".join(str(p) for p in loc) or "(top level)"
    if first["type"] == "extra_forbidden":
        owner = _model_at(model, loc)
        allowed = ", ".join(sorted(owner.model_fields)) if owner else "see the documentation"
        return f"{source}: unknown key {key!r}; allowed keys here: {allowed}"
    if first["type"] == "missing":
        return f"{source}: missing required key {key!r}"
    return f"{source}: invalid value for {key!r}: {first['msg']} (got {first.get('input')!r})"


def parse_config(model: type[ConfigT], data: object, source: str = "config") -> ConfigT:
    """Validate ``data`` (a dict) as ``model``; raise :class:`ConfigError` with one line."""
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: expected a mapping of keys to values, got {type(data).__name__}")
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(format_validation_error(err, model, source)) from None


def load_yaml_config(model: type[ConfigT], path: str | Path) -> ConfigT:
    """Read and validate a YAML config file."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config file not found: {path} (check the path given to --config)")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"{path}: not valid YAML{where}; fix the syntax and retry") from None
    except UnicodeDecodeError as err:
        raise ConfigError(f"{path}: not UTF-8 text (byte {err.start}); is it a config file?") from None
    return parse_config(model, data, source=str(path))

"""Reading a config: YAML -> ``EdgeConfig``, every problem listed with its YAML path."""

from __future__ import annotations

import difflib
import types
import typing
from pathlib import Path
from typing import Any, Final

import yaml
from pydantic import BaseModel, ValidationError

from edge.config.root import EdgeConfig
from edge.errors import ConfigError


def _yaml_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif part in ("file", "rtsp", "usb") and out.endswith("source"):
            continue  # discriminated-union tag pydantic adds to the location
        else:
            out += f".{part}" if out else str(part)
    return out or "(top level)"


#: A config is a few levels deep; YAML nested deeper than this is refused before it can exhaust the stack.
MAX_YAML_DEPTH: Final = 32
#: A config is a few kilobytes; a file above this is not one (a video or a model given by mistake).
MAX_CONFIG_BYTES: Final = 1 << 20


def _members(tp: Any) -> list[Any]:
    """The types a field annotation stands for: Optional, unions and Annotated unwrapped."""
    origin = typing.get_origin(tp)
    if origin is typing.Annotated:
        return _members(typing.get_args(tp)[0])
    if origin in (typing.Union, types.UnionType):
        return [m for a in typing.get_args(tp) for m in _members(a)]
    return [tp]


def _step(tp: Any, part: int | str) -> Any:
    """The type found at ``part`` (a key or an index) inside a value of type ``tp``, or None."""
    for member in _members(tp):
        if isinstance(part, int) and typing.get_origin(member) in (tuple, list):
            return typing.get_args(member)[0]
        if isinstance(member, type) and issubclass(member, BaseModel) and part in member.model_fields:
            return member.model_fields[part].annotation
    tagged = [m for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel)
              and any(typing.get_args(f.annotation) == (part,) for f in m.model_fields.values())]
    return tagged[0] if tagged else None  # a discriminated union's tag (source: file/rtsp/usb)


def _did_you_mean(loc: tuple[int | str, ...]) -> str:
    """For an unknown key at ``loc``: the valid key it is closest to, as a hint ("", when none is close)."""
    tp: Any = EdgeConfig
    for part in loc[:-1]:
        tp = _step(tp, part)
        if tp is None:
            return ""
    fields = [f for m in _members(tp) if isinstance(m, type) and issubclass(m, BaseModel) for f in m.model_fields]
    close = difflib.get_close_matches(str(loc[-1]), fields, n=1, cutoff=0.6)
    return f"; did you mean {close[0]}?" if close else f"; valid keys here: {', '.join(sorted(fields))}"


def _message(error: Any) -> str:
    if error["type"] == "extra_forbidden":
        return f"unknown key{_did_you_mean(tuple(error['loc']))}"
    return str(error["msg"])


def _depth(node: Any) -> int:
    if isinstance(node, dict):
        return 1 + max((_depth(v) for v in node.values()), default=0)
    if isinstance(node, list):
        return 1 + max((_depth(v) for v in node), default=0)
    return 0


def parse_config(data: Any, origin: str = "config") -> EdgeConfig:
    """Validate a parsed YAML document; raise ``ConfigError`` listing every problem with its YAML path."""
    if not isinstance(data, dict):
        raise ConfigError(f"{origin}: the top level must be a mapping of keys, got {type(data).__name__}")
    try:
        return EdgeConfig.model_validate(data)
    except ValidationError as exc:
        found = exc.errors()
        # pydantic also reports a too-short tuple when its only items failed; the item errors say it all
        errors = [
            f"{_yaml_path(e['loc'])}: {_message(e)}"
            for e in found
            if not (e["type"] == "too_short" and any(o["loc"][: len(e["loc"])] == e["loc"] != o["loc"] for o in found))
        ]
        raise ConfigError(f"{origin}: {len(errors)} error(s)", errors) from None


def read_yaml(path: Path) -> Any:
    """The parsed YAML of a config file; ``ConfigError`` naming the file (and line) when it is not one."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise ConfigError(f"{path}: {path.stat().st_size} bytes is no config file (at most {MAX_CONFIG_BYTES}); "
                              "check the path")
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read config {path}: {exc.strerror}; check the path") from None
    except UnicodeDecodeError:
        raise ConfigError(f"{path}: not a text file (it is not UTF-8); check the path: a config is YAML text") from None
    try:
        data = yaml.safe_load(text)
    except RecursionError:
        raise ConfigError(f"{path}: YAML nested too deeply to be a config (at most {MAX_YAML_DEPTH} levels)") from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{path}, line {mark.line + 1}, column {mark.column + 1}" if mark is not None else str(path)
        problem = getattr(exc, "problem", None) or str(exc)
        context = getattr(exc, "context", None)
        raise ConfigError(f"{where}: not valid YAML: {problem}" + (f" ({context})" if context else "")) from None
    if _depth(data) > MAX_YAML_DEPTH:
        raise ConfigError(f"{path}: YAML nested too deeply to be a config (at most {MAX_YAML_DEPTH} levels)")
    return data


def load_config(path: Path) -> EdgeConfig:
    """Read and validate a YAML config file."""
    return parse_config(read_yaml(path), str(path))

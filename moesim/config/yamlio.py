"""Safe YAML loading that remembers where each field stands, for error messages."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from moesim.config.errors import ConfigError


class LocatedYaml:
    """Parsed YAML data plus the line of every mapping key and sequence item (1-based)."""

    def __init__(self, data: Any, lines: dict[tuple, int], file: str):
        self.data = data
        self.lines = lines
        self.file = file

    def line_of(self, path: tuple) -> int | None:
        """Line of the deepest known prefix of ``path`` (a tuple of keys/indices)."""
        path = tuple(path)
        while path:
            if path in self.lines:
                return self.lines[path]
            path = path[:-1]
        return None

    def error(self, message: str, path: tuple = ()) -> ConfigError:
        field = ".".join(str(p) for p in path) or None
        return ConfigError(message, file=self.file, line=self.line_of(path), field=field)


def _walk(node: yaml.Node, path: tuple, lines: dict[tuple, int]) -> None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = key_node.value
            lines[path + (key,)] = key_node.start_mark.line + 1
            _walk(value_node, path + (key,), lines)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            lines[path + (i,)] = item.start_mark.line + 1
            _walk(item, path + (i,), lines)


def load_yaml_text(text: str, file: str = "<string>") -> LocatedYaml:
    """Parse ``text`` with the safe loader; a syntax error names the file and line."""
    try:
        data = yaml.safe_load(text)
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', exc)}", file=file,
                          line=line) from None
    lines: dict[tuple, int] = {}
    if node is not None:
        _walk(node, (), lines)
    return LocatedYaml(data, lines, file)


def load_yaml(path: str | Path) -> LocatedYaml:
    """Read and parse a YAML file safely; a missing file is a ConfigError."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"cannot read file: {exc.strerror}", file=str(path)) from None
    return load_yaml_text(text, file=str(path))


def _field_names(model_cls: Any) -> set[str]:
    names: set[str] = set()
    for name, info in getattr(model_cls, "model_fields", {}).items():
        names.add(name)
        for arg in (info.annotation, *getattr(info.annotation, "__args__", ())):
            if hasattr(arg, "model_fields"):
                names |= _field_names(arg)
    return names


def pydantic_error(exc: Any, doc: LocatedYaml | None = None, file: str | None = None,
                   prefix: tuple = (), model_cls: Any = None) -> ConfigError:
    """Turn a pydantic ValidationError into a ConfigError naming field, line and expectation."""
    from moesim.config.errors import suggest

    errors = exc.errors()
    # a misspelled key also makes its correct name "missing": report the typo, not the gap
    err = next((e for e in errors if e["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in err["loc"] if not (isinstance(p, str) and p.startswith("function-")))
    msg = err["msg"].removeprefix("Value error, ").removeprefix("Assertion failed, ")
    if not loc and model_cls is not None:  # a whole-model check: its message starts with the field
        first = msg.split(" ", 1)[0]
        if first in getattr(model_cls, "model_fields", {}):
            loc = (first,)
    loc = prefix + loc
    if err["type"] == "extra_forbidden":
        hint = suggest(str(loc[-1]), _field_names(model_cls)) if model_cls else ""
        msg = f"unknown field{hint}"
    given = err.get("input")
    if err["type"] != "extra_forbidden" and not isinstance(given, (dict, list)):
        msg = f"{msg} (got {given!r})"
    field = ".".join(str(p) for p in loc) or None
    line = doc.line_of(loc) if doc is not None else None
    return ConfigError(msg, file=file or (doc.file if doc else None), line=line, field=field)

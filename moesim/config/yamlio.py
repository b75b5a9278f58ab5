"""Safe YAML loading that remembers where each field stands, for error messages."""
from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml

from moesim.config.errors import ConfigError
from moesim.config.files import read_text_file
from moesim.config.limits import MAX_NESTING, MAX_YAML_NODES, limit_error


class LocatedYaml:
    """Parsed YAML data plus the line of every mapping key and sequence item (1-based)."""

    def __init__(self, data: Any, lines: dict[tuple, int], file: str, text: str = ""):
        self.data = data
        self.lines = lines
        self.file = file
        self.text = text

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


_Loader = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml when built with it
_MERGE_TAG = "tag:yaml.org,2002:merge"
_STARTS = (yaml.MappingStartEvent, yaml.SequenceStartEvent)
_ENDS = (yaml.MappingEndEvent, yaml.SequenceEndEvent)


def _check_depth(text: str, file: str) -> None:
    """Refuse nesting deeper than MAX_NESTING from the event stream, before composing: the
    composers recurse (PyYAML's raises RecursionError, libyaml's crashes the process)."""
    loader = _Loader(text)
    depth = 0
    try:
        while (event := loader.get_event()) is not None:
            if isinstance(event, _STARTS):
                depth += 1
                if depth > MAX_NESTING:
                    raise ConfigError(limit_error("nesting depth", depth, MAX_NESTING,
                                                  "MAX_NESTING"), file=file,
                                      line=event.start_mark.line + 1)
            elif isinstance(event, _ENDS):
                depth -= 1
    finally:
        loader.dispose()


def _children(node: yaml.Node) -> list[tuple[Any, int, yaml.Node]]:
    """(key or index, its 1-based line, child node) of a mapping's scalar keys or a sequence."""
    if isinstance(node, yaml.MappingNode):
        return [(k.value, k.start_mark.line + 1, v) for k, v in node.value
                if isinstance(k, yaml.ScalarNode)]
    if isinstance(node, yaml.SequenceNode):
        return [(i, v.start_mark.line + 1, v) for i, v in enumerate(node.value)]
    return []


def _walk(root: yaml.Node, file: str) -> dict[tuple, int]:
    """Line of every key/item path, each node visited once (an alias is not followed), and a
    check that no mapping repeats a key; then :func:`_check_expansion`."""
    lines: dict[tuple, int] = {}
    seen: set[int] = set()
    stack = [(root, ())]
    while stack:
        node, path = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            _check_duplicates(node, path, file)
        for key, line, child in _children(node):
            lines[path + (key,)] = line
            stack.append((child, path + (key,)))
    _check_expansion(root, file)
    return lines


def _check_duplicates(node: yaml.MappingNode, path: tuple, file: str) -> None:
    first: dict[tuple, int] = {}
    for key_node, _ in node.value:
        if not isinstance(key_node, yaml.ScalarNode) or key_node.tag == _MERGE_TAG:
            continue
        line = key_node.start_mark.line + 1
        key = (key_node.tag, key_node.value)
        if key in first:
            field = ".".join(str(p) for p in path + (key_node.value,))
            raise ConfigError(f"duplicate key '{key_node.value}': first at line {first[key]}, "
                              f"again at line {line}; expected each key once", file=file,
                              line=line, field=field)
        first[key] = line


def _check_expansion(root: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases expand beyond MAX_YAML_NODES ("billion laughs"): the
    expanded size is summed over the node graph bottom-up, each shared node counted once."""
    size: dict[int, int] = {}
    order, stack = [], [root]
    while stack:  # post-order without recursion
        node = stack.pop()
        if id(node) in size:
            continue
        size[id(node)] = 0
        order.append(node)
        stack.extend(child for _, _, child in _children(node))
    for node in reversed(order):
        size[id(node)] = 1 + sum(size[id(child)] for _, _, child in _children(node))
        if size[id(node)] > MAX_YAML_NODES:
            raise ConfigError(limit_error("values after expanding aliases", size[id(node)],
                                          MAX_YAML_NODES, "MAX_YAML_NODES"), file=file,
                              line=node.start_mark.line + 1)


def load_yaml_text(text: str, file: str = "<string>") -> LocatedYaml:
    """Parse ``text`` with the safe loader (libyaml's when available); a syntax error, a
    duplicate key, too deep a nesting or an alias bomb names the file and line."""
    try:
        _check_depth(text, file)
        loader = _Loader(text)
        try:
            node = loader.get_single_node()
            lines = _walk(node, file) if node is not None else {}
            data = loader.construct_document(node) if node is not None else None
        finally:
            loader.dispose()
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        raise ConfigError(f"invalid YAML: {getattr(exc, 'problem', None) or exc}", file=file,
                          line=line) from None
    except (ValueError, OverflowError, RecursionError) as exc:  # e.g. a date 2024-02-30
        if isinstance(exc, ConfigError):
            raise
        raise ConfigError(f"invalid YAML value: {exc}", file=file) from None
    return LocatedYaml(data, lines, file, text)


def load_yaml(path: str | Path) -> LocatedYaml:
    """Read (a regular UTF-8 file within the size limit) and parse YAML safely."""
    return load_yaml_text(read_text_file(path), file=str(path))


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

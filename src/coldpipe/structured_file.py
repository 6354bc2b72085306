"""Strict YAML and JSON reading for every file a user hands coldpipe (scenarios, plans, configs, profiles, traces).

What a document may be (docs/reliability.md#strict-parsing):

- at most :data:`~coldpipe.core.limits.MAX_FILE_BYTES` of JSON or :data:`~coldpipe.core.limits.MAX_YAML_BYTES`
  of YAML, UTF-8;
- nested at most :data:`~coldpipe.core.limits.MAX_NESTING` deep, at most
  :data:`~coldpipe.core.limits.MAX_NODES` values with YAML aliases expanded (a few hundred bytes of nested
  aliases would otherwise expand to gigabytes), no recursive alias;
- no key twice in one mapping (YAML and JSON alike; the last one silently winning hides a typo);
- YAML scalars resolve as YAML 1.2's core schema: only ``true``/``false`` are booleans (``on``, ``yes``,
  ``off``, ``no`` stay strings, so ``prompt_tokens: on`` is an error, not 1), integers are decimal
  (``0o``/``0x`` allowed; ``010`` is ten, ``1:30`` is a string), ``1e9`` is a float;
- numbers finite (no ``.inf``, ``.nan``, ``NaN``, ``Infinity``).

Every failure is one :class:`~coldpipe.errors.InputError` naming the file, where in it, and the fix.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path
from typing import Any

import yaml

from coldpipe.core.limits import MAX_FILE_BYTES, MAX_NESTING, MAX_NODES, MAX_YAML_BYTES, cut
from coldpipe.errors import InputError
from coldpipe.units import format_bytes

__all__ = ["parse_json_text", "parse_yaml_text", "read_structured_file", "read_text_limited"]


def read_text_limited(path: str | Path, what: str, max_bytes: int = MAX_FILE_BYTES) -> str:
    """The UTF-8 text of ``path``, refused past ``max_bytes`` (human and raw size in the message)."""
    p = Path(path)
    try:
        is_file = p.is_file()
    except (OSError, ValueError):  # a name too long, a NUL byte
        is_file = False
    if not is_file:
        raise InputError(what, f"no such file {cut(repr(str(p)), 200)}", "check the path")
    try:
        with p.open("rb") as f:
            raw = f.read(max_bytes + 1)
    except OSError as exc:
        raise InputError(
            what, f"cannot read {cut(repr(str(p)))}: {exc.strerror or exc}", "check the permissions"
        ) from None
    if len(raw) > max_bytes:
        size = p.stat().st_size
        raise InputError(
            what,
            f"{cut(repr(str(p)))} is {format_bytes(size)} ({size} bytes), more than the "
            f"{format_bytes(max_bytes)} ({max_bytes} bytes) coldpipe reads",
            "is it the right file?",
        )
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            what,
            f"{cut(repr(str(p)))} is not UTF-8 text (byte {exc.start} is {raw[exc.start]:#04x})",
            "save it as UTF-8",
        ) from None


# --- YAML -------------------------------------------------------------------------------------------------------


_BASE: type = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # libyaml's parser when installed (10x faster)


class _Loader(_BASE):  # type: ignore[misc,valid-type]
    """SafeLoader with YAML 1.2 core-schema scalars and duplicate keys rejected."""


_Loader.yaml_implicit_resolvers = {
    k: [
        (tag, rx)
        for tag, rx in v
        if tag not in ("tag:yaml.org,2002:bool", "tag:yaml.org,2002:int", "tag:yaml.org,2002:float")
    ]
    for k, v in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:int", re.compile(r"^(?:[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+)$"), list("-+0123456789")
)
_Loader.add_implicit_resolver(
    "tag:yaml.org,2002:float",
    re.compile(
        r"^(?:[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN))$"
    ),
    list("-+.0123456789"),
)


def _construct_int(loader: _Loader, node: yaml.ScalarNode) -> int:
    text = str(loader.construct_scalar(node))
    if text.startswith("0o"):
        return int(text[2:], 8)
    if text.startswith("0x"):
        return int(text[2:], 16)
    return int(text, 10)


def _construct_float(loader: _Loader, node: yaml.ScalarNode) -> float:
    text = str(loader.construct_scalar(node)).lower()
    value = float(text.replace(".inf", "inf").replace(".nan", "nan"))
    if not math.isfinite(value):
        raise yaml.constructor.ConstructorError(None, None, f"{text} is not a finite number", node.start_mark)
    return value


def _construct_mapping(loader: _Loader, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
    seen: dict[Any, yaml.Node] = {}
    for key_node, _ in node.value:
        if key_node.tag == "tag:yaml.org,2002:merge":
            continue
        key = loader.construct_object(key_node, deep=True)
        try:
            again = key in seen
        except TypeError:
            raise yaml.constructor.ConstructorError(
                "while constructing a mapping", node.start_mark, "found an unhashable key", key_node.start_mark
            ) from None
        if again:
            first = seen[key].start_mark
            raise yaml.constructor.ConstructorError(
                None,
                None,
                f"key {cut(repr(key), 80)} appears twice in one mapping (first at line {first.line + 1})",
                key_node.start_mark,
            )
        seen[key] = key_node
    return yaml.SafeLoader.construct_mapping(loader, node, deep=deep)


_Loader.add_constructor("tag:yaml.org,2002:int", _construct_int)
_Loader.add_constructor("tag:yaml.org,2002:float", _construct_float)
_Loader.construct_mapping = _construct_mapping  # type: ignore[assignment,method-assign]


def _check_depth(text: str) -> None:
    """Nesting of the event stream (the parser is iterative; PyYAML's composer recurses once per level)."""
    depth = 0
    for event in yaml.parse(text, Loader=_Loader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_NESTING:
                raise _TooDeep(event.start_mark.line + 1)
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1


class _TooDeep(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


class _TooBig(Exception):
    pass


def _expanded_size(root: yaml.Node) -> int:
    """Values in the document with every alias expanded (iterative; a node shared by aliases counts each time)."""
    size: dict[int, int] = {}
    on_path: set[int] = set()
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            on_path.discard(key)
            children = _children(node)
            total = 1 + sum(size[id(c)] for c in children)
            size[key] = min(total, MAX_NODES + 1)
            continue
        if key in size:
            continue
        if key in on_path:
            raise _Recursive(node.start_mark.line + 1)
        on_path.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)
    return size[id(root)]


class _Recursive(Exception):
    def __init__(self, line: int) -> None:
        self.line = line


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    if isinstance(node, yaml.MappingNode):
        return [x for kv in node.value for x in kv]
    return []


def parse_yaml_text(text: str, where: str, what: str) -> Any:
    """A YAML (or JSON) document under the module's rules; ``where`` names it in errors (e.g. the file)."""
    try:
        _check_depth(text)
        loader = _Loader(text)
        try:
            root = loader.get_single_node()
            if root is None:
                return None
            n = _expanded_size(root)
            if n > MAX_NODES:
                raise _TooBig
            return loader.construct_document(root)
        finally:
            loader.dispose()
    except _TooDeep as exc:
        raise InputError(
            what, f"{where} nests lists/mappings more than {MAX_NESTING} deep (line {exc.line})", "flatten the document"
        ) from None
    except _Recursive as exc:
        raise InputError(
            what, f"{where} has a recursive alias (line {exc.line})", "an anchor cannot contain its alias"
        ) from None
    except _TooBig:
        raise InputError(
            what,
            f"{where} holds more than {MAX_NODES} values once its aliases are expanded",
            "write the document without nested aliases",
        ) from None
    except yaml.YAMLError as exc:
        raise InputError(what, f"{where} is not valid YAML/JSON: {_yaml_reason(exc)}", "fix the syntax") from None
    except ValueError as exc:  # an integer of more than 4300 digits
        raise InputError(what, f"{where}: {cut(str(exc), 200)}", "write a smaller number") from None


def _yaml_reason(exc: yaml.YAMLError) -> str:
    if isinstance(exc, yaml.MarkedYAMLError):
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        return cut(f"{exc.problem or exc.context or 'syntax error'}{at}", 300)
    return cut(str(exc), 300)


# --- JSON -------------------------------------------------------------------------------------------------------


class _Repeated(Exception):
    def __init__(self, key: str) -> None:
        self.key = key


def _pairs(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for k, v in pairs:
        if k in out:
            raise _Repeated(k)
        out[k] = v
    return out


def _no_constant(name: str) -> float:
    raise ValueError(f"{name} is not a finite number")


def parse_json_text(text: str, where: str, what: str) -> Any:
    """A JSON document under the module's rules (duplicate keys, NaN/Infinity and deep nesting refused)."""
    deep = InputError(what, f"{where} nests arrays/objects more than {MAX_NESTING} deep", "flatten the document")
    try:
        value = json.loads(text, object_pairs_hook=_pairs, parse_constant=_no_constant)
    except RecursionError:
        raise deep from None
    except _Repeated as exc:
        raise InputError(
            what, f"{where} has the key {cut(repr(exc.key), 80)} twice in one object", "keep one of them"
        ) from None
    except json.JSONDecodeError as exc:
        raise InputError(
            what, f"{where} is not valid JSON: {exc.msg} at line {exc.lineno}, column {exc.colno}", "fix the syntax"
        ) from None
    except ValueError as exc:  # NaN / Infinity, an integer of more than 4300 digits
        raise InputError(what, f"{where}: {cut(str(exc), 200)}", "write a finite number of usual size") from None
    _walk(value, where, what, deep)
    return value


def _walk(value: Any, where: str, what: str, deep: InputError) -> None:
    """Nesting depth and finiteness (JSON's ``1e999`` parses to inf without calling ``parse_constant``)."""
    stack = [(value, 0)]
    while stack:
        v, depth = stack.pop()
        if isinstance(v, float) and not math.isfinite(v):
            raise InputError(what, f"{where} holds a number too large for a float", "write a finite number")
        if isinstance(v, (dict, list)):
            if depth >= MAX_NESTING:
                raise deep
            stack.extend((x, depth + 1) for x in (v.values() if isinstance(v, dict) else v))


def read_structured_file(path: str | Path, what: str = "scenario") -> Any:
    """Parse a YAML or JSON file (``.json`` as JSON, anything else as YAML, which accepts JSON) strictly.

    JSON files may be up to :data:`~coldpipe.core.limits.MAX_FILE_BYTES`, YAML files up to
    :data:`~coldpipe.core.limits.MAX_YAML_BYTES` (YAML parses about 1 MB/s).
    """
    p = Path(path)
    text = read_text_limited(p, what, MAX_FILE_BYTES if p.suffix == ".json" else MAX_YAML_BYTES)
    where = cut(repr(str(p)), 200)
    if p.suffix == ".json":
        return parse_json_text(text, where, what)
    return parse_yaml_text(text, where, what)

"""Parse the YAML/JSON architecture DSL into an :class:`ArchSpec`.

Layer items are either a bare name (``relu``, ``flatten``) or a one-key mapping
``{kind: args}`` where ``args`` is a mapping, ``null``/``{}`` (all defaults), or a
scalar/list shorthand for the kind's main argument (``linear: 120``,
``dropout: 0.1``, ``permute: [1, 0]``, ``residual: [...]``). Parsing collects every
problem it can find and raises one :class:`SpecError`; pydantic errors are
translated into ``layers[2].linear.out: ...`` lines, never leaked.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, Strict, ValidationError

from .errors import SpecError, SpecIssue, preview
from .layers import LAYER_KINDS, Activation, ArchSpec

# Hard caps applied while parsing, far above SpecLimits, so that hostile input
# (huge files, YAML alias bombs, self-referencing aliases) cannot exhaust memory or
# recursion before the real limits in validate_spec get a chance to report.
MAX_SOURCE_CHARS = 1_000_000
MAX_PARSED_LAYERS = 10_000
MAX_NESTING = 32
# A document's nesting depth and its node count *after alias expansion*. A real spec nests
# a few levels per residual block and has a few thousand nodes; an alias bomb expands a
# kilobyte into 10^9 nodes, and a 1000-deep document overflows the recursive composer.
MAX_DOCUMENT_DEPTH = 4 * MAX_NESTING + 8
MAX_DOCUMENT_NODES = 200_000

_SPEC_SUFFIXES = (".yaml", ".yml", ".json")


class _Top(BaseModel):
    """Top-level fields other than ``layers`` (parsed by hand for path-aware errors)."""

    model_config = ConfigDict(extra="forbid")

    name: Annotated[str, Strict(), Field(min_length=1, max_length=200)] = "unnamed"
    head: Literal["classifier", "regression"]


class _UniqueKeyLoader(yaml.SafeLoader):
    """SafeLoader that rejects duplicate mapping keys (PyYAML silently keeps the last)."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=deep)
            try:
                duplicate = key in seen
            except TypeError:  # unhashable key: let PyYAML raise its own error
                break
            if duplicate:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {preview(key)}", key_node.start_mark
                )
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _yaml_too_big(text: str) -> str | None:
    """Why ``text`` must not be composed, or ``None``: nesting and node count, read from the event
    stream (iterative, so a 10,000-deep document costs no recursion)."""
    depth = 0
    for events, event in enumerate(yaml.parse(text, Loader=yaml.SafeLoader), start=1):
        if isinstance(event, yaml.CollectionStartEvent):
            depth += 1
            if depth > MAX_DOCUMENT_DEPTH:
                return f"nested deeper than {MAX_DOCUMENT_DEPTH} levels"
        elif isinstance(event, yaml.CollectionEndEvent):
            depth -= 1
        if events > MAX_DOCUMENT_NODES:
            return f"more than {MAX_DOCUMENT_NODES:,} nodes"
    return None


def _expanded_size(root: yaml.Node, limit: int) -> int:
    """Nodes in the document with every alias expanded, stopping once past ``limit``.

    Aliases compose to the *same* node object, so sizes are memoised per node: an alias bomb
    (``a1: [*a0, *a0, ...]``, ``a2: [*a1, ...]``) is measured in time linear in its text. An
    alias inside its own anchor (a cycle) is refused.
    """
    sizes: dict[int, int] = {}
    # post-order walk without recursion; a node still on the stack is an alias cycle (cut to 1)
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    on_stack: set[int] = set()
    while stack:
        node, children_done = stack.pop()
        key = id(node)
        if key in sizes:
            continue
        children: list[yaml.Node] = []
        if isinstance(node, yaml.SequenceNode):
            children = list(node.value)
        elif isinstance(node, yaml.MappingNode):
            children = [n for pair in node.value for n in pair]
        if not children_done:
            if any(id(c) in on_stack for c in children):
                raise SpecError.single("spec", "a YAML alias refers to its own anchor (a cycle)")
            on_stack.add(key)
            stack.append((node, True))
            stack.extend((c, False) for c in children if id(c) not in sizes)
            continue
        on_stack.discard(key)
        total = 1 + sum(sizes.get(id(c), 1) for c in children)
        sizes[key] = min(total, limit + 1)
    return sizes.get(id(root), 1)


def _load_text(text: str, *, is_json: bool = False) -> Any:
    if len(text) > MAX_SOURCE_CHARS:
        raise SpecError.single("spec", f"spec text longer than {MAX_SOURCE_CHARS:,} characters")
    if is_json:
        try:
            data = json.loads(text)
        except json.JSONDecodeError as exc:
            raise SpecError.single(
                "spec", f"invalid JSON at line {exc.lineno}, column {exc.colno}: {exc.msg}"
            ) from None
        except RecursionError:
            raise SpecError.single("spec", f"nested deeper than {MAX_DOCUMENT_DEPTH} levels") from None
        check_document(data)
        return data
    try:
        return _load_yaml_bounded(text)
    except RecursionError:
        raise SpecError.single("spec", "YAML nested too deeply") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = _one_line(exc.problem or exc.context or "cannot parse")
        raise SpecError.single("spec", f"invalid YAML{where}: {problem}") from None
    except yaml.YAMLError as exc:
        raise SpecError.single("spec", f"invalid YAML: {_one_line(str(exc))}") from None


def _load_yaml_bounded(text: str) -> Any:
    """``yaml.safe_load`` with duplicate keys refused and bounded depth and alias expansion.

    The checks run before any Python object is built: the event stream bounds nesting (the
    composer recurses), the composed node graph bounds the expanded size (aliases share nodes).
    """
    problem = _yaml_too_big(text)
    if problem is not None:
        raise SpecError.single("spec", f"YAML document {problem}")
    loader = _UniqueKeyLoader(text)  # a SafeLoader subclass: no object construction
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        if _expanded_size(node, MAX_DOCUMENT_NODES) > MAX_DOCUMENT_NODES:
            raise SpecError.single(
                "spec", f"YAML aliases expand to more than {MAX_DOCUMENT_NODES:,} nodes; refusing to expand"
            )
        data = loader.construct_document(node)
    finally:
        loader.dispose()
    check_document(data)
    return data


def check_document(data: Any) -> None:
    """Refuse an already-parsed document (a dict from a JSON body) that nests too deep or holds
    too many nodes, counting shared sub-objects once per reference, as YAML aliases would expand."""
    stack: list[tuple[Any, int]] = [(data, 0)]
    nodes = 0
    while stack:
        value, depth = stack.pop()
        nodes += 1
        if nodes > MAX_DOCUMENT_NODES:
            raise SpecError.single("spec", f"document has more than {MAX_DOCUMENT_NODES:,} nodes")
        if isinstance(value, str) and "\x00" in value:
            raise SpecError.single("spec", f"a string holds a NUL character: {preview(value)}")
        if isinstance(value, Mapping | list | tuple):
            if depth >= MAX_DOCUMENT_DEPTH:
                raise SpecError.single("spec", f"nested deeper than {MAX_DOCUMENT_DEPTH} levels")
            items = [*value.keys(), *value.values()] if isinstance(value, Mapping) else value
            stack.extend((v, depth + 1) for v in items)


def load_spec_text(text: str) -> Any:
    """Parse spec text (YAML, of which JSON is a subset) under the hostile-input bounds."""
    return _load_text(text)


def _read_file(path: Path) -> Any:
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpecError.single("spec", f"cannot read {str(path)!r}: {_one_line(str(exc))}") from None
    return _load_text(text, is_json=path.suffix.lower() == ".json")


def _load_source(source: str | Path | Mapping[str, Any]) -> Any:
    if isinstance(source, Mapping):
        check_document(source)
        return source
    if isinstance(source, Path):
        return _read_file(source)
    if isinstance(source, str):
        # A one-line string ending in a spec suffix is a file name; anything else is text.
        stripped = source.strip()
        if "\n" not in stripped and stripped.lower().endswith(_SPEC_SUFFIXES):
            path = Path(stripped)
            if not path.is_file():
                raise SpecError.single("spec", f"file not found: {stripped!r}")
            return _read_file(path)
        return _load_text(source)
    raise SpecError.single("spec", f"expected YAML/JSON text, a path or a dict, got {type(source).__name__}")


def _loc_to_path(prefix: str, loc: tuple[int | str, ...]) -> str:
    path = prefix
    for part in loc:
        if isinstance(part, int):
            path += f"[{part}]"
        else:
            path = f"{path}.{part}" if path else str(part)
    return path or "spec"


def _message(error: Mapping[str, Any]) -> str:
    """A short lower-case message for one pydantic error dict."""
    kind = error["type"]
    value = error.get("input")
    ctx = error.get("ctx") or {}
    if kind == "extra_forbidden":
        return "unknown field"
    if kind == "missing":
        return "missing required field"
    if kind == "value_error":
        return str(ctx.get("error", error["msg"]))
    if kind == "literal_error":
        return f"expected {ctx.get('expected')}, got {preview(value)}"
    if kind in ("int_type", "int_parsing", "int_from_float"):
        return f"expected an integer, got {preview(value)}"
    if kind in ("float_type", "float_parsing", "finite_number"):
        return f"expected a finite number, got {preview(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {preview(value)}"
    if kind in ("string_type", "string_too_short", "string_too_long"):
        return f"expected a string of 1 to 200 characters, got {preview(value)}"
    if kind == "greater_than":
        return f"must be greater than {ctx.get('gt')}, got {preview(value)}"
    if kind == "greater_than_equal":
        return f"must be at least {ctx.get('ge')}, got {preview(value)}"
    if kind == "less_than":
        return f"must be less than {ctx.get('lt')}, got {preview(value)}"
    if kind in ("tuple_type", "list_type"):
        return f"expected a list, got {preview(value)}"
    if kind == "too_short":
        return "must not be empty"
    msg = str(error["msg"])
    return msg[:1].lower() + msg[1:]


def issues_from_validation(exc: ValidationError, prefix: str = "") -> list[SpecIssue]:
    """Translate a pydantic ``ValidationError`` into path-named :class:`SpecIssue` s."""
    return [
        SpecIssue(_loc_to_path(prefix, tuple(err["loc"])), _message(err))
        for err in exc.errors(include_url=False)
    ]


class _LayerParser:
    """Turns DSL layer items into layer models, collecting issues instead of stopping."""

    def __init__(self) -> None:
        self.issues: list[SpecIssue] = []
        self.count = 0
        self.overflow = False

    def issue(self, path: str, message: str) -> None:
        self.issues.append(SpecIssue(path, message))

    def layers(self, items: Any, path: str, depth: int) -> list[Any] | None:
        if not isinstance(items, list):
            self.issue(path, f"expected a list of layers, got {_describe(items)}")
            return None
        if depth > MAX_NESTING:
            self.issue(path, f"residual blocks nested deeper than {MAX_NESTING} levels")
            return None
        parsed = []
        for index, item in enumerate(items):
            self.count += 1
            if self.count > MAX_PARSED_LAYERS:
                if not self.overflow:
                    self.overflow = True
                    self.issue("layers", f"more than {MAX_PARSED_LAYERS:,} layers; not parsing further")
                return None
            parsed.append(self.layer(item, f"{path}[{index}]", depth))
        return parsed

    def layer(self, item: Any, path: str, depth: int) -> Any:
        if isinstance(item, str):
            kind, raw = item, None
        elif isinstance(item, dict) and len(item) == 1:
            kind, raw = next(iter(item.items()))
            if not isinstance(kind, str):
                self.issue(path, f"layer name must be a string, got {preview(kind)}")
                return None
        elif isinstance(item, dict):
            keys = ", ".join(str(key)[:40] for key in list(item)[:10]) if item else "none"
            self.issue(path, f"a layer is a name or a one-key mapping {{kind: args}}, got keys: {keys}")
            return None
        else:
            self.issue(path, f"a layer is a name or a one-key mapping {{kind: args}}, got {_describe(item)}")
            return None
        if kind not in LAYER_KINDS:
            self.issue(path, f"unknown layer {preview(kind)} (known: {', '.join(sorted(LAYER_KINDS))})")
            return None
        model, shorthand = LAYER_KINDS[kind]
        kpath = f"{path}.{kind}"
        if raw is None:
            args: dict[Any, Any] = {}
        elif isinstance(raw, dict):
            args = dict(raw)
            # `kind` is the internal discriminator and `returns` the Python name behind the
            # `return` alias: neither is part of the DSL.
            internal = {"kind"} | {
                name for name, info in model.model_fields.items() if info.alias not in (None, name)
            }
            hidden = sorted(str(key) for key in args if key in internal)
            for key in hidden:
                self.issue(f"{kpath}.{key}", "unknown field")
            if hidden:
                return None
        elif shorthand is not None:
            args = {shorthand: raw}
        else:
            fields = [name for name in model.model_fields if name != "kind"]
            if fields:
                self.issue(
                    kpath, f"expected a mapping of arguments ({', '.join(fields)}), got {preview(raw)}"
                )
            else:
                self.issue(kpath, f"takes no arguments, got {preview(raw)}")
            return None
        nested_failed = False
        nested = model.nested_field
        if nested is not None and nested in args:
            inner = self.layers(args[nested], f"{kpath}.{nested}", depth + 1)
            if inner is None or any(layer is None for layer in inner):
                nested_failed = True
                # A valid placeholder body, so this block's own fields still get checked.
                args[nested] = (Activation(kind="identity"),)
            else:
                args[nested] = tuple(inner)
        try:
            layer = model.model_validate({"kind": kind, **args})
        except ValidationError as exc:
            self.issues.extend(issues_from_validation(exc, kpath))
            return None
        return None if nested_failed else layer


def _describe(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, str | int | float):
        return f"{type(value).__name__} {preview(value)}"
    return type(value).__name__


def parse_spec(source: str | Path | Mapping[str, Any]) -> ArchSpec:
    """Parse a spec from YAML/JSON text, a ``.yaml``/``.yml``/``.json`` path, or a dict.

    The document is a mapping with ``layers`` (a list, may be empty), ``head``
    (``classifier`` or ``regression``) and an optional ``name``. Every problem found
    is reported in one :class:`SpecError`; shapes are not checked here (see
    :func:`archscreen.core.spec.validate_spec`).
    """
    data = _load_source(source)
    if data is None:
        raise SpecError.single("spec", "empty spec: expected a mapping with 'layers' and 'head'")
    if not isinstance(data, Mapping):
        raise SpecError.single("spec", f"expected a mapping with 'layers' and 'head', got {_describe(data)}")
    top = {key: value for key, value in data.items() if key != "layers"}
    issues: list[SpecIssue] = []
    try:
        fields = _Top.model_validate(top)
    except ValidationError as exc:
        issues.extend(issues_from_validation(exc))
        fields = None
    parser = _LayerParser()
    layers: list[Any] | None = None
    if "layers" not in data:
        parser.issue("layers", "missing required field")
    else:
        layers = parser.layers(data["layers"], "layers", depth=0)
    issues.extend(parser.issues)
    # Report in document order: top-level fields first by convention, then layers.
    if issues or fields is None or layers is None:
        raise SpecError(issues)
    return ArchSpec(name=fields.name, head=fields.head, layers=tuple(layers))

"""Search spaces: a spec template whose values may be parameters, sampled through Optuna.

A search space is a spec document with a top-level ``space:`` key (that key, and only it, marks a
document as a space; a plain spec never has it). Anywhere in the template a value may be a
parameter node:

* ``{choice: [a, b, ...]}`` or ``{choice: {label: option, ...}}``;
* ``{int: [lo, hi]}`` (optional ``step``, ``log``), ``{float: [lo, hi]}`` (optional ``log``, ``step``);
* in a ``layers`` list, ``repeat: {count: N-or-parameter, layers: [...], share: true}`` (depth).

Every node takes an optional ``name``; without one its name is its path in the template
(``layers[2].linear.out``), so names are stable while the template is. The same name at several
places is ONE parameter (tied values, e.g. a transformer's width); the definitions must agree.
In a ``layers`` list, a chosen option that is a list is spliced in (``[]`` drops the block), so a
choice among sub-templates is a conditional part: parameters inside an option exist only when it
is chosen. ``repeat`` with ``share: false`` gives each copy its own parameters, named with the copy
index appended (``width[0]``, ``width[1]``, ...).

Sampling is define-by-run: :func:`sample` calls ``trial.suggest_categorical/int/float`` (a live
``optuna.Trial`` or a ``FrozenTrial``), :func:`instantiate` builds the same spec from a params dict.
A choice among scalars suggests the scalars themselves; a choice among other values suggests the
labels of the mapping form, or the option's index (0, 1, ...) in the list form.

A sampled point is refused before training (:class:`PointRefused`, with every reason) when it does
not parse, does not fit the dataset (:func:`validate_spec`), or exceeds ``space.limits``
(:class:`SpecLimits` fields plus ``max_flops``). With Optuna, :func:`suggest_point` turns a refusal
into ``optuna.TrialPruned``: TPE ranks pruned trials (without intermediate values) with the bad
ones, so it learns to leave an invalid region, whereas FAIL trials are ignored by TPE and the same
region would keep being proposed.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Literal, Protocol

from ..data.base import DatasetInfo
from .errors import SpecError, SpecIssue, preview
from .infer import DEFAULT_LIMITS, SpecLimits, SpecReport, validate_spec
from .layers import ArchSpec
from .parse import MAX_PARSED_LAYERS, check_document, load_spec_text, parse_spec

SPACE_KEY = "space"
PARAM_KINDS = ("choice", "int", "float")
_PARAM_OPTIONS = {"choice": {"name"}, "int": {"name", "step", "log"}, "float": {"name", "step", "log"}}
_REPEAT_KEYS = {"count", "layers", "share"}
_LAYER_LIST_KEYS = ("layers", "residual")
# Hostile-input bounds (as parse.py's): a repeat count above MAX_REPEAT_COUNT is refused when the
# space is parsed, and a point that expands past MAX_POINT_ITEMS list items is refused while it is
# built, before parse_spec (whose own cap is the same) would see it.
MAX_REPEAT_COUNT = 1_000
MAX_POINT_ITEMS = MAX_PARSED_LAYERS
MAX_GRID_NAMES = 10_000
MAX_PARAM_ISSUES = 20  # instantiate() reports this many bad params, then stops
Scalar = None | bool | int | float | str


class Trial(Protocol):
    """The part of ``optuna.Trial``/``optuna.trial.FrozenTrial`` that sampling uses."""

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...

    def suggest_int(self, name: str, low: int, high: int, *, step: int = 1, log: bool = False) -> int: ...

    def suggest_float(
        self, name: str, low: float, high: float, *, step: float | None = None, log: bool = False
    ) -> float: ...


@dataclass(frozen=True)
class Param:
    """One parameter: ``choices`` are the values Optuna sees (for ``choice``), ``options`` what
    each stands for in the template (compiled nodes)."""

    name: str
    path: str
    kind: Literal["choice", "int", "float"]
    choices: tuple[Scalar, ...] = ()
    low: float = 0
    high: float = 0
    step: float | None = None
    log: bool = False
    options: tuple[Any, ...] = field(default=(), compare=False)

    def size(self) -> int | None:
        """Distinct values, or ``None`` for a continuous parameter."""
        if self.kind == "choice":
            return len(self.choices)
        if self.kind == "float" and self.step is None:
            return None
        if self.log and self.kind == "int":
            return int(self.high - self.low) + 1
        return math.floor((self.high - self.low) / (self.step or 1) + 1e-9) + 1

    def suggest(self, trial: Trial, name: str) -> Any:
        if self.kind == "choice":
            return trial.suggest_categorical(name, list(self.choices))
        if self.kind == "int":
            return trial.suggest_int(
                name, int(self.low), int(self.high), step=int(self.step or 1), log=self.log
            )
        return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)

    def definition(self) -> tuple[Any, ...]:
        return (self.kind, self.choices, self.low, self.high, self.step, self.log)


@dataclass(frozen=True)
class _ParamNode:
    param: Param


@dataclass(frozen=True)
class _RepeatNode:
    count: int | _ParamNode
    layers: Any  # a compiled layers list
    share: bool


@dataclass(frozen=True)
class SearchSpace:
    """A compiled space: the template tree, its parameters by name, and the limits a point must meet."""

    name: str
    template: Any
    params: Mapping[str, Param]
    limits: SpecLimits = DEFAULT_LIMITS
    max_flops: float | None = None


class PointRefused(ValueError):
    """A sampled point that must not train: ``reason`` is one line, ``issues`` every problem."""

    def __init__(self, issues: list[SpecIssue]) -> None:
        self.issues = issues
        self.reason = "; ".join(str(issue) for issue in issues)
        super().__init__(self.reason)


@dataclass(frozen=True)
class Point:
    """A valid sampled point: its params, the plain spec (data and parsed) and the shape report."""

    params: dict[str, Any]
    document: dict[str, Any]
    spec: ArchSpec
    report: SpecReport
    flops: int


def is_space_document(data: Any) -> bool:
    """A document is a search space iff it is a mapping with a top-level ``space`` key."""
    return isinstance(data, Mapping) and SPACE_KEY in data


class _Compiler:
    """Turns the raw template into nodes, collecting every issue with its path."""

    def __init__(self) -> None:
        self.issues: list[SpecIssue] = []
        self.params: dict[str, Param] = {}

    def issue(self, path: str, message: str) -> None:
        self.issues.append(SpecIssue(path, message))

    def value(self, raw: Any, path: str, layer_list: bool = False) -> Any:
        if isinstance(raw, Mapping):
            kinds = [k for k in PARAM_KINDS if k in raw]
            if kinds:
                return self.param(raw, path, kinds, layer_list)
            if layer_list and len(raw) == 1 and "repeat" in raw:
                return self.repeat(raw["repeat"], f"{path}.repeat")
            return {
                key: self.value(item, f"{path}.{key}", key in _LAYER_LIST_KEYS and isinstance(item, list))
                for key, item in raw.items()
            }
        if isinstance(raw, list):
            return ([self.value(item, f"{path}[{i}]", layer_list) for i, item in enumerate(raw)], layer_list)
        return raw

    def param(
        self, raw: Mapping[str, Any], path: str, kinds: list[str], layer_list: bool
    ) -> _ParamNode | None:
        if len(kinds) > 1:
            self.issue(path, f"a parameter has one of choice, int, float; got {', '.join(kinds)}")
            return None
        kind = kinds[0]
        unknown = sorted(str(k) for k in raw if k != kind and k not in _PARAM_OPTIONS[kind])
        for key in unknown:
            self.issue(
                f"{path}.{key}",
                f"unknown field (a {kind} parameter takes {kind}, {', '.join(sorted(_PARAM_OPTIONS[kind]))})",
            )
        name = raw.get("name", path)
        if not isinstance(name, str) or not name or len(name) > 200:
            self.issue(f"{path}.name", f"expected a string of 1 to 200 characters, got {preview(name)}")
            return None
        if kind == "choice":
            built = self.choice(raw, path, name, layer_list)
        else:
            built = self.range(raw, path, name, kind)
        if built is None or unknown:
            return None
        known = self.params.get(name)
        if known is not None and known.definition() != built.definition():
            self.issue(f"{path}.name", f"parameter {name!r} is defined differently at {known.path}")
            return None
        self.params.setdefault(name, built)
        return _ParamNode(built if known is None else _with_options(known, built))

    def choice(self, raw: Mapping[str, Any], path: str, name: str, layer_list: bool) -> Param | None:
        spec, cpath = raw["choice"], f"{path}.choice"
        if isinstance(spec, Mapping):
            labels = list(spec)
            options = [self.value(opt, f"{cpath}.{label}", layer_list) for label, opt in spec.items()]
            bad = [lab for lab in labels if not isinstance(lab, str | int | bool)]
            if bad:
                self.issue(cpath, f"option labels must be strings or integers, got {preview(bad[0])}")
                return None
        elif isinstance(spec, list):
            options = [self.value(opt, f"{cpath}[{i}]", layer_list) for i, opt in enumerate(spec)]
            scalar = all(isinstance(opt, str | int | float | bool) or opt is None for opt in spec)
            labels = list(spec) if scalar else list(range(len(spec)))
            if scalar and len({(type(v), v) for v in labels}) != len(labels):
                self.issue(cpath, "options must be distinct")
                return None
        else:
            self.issue(cpath, f"expected a list or a mapping of options, got {preview(spec)}")
            return None
        if not labels:
            self.issue(cpath, "must not be empty")
            return None
        return Param(name, path, "choice", choices=tuple(labels), options=tuple(options))

    def range(self, raw: Mapping[str, Any], path: str, name: str, kind: str) -> Param | None:
        bounds, rpath = raw[kind], f"{path}.{kind}"
        number = int if kind == "int" else (int, float)
        ok = isinstance(bounds, list) and len(bounds) == 2
        ok = ok and all(isinstance(b, number) and not isinstance(b, bool) for b in bounds)
        if not ok or not all(math.isfinite(b) for b in bounds):
            what = "integers" if kind == "int" else "finite numbers"
            self.issue(rpath, f"expected [lo, hi], two {what}, got {preview(bounds)}")
            return None
        low, high = bounds
        if low > high:
            self.issue(rpath, f"lo must not exceed hi, got [{low}, {high}]")
            return None
        log, step = raw.get("log", False), raw.get("step")
        if not isinstance(log, bool):
            self.issue(f"{path}.log", f"expected true or false, got {preview(log)}")
            return None
        if log and low <= 0:
            self.issue(rpath, f"log: true needs lo > 0, got {low}")
            return None
        if step is not None and (not isinstance(step, number) or isinstance(step, bool) or step <= 0):
            self.issue(f"{path}.step", f"expected a positive {'integer' if kind == 'int' else 'number'}")
            return None
        if step is not None and log:
            self.issue(f"{path}.step", "step and log: true cannot be combined (an Optuna rule)")
            return None
        return Param(name, path, kind, low=low, high=high, step=step, log=log)  # type: ignore[arg-type]

    def repeat(self, raw: Any, path: str) -> _RepeatNode | None:
        if not isinstance(raw, Mapping):
            self.issue(path, f"expected a mapping with count and layers, got {preview(raw)}")
            return None
        for key in sorted(str(k) for k in raw if k not in _REPEAT_KEYS):
            self.issue(f"{path}.{key}", "unknown field (repeat takes count, layers, share)")
        for key in ("count", "layers"):
            if key not in raw:
                self.issue(f"{path}.{key}", "missing required field")
        share = raw.get("share", True)
        if not isinstance(share, bool):
            self.issue(f"{path}.share", f"expected true or false, got {preview(share)}")
        count = self.value(raw.get("count", 0), f"{path}.count")
        if not _valid_count(count):
            self.issue(
                f"{path}.count",
                f"expected an integer from 0 to {MAX_REPEAT_COUNT:,}, or an int/choice parameter of such",
            )
        layers = raw.get("layers")
        if not isinstance(layers, list):
            self.issue(f"{path}.layers", f"expected a list of layers, got {preview(layers)}")
            return None
        return _RepeatNode(count, self.value(layers, f"{path}.layers", True), share is not False)


def _with_options(known: Param, built: Param) -> Param:
    """A tied choice keeps the options of the place it appears at (labels agree by definition)."""
    return Param(
        **{f.name: getattr(known, f.name) for f in fields(Param) if f.name != "options"},
        options=built.options,
    )


def _valid_count(count: Any) -> bool:
    if isinstance(count, _ParamNode):
        p = count.param
        if p.kind == "float":
            return False
        values = p.choices if p.kind == "choice" else (p.low, p.high)
        return all(_valid_count(v) for v in values)
    return isinstance(count, int) and not isinstance(count, bool) and 0 <= count <= MAX_REPEAT_COUNT


def _limits(raw: Any, path: str, issues: list[SpecIssue]) -> tuple[SpecLimits, float | None]:
    if raw is None:
        return DEFAULT_LIMITS, None
    if not isinstance(raw, Mapping):
        issues.append(SpecIssue(path, f"expected a mapping, got {preview(raw)}"))
        return DEFAULT_LIMITS, None
    allowed = {f.name for f in fields(SpecLimits)} | {"max_flops"}
    values: dict[str, Any] = {}
    for key, value in raw.items():
        if key not in allowed:
            issues.append(SpecIssue(f"{path}.{key}", f"unknown field (known: {', '.join(sorted(allowed))})"))
        elif isinstance(value, bool) or not isinstance(value, int | float) or not value > 0:
            issues.append(SpecIssue(f"{path}.{key}", f"expected a positive number, got {preview(value)}"))
        else:
            values[key] = value
    max_flops = values.pop("max_flops", None)
    return SpecLimits(**{k: int(v) for k, v in values.items()}), max_flops


def load_space_document(source: str | Path | Mapping[str, Any]) -> Any:
    """The document behind ``source``: a mapping (an API body) as is, a :class:`~pathlib.Path` read,
    text parsed under the same hostile-input bounds as specs (``load_spec_text``)."""
    if isinstance(source, Mapping):
        return source
    if isinstance(source, Path):
        try:
            source = source.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise SpecError.single("spec", f"cannot read {str(source)!r}: {exc}") from None
    if not isinstance(source, str):
        return source  # already loaded (e.g. YAML text "31" was a number): parse_space refuses it
    return load_spec_text(source)


def parse_space(source: str | Path | Mapping[str, Any]) -> SearchSpace:
    """Compile a space from YAML/JSON text, a :class:`~pathlib.Path` or a loaded mapping. Every problem
    in the space's own syntax is one path-named issue of a single :class:`SpecError`."""
    data = load_space_document(source)
    check_document(data)
    if not is_space_document(data):
        raise SpecError.single("spec", f"a search space needs a top-level '{SPACE_KEY}:' mapping")
    issues: list[SpecIssue] = []
    header = data[SPACE_KEY]
    if header is None:
        header = {}
    if not isinstance(header, Mapping):
        raise SpecError.single(SPACE_KEY, f"expected a mapping (limits), got {preview(header)}")
    for key in sorted(str(k) for k in header if k != "limits"):
        issues.append(SpecIssue(f"{SPACE_KEY}.{key}", "unknown field (known: limits)"))
    limits, max_flops = _limits(header.get("limits"), f"{SPACE_KEY}.limits", issues)
    compiler = _Compiler()
    body = {key: value for key, value in data.items() if key != SPACE_KEY}
    template = {
        key: compiler.value(v, key, key == "layers" and isinstance(v, list)) for key, v in body.items()
    }
    issues.extend(compiler.issues)
    if issues:
        raise SpecError(issues)
    name = body.get("name") if isinstance(body.get("name"), str) else "unnamed"
    return SearchSpace(str(name), template, dict(compiler.params), limits, max_flops)


Chooser = Callable[[Param, str], Any]


class _Budget:
    """List items a point may still produce (repeats multiply: nested depth parameters)."""

    def __init__(self, what: str = "the point expands to") -> None:
        self.left = MAX_POINT_ITEMS
        self.what = what

    def take(self, items: int) -> None:
        self.left -= items
        if self.left < 0:
            raise SpecError.single("layers", f"{self.what} more than {MAX_POINT_ITEMS:,} list items")


def _resolve(node: Any, choose: Chooser, suffix: str, budget: _Budget) -> Any:
    if isinstance(node, _ParamNode):
        param = node.param
        budget.take(1)  # a lookup costs like an item: a hostile params dict cannot make work unbounded
        value = choose(param, param.name + suffix)
        if param.kind != "choice":
            return value
        return _resolve(param.options[_choice_index(param, value)], choose, suffix, budget)
    if isinstance(node, dict):
        return {key: _resolve(item, choose, suffix, budget) for key, item in node.items()}
    if isinstance(node, tuple):  # a compiled list: (items, is_layer_list)
        items, layer_list = node
        out: list[Any] = []
        for item in items:
            if isinstance(item, _RepeatNode):
                out.extend(_repeat(item, choose, suffix, budget))
                continue
            value = _resolve(item, choose, suffix, budget)
            if layer_list and isinstance(item, _ParamNode) and isinstance(value, list):
                out.extend(value)  # a chosen sub-list is spliced; [] drops the block
            else:
                out.append(value)
        budget.take(len(out))
        return out
    return node


def _choice_index(param: Param, value: Any) -> int:
    """The option ``value`` picks, by type and value (``True`` is not ``1``)."""
    return next(i for i, c in enumerate(param.choices) if type(c) is type(value) and c == value)


def _repeat(node: _RepeatNode, choose: Chooser, suffix: str, budget: _Budget) -> list[Any]:
    count = node.count if isinstance(node.count, int) else _resolve(node.count, choose, suffix, budget)
    out: list[Any] = []
    for copy in range(int(count)):
        out.extend(_resolve(node.layers, choose, suffix if node.share else f"{suffix}[{copy}]", budget))
    return out


def sample(space: SearchSpace, trial: Trial) -> dict[str, Any]:
    """The plain spec document the trial's suggestions pick (define-by-run: only the parameters
    this point uses are suggested). A tied name is suggested once. Raises :class:`SpecError` for a
    value outside the parameter (a ``FixedTrial``/``FrozenTrial`` holding another space's params)."""
    seen: dict[str, Any] = {}

    def choose(param: Param, name: str) -> Any:
        if name not in seen:
            seen[name] = param.suggest(trial, name)
            problem = _out_of_range(param, seen[name])  # a FixedTrial returns whatever it holds
            if problem:
                raise SpecError.single(f"params.{name}", problem)
        return seen[name]

    return _resolve(space.template, choose, "", _Budget())


def instantiate(space: SearchSpace, params: Mapping[str, Any]) -> dict[str, Any]:
    """The plain spec document for ``params`` (e.g. a finished trial's ``params``): deterministic.
    Raises :class:`SpecError` (path ``params.NAME``) for a missing, out-of-range or unused name."""
    used: set[str] = set()
    issues: list[SpecIssue] = []

    def choose(param: Param, name: str) -> Any:
        used.add(name)
        if len(issues) >= MAX_PARAM_ISSUES:
            raise SpecError([*issues, SpecIssue("params", f"more than {MAX_PARAM_ISSUES} problems; stopped")])
        if name not in params:
            issues.append(SpecIssue(f"params.{name}", "missing"))
            return _fallback(param)
        value = params[name]
        problem = _out_of_range(param, value)
        if problem:
            issues.append(SpecIssue(f"params.{name}", problem))
            return _fallback(param)
        return value

    document = _resolve(space.template, choose, "", _Budget())
    issues.extend(
        SpecIssue(f"params.{n}", "not a parameter of this point") for n in sorted(set(params) - used)
    )
    if issues:
        raise SpecError(issues)
    return document


def _fallback(param: Param) -> Any:
    return (
        param.choices[0] if param.kind == "choice" else (int(param.low) if param.kind == "int" else param.low)
    )


def _out_of_range(param: Param, value: Any) -> str | None:
    if param.kind == "choice":
        ok = any(type(value) is type(c) and value == c for c in param.choices)
        return None if ok else f"expected one of {preview(list(param.choices))}, got {preview(value)}"
    number = int if param.kind == "int" else (int, float)
    if isinstance(value, bool) or not isinstance(value, number) or not param.low <= value <= param.high:
        article = "an" if param.kind == "int" else "a"
        return f"expected {article} {param.kind} in [{param.low}, {param.high}], got {preview(value)}"
    return None


def check_point(space: SearchSpace, params: Mapping[str, Any], document: Any, info: DatasetInfo) -> Point:
    """Parse and validate one point against the dataset and the space's limits, before training.
    Raises :class:`PointRefused` with every reason (path-named, as ``validate_spec`` reports them)."""
    try:
        spec = parse_spec(document)
        report = validate_spec(spec, info, space.limits)
    except SpecError as exc:
        raise PointRefused(exc.issues) from None
    flops = estimate_flops(report)
    if space.max_flops is not None and flops > space.max_flops:
        raise PointRefused([SpecIssue("spec", f"{flops:,} FLOPs exceed the limit of {space.max_flops:,.0f}")])
    return Point(dict(params), document, spec, report, flops)


def point_from_params(space: SearchSpace, params: Mapping[str, Any], info: DatasetInfo) -> Point:
    """Re-create a trial's point from its params (deterministic), checked like a new one."""
    return check_point(space, params, instantiate(space, params), info)


def sample_point(space: SearchSpace, trial: Trial, info: DatasetInfo) -> Point:
    """Sample with ``trial`` and check the point; raises :class:`PointRefused`."""
    try:
        document = sample(space, trial)
    except SpecError as exc:  # expanded past MAX_POINT_ITEMS
        raise PointRefused(exc.issues) from None
    params = dict(getattr(trial, "params", {}) or {})
    return check_point(space, params, document, info)


def suggest_point(space: SearchSpace, trial: Any, info: DatasetInfo) -> Point:
    """:func:`sample_point` for an Optuna objective: a refused point sets the trial's user attribute
    ``refused`` to the reason and raises ``optuna.TrialPruned`` (the trial ends PRUNED, see the module
    docstring for why not FAIL). With ask/tell, catch :class:`PointRefused` and
    ``study.tell(trial, state=TrialState.PRUNED)`` instead."""
    import optuna

    try:
        return sample_point(space, trial, info)
    except PointRefused as refusal:
        trial.set_user_attr("refused", refusal.reason)
        raise optuna.TrialPruned(refusal.reason) from None


def _prod(shape: tuple[int, ...]) -> int:
    return math.prod(shape) if shape else 1


def estimate_flops(report: SpecReport) -> int:
    """Multiply-adds of one sample's forward pass, approximately: every weight times the positions
    it is applied at (conv: output pixels; linear/recurrent/attention: time steps), plus attention's
    T²·dim score and mix products, plus one operation per output element of weight-free layers."""
    total = 0
    for row in report.rows:
        out, params = row.output_shape, row.params
        if row.kind in ("conv1d", "conv2d"):
            total += params * _prod(out[1:])
        elif row.kind in ("linear", "lstm", "gru") or (row.kind == "residual" and len(out) < 3):
            total += params * _prod(row.input_shape[:-1] if row.kind != "linear" else out[:-1])
        elif row.kind == "residual":
            total += params * _prod(out[1:]) + _prod(out)
        elif row.kind in ("attention", "transformer_block"):
            steps, dim = out[0], out[-1]
            total += params * steps + 2 * steps * steps * dim
        elif row.kind not in ("embedding", "positional"):
            total += _prod(out)
    positions = _prod(report.feature_shape[:-1])
    return total + report.head_params * positions


SIZE_CAP = 10**18  # space_size saturates here: nested depth parameters would otherwise need huge ints


def space_size(space: SearchSpace) -> tuple[int, bool]:
    """(discrete points, has continuous parameters). Conditional options add, independent parameters
    multiply, repeat sums over its counts; a tied name counts once (at its first place). Continuous
    parameters count 1 in the discrete size. The count saturates at :data:`SIZE_CAP`."""
    seen: set[str] = set()
    continuous = False

    def count(node: Any, suffix: str) -> int:
        nonlocal continuous
        if isinstance(node, _ParamNode):
            name = node.param.name + suffix
            if node.param.kind != "choice":
                size = node.param.size()
                continuous = continuous or size is None
                first = name not in seen
                seen.add(name)
                return (size or 1) if first else 1
            first = name not in seen
            seen.add(name)
            branches = [count(option, suffix) for option in node.param.options]
            return min(sum(branches), SIZE_CAP) if first else max(branches)
        if isinstance(node, _RepeatNode):
            counts = _count_values(node.count)
            if node.share:
                inner = count(node.layers, suffix)
                return min((len(counts) - (0 in counts)) * inner + (0 in counts), SIZE_CAP) if counts else 1
            # every copy has the same shape, its own names: count copy 0 once (linear in nesting)
            inner = count(node.layers, f"{suffix}[0]") if max(counts, default=0) > 0 else 1
            return _sum_of_powers(inner, counts)
        if isinstance(node, dict):
            return _capped_product(count(v, suffix) for v in node.values())
        if isinstance(node, tuple):
            return _capped_product(count(v, suffix) for v in node[0])
        return 1

    size = count(space.template, "")
    return size, continuous


def _capped_product(factors: Iterable[int]) -> int:
    total = 1
    for factor in factors:
        total = min(total * factor, SIZE_CAP)
    return total


def _sum_of_powers(base: int, exponents: list[int]) -> int:
    """``sum(base**n for n in exponents)``, saturating at :data:`SIZE_CAP` without big powers."""
    total = 0
    for n in exponents:
        power = 1
        for _ in range(n):
            power *= base
            if power >= SIZE_CAP:
                return SIZE_CAP
        total = min(total + power, SIZE_CAP)
    return max(total, 1)


def _count_values(count: int | _ParamNode) -> list[int]:
    if isinstance(count, int):
        return [count]
    p = count.param
    if p.kind == "choice":
        return [int(v) for v in p.choices if isinstance(v, int)]
    return list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))


def grid_search_space(space: SearchSpace) -> dict[str, list[Any]]:
    """Every parameter name with its values, for ``optuna.samplers.GridSampler`` (names of
    ``share: false`` copies expanded up to the largest count). Raises :class:`SpecError` for a
    continuous parameter, which a grid cannot hold."""
    grid: dict[str, list[Any]] = {}
    issues: list[SpecIssue] = []
    budget = _Budget("a grid visits")  # nested share: false copies multiply the nodes to visit

    def visit(node: Any, suffix: str) -> None:
        budget.take(1)
        if len(grid) > MAX_GRID_NAMES:
            raise SpecError.single("spec", f"a grid over more than {MAX_GRID_NAMES:,} parameters")
        if isinstance(node, _ParamNode):
            p = node.param
            if p.size() is None:
                issues.append(SpecIssue(p.path, f"parameter {p.name!r} is continuous: a grid needs step"))
                return
            grid[p.name + suffix] = list(p.choices) if p.kind == "choice" else _range_values(p)
            for option in p.options:
                visit(option, suffix)
        elif isinstance(node, _RepeatNode):
            visit(node.count, suffix)
            copies = (
                [""] if node.share else [f"[{i}]" for i in range(max(_count_values(node.count), default=0))]
            )
            for copy in copies:
                visit(node.layers, suffix + copy)
        elif isinstance(node, dict):
            for value in node.values():
                visit(value, suffix)
        elif isinstance(node, tuple):
            for value in node[0]:
                visit(value, suffix)

    visit(space.template, "")
    if issues:
        raise SpecError(issues)
    return grid


def grid_size(space: SearchSpace) -> int:
    """The number of points ``GridSampler`` enumerates over :func:`grid_search_space` (the product
    of every name's values, so a conditional parameter multiplies too; saturates at
    :data:`SIZE_CAP`). Raises :class:`SpecError` as :func:`grid_search_space` does."""
    return _capped_product(len(values) for values in grid_search_space(space).values())


def _range_values(p: Param) -> list[Any]:
    if p.kind == "int":
        return list(range(int(p.low), int(p.high) + 1, int(p.step or 1)))
    assert p.step is not None
    return [p.low + i * p.step for i in range(p.size() or 0)]


@dataclass(frozen=True)
class SpaceSurvey:
    """What :func:`survey_space` found: the space's size and a seeded sample's outcome."""

    size: int
    continuous: bool
    samples: int
    seed: int
    valid: int
    refusals: dict[str, int]  # first reason of each refused point -> how many points
    num_params: tuple[int, int] | None  # (smallest, largest) over the valid points


def survey_space(space: SearchSpace, info: DatasetInfo, samples: int = 20, seed: int = 0) -> SpaceSurvey:
    """Sample ``samples`` points with Optuna's ``RandomSampler(seed)`` on an in-memory study (refused
    points are told PRUNED, valid ones COMPLETE) and count the valid ones and the refusal reasons."""
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    refusals: dict[str, int] = {}
    sizes: list[int] = []
    for _ in range(samples):
        trial = study.ask()
        try:
            point = sample_point(space, trial, info)
        except PointRefused as refusal:
            first = str(refusal.issues[0])
            refusals[first] = refusals.get(first, 0) + 1
            study.tell(trial, state=optuna.trial.TrialState.PRUNED)
            continue
        sizes.append(point.report.num_params)
        study.tell(trial, float(point.report.num_params))
    size, continuous = space_size(space)
    span = (min(sizes), max(sizes)) if sizes else None
    ordered = dict(sorted(refusals.items(), key=lambda item: (-item[1], item[0])))
    return SpaceSurvey(size, continuous, samples, seed, len(sizes), ordered, span)

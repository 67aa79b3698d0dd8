"""Reading a space from YAML text or plain data, validated in full, with errors that point at the file's line.

``loads`` refuses a malformed space (bad YAML, unknown model or hyperparameter, low > high, a log range that does
not stay above 0, empty choices, a default outside its distribution, a combination the model rejects) with
``SpaceError`` naming the file and the line at fault. A value is checked by the model's own declaration
(``Hyperparameters.check_value``), the one rule the models and the spaces share. Files are read with
``yaml.SafeLoader`` only.
"""

from __future__ import annotations

import itertools
import math
from typing import Any

import yaml

from alphatune.models.registry import ModelSpec, get_spec
from alphatune.spaces.distributions import KINDS, Conditional, Distribution, Param
from alphatune.spaces.space import Space

# Hyperparameters a space may not hold, and what decides them instead.
DECIDED_BY_THE_SEARCH = {"metric": "the search's --metric decides which epoch every trial keeps"}
# Combinations of categorical choices checked against the model's own rules (e.g. d_model % nhead).
MAX_CHECKED_COMBINATIONS = 4096


class SpaceError(ValueError):
    """A space file is malformed; the message starts with ``file:line:``."""


def loads(text: str, source: str = "<string>", model: str | None = None) -> Space:
    """Validate a space given as YAML text; ``source`` names it in error messages."""
    loader = yaml.SafeLoader(text)
    try:
        root = loader.get_single_node()
        data = loader.construct_document(root) if root is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise SpaceError(f"{where}: invalid YAML: {problem}") from None
    finally:
        loader.dispose()
    return _Parser(source, root).space(data, model)


def load_dict(data: dict[str, Any], source: str = "<dict>") -> Space:
    """Validate a space given as plain data (as ``Space.to_dict`` writes it); errors name ``source``."""
    return _Parser(source, None).space(data, None)


class _Parser:
    """Turns the YAML document into a ``Space``, keeping the node tree to point at lines in errors."""

    def __init__(self, source: str, root: yaml.Node | None) -> None:
        self.source = source
        self.root = root

    # -- error locations -------------------------------------------------------------------------------------
    def line(self, *keys: Any) -> int | None:
        """1-based line of the value at ``keys`` (or of the deepest node found on the way)."""
        node = self.root
        line = node.start_mark.line + 1 if node is not None else None
        for key in keys:
            if not isinstance(node, yaml.MappingNode):
                break
            for key_node, value_node in node.value:
                if key_node.value == str(key):
                    node = value_node
                    line = key_node.start_mark.line + 1
                    break
            else:
                break
        return line

    def error(self, keys: tuple[Any, ...], message: str) -> SpaceError:
        line = self.line(*keys)
        where = f"{self.source}:{line}" if line is not None else self.source
        return SpaceError(f"{where}: {message}")

    # -- the document ----------------------------------------------------------------------------------------
    def space(self, data: Any, expected_model: str | None) -> Space:
        if not isinstance(data, dict):
            raise self.error((), f"a space file must be a mapping with model, params, fixed, default; got "
                                 f"{type(data).__name__}")
        unknown = set(data) - {"model", "params", "fixed", "default"}
        if unknown:
            key = sorted(map(str, unknown))[0]
            raise self.error((key,), f"unknown top-level key {key!r}; expected model, params, fixed, default")
        if "model" not in data:
            raise self.error((), "missing 'model'")
        try:
            spec = get_spec(data["model"])
        except ValueError as exc:
            raise self.error(("model",), str(exc)) from None
        if expected_model is not None and spec.name != get_spec(expected_model).name:
            raise self.error(("model",), f"this space is for {spec.name!r}, not {expected_model!r}")
        allowed = set(spec.hyperparameters_class().names())

        raw_params = data.get("params")
        if not isinstance(raw_params, dict) or not raw_params:
            raise self.error(("params",), "'params' must be a non-empty mapping of hyperparameter → distribution")
        params: dict[str, Param] = {}
        for name, raw in raw_params.items():
            self.check_name(("params", name), name, spec, allowed)
            if isinstance(raw, dict) and "given" in raw:
                params[name] = self.conditional(spec, name, raw, params)
            else:
                params[name] = self.distribution(spec, ("params", name), name, raw)

        fixed = data.get("fixed") or {}
        if not isinstance(fixed, dict):
            raise self.error(("fixed",), "'fixed' must be a mapping of hyperparameter → value")
        for name, value in fixed.items():
            self.check_name(("fixed", name), name, spec, allowed)
            if name in params:
                raise self.error(("fixed", name), f"{name!r} is both searched (params) and fixed")
            self.check_value(spec, ("fixed", name), name, value)

        default = self.default(spec, data.get("default"), params)
        point = {**fixed, **default}
        try:
            spec.hyperparameters(point)
        except ValueError as exc:
            raise self.error(("default",), f"the default point is invalid: {exc}") from None
        self.check_combinations(spec, params, point)
        return Space(model=spec.name, params=params, fixed=dict(fixed), default=point, source=self.source)

    def check_name(self, keys: tuple[Any, ...], name: Any, spec: ModelSpec, allowed: set[str]) -> None:
        if name in DECIDED_BY_THE_SEARCH:
            raise self.error(keys, f"{name!r} is not part of a space: {DECIDED_BY_THE_SEARCH[name]}; remove it")
        if not isinstance(name, str) or name not in allowed:
            known = sorted(allowed - set(DECIDED_BY_THE_SEARCH))
            raise self.error(keys, f"{spec.name} has no hyperparameter {name!r}; known: {', '.join(known)}")

    def check_value(self, spec: ModelSpec, keys: tuple[Any, ...], name: str, value: Any) -> None:
        """One value against the model's own declaration of ``name`` (``Hyperparameters.check_value``); rules across
        hyperparameters, such as ``d_model % nhead``, are checked on whole points in ``check_combinations``."""
        try:
            spec.hyperparameters_class().check_value(name, value)
        except ValueError as error:
            raise self.error(keys, str(error)) from None

    def distribution(self, spec: ModelSpec, keys: tuple[Any, ...], name: str, raw: Any) -> Distribution:
        if not isinstance(raw, dict):
            raise self.error(keys, f"{name}: a distribution must be a mapping with 'type' (one of {', '.join(KINDS)})")
        kind = raw.get("type")
        if kind not in KINDS:
            raise self.error(keys, f"{name}: type must be one of {', '.join(KINDS)}; got {kind!r}")
        allowed_keys = {"type", "choices"} if kind == "categorical" else {"type", "low", "high", "log", "step"}
        extra = set(raw) - allowed_keys
        if extra:
            raise self.error(keys, f"{name}: unexpected key(s) {sorted(map(str, extra))} for a {kind} distribution")
        if kind == "categorical":
            choices = raw.get("choices")
            if not isinstance(choices, list) or not choices:
                raise self.error(keys, f"{name}: 'choices' must be a non-empty list")
            for choice in choices:
                if not isinstance(choice, (int, float, str, bool)):
                    raise self.error(keys, f"{name}: choice {choice!r} must be a number, string or boolean")
                self.check_value(spec, keys, name, choice)
            if len(set(map(repr, choices))) != len(choices):
                raise self.error(keys, f"{name}: duplicate choices in {choices}")
            return Distribution(kind="categorical", choices=tuple(choices))

        number = int if kind == "int" else (int, float)
        bounds = {}
        for key in ("low", "high"):
            value = raw.get(key)
            if isinstance(value, bool) or not isinstance(value, number) or not math.isfinite(value):
                raise self.error(keys, f"{name}: '{key}' must be a finite {'integer' if kind == 'int' else 'number'};"
                                       f" got {value!r}")
            bounds[key] = value if kind == "int" else float(value)
        low, high = bounds["low"], bounds["high"]
        if low > high:
            raise self.error(keys, f"{name}: low {low} > high {high}")
        log = raw.get("log", False)
        if not isinstance(log, bool):
            raise self.error(keys, f"{name}: 'log' must be true or false; got {log!r}")
        if log and low <= 0:
            raise self.error(keys, f"{name}: a log range needs low > 0; got low {low}")
        step = raw.get("step")
        if step is not None:
            if isinstance(step, bool) or not isinstance(step, number) or not step > 0:
                raise self.error(keys, f"{name}: 'step' must be a positive {kind}; got {step!r}")
            if log:
                raise self.error(keys, f"{name}: 'step' cannot be combined with 'log' (Optuna refuses it)")
            count = (high - low) / step
            if not math.isclose(count, round(count), abs_tol=1e-9):
                raise self.error(keys, f"{name}: high - low ({high} - {low}) is not a multiple of step {step}")
        for value in (low, high):
            self.check_value(spec, keys, name, value)
        return Distribution(kind=kind, low=low, high=high, log=log, step=step)

    def conditional(self, spec: ModelSpec, name: str, raw: dict[str, Any], earlier: dict[str, Param]) -> Conditional:
        keys = ("params", name)
        extra = set(raw) - {"given", "cases"}
        if extra:
            raise self.error(keys, f"{name}: a conditional takes 'given' and 'cases' only; got {sorted(map(str, extra))}")
        parent_name = raw["given"]
        parent = earlier.get(parent_name)
        if not isinstance(parent, Distribution) or parent.kind != "categorical":
            raise self.error(keys, f"{name}: 'given: {parent_name}' must name a categorical hyperparameter listed "
                                   f"above it in params")
        cases = raw.get("cases")
        if not isinstance(cases, dict) or not cases:
            raise self.error(keys, f"{name}: 'cases' must map each value of {parent_name} to a distribution")
        ordered = []
        for choice in parent.choices:
            matches = [value for value in cases if type(value) is type(choice) and value == choice]
            if not matches:
                raise self.error(keys, f"{name}: no case for {parent_name}={choice!r}")
            ordered.append((choice, self.distribution(spec, (*keys, "cases", matches[0]), name, cases[matches[0]])))
        stray = [value for value in cases if not parent.contains(value)]
        if stray:
            raise self.error((*keys, "cases", stray[0]), f"{name}: case {stray[0]!r} is not a choice of {parent_name}")
        return Conditional(given=parent_name, cases=tuple(ordered))

    def default(self, spec: ModelSpec, raw: Any, params: dict[str, Param]) -> dict[str, Any]:
        """The searched part of the first point: the file's ``default``, else Qlib's values from the registry."""
        if raw is None:
            raw = {}
        if not isinstance(raw, dict):
            raise self.error(("default",), "'default' must be a mapping of searched hyperparameter → value")
        for name in raw:
            if name not in params:
                raise self.error(("default", name), f"default names {name!r}, which is not searched (params)")
        default: dict[str, Any] = {}
        for name, param in params.items():
            keys = ("default", name) if name in raw else ("params", name)
            if name in raw:
                value = raw[name]
            else:
                value = spec.hyperparameters_class().field_info(name)["default"]
                if value is None:
                    raise self.error(("default",), f"no default for {name!r}: Qlib's config has none; give one")
            dist = param.case(default[param.given]) if isinstance(param, Conditional) else param
            if isinstance(value, int) and not isinstance(value, bool) and dist.kind == "float":
                value = float(value)
            if not dist.contains(value):
                raise self.error(keys, f"default {name}={value!r} is outside its distribution {dist.describe()}")
            default[name] = value
        return default

    def check_combinations(self, spec: ModelSpec, params: dict[str, Param], point: dict[str, Any]) -> None:
        """Every combination of categorical choices (and each end of each range, one at a time) must be a valid
        model, e.g. ``nhead`` dividing ``d_model``; a conditional contributes its cases."""
        categorical = [name for name, p in params.items()
                       if isinstance(p, Distribution) and p.kind == "categorical"
                       and not any(isinstance(c, Conditional) and c.given == name for c in params.values())]
        parents = {p.given for p in params.values() if isinstance(p, Conditional)}
        groups: list[list[dict[str, Any]]] = [[{name: choice} for choice in params[name].choices]
                                              for name in categorical]
        for parent in parents:
            children = {name: p for name, p in params.items() if isinstance(p, Conditional) and p.given == parent}
            options = []
            for choice in params[parent].choices:
                child_values = [[(child, v) for v in p.case(choice).corners()] for child, p in children.items()]
                options += [{parent: choice, **dict(combo)} for combo in itertools.product(*child_values)]
            groups.append(options)
        if math.prod(len(group) for group in groups) <= MAX_CHECKED_COMBINATIONS:
            for combo in itertools.product(*groups):
                merged = {k: v for part in combo for k, v in part.items()}
                self.check_point(spec, point, merged)
        for name, param in params.items():
            if isinstance(param, Distribution) and param.kind != "categorical":
                for value in param.corners():
                    self.check_point(spec, point, {name: value})

    def check_point(self, spec: ModelSpec, point: dict[str, Any], values: dict[str, Any]) -> None:
        try:
            spec.hyperparameters({**point, **values})
        except ValueError as exc:
            name = next(iter(values))
            raise self.error(("params", name), f"the combination {values} is invalid: {exc}") from None

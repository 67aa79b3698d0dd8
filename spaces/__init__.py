"""Search spaces: one YAML file per model, validated in full before a search starts.

A space file looks like::

    model: transformer
    params:                       # what the search varies
      lr: {type: float, low: 1.0e-5, high: 1.0e-3, log: true}
      num_layers: {type: int, low: 1, high: 4}
      d_model: {type: categorical, choices: [32, 48, 64]}
      nhead:                      # conditional: one distribution per value of a categorical parent
        given: d_model
        cases:
          32: {type: categorical, choices: [1, 2, 4]}
          48: {type: categorical, choices: [1, 2, 3, 6]}
          64: {type: categorical, choices: [1, 2, 4, 8]}
    fixed: {n_epochs: 100, early_stop: 5}   # held constant (Qlib's names)
    default: {lr: 1.0e-4, ...}    # the first point evaluated; missing keys come from Qlib's Alpha360 config

``metric`` (which validation metric picks a trial's epoch) is not part of a space: the search's ``--metric``
decides it for every trial. ``load`` refuses a malformed file (bad YAML, unknown model or hyperparameter, low > high, a log range that
does not stay above 0, empty choices, a default outside its distribution, a combination the model rejects)
with ``SpaceError`` naming the file and the line at fault. Files are read with ``yaml.SafeLoader`` only.
"""

from __future__ import annotations

if __name__ != "alphatune.spaces":  # a checkout's folder imported as a bare `spaces`: not ours to be
    from alphatune._folders import hand_over
    hand_over(__name__, __file__)

import itertools
import math
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Union

import yaml

from alphatune.models.registry import ModelSpec, get_spec

SPACES_DIR = Path(__file__).resolve().parent
KINDS = ("int", "float", "categorical")
# Hyperparameters a space may not hold, and what decides them instead.
DECIDED_BY_THE_SEARCH = {"metric": "the search's --metric decides which epoch every trial keeps"}
# Combinations of categorical choices checked against the model's own rules (e.g. d_model % nhead).
MAX_CHECKED_COMBINATIONS = 4096

Scalar = Union[int, float, str, bool]


class SpaceError(ValueError):
    """A space file is malformed; the message starts with ``file:line:``."""


@dataclass(frozen=True)
class Distribution:
    """One hyperparameter's distribution: ``int``/``float`` over ``[low, high]`` (linear or log) or categorical."""

    kind: str
    low: float | int | None = None
    high: float | int | None = None
    log: bool = False
    step: float | int | None = None
    choices: tuple[Scalar, ...] = ()

    def contains(self, value: Any) -> bool:
        """Whether ``value`` is a point of this distribution (type included: 2.0 is not an int choice)."""
        if self.kind == "categorical":
            return any(type(value) is type(choice) and value == choice for choice in self.choices)
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if self.kind == "int" and not isinstance(value, int):
            return False
        if not self.low <= value <= self.high:
            return False
        if self.step is not None:
            offset = (value - self.low) / self.step
            return math.isclose(offset, round(offset), abs_tol=1e-9)
        return True

    def suggest(self, trial: Any, name: str) -> Scalar:
        """Ask an ``optuna.Trial`` (or Ray's wrapper around one) for a value under Optuna name ``name``."""
        if self.kind == "int":
            return trial.suggest_int(name, self.low, self.high, step=self.step or 1, log=self.log)
        if self.kind == "float":
            return trial.suggest_float(name, self.low, self.high, step=self.step, log=self.log)
        return trial.suggest_categorical(name, list(self.choices))

    def corners(self) -> tuple[Scalar, ...]:
        """Values worth checking against the model's rules: every choice, or both ends of a range."""
        return self.choices if self.kind == "categorical" else (self.low, self.high)

    def describe(self) -> str:
        if self.kind == "categorical":
            return "{" + ", ".join(map(str, self.choices)) + "}"
        scale = " log" if self.log else ""
        step = f" step {self.step}" if self.step is not None else ""
        return f"{self.kind} [{self.low}, {self.high}]{scale}{step}"


@dataclass(frozen=True)
class Conditional:
    """A hyperparameter whose distribution depends on the value of a categorical parent (``given``)."""

    given: str
    cases: tuple[tuple[Scalar, Distribution], ...]

    def case(self, parent_value: Any) -> Distribution:
        for value, distribution in self.cases:
            if type(value) is type(parent_value) and value == parent_value:
                return distribution
        raise KeyError(parent_value)

    @staticmethod
    def optuna_name(name: str, parent: str, parent_value: Any) -> str:
        """The Optuna parameter name of one case: each case is its own parameter, so every Optuna parameter keeps
        one fixed distribution (Optuna refuses a categorical whose choices change between trials)."""
        return f"{name}|{parent}={parent_value}"

    def describe(self) -> str:
        return f"given {self.given}: " + "; ".join(f"{value} → {dist.describe()}" for value, dist in self.cases)


Param = Union[Distribution, Conditional]


@dataclass(frozen=True)
class Space:
    """A validated search space for one model.

    ``params``: searched hyperparameters (name → ``Distribution`` or ``Conditional``), in file order, parents
    before their conditionals. ``fixed``: hyperparameters held constant. ``default``: the full flat
    hyperparameter dict of the first point evaluated (``fixed`` plus the searched values, Qlib's published
    Alpha360 config for the shipped spaces). ``source``: the file it was read from.
    """

    model: str
    params: dict[str, Param]
    fixed: dict[str, Any]
    default: dict[str, Any]
    source: str

    def suggest(self, trial: Any) -> dict[str, Any]:
        """Define-by-run: draw every searched hyperparameter from ``trial``; returns them by their own names."""
        values: dict[str, Any] = {}
        for name, param in self.params.items():
            if isinstance(param, Conditional):
                parent_value = values[param.given]
                values[name] = param.case(parent_value).suggest(
                    trial, Conditional.optuna_name(name, param.given, parent_value))
            else:
                values[name] = param.suggest(trial, name)
        return values

    def optuna_params(self, hyperparameters: dict[str, Any]) -> dict[str, Any]:
        """The Optuna parameter names and values of a point (to enqueue it as a trial)."""
        out: dict[str, Any] = {}
        for name, param in self.params.items():
            if isinstance(param, Conditional):
                out[Conditional.optuna_name(name, param.given, hyperparameters[param.given])] = hyperparameters[name]
            else:
                out[name] = hyperparameters[name]
        return out

    def hyperparameters(self, config: dict[str, Any]) -> dict[str, Any]:
        """The flat hyperparameter dict of a trial: ``fixed`` plus the searched values from a trial ``config``.

        ``config`` is what Tune hands a trial: the searched values by name (plus Optuna's names of conditional
        cases, which are ignored). A searched name missing from ``config`` raises ``KeyError``.
        """
        missing = [name for name in self.params if name not in config]
        if missing:
            raise KeyError(f"trial config lacks searched hyperparameters {missing}; got {sorted(config)}")
        return {**self.fixed, **{name: config[name] for name in self.params}}

    def to_dict(self) -> dict[str, Any]:
        """The space as plain YAML-ready data (``load_dict`` reads it back)."""
        def dist(d: Distribution) -> dict[str, Any]:
            if d.kind == "categorical":
                return {"type": "categorical", "choices": list(d.choices)}
            out: dict[str, Any] = {"type": d.kind, "low": d.low, "high": d.high}
            if d.log:
                out["log"] = True
            if d.step is not None:
                out["step"] = d.step
            return out

        params: dict[str, Any] = {}
        for name, param in self.params.items():
            if isinstance(param, Conditional):
                params[name] = {"given": param.given, "cases": {value: dist(d) for value, d in param.cases}}
            else:
                params[name] = dist(param)
        return {"model": self.model, "params": params, "fixed": dict(self.fixed),
                "default": {name: self.default[name] for name in self.params}}

    def describe(self) -> str:
        """A few human-readable lines: one per searched hyperparameter with its default."""
        return "\n".join(f"  {name}: {param.describe()} (default {self.default[name]!r})"
                         for name, param in self.params.items())


def available() -> list[str]:
    """The models with a shipped space file."""
    return sorted(path.stem for path in SPACES_DIR.glob("*.yaml"))


def path_of(name_or_path: str | Path) -> Path:
    """The file behind ``name_or_path``: a shipped model name (``lstm``) or a path to a YAML file."""
    text = str(name_or_path)
    shipped = SPACES_DIR / f"{text.lower()}.yaml"
    if "/" not in text and not text.endswith((".yaml", ".yml")) and shipped.is_file():
        return shipped
    path = Path(text).expanduser()
    if not path.is_file():
        raise SpaceError(f"{text}: no such space file (shipped spaces: {', '.join(available())})")
    return path


def load(name_or_path: str | Path, model: str | None = None) -> Space:
    """Read and validate a space: a shipped model name or a YAML path.

    ``model``, when given, must match the file's ``model`` (a user file passed for ``--model lstm`` must be an
    LSTM space). Raises ``SpaceError`` (``file:line: what is wrong``) on any problem.
    """
    path = path_of(name_or_path)
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise SpaceError(f"{path}: cannot read space file: {exc}") from None
    return loads(text, source=str(path), model=model)


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
        """One value against the model's declaration of ``name`` (its range or choices, ``models.hyperparameters``);
        rules across hyperparameters, such as ``d_model % nhead``, are checked on whole points in
        ``check_combinations``."""
        info = spec.hyperparameters_class().field_info(name)
        if info["choices"] is not None:
            if value not in info["choices"]:
                raise self.error(keys, f"{spec.name}: {name}={value!r} is not one of "
                                       f"{', '.join(map(str, info['choices']))}")
            return
        low, high = info["low"], info["high"]
        integral = info["kind"] == "int"
        if (isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value)
                or (integral and not float(value).is_integer())):
            raise self.error(keys, f"{spec.name}: {name}={value!r} must be {'an integer' if integral else 'a number'}"
                                   f" in [{low}, {high}]")
        if not low <= value <= high:
            raise self.error(keys, f"{spec.name}: {name}={value!r} is out of range [{low}, {high}]")

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

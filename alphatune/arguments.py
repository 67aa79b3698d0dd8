"""A command line derived from an options dataclass: each option, its default and its help written once.

A field declared with ``option(default, help, ...)`` becomes one argparse argument (``--max-epochs`` for
``max_epochs`` unless ``flag`` says otherwise) whose help ends with its default, so ``--help`` shows every
default. ``from_arguments`` turns the parsed namespace back into the dataclass. Parsing a token only converts
it (``parse``); checking values is the dataclass's own job (one place), so a bad value gets the same message
from the command line and from Python.
"""

from __future__ import annotations

import argparse
import dataclasses
from collections.abc import Callable
from typing import Any


def option(default: Any, help: str, *, flag: str | None = None, aliases: tuple[str, ...] = (),
           parse: Callable[[str], Any] | None = None, choices: tuple[Any, ...] | None = None,
           metavar: str | None = None, action: str | None = None, show: str | Callable[[Any], str] | None = None,
           collect: Callable[[list[Any]], Any] | None = None, record: bool = True) -> Any:
    """A dataclass field that is also a command-line option.

    ``flag`` (default ``--field-name``; without dashes, a positional argument) and ``aliases`` (other flags for the
    same option) are how the command line spells it. ``parse`` converts one token; ``action`` is ``"store_true"``,
    ``"store_false"`` (the flag turns a True default off), ``"both"`` (``--x`` and ``--no-x``) or ``"append"``
    (repeatable; ``collect`` turns the list into the field's value). ``show`` is how the default reads in
    ``--help`` (a text, or a function of the default); a dataclass may say it otherwise for its own command with a
    ``SHOWN`` class attribute (field name → text). ``record``: whether the option belongs to what a run records
    (``--resume`` says what to do, not what was searched). Mutable defaults are copied per instance.
    """
    metadata = {"help": help, "flag": flag, "aliases": aliases, "parse": parse, "choices": choices,
                "metavar": metavar, "action": action, "show": show, "collect": collect, "record": record}
    if isinstance(default, (list, dict, set)):
        return dataclasses.field(default_factory=lambda: type(default)(default), metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def _default(field: dataclasses.Field) -> Any:
    if field.default is not dataclasses.MISSING:
        return field.default
    return field.default_factory()  # type: ignore[misc]


def flag_of(field: dataclasses.Field) -> str:
    """The command-line flag of an option field (a ``flag`` without dashes names a positional argument)."""
    return field.metadata.get("flag") or "--" + field.name.replace("_", "-")


def _declared_by(cls: type, name: str) -> type:
    """The class in ``cls``'s MRO whose body declares field ``name``."""
    return next(klass for klass in cls.__mro__ if name in klass.__dict__.get("__annotations__", {}))


def add_arguments(parser: argparse.ArgumentParser, cls: type) -> None:
    """One argument per ``option`` field of the dataclass ``cls``: its own fields first, in declaration order, then
    those it inherits, each base's in a group of its own titled by the base's ``GROUP``."""
    shown_here = getattr(cls, "SHOWN", {})
    groups: dict[type, Any] = {cls: parser}
    fields = sorted(dataclasses.fields(cls), key=lambda field: cls.__mro__.index(_declared_by(cls, field.name)))
    for field in fields:
        if "help" not in field.metadata:
            continue
        owner = _declared_by(cls, field.name)
        if owner not in groups:
            groups[owner] = parser.add_argument_group(getattr(owner, "GROUP", owner.__name__))
        target = groups[owner]
        meta, default = field.metadata, _default(field)
        show = shown_here.get(field.name, meta["show"])
        shown = show(default) if callable(show) else show if show is not None else (
            "off" if meta["action"] == "store_true" else "on" if meta["action"] == "store_false" else str(default))
        flag = flag_of(field)
        if not flag.startswith("-"):  # positional: required, no default to show
            target.add_argument(flag, metavar=meta["metavar"] or flag, help=meta["help"],
                                **({"type": meta["parse"]} if meta["parse"] else {}))
            continue
        kwargs: dict[str, Any] = {"dest": field.name, "help": f"{meta['help']} (default: {shown})"}
        if meta["action"] in ("store_true", "store_false"):
            kwargs.update(action=meta["action"], default=default)
        elif meta["action"] == "both":  # --x / --no-x, the default possibly None (decided elsewhere)
            kwargs.update(action=argparse.BooleanOptionalAction, default=default)
        else:
            kwargs.update(default=argparse.SUPPRESS if meta["action"] == "append" else default,
                          metavar=meta["metavar"])
            if meta["action"] == "append":
                kwargs["action"] = "append"
            if meta["parse"] is not None:
                kwargs["type"] = meta["parse"]
            elif isinstance(default, (int, float)) and not isinstance(default, bool):
                kwargs["type"] = type(default)
            if meta["choices"] is not None:
                kwargs["choices"] = meta["choices"]
        target.add_argument(flag, *meta["aliases"], **kwargs)


def from_arguments(cls: type, namespace: argparse.Namespace) -> Any:
    """An instance of ``cls`` from the parsed options (options not on the command line keep their defaults)."""
    values = {}
    for field in dataclasses.fields(cls):
        name = flag_of(field) if not flag_of(field).startswith("-") else field.name
        if "help" not in field.metadata or not hasattr(namespace, name):
            continue
        value = getattr(namespace, name)
        collect = field.metadata["collect"]
        values[field.name] = collect(value) if collect is not None and isinstance(value, list) else value
    return cls(**values)


def recorded(options: Any) -> dict[str, Any]:
    """The options a run records (``dataclasses.asdict`` without the fields declared ``record=False``)."""
    return {field.name: value for field, value in zip(dataclasses.fields(options), dataclasses.asdict(options).values())
            if field.metadata.get("record", True)}

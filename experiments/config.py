"""Typed experiment configs: sections composed into one frozen dataclass per experiment.

An experiment declares its config as a frozen dataclass whose fields are sections
(`DataConfig`, `TrainConfig`, `RunHParams` or `GridHParams`, each with its defaults for
that experiment) and fields of its own:

    @dataclasses.dataclass(frozen=True)
    class Task2(ExperimentConfig):
        data: DataConfig = DataConfig(digits=(2, 3))
        train: TrainConfig = TrainConfig(model="logistic", num_epochs=50)
        hparams: RunHParams = RunHParams(lr=0.05)
        checkpoint: str = ""
        FIXED: ClassVar = ("model", "num_classes", "hidden", "activation")

Its flags are the fields of its sections and its own fields, flattened (`--lr`, `--digits`,
`--num_epochs`, `--checkpoint`); names listed in `FIXED` belong to the protocol and are no
flags. `make_config(name, overrides)` builds the whole config before any data is loaded: each
field is checked once, by the dataclass that owns it, which raises `ConfigError(field, value,
allowed)` (the launcher adds the `--`). Each section's `unread()` names the fields its own
settings leave unread (`patience` without `early_stopping`); a given flag among them is a
`UsageError`, as is a flag the experiment does not take. config.json is `to_dict()`: one
object per section (`{"data": {...}, "train": {...}, "hparams": {...}}`) beside the
experiment's own fields.

Experiments are registered here, in light modules (`experiments/*_config.py`: configs and
registrations, no JAX, no matplotlib); the function that runs one is named "module:function"
and imported only when the experiment runs, so `--list` and `--help` import neither.
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import importlib
import importlib.util
import re
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

from jaxlr.data.config import DataConfig
from jaxlr.engine.config import (
    ConfigError,
    GridHParams,
    RunHParams,
    TrainConfig,
    check_digits,
    format_value,
)

SECTION_TYPES = (DataConfig, TrainConfig, RunHParams, GridHParams)


class UsageError(ValueError):
    """A command-line problem that is not one field's value (unknown flag, no experiment)."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Base of every experiment config: composed sections and checks across them."""

    FIXED: ClassVar[tuple[str, ...]] = ()

    def __post_init__(self):
        train = getattr(self, "train", None)
        data = getattr(self, "data", None)
        if train is not None and data is not None:
            if train.model == "logistic":
                check_digits("digits", data.digits, count=2)
            else:
                check_digits("digits", data.digits, count=0)

    @classmethod
    def protocol_defaults(cls, overrides: dict) -> dict:
        """Flat defaults that depend on other given values (e.g. a sweep's model)."""
        return {}

    def sections(self) -> dict[str, Any]:
        """The config's sections by field name (`data`, `train`, `hparams`)."""
        return {
            f.name: getattr(self, f.name)
            for f in dataclasses.fields(self)
            if dataclasses.is_dataclass(getattr(self, f.name))
        }

    def unread(self) -> dict[str, tuple[str, tuple]]:
        """Fields (flat names) that these settings leave unread: name -> (the field that
        decides, its values with which the name is read). The union of the sections'
        `unread()`, and the one rule across sections: the momentum is read only by the
        momentum optimizer. An experiment adds its own fields' rules, or removes a name it
        reads whatever a section's settings say."""
        out: dict[str, tuple[str, tuple]] = {}
        for section in self.sections().values():
            out.update(section.unread())
        train = getattr(self, "train", None)
        if train is not None and train.optimizer != "momentum":
            out["momentum"] = ("optimizer", ("momentum",))
        return out

    def flat(self) -> dict[str, Any]:
        """Every field, sections flattened (flag name -> value)."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                for g in dataclasses.fields(value):
                    out[g.name] = getattr(value, g.name)
            else:
                out[f.name] = value
        return out

    def to_dict(self) -> dict[str, Any]:
        """The content of config.json: one dict per section, then the experiment's own fields."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = dataclasses.asdict(value) if dataclasses.is_dataclass(value) else value
        return out


class FlagField(NamedTuple):
    """One flag of an experiment: its section (None: the experiment's own), kind, default."""

    name: str
    section: str | None
    kind: str  # bool, int, float, str, ints, floats, optint
    default: Any
    help: str


def _kind(tp) -> str:
    if tp is bool:
        return "bool"
    if tp is int:
        return "int"
    if tp is float:
        return "float"
    if tp is str:
        return "str"
    origin, args = typing.get_origin(tp), typing.get_args(tp)
    if origin is tuple and args and args[-1] is Ellipsis:
        return {int: "ints", float: "floats", str: "strs"}[args[0]]
    if args and set(args) == {int, type(None)}:
        return "optint"
    if args and set(args) == {str, type(None)}:
        return "str"
    raise TypeError(f"config field type {tp!r} has no flag kind")


@functools.cache
def _docs(cls) -> dict[str, str]:
    """Field -> help text from the "Attributes:" section of a dataclass docstring."""
    doc = cls.__doc__ or ""
    out, name = {}, None
    in_attrs = False
    for line in doc.splitlines():
        if line.strip() == "Attributes:":
            in_attrs = True
            continue
        if not in_attrs:
            continue
        m = re.match(r"^\s{4,6}(\w+):\s*(.*)$", line)
        if m:
            name = m.group(1)
            out[name] = m.group(2)
        elif name and line.strip():
            out[name] += " " + line.strip()
        elif not line.strip() and name:
            name = None
    return out


@functools.cache
def flag_fields(cls) -> dict[str, FlagField]:
    """The flags of experiment config class `cls` (sections flattened, FIXED left out)."""
    out: dict[str, FlagField] = {}
    hints = typing.get_type_hints(cls)
    defaults = cls()
    for f in dataclasses.fields(cls):
        tp = hints[f.name]
        if isinstance(tp, type) and tp in SECTION_TYPES:
            section = getattr(defaults, f.name)
            shints = typing.get_type_hints(tp)
            docs = _docs(tp)
            for g in dataclasses.fields(tp):
                if g.name in cls.FIXED:
                    continue
                if g.name in out:
                    raise TypeError(f"{cls.__name__}: field {g.name} defined twice")
                out[g.name] = FlagField(
                    g.name,
                    f.name,
                    _kind(shints[g.name]),
                    getattr(section, g.name),
                    docs.get(g.name, ""),
                )
        elif f.name not in cls.FIXED:
            out[f.name] = FlagField(
                f.name, None, _kind(tp), getattr(defaults, f.name), _docs(cls).get(f.name, "")
            )
    return out


def parse_value(field: FlagField, text: str | list[str]) -> Any:
    """A flag's text (or the texts of a repeated flag) as the field's type."""
    if field.kind == "bool":
        return bool(text)
    if isinstance(text, list):
        text = ",".join(text) if field.kind in ("ints", "floats", "strs") else text[-1]
    text = str(text).strip()
    if field.kind == "str":
        return text
    if field.kind == "optint":
        if text.lower() == "all":
            return None
        return _parse_int(field.name, text, "a whole number >= 1 or 'all'")
    if field.kind == "int":
        return _parse_int(field.name, text, "a whole number")
    if field.kind == "float":
        return _parse_float(field.name, text)
    items = [s.strip() for s in text.split(",")] if text else []
    if any(not s for s in items):
        raise ConfigError(field.name, text, "has an empty entry in the comma-separated list")
    if field.kind == "ints":
        return tuple(_parse_int(field.name, s, "comma-separated whole numbers") for s in items)
    if field.kind == "floats":
        return tuple(_parse_float(field.name, s) for s in items)
    return tuple(items)


def _parse_int(name: str, text: str, allowed: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise ConfigError(name, text, f"is not {allowed}") from None


def _parse_float(name: str, text: str) -> float:
    try:
        return float(text)
    except ValueError:
        raise ConfigError(name, text, "is not a number") from None


@dataclasses.dataclass(frozen=True)
class Experiment:
    """A registered experiment. `run` names its function as "module:function"; `fn` imports
    it (the experiment modules import JAX and matplotlib), `doc` reads its docstring from the
    module's source without importing it."""

    name: str
    run: str
    config_cls: type
    list_args: str  # extra arguments of the launch command that --list prints
    headline: tuple[str, ...]  # metrics keys (dotted for nested) of the end-of-run summary
    smoke: dict  # overrides of a seconds-long smoke run (launcher flag --smoke)

    @functools.cached_property
    def fn(self) -> Callable:
        module, _, func = self.run.partition(":")
        return getattr(importlib.import_module(module), func)

    @functools.cached_property
    def doc(self) -> str:
        module, _, func = self.run.partition(":")
        return _function_doc(module, func)


@functools.cache
def _function_doc(module: str, func: str) -> str:
    spec = importlib.util.find_spec(module)
    tree = ast.parse(Path(spec.origin).read_text(), filename=spec.origin)
    for node in tree.body:
        if isinstance(node, ast.FunctionDef) and node.name == func:
            return (ast.get_docstring(node) or "").strip()
    raise TypeError(f"{module} has no function {func}")


EXPERIMENTS: dict[str, Experiment] = {}


def register(
    name: str,
    config_cls: type,
    run: str,
    *,
    list_args: str = "",
    headline: tuple[str, ...] = (),
    smoke: dict | None = None,
) -> Experiment:
    """Registers experiment `name`: its config class and the function that runs it.

    Args:
      name: the experiment's name (`--experiment=name`).
      config_cls: its config class (an `ExperimentConfig` dataclass).
      run: "module:function" of `fn(cfg, run) -> metrics`, imported when the experiment runs.
      list_args: arguments besides --experiment and --workdir of the command --list prints.
      headline: metrics keys of the summary printed at the end of a run.
      smoke: overrides that shrink the run to seconds (few examples, few epochs), for
        `--smoke` and the end-to-end tests; flags given on the command line still win.
    """
    flag_fields(config_cls)  # a bad field type fails at import, not at launch
    smoke_ = dict(smoke or {})
    unknown = set(smoke_) - set(flag_fields(config_cls))
    if unknown:
        raise TypeError(f"experiment {name}: smoke overrides of no flag {sorted(unknown)}")
    exp = Experiment(name, run, config_cls, list_args, tuple(headline), smoke_)
    EXPERIMENTS[name] = exp
    return exp


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise UsageError(
            f"--experiment={name}: unknown experiment; valid: {', '.join(sorted(EXPERIMENTS))}"
        )
    return EXPERIMENTS[name]


def not_a_flag(name: str, exp: Experiment) -> UsageError:
    """The error for `--name`, which experiment `exp` does not take: a field its protocol
    fixes, another experiment's flag, or a misspelling (with the closest flag)."""
    import difflib

    cls = exp.config_cls
    if name in cls.FIXED:
        value = cls().flat().get(name)
        return UsageError(
            f"--{name}: experiment {exp.name} fixes it to {format_value(value)} (its protocol)"
        )
    help_ = f"(see --experiment={exp.name} --help)"
    others = sorted(e.name for e in EXPERIMENTS.values() if name in flag_fields(e.config_cls))
    if others:
        shown = ", ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return UsageError(f"--{name}: not a flag of {exp.name}, but of {shown} {help_}")
    close = difflib.get_close_matches(name, [*flag_fields(cls), *LAUNCHER_FLAGS], n=1)
    if close:
        return UsageError(f"--{name}: unknown flag for {exp.name}; did you mean --{close[0]}?")
    return UsageError(f"--{name}: unknown flag for {exp.name} {help_}")


# The launcher's own flags (experiments/main.py), for the spelling suggestions above.
LAUNCHER_FLAGS = ("experiment", "workdir", "list", "compilation_cache", "smoke", "help")


def make_config(name: str, overrides: dict | None = None):
    """The validated config of experiment `name` with `overrides` (flat field -> value).

    Values may be typed (tests, notebooks) or strings as on the command line.

    Raises:
      ConfigError: an invalid value (one line naming the flag).
      UsageError: a field the experiment does not read.
    """
    exp = get_experiment(name)
    cls = exp.config_cls
    typed = _typed(exp, overrides)
    merged = {**cls.protocol_defaults(typed), **typed}
    cfg = _build(cls, merged)
    _check_unread(cfg, set(typed), exp)
    return cfg


def read_settings(name: str, optional: dict, overrides: dict) -> dict:
    """The settings of `optional` that experiment `name` reads beside `overrides`.

    For settings the user did not type (`--smoke`'s): one that the other settings leave
    unread (the smoke grid's `--l2` under `--search=random`) is left out instead of refused.
    A combination that is invalid anyway is returned whole, for `make_config` to refuse.
    """
    exp = get_experiment(name)
    try:
        typed = _typed(exp, {**optional, **overrides})
        cfg = _build(exp.config_cls, {**exp.config_cls.protocol_defaults(typed), **typed})
    except (ConfigError, UsageError):
        return dict(optional)
    unread = cfg.unread()
    return {k: v for k, v in optional.items() if k not in unread}


def _typed(exp: Experiment, overrides: dict | None) -> dict:
    """`overrides` as typed values (strings parsed as on the command line, lists as tuples);
    a name that is not a flag of `exp` is a UsageError."""
    fields = flag_fields(exp.config_cls)
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in fields:
            raise not_a_flag(key, exp)
    typed = {}
    for key, value in overrides.items():
        if isinstance(value, str) and fields[key].kind not in ("str",):
            value = parse_value(fields[key], value)
        elif isinstance(value, list):
            value = tuple(value)
        typed[key] = value
    return typed


def config_from_flat(name: str, flat: dict):
    """The config of experiment `name` from its config.json content (nested or flat).

    Every field is read as written (lists become tuples); fields the config does not have
    (such as "experiment") are left out. No check of flags the settings ignore: the run
    that wrote the file was checked when it started.

    Raises:
      ConfigError: a value no longer valid.
    """
    cls = get_experiment(name).config_cls
    fields = flag_fields(cls)
    # config.json nests the sections (`ExperimentConfig.to_dict`): one level of fields.
    nested = {k: v for k, v in flat.items() if isinstance(v, dict)}
    flat = {k: v for k, v in flat.items() if not isinstance(v, dict)}
    for section in nested.values():
        flat.update(section)
    values = {
        k: tuple(v) if isinstance(v, list) else v
        for k, v in flat.items()
        if k in fields or k in cls().flat()
    }
    return _build(cls, values)


def _build(cls, values: dict):
    defaults = cls()
    kwargs = {}
    for f in dataclasses.fields(cls):
        current = getattr(defaults, f.name)
        if dataclasses.is_dataclass(current):
            sub = {
                g.name: values[g.name]
                for g in dataclasses.fields(current)
                if g.name in values and g.name not in cls.FIXED
            }
            kwargs[f.name] = dataclasses.replace(current, **sub) if sub else current
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def _check_unread(cfg, given: set, exp: Experiment) -> None:
    """A given flag that the config's settings leave unread is an error naming why."""
    unread, flat = cfg.unread(), cfg.flat()
    for name in sorted(given & set(unread)):
        dep, values = unread[name]
        want = " or ".join(f"--{dep}={format_value(v)}" for v in values)
        raise UsageError(
            f"--{name}: experiment {exp.name} ignores it with --{dep}="
            f"{format_value(flat[dep])}; it is read only with {want}"
        )


def launch_command(exp: Experiment, workdir: str | None = None) -> str:
    """The command that runs `exp` with its defaults (what --list prints)."""
    workdir = workdir or f"runs/{exp.name}"
    extra = f" {exp.list_args}" if exp.list_args else ""
    return f"python -m experiments.main --experiment={exp.name} --workdir={workdir}{extra}"

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
flags. `make_config(name, overrides)` builds and validates the whole config before any data
is loaded; every problem is one `ConfigError` line naming the flag, the value and what is
allowed. A flag that the experiment does not read is a `ConfigError` naming the experiment and
its flags; so is a flag that the chosen settings ignore (`--patience` without
`--early_stopping`).
"""

from __future__ import annotations

import dataclasses
import functools
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
    check_train_values,
    format_value,
)

SECTION_TYPES = (DataConfig, TrainConfig, RunHParams, GridHParams)

# Flags that only some settings read: given on the command line with other settings, they are
# an error (the value would be ignored). name -> (field it depends on, values that read it).
CONDITIONAL = {
    "momentum": [("optimizer", ("momentum",)), ("search", ("grid",))],
    "lr": ("search", ("grid",)),
    "l2": ("search", ("grid",)),
    "seeds": ("search", ("grid",)),
    "num_samples": ("search", ("random",)),
    "lr_range": ("search", ("random",)),
    "l2_range": ("search", ("random",)),
    "momentum_range": [("search", ("random",)), ("optimizer", ("momentum",))],
    "search_seed": ("search", ("random",)),
    "rung_epochs": ("prune", ("halving",)),
    "keep_fraction": ("prune", ("halving",)),
    "patience": ("early_stopping", (True,)),
    "anneal_steps": ("schedule", ("anneal", "exponential")),
    "decay_rate": ("schedule", ("exponential",)),
    "init_std": ("init", ("normal",)),
    "hidden": ("model", ("mlp",)),
    "activation": ("model", ("mlp",)),
    "num_classes": ("model", ("softmax", "mlp")),
    "num_val": ("split", ("holdout",)),
    "num_test": ("split", ("holdout",)),
}


class UsageError(ValueError):
    """A command-line problem that is not one field's value (unknown flag, no experiment)."""


@dataclasses.dataclass(frozen=True)
class ExperimentConfig:
    """Base of every experiment config: composed sections and checks across them."""

    FIXED: ClassVar[tuple[str, ...]] = ()
    # Fields in CONDITIONAL that this experiment reads whatever the settings.
    ALWAYS_READ: ClassVar[tuple[str, ...]] = ()

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

    def flat(self) -> dict[str, Any]:
        """Every field, sections flattened: the content of config.json."""
        out = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if dataclasses.is_dataclass(value):
                for g in dataclasses.fields(value):
                    out[g.name] = getattr(value, g.name)
            else:
                out[f.name] = value
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


class Experiment(NamedTuple):
    name: str
    fn: Callable
    config_cls: type
    doc: str
    list_args: str  # extra arguments of the launch command that --list prints
    headline: tuple[str, ...]  # metrics keys (dotted for nested) of the end-of-run summary
    smoke: dict  # overrides of a seconds-long smoke run (launcher flag --smoke)


EXPERIMENTS: dict[str, Experiment] = {}


def register(
    name: str,
    config_cls: type,
    *,
    list_args: str = "",
    headline: tuple[str, ...] = (),
    smoke: dict | None = None,
) -> Callable:
    """Decorator: registers `fn(cfg, run) -> metrics` as experiment `name`.

    Args:
      name: the experiment's name (`--experiment=name`).
      config_cls: its config class (an `ExperimentConfig` dataclass).
      list_args: arguments besides --experiment and --workdir of the command --list prints.
      headline: metrics keys of the summary printed at the end of a run.
      smoke: overrides that shrink the run to seconds (few examples, few epochs), for
        `--smoke` and the end-to-end tests; flags given on the command line still win.
    """

    def wrap(fn):
        flag_fields(config_cls)  # a bad field type fails at import, not at launch
        doc = (fn.__doc__ or "").strip()
        smoke_ = dict(smoke or {})
        unknown = set(smoke_) - set(flag_fields(config_cls))
        if unknown:
            raise TypeError(f"experiment {name}: smoke overrides of no flag {sorted(unknown)}")
        EXPERIMENTS[name] = Experiment(
            name, fn, config_cls, doc, list_args, tuple(headline), smoke_
        )
        return fn

    return wrap


def get_experiment(name: str) -> Experiment:
    if name not in EXPERIMENTS:
        raise UsageError(
            f"--experiment={name}: unknown experiment; valid: {', '.join(sorted(EXPERIMENTS))}"
        )
    return EXPERIMENTS[name]


def _unread(name: str, exp: Experiment) -> UsageError:
    """The error for flag `name`, which experiment `exp` does not take."""
    fields = ", ".join(sorted(flag_fields(exp.config_cls)))
    cls = exp.config_cls
    if name in cls.FIXED:
        value = cls().flat().get(name)
        return UsageError(
            f"--{name}: experiment {exp.name} fixes it to {format_value(value)} (its protocol); "
            f"its flags: {fields}"
        )
    return UsageError(f"--{name}: experiment {exp.name} does not read it; its flags: {fields}")


def make_config(name: str, overrides: dict | None = None):
    """The validated config of experiment `name` with `overrides` (flat field -> value).

    Values may be typed (tests, notebooks) or strings as on the command line.

    Raises:
      ConfigError: an invalid value (one line naming the flag).
      UsageError: a field the experiment does not read.
    """
    exp = get_experiment(name)
    cls = exp.config_cls
    fields = flag_fields(cls)
    overrides = dict(overrides or {})
    for key in overrides:
        if key not in fields:
            raise _unread(key, exp)
    typed = {}
    for key, value in overrides.items():
        if isinstance(value, str) and fields[key].kind not in ("str",):
            value = parse_value(fields[key], value)
        elif isinstance(value, list):
            value = tuple(value)
        typed[key] = value
    merged = {**cls.protocol_defaults(typed), **typed}
    cfg = _build(cls, merged)
    _check_conditional(cfg, set(typed), exp)
    return cfg


def config_from_flat(name: str, flat: dict):
    """The config of experiment `name` from its config.json content (`ExperimentConfig.flat`).

    Every field is read as written (lists become tuples); fields the config does not have
    (such as "experiment") are left out. No check of flags the settings ignore: the run
    that wrote the file was checked when it started.

    Raises:
      ConfigError: a value no longer valid.
    """
    cls = get_experiment(name).config_cls
    fields = flag_fields(cls)
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
            if not sub:
                kwargs[f.name] = current
                continue
            if isinstance(current, TrainConfig):
                check_train_values({**dataclasses.asdict(current), **sub})
                try:
                    kwargs[f.name] = dataclasses.replace(current, **sub)
                except ConfigError:
                    raise
                except (TypeError, ValueError) as err:
                    key = next(iter(sub))
                    raise ConfigError(key, sub[key], str(err)) from None
            else:
                kwargs[f.name] = dataclasses.replace(current, **sub)
        elif f.name in values:
            kwargs[f.name] = values[f.name]
    return cls(**kwargs)


def _check_conditional(cfg, given: set, exp: Experiment) -> None:
    flat = cfg.flat()
    for name in sorted(given):
        if name not in CONDITIONAL or name in cfg.ALWAYS_READ:
            continue
        rules = CONDITIONAL[name]
        for dep, values in [rules] if isinstance(rules, tuple) else rules:
            if dep in flat and flat[dep] not in values:
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


def resolve_path(path: str, base: Path) -> Path:
    """`path` as given, or relative to `base` when it is relative."""
    p = Path(path).expanduser()
    return p if p.is_absolute() else base / p

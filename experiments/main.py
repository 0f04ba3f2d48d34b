r"""Launches a jaxlr experiment; the only place in jaxlr that defines command-line flags.

    python -m experiments.main --experiment=NAME --workdir=DIR [--data_dir=...] [--FIELD=VALUE ...]

Every field of the flat experiment config (`experiments.common.default_config()`: the
`TrainConfig` fields plus data, split and hyper-parameter fields) is a flag; only the flags
given on the command line override the experiment's defaults. Sequence fields (`lr`, `l2`,
`momentum`, `hidden`, `digits`) take repeated flags or comma lists: `--lr=0.01 --lr=0.1` or
`--lr=0.01,0.1`. `--list` prints the experiments with their launch commands. Float64 is JAX's
own flag: `--jax_enable_x64 --dtype=float64`.
"""

from __future__ import annotations

import logging
import sys

import jax
from absl import app, flags
from absl import logging as absl_logging

from experiments import registry  # noqa: F401  (registers the experiments)
from experiments.common import EXPERIMENTS, config_types, default_config, run_experiment

FLAGS = flags.FLAGS
flags.DEFINE_string("experiment", None, "Experiment to run (see --list).")
flags.DEFINE_string("workdir", None, "Folder for config.json, metrics.json, figures, report.md.")
flags.DEFINE_bool("list", False, "List the experiments with their launch commands and exit.")

_SEQUENCE_FIELDS: dict[str, type] = {}


def _define_config_flags() -> None:
    for name, typ in config_types().items():
        default = default_config()[name]
        help_ = f"Config field {name} (experiment default applies when not given)."
        if typ is tuple:
            elem = type(default[0]) if default else int
            _SEQUENCE_FIELDS[name] = elem
            flags.DEFINE_multi_string(name, None, help_ + " Repeat or comma-separate.")
        elif typ is bool:
            flags.DEFINE_bool(name, None, help_)
        elif typ is int:
            flags.DEFINE_integer(name, None, help_)
        elif typ is float:
            flags.DEFINE_float(name, None, help_)
        else:
            flags.DEFINE_string(name, None, help_)


_define_config_flags()


def _overrides() -> dict:
    out = {}
    for name in config_types():
        value = FLAGS[name].value
        if value is None:
            continue
        if name in _SEQUENCE_FIELDS:
            elem = _SEQUENCE_FIELDS[name]
            items = [s.strip() for v in value for s in str(v).split(",") if s.strip()]
            try:
                value = tuple(elem(s) for s in items)
            except ValueError as err:
                raise app.UsageError(f"--{name}: {err}") from err
        out[name] = value
    return out


def _listing() -> str:
    lines = ["experiments:"]
    for name, exp in sorted(EXPERIMENTS.items()):
        first = exp.doc.splitlines()[0] if exp.doc else ""
        lines.append(f"  {name:28s} {first}")
        lines.append(f"      python -m experiments.main --experiment={name} --workdir=runs/{name}")
    return "\n".join(lines)


def main(argv):
    if len(argv) > 1:
        raise app.UsageError(f"unexpected arguments {argv[1:]}")
    if FLAGS.list:
        print(_listing())
        return 0
    if not FLAGS.experiment:
        raise app.UsageError("--experiment is required.\n" + _listing())
    if FLAGS.experiment not in EXPERIMENTS:
        raise app.UsageError(
            f"unknown experiment {FLAGS.experiment!r}; valid: {sorted(EXPERIMENTS)}"
        )
    if not FLAGS.workdir:
        raise app.UsageError("--workdir is required (the folder the outputs go to)")
    absl_logging.set_verbosity(absl_logging.INFO)
    logging.getLogger("jaxlr").setLevel(logging.INFO)
    try:
        metrics = run_experiment(FLAGS.experiment, FLAGS.workdir, _overrides())
    except ValueError as err:
        raise app.UsageError(str(err)) from err
    summary = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
    print(f"{FLAGS.experiment}: {summary}")
    return 0


def _parse_flags(argv):
    try:
        return FLAGS(argv)
    except flags.Error as err:
        valid = sorted(list(config_types()) + ["experiment", "workdir", "list"])
        sys.stderr.write(f"error: {err}\nvalid flags: {', '.join('--' + v for v in valid)}\n")
        sys.exit(2)


def run_main():
    jax.config.config_with_absl()
    app.run(main, flags_parser=_parse_flags)


if __name__ == "__main__":
    run_main()

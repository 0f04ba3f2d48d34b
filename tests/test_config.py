"""The config layer: one validation per field, per-section unread fields, nested config.json,
flag errors, and a launcher whose --list and --help import neither JAX nor matplotlib."""

import dataclasses
import json
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import main as launcher
from experiments import registry  # noqa: F401  (registers the experiments)
from experiments.common import checkpoint_file
from experiments.config import EXPERIMENTS, UsageError, flag_fields, make_config
from jaxlr.data.config import DataConfig, user_datasets
from jaxlr.engine import config as jconfig
from jaxlr.engine.config import ConfigError, TrainConfig

REPO = Path(__file__).resolve().parents[1]


def _outcome(build):
    """('ok', None) or ('error', (field, message)) of building a config."""
    try:
        build()
    except ConfigError as err:
        return "error", (err.field, str(err))
    return "ok", None


def _text(value) -> str:
    """A value as the command line spells it."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, tuple):
        return ",".join(map(str, value))
    return str(value)


# (field, command-line text, typed value, other TrainConfig fields it needs to be read).
EDGES = [
    ("diverge_factor", "inf", float("inf"), {}),  # documented: the factor rule off
    ("diverge_factor", "1", 1.0, {}),
    ("diverge_factor", "nan", float("nan"), {}),
    ("diverge_factor", "1.5", 1.5, {}),
    ("decay_rate", "1", 1.0, {"schedule": "exponential"}),
    ("decay_rate", "0", 0.0, {"schedule": "exponential"}),
    ("decay_rate", "1.5", 1.5, {"schedule": "exponential"}),
    ("anneal_steps", "0", 0.0, {"schedule": "anneal"}),
    ("anneal_steps", "inf", float("inf"), {"schedule": "anneal"}),
    ("init_std", "0", 0.0, {"init": "normal"}),
    ("init_std", "0.1", 0.1, {"init": "normal"}),
    ("eval_every", "0", 0, {}),
    ("eval_every", "-1", -1, {}),
    ("train_eval_size", "0", 0, {}),
    ("batch_size", "1", 1, {}),
    ("batch_size", "0", 0, {}),
    ("num_epochs", "0", 0, {}),
    ("epochs_per_call", "0", 0, {}),
    ("patience", "0", 0, {"early_stopping": True}),
    ("num_classes", "0", 0, {"model": "softmax"}),
    ("num_classes", "1", 1, {"model": "softmax"}),
    ("hidden", "0", (0,), {"model": "mlp"}),
    ("hidden", "", (), {"model": "mlp"}),
    ("hidden", "8", (8,), {"model": "mlp"}),
    ("init", "uniform", "uniform", {}),
    ("activation", "gelu", "gelu", {"model": "mlp", "hidden": (4,)}),
    ("bias", "none", "none", {}),
    ("l2_convention", "mean", "mean", {}),
    ("optimizer", "adamw", "adamw", {}),
]


@pytest.mark.parametrize("field,text,value,needs", EDGES, ids=[f"{f}={t}" for f, t, _, _ in EDGES])
def test_the_dataclass_and_the_command_line_agree(field, text, value, needs):
    """Each field is checked once, by TrainConfig: the library and the launcher say the same."""
    direct = _outcome(lambda: TrainConfig(**{"model": "softmax", **needs, field: value}))
    flags = {k: _text(v) for k, v in {"model": "softmax", **needs, field: text}.items()}
    cli = _outcome(lambda: make_config("sweep", flags))
    assert direct == cli, (direct, cli)
    if direct[0] == "error":
        field_named, message = direct[1]
        assert not message.startswith("--") and message.startswith(f"{field_named}=")


def test_diverge_factor_inf_turns_the_rule_off_everywhere(tmp_path):
    assert TrainConfig(diverge_factor=float("inf")).diverge_factor == float("inf")
    parsed = launcher.parse(
        ["main", "--experiment=tdt4265_task2", f"--workdir={tmp_path}", "--diverge_factor=inf"]
    )
    assert parsed.config.train.diverge_factor == float("inf")


def test_the_launcher_adds_the_dashes(tmp_path, monkeypatch, capsys):
    with pytest.raises(ConfigError) as err:
        make_config("tdt4265_task2", {"lr": "-1"})
    assert str(err.value) == "lr=-1: must be a finite number > 0"
    monkeypatch.setattr(
        sys, "argv", ["main", "--experiment=tdt4265_task2", "--workdir=w", "--lr=-1"]
    )
    with pytest.raises(SystemExit) as exit_:
        launcher.run_main()
    assert exit_.value.code == 2
    assert capsys.readouterr().err == "error: --lr=-1: must be a finite number > 0\n"


def test_no_second_copy_of_the_train_checks():
    assert not hasattr(jconfig, "check_train_values")
    import experiments.config as econfig

    assert not hasattr(econfig, "CONDITIONAL")
    assert not any(hasattr(e.config_cls, "ALWAYS_READ") for e in EXPERIMENTS.values())


def test_choice_lists_agree_with_the_core():
    from jaxlr.core import losses, models

    assert jconfig.ACTIVATIONS == tuple(models.ACTIVATIONS)
    assert jconfig.INITS == ("auto", *models.INITS)
    assert jconfig.BIAS_CONVENTIONS == models.BIAS_CONVENTIONS
    assert jconfig.L2_CONVENTIONS == losses.L2_CONVENTIONS


def test_fake_is_accepted_but_not_offered():
    assert DataConfig(dataset="fake").dataset == "fake"
    assert "fake" not in user_datasets() and "mnist" in user_datasets()
    with pytest.raises(ConfigError) as err:
        DataConfig(dataset="cifar10")
    assert err.value.allowed == "must be one of mnist, fashion_mnist"


# ---------------------------------------------------------------------------------------------
# Fields that a section's own settings leave unread.


def test_each_section_says_what_its_settings_leave_unread():
    assert set(TrainConfig().unread()) == {
        "hidden", "activation", "num_classes", "init_std", "anneal_steps", "decay_rate",
        "patience",
    }  # fmt: skip
    assert TrainConfig(early_stopping=True).unread().get("patience") is None
    assert TrainConfig(schedule="exponential").unread().get("decay_rate") is None
    assert TrainConfig(model="mlp", hidden=(4,)).unread().get("hidden") is None
    assert TrainConfig(schedule="anneal").unread()["decay_rate"] == ("schedule", ("exponential",))
    assert set(DataConfig().unread()) == {"num_val", "num_test"}
    assert DataConfig(split="holdout").unread() == {}


def test_experiments_state_their_own_unread_fields():
    sweep = make_config("sweep", {"search": "random"})
    assert sweep.unread()["lr"] == ("search", ("grid",))
    assert "num_samples" not in sweep.unread() and "rung_epochs" in sweep.unread()
    # The momentum is read only by the momentum optimizer (a rule across two sections).
    assert make_config("tdt4265_task2").unread()["momentum"] == ("optimizer", ("momentum",))
    assert "momentum" not in make_config("tdt4265_task2", {"optimizer": "momentum"}).unread()
    # hw3_mlp (split full) tests on the first num_test test images: it reads num_test.
    mlp = make_config("hw3_mlp")
    assert mlp.data.split == "full" and "num_test" not in mlp.unread()
    assert "num_test" in mlp.data.unread()
    # lr_annealing's annealed run reads anneal_steps although the schedule field is constant.
    assert "anneal_steps" not in make_config("lr_annealing").unread()
    with pytest.raises(UsageError, match=r"^--num_samples: experiment sweep ignores it with "):
        make_config("sweep", {"num_samples": 8})


# ---------------------------------------------------------------------------------------------
# config.json and the checkpoint flags.


def test_config_json_is_nested_by_section():
    for name, exp in EXPERIMENTS.items():
        cfg = make_config(name)
        d = cfg.to_dict()
        json.dumps(d)  # JSON-ready after tuples become lists (tables.jsonable does it)
        fields = flag_fields(exp.config_cls)
        for section, value in cfg.sections().items():
            assert d[section] == dataclasses.asdict(value)
        for key, f in fields.items():
            where = d[f.section] if f.section else d
            assert where[key] == cfg.flat()[key], (name, key)


def test_checkpoint_means_one_thing(tmp_path):
    # --checkpoint is the run's own resume folder, relative to the current folder.
    from experiments.common import RunDir

    run = RunDir(tmp_path / "out", tmp_path / "wd")
    assert checkpoint_file("ckpt", run, None) == Path("ckpt") / "run.npz"
    assert checkpoint_file("", run, "x") is None
    readers = sorted(n for n, e in EXPERIMENTS.items() if "checkpoint" in flag_fields(e.config_cls))
    assert "hw3_misclassified" not in readers and "sweep" in readers
    # hw3_misclassified's input is --grid_checkpoint.
    with pytest.raises(UsageError, match="^--checkpoint: not a flag of hw3_misclassified, but of"):
        make_config("hw3_misclassified", {"checkpoint": "x.npz"})
    cfg = make_config("hw3_misclassified", {"grid_checkpoint": "x.npz"})
    assert cfg.grid_checkpoint == "x.npz"


# ---------------------------------------------------------------------------------------------
# Flag errors.


def _error(argv) -> str:
    try:
        launcher.parse(argv)
    except (UsageError, ConfigError) as err:
        return str(err)
    raise AssertionError(f"{argv} was accepted")


def test_a_misspelled_flag_suggests_the_flag_meant():
    err = _error(["main", "--experiment=tdt4265_task2", "--workdir=w", "--num_epoch=3"])
    assert err == "--num_epoch: unknown flag for tdt4265_task2; did you mean --num_epochs?"
    err = _error(["main", "--experiment=sweep", "--workdir=w", "--smok"])
    assert err.endswith("did you mean --smoke?")


def test_another_experiments_flag_names_the_experiment():
    err = _error(["main", "--experiment=tdt4265_task2", "--workdir=w", "--batch_sizes=1,32"])
    assert err.startswith("--batch_sizes: not a flag of tdt4265_task2, but of ")
    assert "hw3_online_vs_minibatch" in err and "--help" in err
    err = _error(["main", "--experiment=tdt4265_task2", "--workdir=w", "--nooptimum"])
    assert err.startswith("--optimum: not a flag of tdt4265_task2, but of ") and "sweep" in err


def test_a_flag_given_twice_is_refused():
    for args in (["--lr=0.1", "--lr=0.2"], ["--shuffle", "--noshuffle"], ["--lr=0.1", "--lr", "1"]):
        err = _error(["main", "--experiment=sweep", "--workdir=w", *args])
        assert err.startswith(f"--{args[0][2:].split('=')[0]}: given twice"), err
    err = _error(["main", "--experiment=sweep", "--workdir=w", "--smoke", "--smoke"])
    assert err.startswith("--smoke: given twice")


@pytest.mark.parametrize("name", sorted(EXPERIMENTS))
def test_every_flag_error_is_one_short_line(name):
    bad = ["--num_epoch=3", "--no_such_flag=1", "--batch_sizes=1", "--grid_checkpoint=x",
           "--model=nope", "--checkpoint=a", "--lr=x", "--noshuffle"]  # fmt: skip
    for flag in bad:
        try:
            launcher.parse(["main", f"--experiment={name}", "--workdir=w", flag])
        except (UsageError, ConfigError) as err:
            text = f"--{err}" if isinstance(err, ConfigError) else str(err)  # as printed
            assert "\n" not in text and len(text) < 200, text
            base = flag[2:].split("=")[0]
            base = "shuffle" if base == "noshuffle" else base
            assert text.startswith(f"--{base}"), text


# ---------------------------------------------------------------------------------------------
# Start-up: --list and --help import only the configs.

_PROBE = """
import runpy, sys
sys.argv = ["main", *sys.argv[1:]]
try:
    runpy.run_module("experiments.main", run_name="__main__")
except SystemExit as e:
    assert e.code == 0, e.code
heavy = ("matplotlib", "jax", "experiments.tdt4265", "experiments.hw3_mlp",
         "experiments.hw3_online_vs_minibatch", "experiments.hw3_logreg_grid",
         "experiments.hw3_misclassified", "experiments.tdt4265_task4",
         "experiments.tdt4265_annealing")
heavy = [m for m in heavy if m in sys.modules]
print("HEAVY", heavy, file=sys.stderr)
"""


@pytest.mark.parametrize("args", ["--list", "--help", "--experiment=hw3_logreg_grid --help"])
def test_list_and_help_import_neither_jax_nor_matplotlib(args):
    r = subprocess.run(
        [sys.executable, "-c", _PROBE, *shlex.split(args)],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert "HEAVY []" in r.stderr, r.stderr[-2000:]
    assert "python -m experiments.main" in r.stdout


def test_docs_read_from_the_source_are_the_functions_docs():
    import inspect

    for exp in EXPERIMENTS.values():
        assert exp.doc == inspect.cleandoc(exp.fn.__doc__), exp.name

"""The launcher's command line: invalid values, flags an experiment does not read, --list, --help.

Table-driven: every bad command line must end with exit code 2, exactly one line on stderr
that names the flag, and nothing written. Most cases run in-process (`experiments.main.main`
raising its usage error, as `run_main` turns it into exit code 2); a few run as whole
processes to check the exit code, the single stderr line and the absence of a traceback.
"""

import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from experiments import main as launcher
from experiments import registry  # noqa: F401  (registers the experiments)
from experiments.config import EXPERIMENTS, launch_command
from jaxlr.data import fake as jfake

REPO = Path(__file__).resolve().parents[1]

# (experiment, flags, flag named in the error). Values caught before any data is loaded.
BAD = [
    ("tdt4265_task2", "--digits=2,11", "digits"),
    ("tdt4265_task2", "--digits=4", "digits"),
    ("tdt4265_task2", "--digits=3,3", "digits"),
    ("tdt4265_task2", "--digits=2,x", "digits"),
    ("tdt4265_task2", "--lr=-1", "lr"),
    ("tdt4265_task2", "--lr=", "lr"),
    ("tdt4265_task2", "--lr=1e-400", "lr"),
    ("tdt4265_task2", "--lr=nan", "lr"),
    ("tdt4265_task2", "--lr=inf", "lr"),
    ("tdt4265_task2", "--lr=0.1,0.2", "lr"),
    ("tdt4265_task2", "--l2=-0.5", "l2"),
    ("tdt4265_task2", "--l2=nan", "l2"),
    ("tdt4265_task2", "--optimizer=momentum --momentum=1", "momentum"),
    ("tdt4265_task2", "--optimizer=momentum --momentum=-0.1", "momentum"),
    ("tdt4265_task2", "--num_train=-1", "num_train"),
    ("tdt4265_task2", "--num_train=0", "num_train"),
    ("tdt4265_task2", "--num_train=100000", "num_train"),
    ("tdt4265_task2", "--num_train=1.5", "num_train"),
    ("tdt4265_task2", "--max_examples=-5", "max_examples"),
    ("tdt4265_task2", "--max_examples=0", "max_examples"),
    ("tdt4265_task2", "--num_epochs=0", "num_epochs"),
    ("tdt4265_task2", "--batch_size=0", "batch_size"),
    ("tdt4265_task2", "--seed=-3", "seed"),
    ("tdt4265_task2", "--optimizer=adamw", "optimizer"),
    ("tdt4265_task2", "--schedule=linear", "schedule"),
    ("tdt4265_task2", "--split=random", "split"),
    ("tdt4265_task2", "--dataset=cifar10", "dataset"),
    ("tdt4265_task2", "--scale=minmax", "scale"),
    ("tdt4265_task2", "--dtype=float16", "dtype"),
    ("tdt4265_task2", "--diverge_factor=0.5", "diverge_factor"),
    ("tdt4265_task2", "--split=holdout --num_val=0", "num_val"),
    ("tdt4265_task2", "--split=holdout --num_train=55000 --num_val=10000", "num_val"),
    ("tdt4265_task2d", "--patience=0", "patience"),
    ("tdt4265_task3", "--digits=2,3", "digits"),
    ("tdt4265_task4", "--l2s=0,1", "l2s"),
    ("tdt4265_task4", "--l2s=1,1", "l2s"),
    ("tdt4265_task4", "--block_size=0", "block_size"),
    ("hw3_mlp", "--hidden=0,10", "hidden"),
    ("hw3_mlp", "--hidden=-5", "hidden"),
    ("hw3_mlp", "--activation=gelu", "activation"),
    ("hw3_mlp", "--num_train=100", "num_train"),  # split full trains on every image
    ("hw3_mlp", "--num_test=20000", "num_test"),
    ("hw3_online_vs_minibatch", "--batch_sizes=1,0", "batch_sizes"),
    ("hw3_logreg_grid", "--lr=0.1,-1", "lr"),
    ("hw3_logreg_grid", "--l2=0.01,0.01", "l2"),
    ("hw3_logreg_grid", "--num_test=0", "num_test"),
    ("hw3_misclassified", "--num_shown=21", "num_shown"),
    ("sweep", "--seeds=0", "seeds"),
    ("sweep", "--lr=", "lr"),
    ("sweep", "--model=softmax --digits=2,3", "digits"),
    ("sweep", "--model=perceptron", "model"),
    ("sweep", "--prune=halving --num_epochs=5", "rung_epochs"),  # rung_epochs 5: no rung
    ("sweep", "--prune=halving --num_epochs=4 --rung_epochs=4", "rung_epochs"),
    ("sweep", "--prune=halving --num_epochs=1 --rung_epochs=1", "prune"),
    # Flags the experiment does not read, fixes, or ignores with the other settings.
    ("tdt4265_task2", "--batch_sizes=1,32", "batch_sizes"),
    ("tdt4265_task2", "--model=softmax", "model"),
    ("tdt4265_task2", "--hidden=10", "hidden"),
    ("tdt4265_task2", "--patience=3", "patience"),
    ("tdt4265_task2", "--momentum=0.5", "momentum"),
    ("tdt4265_task2", "--decay_rate=0.5", "decay_rate"),
    ("tdt4265_task2", "--num_val=100", "num_val"),
    ("tdt4265_task2", "--no_such_flag=1", "no_such_flag"),
    ("tdt4265_task2e", "--shuffle", "shuffle"),
    ("lr_annealing", "--schedule=cosine", "schedule"),
    ("hw3_logreg_grid", "--batch_size=10", "batch_size"),
    ("hw3_misclassified", "--digits=2,3", "digits"),
]


def test_halving_without_a_rung_before_the_last_epoch_is_refused_in_words(
    tmp_path, monkeypatch, capsys
):
    argv = ["main", "--experiment=sweep", f"--workdir={tmp_path / 'wd'}", "--prune=halving"]
    code, _, err = _run_in_process(monkeypatch, capsys, [*argv, "--num_epochs=3"])
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith(
        "error: --rung_epochs=5: must be less than --num_epochs=3 with --prune=halving, i.e. 1 to "
        "2 (halving ranks the points at rung ends before the last epoch, so it would prune "
        "nothing)"
    ), err
    code, _, err = _run_in_process(monkeypatch, capsys, [*argv, "--num_epochs=1"])
    assert code == 2 and err.startswith(
        "error: --prune=halving: needs --num_epochs of at least 2, got --num_epochs=1"
    ), err
    assert not (tmp_path / "wd").exists()


def _run_in_process(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", argv)
    with pytest.raises(SystemExit) as exc:
        launcher.run_main()
    out = capsys.readouterr()
    return exc.value.code, out.out, out.err


@pytest.mark.parametrize("name,flags,flag", BAD, ids=[f"{n} {f}" for n, f, _ in BAD])
def test_bad_values_are_one_line_naming_the_flag(name, flags, flag, tmp_path, monkeypatch, capsys):
    workdir = tmp_path / "wd"
    argv = ["main", f"--experiment={name}", f"--workdir={workdir}", *shlex.split(flags)]
    code, out, err = _run_in_process(monkeypatch, capsys, argv)
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith(f"error: --{flag}"), lines[0]
    assert "Traceback" not in err and out == ""
    assert not workdir.exists(), "a refused command wrote something"


def test_errors_found_in_the_data_are_one_line_too(tmp_path, monkeypatch, capsys):
    # Only the loaded data tells how many 2s and 3s there are: still exit 2, nothing written.
    folder = jfake.write_fake_dataset(tmp_path / "fake", num_train=400, num_test=200, seed=0)
    workdir = tmp_path / "wd"
    base = ["main", "--experiment=tdt4265_task2", f"--workdir={workdir}", "--dataset=fake"]
    base += [f"--data_dir={folder}"]
    argv = [*base, "--num_train=all", "--max_examples=5000"]
    code, _, err = _run_in_process(monkeypatch, capsys, argv)
    assert code == 2 and err.count("\n") == 1 and err.startswith("error: --max_examples=5000")
    assert "at most" in err
    code, _, err = _run_in_process(monkeypatch, capsys, [*base, "--num_train=401"])
    assert code == 2 and err.startswith("error: --num_train=401"), err
    assert not (workdir / "metrics.json").exists()


def test_an_error_over_a_smoke_setting_says_it_comes_from_smoke(tmp_path, monkeypatch, capsys):
    # --smoke sets --max_examples=512 (tdt4265_task4) and --num_epochs=2 (sweep): the user never
    # typed them, so the error line says where they come from; a value the user typed is as typed.
    folder = jfake.write_fake_dataset(tmp_path / "fake", num_train=400, num_test=200, seed=0)
    data = ["--dataset=fake", f"--data_dir={folder}", f"--workdir={tmp_path / 'wd'}"]
    argv = ["main", "--experiment=tdt4265_task4", *data, "--smoke", "--num_train=10"]
    code, _, err = _run_in_process(monkeypatch, capsys, argv)
    assert code == 2 and err.count("\n") == 1, err
    assert err.startswith("error: --max_examples=512 (set by --smoke): must be at most 10"), err
    sweep = ["main", "--experiment=sweep", *data, "--smoke", "--prune=halving"]
    code, _, err = _run_in_process(monkeypatch, capsys, sweep)
    assert code == 2 and err.startswith("error: --rung_epochs=5: must be less than "), err
    assert "--num_epochs=2 (set by --smoke) with --prune=halving" in err, err
    code, _, err = _run_in_process(monkeypatch, capsys, [*sweep, "--num_epochs=2"])
    assert code == 2 and "--num_epochs=2 with" in err and "set by --smoke" not in err, err
    # Library messages name a knob as "name value": hw3_mlp's smoke train_eval_size 200.
    argv = ["main", "--experiment=hw3_mlp", *data, "--smoke", "--max_examples=100"]
    code, _, err = _run_in_process(monkeypatch, capsys, argv)
    last = err.strip().splitlines()[-1]  # after the run's log lines: refused before training
    assert code == 1 and "Traceback" not in err and "epoch 1" not in err, err
    assert last.startswith("error: fit: train_eval_size 200 (set by --smoke) is larger than"), err
    assert not (tmp_path / "wd" / "metrics.json").exists()


@pytest.mark.parametrize(
    "args,flag",
    [("--experiment=tdt4265_task2 --lr=-1", "lr"), ("--experiment=tdt4265_task2 --foo=1", "foo")],
)
def test_whole_process_exit_code_and_single_line(args, flag, tmp_path):
    workdir = tmp_path / "wd"
    cmd = [sys.executable, "-m", "experiments.main", f"--workdir={workdir}", *shlex.split(args)]
    r = subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode == 2
    assert r.stderr.strip().splitlines() == [r.stderr.strip()], r.stderr
    assert r.stderr.startswith(f"error: --{flag}") and "Traceback" not in r.stderr
    assert not workdir.exists()


def test_unknown_experiment_and_missing_flags(tmp_path, monkeypatch, capsys):
    for argv, start in [
        (["main", "--experiment=nope", f"--workdir={tmp_path}"], "error: --experiment=nope"),
        (["main", f"--workdir={tmp_path}"], "error: --experiment is required"),
        (["main", "--experiment=tdt4265_task2"], "error: --workdir is required"),
    ]:
        code, _, err = _run_in_process(monkeypatch, capsys, argv)
        assert code == 2 and err.startswith(start) and err.count("\n") == 1, err


def test_list_prints_commands_that_parse_as_printed(monkeypatch, capsys):
    code, out, _ = _run_in_process(monkeypatch, capsys, ["main", "--list"])
    assert code == 0
    commands = [ln.strip() for ln in out.splitlines() if ln.strip().startswith("python -m")]
    assert len(commands) == len(EXPERIMENTS)
    for cmd in commands:
        argv = ["main", *shlex.split(cmd)[3:]]
        parsed = launcher.parse(argv)
        assert isinstance(parsed, launcher.Parsed), cmd
    # hw3_misclassified reads the checkpoint where the listed hw3_logreg_grid command puts it.
    grid = launch_command(EXPERIMENTS["hw3_logreg_grid"])
    mis = launch_command(EXPERIMENTS["hw3_misclassified"])
    grid_workdir = shlex.split(grid)[-1].split("=", 1)[1]
    assert f"--grid_checkpoint={grid_workdir}/logreg_best.npz" in mis


def test_help_lists_the_chosen_experiments_flags_with_help(monkeypatch, capsys):
    code, out, _ = _run_in_process(
        monkeypatch, capsys, ["main", "--experiment=hw3_logreg_grid", "--help"]
    )
    assert code == 0
    assert "--lr" in out and "--block_size" in out and "learning rates" in out
    assert "--batch_sizes" not in out  # another experiment's flag
    assert "--batch_size " not in out  # fixed by the protocol (full batch)


def test_smoke_overrides_are_flags_of_their_experiment():
    for exp in EXPERIMENTS.values():
        launcher.parse(["main", f"--experiment={exp.name}", "--workdir=x", "--smoke"])


def test_smoke_leaves_out_what_the_other_settings_do_not_read():
    """The sweep's smoke grid (--lr, --l2) under --search=random was refused ("ignores it
    with --search=random") although the user typed neither; a typed one still is."""
    argv = ["main", "--experiment=sweep", "--workdir=x", "--search=random", "--smoke"]
    parsed = launcher.parse(argv)
    assert parsed.config.search == "random" and parsed.config.train.num_epochs == 2
    assert "lr" not in parsed.overrides and "l2" not in parsed.overrides
    assert parsed.overrides["max_examples"] == 256
    with pytest.raises(launcher.UsageError, match="--l2: experiment sweep ignores it"):
        launcher.parse([*argv, "--l2=0,0.1"])


@pytest.mark.parametrize("cleanup_error", [ValueError("zip left writing"), OSError(5, "I/O")])
def test_an_error_while_stopping_after_an_interrupt_is_still_the_interrupt(
    cleanup_error, monkeypatch, capsys
):
    """Cleanup code that fails after Ctrl-C (a library's `finally` finding a half-done write)
    must not turn the interrupt into a traceback or an 'error:' line with exit 1."""

    def main(argv):
        try:
            raise KeyboardInterrupt
        finally:
            raise cleanup_error

    monkeypatch.setattr(launcher, "main", main)
    code, out, err = _run_in_process(monkeypatch, capsys, ["main"])
    assert code == 130, err
    assert "Traceback" not in err and not err.startswith("error:"), err
    assert err.strip().splitlines()[-1].startswith("interrupted"), err


def test_a_bug_outside_an_interrupt_keeps_its_traceback(monkeypatch):
    def main(argv):
        raise ValueError("a bug")

    monkeypatch.setattr(launcher, "main", main)
    monkeypatch.setattr(sys, "argv", ["main"])
    with pytest.raises(ValueError, match="a bug"):
        launcher.run_main()

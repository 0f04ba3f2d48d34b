"""End-to-end tests of the TDT4265 experiments on the real MNIST files, and of the launcher.

Every experiment runs once (module cache) through `experiments.common.run_experiment` with
its registered smoke overrides (`EXPERIMENTS[name].smoke`) on the real files: a few epochs
of two or four batches, so that every step is a validation check (M <= 4 batches -> E =
max(1, M // 5) = 1) and the final numbers of the returned weights can be compared with the
last (or best) check of the history. The same experiments on fake data, which need no real
files: `tests/test_experiments.py`.
"""

import functools
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import jax
import numpy as np
import pytest
from realdata import DATA_DIR, PNG_MAGIC, needs_data

from benchmarks import numpy_baseline as nb
from experiments import registry  # noqa: F401  (registers the experiments)
from experiments.common import run_experiment
from experiments.config import EXPERIMENTS, flag_fields, make_config
from jaxlr.data.splits import load_splits
from jaxlr.engine.batches import epoch_batches
from jaxlr.engine.config import ConfigError, TrainConfig, make_hparams
from jaxlr.engine.step import Data, keys_for
from jaxlr.engine.train import fit

REPO = Path(__file__).resolve().parents[1]
NAMES = (
    "tdt4265_task2",
    "tdt4265_task2d",
    "tdt4265_task2e",
    "tdt4265_task3",
    "tdt4265_task4",
    "lr_annealing",
    "mean_images",
)


def overrides_for(name: str, **more) -> dict:
    """The experiment's smoke overrides on the real files (data_dir '' = the usual lookup)."""
    return {**EXPERIMENTS[name].smoke, "data_dir": DATA_DIR or "", **more}


@functools.cache
def _run(name: str, root: str):
    workdir = Path(root) / name
    metrics = run_experiment(name, workdir, overrides_for(name))
    return workdir, metrics


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    root = str(tmp_path_factory.mktemp("tdt4265"))
    return lambda name: _run(name, root)


def read_history(path: Path) -> list[dict]:
    lines = path.read_text().splitlines()
    return [json.loads(line) for line in lines]


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert len(data) > 2000, f"{path.name} is suspiciously small"


def check_common_files(workdir: Path, name: str, metrics: dict, pngs: list[str]) -> str:
    """config.json, metrics.json, the PNGs and report.md; returns the report text."""
    cfg = json.loads((workdir / "config.json").read_text())
    assert cfg["experiment"] == name
    fields = flag_fields(EXPERIMENTS[name].config_cls)
    for key, value in overrides_for(name).items():
        expected = list(value) if isinstance(value, tuple) else value
        section = fields[key].section
        got = cfg[section][key] if section else cfg[key]  # config.json: one object per section
        assert got == expected, f"override {key} not in config.json"
    on_disk = json.loads((workdir / "metrics.json").read_text())
    assert on_disk == json.loads(json.dumps(metrics))
    for png in pngs:
        check_png(workdir / png)
    report = (workdir / "report.md").read_text()
    assert report.startswith("# ")
    for png in pngs:
        assert f"]({png})" in report, f"report does not show {png}"
    assert not [p.name for p in workdir.iterdir() if p.name.endswith(".tmp")]
    return report


def check_run(m: dict, history: list[dict], report: str, early_stopping: bool) -> None:
    """The numbers of one run against each other and against its history."""
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        assert np.isfinite(m[key]), key
        assert f"{m[key]:.4f}" in report, f"report does not mention {key} {m[key]:.4f}"
    assert 0.0 <= m["train_accuracy"] <= 1.0 and 0.0 <= m["val_accuracy"] <= 1.0
    assert m["train_loss"] >= 0 and m["val_loss"] >= 0
    mb, e = m["steps_per_epoch"], m["eval_every"]
    assert e == max(1, mb // 5) == 1
    # One history line per step that ran, steps from 0, epochs 0-based.
    steps = [r["step"] for r in history]
    assert steps == list(range(m["steps"]))
    assert [r["epoch"] for r in history] == [s // mb for s in steps]
    checks = [r for r in history if "val_loss" in r]
    assert [r["step"] for r in checks] == [s for s in steps if s % e == 0]
    for r in checks:
        assert 0.0 <= r["val_accuracy"] <= 1.0 and 0.0 <= r["train_accuracy"] <= 1.0
    by_step = {r["step"]: r for r in checks}
    if early_stopping:
        es = m["early_stopping"]
        assert set(es) == {"stopped", "step", "epoch", "best_step", "best_epoch", "best_val_loss"}
        assert es["stopped"], "the smoke early-stopping config is meant to stop"
        assert 0 <= es["best_step"] <= es["step"]
        assert es["epoch"] == es["step"] // mb and es["best_epoch"] == es["best_step"] // mb
        assert m["steps"] == es["step"] + 1  # nothing ran after the stopping check
        val = [r["val_loss"] for r in checks]
        assert es["best_val_loss"] == pytest.approx(min(val), rel=1e-6)
        assert by_step[es["best_step"]]["val_loss"] == pytest.approx(min(val), rel=1e-6)
        # Patience 3: the last three checks brought no new minimum, the one before did.
        assert es["step"] - es["best_step"] == 3 * e
        assert str(es["step"]) in report and str(es["best_step"]) in report
        ref = by_step[es["best_step"]]  # the returned weights are the best check's
    else:
        assert "early_stopping" not in m
        ref = by_step[steps[-1]]  # the last step was a check
    assert m["val_accuracy"] == pytest.approx(ref["val_accuracy"], abs=1e-6)
    assert m["train_accuracy"] == pytest.approx(ref["train_accuracy"], abs=1e-6)
    assert m["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)


@needs_data
def test_task2(run):
    workdir, m = run("tdt4265_task2")
    report = check_common_files(workdir, "tdt4265_task2", m, ["loss.png", "accuracy.png"])
    history = read_history(workdir / "history.jsonl")
    check_run(m, history, report, early_stopping=False)
    assert m["steps"] == 2 * 2
    # Zero weights: the first batch's loss is ln 2 exactly (up to float32 rounding).
    assert history[0]["train_loss"] == pytest.approx(math.log(2.0), rel=1e-6)


@needs_data
def test_task2d_early_stopping(run):
    workdir, m = run("tdt4265_task2d")
    report = check_common_files(workdir, "tdt4265_task2d", m, ["loss.png", "accuracy.png"])
    check_run(m, read_history(workdir / "history.jsonl"), report, early_stopping=True)
    assert m["steps"] < 40 * 2  # it did stop before the last epoch


@needs_data
def test_task2e_shuffle_or_not(run):
    workdir, m = run("tdt4265_task2e")
    report = check_common_files(workdir, "tdt4265_task2e", m, ["validation.png"])
    histories = {}
    for key in ("shuffle=false", "shuffle=true"):
        histories[key] = read_history(workdir / f"history_{key.replace('=', '_')}.jsonl")
        check_run(m[key], histories[key], report, early_stopping=True)
    # The same first batch loss (zero weights), then different batches.
    losses = {k: [r["train_loss"] for r in h] for k, h in histories.items()}
    assert losses["shuffle=false"][0] == pytest.approx(losses["shuffle=true"][0], rel=1e-6)
    n = min(len(v) for v in losses.values())
    assert losses["shuffle=false"][:n] != losses["shuffle=true"][:n]
    # The no-shuffle run repeats its batches: its loss equals task 2d's, step by step.
    workdir2d, _ = run("tdt4265_task2d")
    ref = [r["train_loss"] for r in read_history(workdir2d / "history.jsonl")]
    assert losses["shuffle=false"] == ref


@needs_data
def test_task3_softmax(run):
    workdir, m = run("tdt4265_task3")
    report = check_common_files(
        workdir, "tdt4265_task3", m, ["loss.png", "accuracy.png", "gap.png"]
    )
    history = read_history(workdir / "history.jsonl")
    check_run(m, history, report, early_stopping=False)
    assert m["steps"] == 2 * 4
    assert history[0]["train_loss"] == pytest.approx(math.log(10.0), rel=1e-6)
    assert m["accuracy_gap"] == pytest.approx(m["train_accuracy"] - m["val_accuracy"])
    assert f"{m['accuracy_gap']:+.4f}" in report


@needs_data
def test_task4_l2(run):
    workdir, m = run("tdt4265_task4")
    pngs = ["weights.png", "val_accuracy.png", "weight_norm.png"]
    report = check_common_files(workdir, "tdt4265_task4", m, pngs)
    keys = ["lambda=0", "lambda=1", "lambda=0.1"]
    assert [k for k in m if k.startswith("lambda=")] == keys
    for key in keys:
        run_m = m[key]
        history = read_history(workdir / f"history_{key.replace('=', '_')}.jsonl")
        check_run(run_m, history, report, early_stopping=False)
        lam = float(key.split("=")[1])
        assert run_m["l2"] == lam
        # objective = cross-entropy + lambda * sum w^2: ties the reported norm to the loss.
        penalty = run_m["train_objective"] - run_m["train_cross_entropy"]
        assert penalty == pytest.approx(lam * run_m["weight_norm_squared"], rel=1e-3, abs=1e-6)
        assert run_m["weight_norm_squared"] == pytest.approx(run_m["weight_norm"] ** 2)
        assert m["weight_norm_by_lambda"][key.split("=")[1]] == run_m["weight_norm"]
    norms = [m[k]["weight_norm"] for k in keys]
    assert norms[1] < norms[2] < norms[0]  # a stronger penalty, smaller weights


@needs_data
def test_checkpointed_experiment_resumes_to_the_same_numbers(tmp_path, run):
    # --checkpoint is relative to the current folder: an absolute path in the workdir here.
    overrides = overrides_for("tdt4265_task2", checkpoint=str(tmp_path / "a" / "ckpt"))
    # An interrupted run: one of the two epochs, checkpointed where the experiment looks.
    cfg = make_config("tdt4265_task2", overrides)
    h = cfg.hparams
    hp = make_hparams(h.lr, h.l2, h.momentum, h.seed, np.float32)
    ckpt = tmp_path / "a" / "ckpt" / "run.npz"
    fit(cfg.train, hp, load_splits(cfg.data).data, checkpoint_path=ckpt, stop_after_epochs=1)
    assert ckpt.exists()
    resumed = run_experiment("tdt4265_task2", tmp_path / "a", overrides)
    fresh_dir, fresh = run("tdt4265_task2")  # the same config without checkpoints
    assert not (fresh_dir / "ckpt").exists()
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy", "steps"):
        assert resumed[key] == fresh[key], key
    hist_a = read_history(tmp_path / "a" / "history.jsonl")
    assert hist_a == read_history(fresh_dir / "history.jsonl")
    # Running again finds the finished checkpoint and trains nothing more.
    again = run_experiment("tdt4265_task2", tmp_path / "a", overrides)
    assert again["val_loss"] == fresh["val_loss"] and again["steps"] == fresh["steps"]


def test_task4_refuses_lambda_zero_in_l2s(tmp_path):
    with pytest.raises(ConfigError, match="lambda 0 is always run") as err:
        run_experiment("tdt4265_task4", tmp_path, {"l2s": (0.0, 1.0)})
    assert err.value.field == "l2s" and "\n" not in str(err.value)
    assert not list(tmp_path.iterdir())  # refused before anything was written


@needs_data
def test_lr_annealing(run):
    workdir, m = run("lr_annealing")
    pngs = ["loss.png", "accuracy.png", "learning_rate.png"]
    report = check_common_files(workdir, "lr_annealing", m, pngs)
    hist = {}
    for key in ("schedule=constant", "schedule=anneal"):
        hist[key] = read_history(workdir / f"history_{key.replace('=', '_')}.jsonl")
        check_run(m[key], hist[key], report, early_stopping=False)
        val = np.array([r["val_loss"] for r in hist[key] if "val_loss" in r])
        late = val[len(val) // 2 :]
        assert m[key]["late_val_loss_jitter"] == pytest.approx(np.mean(np.abs(np.diff(late))))
    lr, t_anneal = 0.05, 2.0
    last = m["schedule=anneal"]["steps"] - 1
    assert m["schedule=constant"]["final_learning_rate"] == pytest.approx(lr)
    assert m["schedule=anneal"]["final_learning_rate"] == pytest.approx(lr / (1 + last / t_anneal))
    loss = {k: [r["train_loss"] for r in h] for k, h in hist.items()}
    # Step 0 uses alpha_0 in both; the different rates show from the second batch on.
    assert loss["schedule=constant"][:2] == loss["schedule=anneal"][:2]
    assert loss["schedule=constant"][2:] != loss["schedule=anneal"][2:]


@needs_data
def test_mean_images(run):
    workdir, m = run("mean_images")
    report = check_common_files(workdir, "mean_images", m, ["mean_images.png"])
    check_run(m, read_history(workdir / "history.jsonl"), report, early_stopping=False)
    corr = m["mean_weight_correlation"]
    assert sorted(corr, key=int) == [str(k) for k in range(10)]
    assert all(-1.0 <= c <= 1.0 for c in corr.values())
    # Even after 8 steps each digit's weights look like its mean image.
    assert all(c > 0 for c in corr.values())
    for c in corr.values():
        assert f"{c:.3f}" in report


@pytest.mark.parametrize("model, shuffle", [("logistic", False), ("softmax", True)])
def test_numpy_baseline_matches_the_engine(model, shuffle):
    """The benchmark's NumPy baseline and jaxlr train to the same numbers in float64."""

    rng = np.random.default_rng(0)
    n, v, d, k = 200, 60, 12, 4
    x = np.concatenate([rng.uniform(-1, 1, (n + v, d)), np.ones((n + v, 1))], axis=1)
    w_true = rng.normal(size=(d + 1, k))
    y = np.argmax(x @ w_true + rng.normal(size=(n + v, k)), axis=1)
    if model == "logistic":
        y = (y % 2).astype(np.int64)
    data = Data(x[:n], y[:n].astype(np.int32), x[n:], y[n:].astype(np.int32))
    cfg = TrainConfig(model=model, num_classes=k, batch_size=16, num_epochs=3, shuffle=shuffle)
    r = fit(cfg, make_hparams(0.1, 0.01, seed=3), data, log_fn=lambda msg: None)
    orders = None
    if shuffle:
        _, data_key = keys_for(3)
        orders = [
            np.asarray(
                epoch_batches(jax.random.fold_in(data_key, e), n, 16, shuffle=True)[0]
            ).ravel()
            for e in range(3)
        ]
    b = nb.train(
        model,
        x[:n],
        y[:n],
        x[n:],
        y[n:],
        learning_rate=0.1,
        num_epochs=3,
        batch_size=16,
        l2=0.01,
        orders=orders,
        num_classes=k,
    )
    np.testing.assert_allclose(r.history["train_loss"], b["train_loss"], rtol=1e-10)
    np.testing.assert_allclose(r.history["val_loss"], b["val_loss"], rtol=1e-10)
    np.testing.assert_array_equal(r.history["check_step"], b["check_step"])
    np.testing.assert_allclose(r.history["val_accuracy"], b["val_accuracy"], atol=1e-12)
    w = np.asarray(r.params["w"]).reshape(b["w"].shape)
    np.testing.assert_allclose(w, b["w"], rtol=1e-9, atol=1e-12)
    assert r.metrics["val_cross_entropy"] == pytest.approx(b["final_val_loss"], rel=1e-10)


def test_every_experiment_documents_its_launch():
    for name in EXPERIMENTS:
        doc = EXPERIMENTS[name].doc
        assert f"--experiment={name}" in doc and "Runtime:" in doc and "Result:" in doc
    assert set(NAMES) <= set(EXPERIMENTS)


# ---------------------------------------------------------------------------------------------
# The launcher as a subprocess.


def launch(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    return subprocess.run(
        [sys.executable, "-m", "experiments.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@needs_data
def test_main_runs_an_experiment(tmp_path):
    args = ["--experiment=tdt4265_task2", f"--workdir={tmp_path}", "--num_epochs=1"]
    args.append("--nocompilation_cache")
    args += ["--max_examples=256", "--lr=0.02"]
    if DATA_DIR:
        args.append(f"--data_dir={DATA_DIR}")
    out = launch(*args)
    assert out.returncode == 0, out.stderr[-2000:]
    m = json.loads((tmp_path / "metrics.json").read_text())
    cfg = json.loads((tmp_path / "config.json").read_text())
    assert m["steps"] == 2 and cfg["hparams"]["lr"] == 0.02 and cfg["train"]["num_epochs"] == 1
    assert (tmp_path / "loss.png").stat().st_size > 0


def test_main_unknown_experiment_or_flag_lists_the_valid_ones(tmp_path):
    out = launch("--experiment=tdt4265_task9", f"--workdir={tmp_path}")
    assert out.returncode != 0
    for name in EXPERIMENTS:
        assert name in out.stderr
    out = launch("--experiment=tdt4265_task2", f"--workdir={tmp_path}", "--num_epoch=3")
    assert out.returncode != 0
    assert "num_epoch" in out.stderr and "num_epochs" in out.stderr
    assert not (tmp_path / "metrics.json").exists()
    # A bad value: exit code 2 and one line naming the flag, the value and what is allowed.
    out = launch("--experiment=tdt4265_task2", f"--workdir={tmp_path}", "--lr=-1")
    assert out.returncode == 2
    assert out.stderr.strip().splitlines()[-1].endswith("--lr=-1: must be a finite number > 0")
    assert not (tmp_path / "metrics.json").exists()


def test_main_list():
    out = launch("--list")
    assert out.returncode == 0, out.stderr[-2000:]
    for name in EXPERIMENTS:
        assert f"python -m experiments.main --experiment={name}" in out.stdout

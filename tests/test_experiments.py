"""End-to-end tests of every registered experiment on tiny fake MNIST-like data.

No real MNIST files are needed: a module fixture writes a fake data set
(`jaxlr.data.fake.write_fake_dataset`, 2,000 training and 600 test images, labels cycling through
the ten digits: 200 training and 60 test images of each) and every experiment runs once on it
through `experiments.common.run_experiment`, with its registered smoke overrides plus
`dataset=fake` and the counts that fit the fake sizes. 2,000 training images because the
binary smoke runs take 256 examples of two digits (400 here). Each test checks the files the
run published (config.json holds the overrides, metrics.json equals the returned metrics,
PNGs are PNGs, report.md is titled with the run's digits or data set, and so are the
figures: every call of a `plot_*` function of the `jaxlr.report` figure modules is
recorded), the workdir layout (top-level names are links into `latest/`), and numbers
recomputed by hand from the fake arrays (`jaxlr.data.fake.fake_arrays`, the same arrays as
the files) and from the weights the run saved.

Dimension legend: N examples, D features, K classes, P pixels (784).
"""

import inspect
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from realdata import PNG_MAGIC

from experiments import (
    hw3_config,
    registry,  # noqa: F401  (registers the experiments)
)
from experiments.common import run_experiment
from experiments.config import EXPERIMENTS, flag_fields, make_config
from jaxlr.data.config import DataConfig
from jaxlr.data.fake import fake_arrays, write_fake_dataset
from jaxlr.data.splits import load_splits, optimum_features
from jaxlr.host import checkpoint as ckpt
from jaxlr.report import figures, history_plots, image_plots, sweep_plots

REPO = Path(__file__).resolve().parents[1]
FAKE = dict(num_train=2000, num_test=600, seed=0)
ARRAYS = fake_arrays(**FAKE)  # what write_fake_dataset writes (same arguments, same arrays)

BINARY_DIGITS = (4, 9)  # not the default 2 vs 3, so titles must come from the config
GRID_DIGITS = (3, 8)  # not the default 9 vs 4
# What each experiment needs besides its smoke overrides to fit the fake set. The tdt4265
# split takes the first num_train=20000 training images by default: 'all' (None) here.
FIT = {
    # checkpoint="ckpt": the runner makes it <workdir>/ckpt (the flag is relative to the
    # current folder).
    "tdt4265_task2": dict(num_train=None, digits=BINARY_DIGITS, checkpoint="ckpt"),
    "tdt4265_task2d": dict(num_train=None, digits=BINARY_DIGITS),
    "tdt4265_task2e": dict(num_train=None, digits=BINARY_DIGITS),
    "tdt4265_task3": dict(num_train=None),
    "tdt4265_task4": dict(num_train=None),
    "lr_annealing": dict(num_train=None, digits=BINARY_DIGITS),
    "mean_images": dict(num_train=None, checkpoint="ckpt"),
    "sweep": dict(num_train=None),
    "hw3_mlp": dict(),
    "hw3_online_vs_minibatch": dict(num_train=None),
    # 700 held-out training images, more than the 600 test images (load_splits once indexed
    # the held-out digits with the test set's index array: IndexError).
    "hw3_logreg_grid": dict(num_train=1200, num_val=700, digits=GRID_DIGITS),
    "hw3_misclassified": dict(),  # + grid_checkpoint= the grid's, set by the runner
    "regularization_path": dict(num_train=1200, num_val=700, num_test=100, digits=GRID_DIGITS),
    "fashion_softmax": dict(num_train=None),
}


def overrides_for(name: str, data_dir: Path) -> dict:
    return {**EXPERIMENTS[name].smoke, "dataset": "fake", "data_dir": str(data_dir), **FIT[name]}


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory) -> Path:
    return write_fake_dataset(tmp_path_factory.mktemp("fake_mnist"), **FAKE)


class Run:
    """One finished experiment run: workdir, overrides, returned metrics, plot calls."""

    def __init__(self, workdir, overrides, metrics, plot_calls):
        self.workdir, self.overrides, self.metrics = workdir, overrides, metrics
        self.plot_calls = plot_calls

    def texts(self, plot_fn: str) -> list[str]:
        """The titles and suptitles given to `<plot_fn>` of the figure modules, in call order."""
        return [t for fn, texts in self.plot_calls if fn == plot_fn for t in texts]


PLOT_MODULES = (figures, history_plots, image_plots, sweep_plots)


def _spy_on_plots(mp: pytest.MonkeyPatch, calls: list) -> None:
    """Wraps every `plot_*` function where it is defined (each module's own, not its imports)."""
    for module, name in [(m, n) for m in PLOT_MODULES for n in dir(m)]:
        fn = getattr(module, name)
        if not (name.startswith("plot_") and callable(fn)) or fn.__module__ != module.__name__:
            continue
        sig = inspect.signature(fn)

        def spy(*args, _fn=fn, _name=name, _sig=sig, **kwargs):
            bound = _sig.bind(*args, **kwargs).arguments
            calls.append((_name, [bound[k] for k in ("title", "suptitle") if bound.get(k)]))
            return _fn(*args, **kwargs)

        mp.setattr(module, name, spy)


def snapshot(folder: Path) -> dict:
    """Every entry under `folder` (hidden ones too): link targets and file bytes."""
    out = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            p = Path(root) / name
            rel = str(p.relative_to(folder))
            if p.is_symlink():
                out[rel] = ("link", os.readlink(p))
            elif p.is_dir():
                out[rel] = ("dir",)
            else:
                out[rel] = ("file", p.read_bytes())
    return out


@pytest.fixture(scope="module")
def run(tmp_path_factory, fake_dir):
    root = tmp_path_factory.mktemp("experiments")
    cache: dict[str, Run] = {}

    def get(name: str) -> Run:
        if name not in cache:
            overrides = overrides_for(name, fake_dir)
            grid_before = None
            if "checkpoint" in overrides:
                overrides["checkpoint"] = str(root / name / overrides["checkpoint"])
            if name == "hw3_misclassified":
                grid = get("hw3_logreg_grid")
                overrides["grid_checkpoint"] = str(grid.workdir / hw3_config.CHECKPOINT_NAME)
                grid_before = snapshot(grid.workdir)
            calls: list = []
            with pytest.MonkeyPatch.context() as mp:
                _spy_on_plots(mp, calls)
                metrics = run_experiment(name, root / name, overrides)
            cache[name] = Run(root / name, overrides, metrics, calls)
            if grid_before is not None:
                cache[name].grid_before = grid_before
                cache[name].grid_after = snapshot(get("hw3_logreg_grid").workdir)
        return cache[name]

    return get


# ---------------------------------------------------------------------------------------------
# Checks shared by every experiment.


def _json(value):
    return json.loads(json.dumps(value))


def read_history(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def check_png(path: Path) -> None:
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path.name} is not a PNG"
    assert len(data) > 2000, f"{path.name} is suspiciously small"


def check_outputs(r: Run, name: str, files: set[str], title: str) -> str:
    """The published files of run `r`: exactly `files` plus config/metrics/report; returns
    the report text (titled `title`)."""
    w = r.workdir
    published = {p.name for p in (w / "latest").iterdir()} - {".run.json"}
    # TensorBoard event files (tests/test_tracking.py checks them) where the run trained.
    assert published - {"tensorboard"} == files | {"config.json", "metrics.json", "report.md"}
    for entry in w.iterdir():
        if entry.name in (".lock", ".runs", "latest", "ckpt"):
            continue
        assert entry.is_symlink(), f"{entry.name} is not a link into latest/"
        assert os.readlink(entry) == f"latest/{entry.name}"
        assert entry.name in published
    assert not [p.name for p in w.iterdir() if p.name.startswith(".staging")]

    config = json.loads((w / "config.json").read_text())
    # config.json: one object per section, the experiment's own fields beside them.
    assert config == _json({"experiment": name, **make_config(name, r.overrides).to_dict()})
    fields = flag_fields(EXPERIMENTS[name].config_cls)
    for key, value in r.overrides.items():
        section = fields[key].section
        got = config[section][key] if section else config[key]
        assert got == _json(value), f"override {key} not in config.json"
    assert json.loads((w / "metrics.json").read_text()) == _json(r.metrics)
    report = (w / "report.md").read_text()
    assert report.splitlines()[0] == f"# {title}"
    for png in sorted(f for f in files if f.endswith(".png")):
        check_png(w / png)
        assert f"]({png})" in report, f"report does not show {png}"
    return report


def check_history(m: dict, history: list[dict], report: str, early_stopping: bool) -> None:
    """The numbers of one run against each other and against its history."""
    for key in ("train_loss", "val_loss", "train_accuracy", "val_accuracy"):
        assert np.isfinite(m[key]), key
        assert f"{m[key]:.4f}" in report, f"report does not mention {key} {m[key]:.4f}"
    mb, e = m["steps_per_epoch"], m["eval_every"]
    assert e == max(1, mb // 5)
    steps = [r["step"] for r in history]
    assert steps == list(range(m["steps"]))
    assert [r["epoch"] for r in history] == [s // mb for s in steps]
    checks = [r for r in history if "val_loss" in r]
    assert [r["step"] for r in checks] == [s for s in steps if s % e == 0]
    by_step = {r["step"]: r for r in checks}
    if early_stopping:
        es = m["early_stopping"]
        assert es["stopped"], "the smoke early-stopping config is meant to stop"
        assert es["epoch"] == es["step"] // mb and es["best_epoch"] == es["best_step"] // mb
        assert m["steps"] == es["step"] + 1  # nothing ran after the stopping check
        val = [r["val_loss"] for r in checks]
        assert es["best_val_loss"] == pytest.approx(min(val), rel=1e-6)
        assert by_step[es["best_step"]]["val_loss"] == pytest.approx(min(val), rel=1e-6)
        assert es["step"] - es["best_step"] == 3 * e  # patience 3 checks
        ref = by_step[es["best_step"]]  # the returned weights are the best check's
    else:
        assert "early_stopping" not in m
        ref = by_step[steps[-1]]  # the last step was a check
    assert m["val_accuracy"] == pytest.approx(ref["val_accuracy"], abs=1e-6)
    assert m["train_accuracy"] == pytest.approx(ref["train_accuracy"], abs=1e-6)
    assert m["val_loss"] == pytest.approx(ref["val_loss"], rel=1e-5)


# ---------------------------------------------------------------------------------------------
# Hand-made data: the fake arrays, selected and preprocessed with numpy.


def pixels(images, scale: str, bias: bool) -> np.ndarray:
    x = np.asarray(images, np.float64).reshape(len(images), -1)
    x = x / 255.0 if scale == "unit" else (x - 127.5) / 127.5
    return np.concatenate([x, np.ones((len(x), 1))], axis=1) if bias else x


def two_digits(images, labels, digits, limit=None):
    """The images of two digits in order (first `limit`), labels 1 for digits[0]."""
    labels = np.asarray(labels)
    keep = np.flatnonzero((labels == digits[0]) | (labels == digits[1]))[:limit]
    return images[keep], (labels[keep] == digits[0]).astype(np.int64), keep


def logistic_numbers(w_D, x_ND, y_N) -> tuple[float, float]:
    """(accuracy with threshold p >= 0.5, mean cross-entropy) of a logistic regression."""
    z = x_ND @ w_D
    acc = float(np.mean((z >= 0).astype(np.int64) == y_N))
    return acc, float(np.mean(np.logaddexp(0.0, z) - y_N * z))


def tdt_binary_sets(max_examples: int):
    """Training and validation sets of the binary tdt4265 smoke runs on the fake data."""
    x_tr, y_tr, _ = two_digits(ARRAYS["train_images"], ARRAYS["train_labels"], BINARY_DIGITS)
    x_va, y_va, _ = two_digits(ARRAYS["test_images"], ARRAYS["test_labels"], BINARY_DIGITS)
    k = max_examples
    return x_tr[:k], y_tr[:k], x_va[:k], y_va[:k]


# Experiments whose end-to-end test lives elsewhere (they need other runs' outputs).
TESTED_ELSEWHERE = {"sweep_merge": "tests/test_shards.py"}


def test_every_registered_experiment_has_an_end_to_end_test():
    names = set(EXPERIMENTS) - set(TESTED_ELSEWHERE)
    missing, gone = names - set(FIT), set(FIT) - names
    assert not missing, f"no end-to-end test on fake data (add to FIT and test it): {missing}"
    assert not gone, f"FIT names experiments that are not registered: {gone}"
    for name in names:
        assert EXPERIMENTS[name].smoke, f"{name} has no smoke overrides"
    for name, where in TESTED_ELSEWHERE.items():
        assert name in EXPERIMENTS and name in (REPO / where).read_text(), (name, where)


# ---------------------------------------------------------------------------------------------
# TDT4265.


def test_tdt4265_task2(run):
    r = run("tdt4265_task2")
    m = r.metrics
    title = "TDT4265 task 2, logistic regression 4 vs 9"
    report = check_outputs(r, "tdt4265_task2", {"history.jsonl", "loss.png", "accuracy.png"}, title)
    assert r.texts("plot_history") == [title]
    history = read_history(r.workdir / "history.jsonl")
    check_history(m, history, report, early_stopping=False)

    x_tr, y_tr, x_va, y_va = tdt_binary_sets(256)
    n, v = len(y_tr), len(y_va)
    assert (n, v) == (256, 120)  # 200 fours and 200 nines in training, 60 + 60 in test
    mb = n // 128
    assert m["steps_per_epoch"] == mb and m["steps"] == 2 * mb and m["eval_every"] == 1
    assert f"digits 4 (label 1) vs 9 (label 0), {n} training / {v} validation" in report
    # Zero weights: the first batch's loss is ln 2 exactly (up to float32 rounding).
    assert history[0]["train_loss"] == pytest.approx(math.log(2.0), rel=1e-6)

    # The final numbers recomputed from the saved weights (no early stopping: the last ones).
    flat, meta = ckpt.load_flat(r.workdir / "ckpt" / "run.npz")
    assert meta["epoch"] == 2 and len(flat["history/step"]) == m["steps"]
    w = np.asarray(flat["state/params/w"], np.float64).reshape(-1)
    for split, x, y in (("val", x_va, y_va), ("train", x_tr, y_tr)):
        acc, ce = logistic_numbers(w, pixels(x, "symmetric", True), y)
        assert m[f"{split}_accuracy"] == pytest.approx(acc, abs=1e-6)
        assert m[f"{split}_loss"] == pytest.approx(ce, rel=1e-4)


def test_tdt4265_task2d_early_stopping(run):
    r = run("tdt4265_task2d")
    m = r.metrics
    title = "TDT4265 task 2d, early stopping, 4 vs 9"
    report = check_outputs(
        r, "tdt4265_task2d", {"history.jsonl", "loss.png", "accuracy.png"}, title
    )
    assert r.texts("plot_history") == [title]
    check_history(m, read_history(r.workdir / "history.jsonl"), report, early_stopping=True)
    assert m["steps_per_epoch"] == 2 and m["steps"] < 40 * 2  # it stopped before the end
    es = m["early_stopping"]
    assert f"step {es['step']} (epoch {es['epoch']}" in report
    assert f"step {es['best_step']} (epoch {es['best_epoch']})" in report


def test_tdt4265_task2e_shuffle_or_not(run):
    r = run("tdt4265_task2e")
    m = r.metrics
    files = {"history_shuffle_false.jsonl", "history_shuffle_true.jsonl", "validation.png"}
    report = check_outputs(r, "tdt4265_task2e", files, "TDT4265 task 2e: shuffling, 4 vs 9")
    [suptitle] = r.texts("plot_side_by_side")  # tdt4265._validation_figure
    assert "4 vs 9" in suptitle
    histories = {}
    for key in ("shuffle=false", "shuffle=true"):
        histories[key] = read_history(r.workdir / f"history_{key.replace('=', '_')}.jsonl")
        check_history(m[key], histories[key], report, early_stopping=True)
    losses = {k: [x["train_loss"] for x in h] for k, h in histories.items()}
    # Zero weights: both first losses are ln 2 whatever the batch; then the batches differ.
    assert losses["shuffle=false"][0] == pytest.approx(math.log(2.0), rel=1e-6)
    assert losses["shuffle=true"][0] == pytest.approx(math.log(2.0), rel=1e-6)
    k = min(len(v) for v in losses.values())
    assert losses["shuffle=false"][:k] != losses["shuffle=true"][:k]
    # The unshuffled run is task 2d's run, step by step.
    ref = [x["train_loss"] for x in read_history(run("tdt4265_task2d").workdir / "history.jsonl")]
    assert losses["shuffle=false"] == ref
    # The period of the spikes the report explains: lcm(M, E).
    assert f"lcm = {math.lcm(2, 1)} steps" in report


def test_tdt4265_task3_softmax(run):
    r = run("tdt4265_task3")
    m = r.metrics
    title = "TDT4265 task 3, softmax regression, fake"
    files = {"history.jsonl", "loss.png", "accuracy.png", "gap.png"}
    report = check_outputs(r, "tdt4265_task3", files, title)
    assert r.texts("plot_history") == [title]
    assert r.texts("plot_curves")[-1] == f"{title}: generalisation gap"
    history = read_history(r.workdir / "history.jsonl")
    check_history(m, history, report, early_stopping=False)
    # 512 of the 2,000 training images and 512 of the 600 test images; M = 4 batches of 128.
    assert "all ten digits, 512 training / 512 validation examples" in report
    assert m["steps_per_epoch"] == 4 and m["steps"] == 2 * 4
    assert history[0]["train_loss"] == pytest.approx(math.log(10.0), rel=1e-6)
    assert m["accuracy_gap"] == pytest.approx(m["train_accuracy"] - m["val_accuracy"])
    assert m["loss_gap"] == pytest.approx(m["val_loss"] - m["train_loss"])
    assert f"{m['accuracy_gap']:+.4f}" in report
    assert "7,850 weights" in report  # 785 features x 10 classes


def test_tdt4265_task4_l2(run):
    r = run("tdt4265_task4")
    m = r.metrics
    files = {
        "history_lambda_0.jsonl",
        "history_lambda_1.jsonl",
        "history_lambda_0.1.jsonl",
        "weights.png",
        "val_accuracy.png",
        "weight_norm.png",
    }
    report = check_outputs(r, "tdt4265_task4", files, "TDT4265 task 4: L2 regularisation, fake")
    keys = ["lambda=0", "lambda=1", "lambda=0.1"]  # 0 first, then l2s=(1.0, 0.1) descending
    assert [k for k in m if k.startswith("lambda=")] == keys
    for key in keys:
        run_m = m[key]
        history = read_history(r.workdir / f"history_{key.replace('=', '_')}.jsonl")
        check_history(run_m, history, report, early_stopping=False)
        lam = float(key.split("=")[1])
        assert run_m["l2"] == lam and run_m["steps"] == 2 * 4
        # objective = cross-entropy + lambda * sum w^2 (bias included): ties the norm to the loss.
        penalty = run_m["train_objective"] - run_m["train_cross_entropy"]
        assert penalty == pytest.approx(lam * run_m["weight_norm_squared"], rel=1e-3, abs=1e-6)
        assert run_m["weight_norm_squared"] == pytest.approx(run_m["weight_norm"] ** 2)
        assert m["weight_norm_by_lambda"][key.split("=")[1]] == run_m["weight_norm"]
        assert f"{run_m['weight_norm']:.4f}" in report
        # The exact optimum of the same objective: what 8 steps have left to go. At lambda 0
        # 512 examples in 785 dimensions are separable: no finite optimum.
        converged = run_m["optimum_converged"]
        assert converged == (lam > 0) and run_m["no_finite_optimum"] == (lam == 0)
        if converged:
            gap = run_m["train_objective"] - run_m["optimum_objective"]
            assert run_m["gap"] == pytest.approx(gap) and gap > 0
        else:
            assert run_m["gap"] is None
        assert run_m["lr_over_limit"] == pytest.approx(0.01 / run_m["lr_limit"])  # lr 0.01
        assert run_m["unstable"] == (run_m["lr_over_limit"] > 1)
    norms = [m[k]["weight_norm"] for k in keys]
    assert norms[1] < norms[2] < norms[0]  # a stronger penalty, smaller weights
    # The weight images show lambda 0 and the largest lambda.
    assert "weight images, lambda 0 and 1" in report


def test_task4_optimum_table_reads_the_solver_certificate():
    """A lambda 0 certified up front (one-class feature: `no_finite_optimum`, not iterated to
    `separated`) reads "no optimum", not the solver's starting objective "(not converged)"."""
    from experiments import tdt4265_task4

    row = dict(train_objective=0.5, optimum_objective=2.30259, gap=None, lr_limit=0.04,
               lr_over_limit=0.25, unstable=False, optimum_converged=False)  # fmt: skip
    keys = ["lambda=0"]
    certified = tdt4265_task4._optimum_table({keys[0]: dict(row, no_finite_optimum=True)}, keys)
    assert "| lambda=0 | 0.50000 | none (separable) | - | 0.04 | 0.25 | no optimum |" in certified
    stalled = tdt4265_task4._optimum_table({keys[0]: dict(row, no_finite_optimum=False)}, keys)
    assert "2.30259 (not converged)" in stalled


def test_lr_annealing(run):
    r = run("lr_annealing")
    m = r.metrics
    files = {
        "history_schedule_constant.jsonl",
        "history_schedule_anneal.jsonl",
        "loss.png",
        "accuracy.png",
        "learning_rate.png",
    }
    report = check_outputs(r, "lr_annealing", files, "Learning-rate annealing, 4 vs 9")
    # tdt4265_annealing._history_panels: one row of panels for the loss, one for the accuracy.
    assert r.texts("plot_side_by_side") == [
        "Learning-rate annealing, 4 vs 9: loss",
        "Learning-rate annealing, 4 vs 9: accuracy",
    ]
    hist = {}
    for key in ("schedule=constant", "schedule=anneal"):
        hist[key] = read_history(r.workdir / f"history_{key.replace('=', '_')}.jsonl")
        check_history(m[key], hist[key], report, early_stopping=False)
        assert m[key]["steps"] == 2 * 2
        val = np.array([x["val_loss"] for x in hist[key] if "val_loss" in x])
        late = val[len(val) // 2 :]
        assert m[key]["late_val_loss_jitter"] == pytest.approx(np.mean(np.abs(np.diff(late))))
    lr, t_anneal = 0.05, 2.0  # the default rate; the smoke run's anneal_steps
    last = m["schedule=anneal"]["steps"] - 1
    assert m["schedule=constant"]["final_learning_rate"] == pytest.approx(lr)
    assert m["schedule=anneal"]["final_learning_rate"] == pytest.approx(lr / (1 + last / t_anneal))
    loss = {k: [x["train_loss"] for x in h] for k, h in hist.items()}
    # Step 0 uses alpha_0 in both; the different rates show from the second batch on.
    assert loss["schedule=constant"][:2] == loss["schedule=anneal"][:2]
    assert loss["schedule=constant"][2:] != loss["schedule=anneal"][2:]


def test_mean_images(run):
    r = run("mean_images")
    m = r.metrics
    title = "Mean images and softmax weights, fake"
    report = check_outputs(r, "mean_images", {"history.jsonl", "mean_images.png"}, title)
    check_history(m, read_history(r.workdir / "history.jsonl"), report, early_stopping=False)
    corr = m["mean_weight_correlation"]
    assert sorted(corr, key=int) == [str(k) for k in range(10)]
    for c in corr.values():
        assert f"{c:.3f}" in report

    # By hand: the mean of each digit's first-512 training images against its weight image.
    flat, _ = ckpt.load_flat(r.workdir / "ckpt" / "run.npz")
    w_PK = np.asarray(flat["state/params/w"], np.float64)[:-1]  # bias row dropped
    x_NP = pixels(ARRAYS["train_images"][:512], "symmetric", False)
    y_N = ARRAYS["train_labels"][:512]
    for k in range(10):
        mean_P = x_NP[y_N == k].mean(axis=0)
        expected = np.corrcoef(mean_P, w_PK[:, k])[0, 1]
        assert corr[str(k)] == pytest.approx(expected, abs=1e-5), k
    # The fake digits are a fixed pattern plus noise: the weights look like the pattern.
    assert all(c > 0.3 for c in corr.values())


def test_sweep(run):
    r = run("sweep")
    m = r.metrics
    hist_files = {p["history"] for p in m["points"]}
    files = hist_files | {
        "table.csv",
        "table.md",
        "heatmap_val_accuracy.png",
        "curves_val_accuracy.png",
    }
    report = check_outputs(r, "sweep", files, "Hyper-parameter sweep (logistic, fake)")
    # The logistic protocol's defaults: digits 2 vs 3, no shuffling.
    assert "digits 2 (label 1) vs 3 (label 0), 256 training / 120 validation" in report
    lrs, l2s = r.overrides["lr"], r.overrides["l2"]
    assert m["num_points"] == len(lrs) * len(l2s) == len(m["points"]) == len(hist_files)
    assert m["values"]["learning_rate"] == list(lrs) and m["values"]["l2"] == list(l2s)
    pairs = {(p["learning_rate"], p["l2"]) for p in m["points"]}
    assert pairs == {(a, b) for a in lrs for b in l2s}
    for p in m["points"]:
        assert p["steps"] == 2 * 2 and not p["diverged"]
        history = read_history(r.workdir / p["history"])
        assert [x["step"] for x in history] == list(range(4))
        assert history[-1]["val_loss"] == pytest.approx(p["val_loss"], rel=1e-5)
    best = min(m["points"], key=lambda p: p["val_loss"])
    assert m["best_by_val_loss"]["index"] == best["index"]
    rows = (r.workdir / "table.csv").read_text().splitlines()
    assert len(rows) == 1 + m["num_points"] and rows[0].startswith("index,")
    assert m["num_diverged"] == 0


# ---------------------------------------------------------------------------------------------
# hw3.


def test_fashion_softmax(run):
    r = run("fashion_softmax")
    m = r.metrics
    files = {
        "history.jsonl",
        "loss.png",
        "accuracy.png",
        "per_class_accuracy.png",
        "confusion_matrix.png",
        "weights.png",
    }
    report = check_outputs(r, "fashion_softmax", files, "Softmax regression, fake")
    check_history(m, read_history(r.workdir / "history.jsonl"), report, early_stopping=False)
    # The task 3 protocol, step for step (the same data here: the fake set for both).
    task3 = read_history(run("tdt4265_task3").workdir / "history.jsonl")
    assert read_history(r.workdir / "history.jsonl") == task3
    # Validation = the first 512 test images (max_examples); the confusion matrix of the
    # returned weights recounts the validation accuracy of the last check.
    cm_KK = np.asarray(m["confusion_matrix"])
    y_val = np.asarray(ARRAYS["test_labels"][:512], np.int64)
    np.testing.assert_array_equal(cm_KK.sum(axis=1), np.bincount(y_val, minlength=10))
    assert np.trace(cm_KK) / 512 == pytest.approx(m["val_accuracy"], abs=1e-6)
    acc_K = np.diag(cm_KK) / cm_KK.sum(axis=1)
    names = [str(k) for k in range(10)]  # the fake set's classes are named like MNIST's
    assert m["per_class_val_accuracy"] == pytest.approx(dict(zip(names, acc_K)))
    assert m["worst_class"] == names[int(np.argmin(acc_K))]
    assert m["worst_class_accuracy"] == pytest.approx(acc_K.min())
    assert f"{acc_K.min():.4f}" in report
    assert r.texts("plot_bar") == [
        f"Softmax regression, fake: accuracy of each class (overall {np.trace(cm_KK) / 512:.4f})"
    ]


def test_hw3_mlp(run):
    r = run("hw3_mlp")
    m = r.metrics
    files = {
        "history.jsonl",
        "loss.png",
        "accuracy.png",
        "per_class_accuracy.png",
        "confusion_matrix.png",
    }
    title = "784-24-12-10 relu (analytic), fake"
    report = check_outputs(r, "hw3_mlp", files, f"hw3_mlp: {title}")
    [bar_title] = r.texts("plot_bar")
    assert bar_title.startswith(f"{title}: per-class test accuracy")
    assert r.texts("plot_confusion") == [f"{title}: test confusion matrix (600 images)"]
    # Split full: 1,000 of the 2,000 training images (max_examples), tested on all 600 test
    # images; 31 steps of 32 per epoch.
    assert m["num_train"] == 1000 and m["steps_per_epoch"] == 1000 // 32
    assert m["steps"] == 2 * (1000 // 32) and m["epochs"] == 2
    y_test = np.asarray(ARRAYS["test_labels"], np.int64)
    cm_KK = np.asarray(m["confusion_matrix"])
    assert cm_KK.shape == (10, 10) and cm_KK.sum() == 600
    np.testing.assert_array_equal(cm_KK.sum(axis=1), np.bincount(y_test, minlength=10))
    assert m["test_total"] == 600 and m["test_correct"] == np.trace(cm_KK)
    assert m["test_accuracy"] == pytest.approx(np.trace(cm_KK) / 600)
    np.testing.assert_allclose(m["per_class_accuracy"], np.diag(cm_KK) / cm_KK.sum(axis=1))
    assert m["test_accuracy"] > 0.5, "the tiny network did not learn the fake digits"
    records = read_history(r.workdir / "history.jsonl")
    assert [x["step"] for x in records] == list(range(62))
    assert [x["step"] for x in records if "val_accuracy" in x] == list(range(0, 62, 10))
    assert f"{m['test_accuracy']:.4f}" in report
    assert f"{m['test_correct']} / 600" in report


def test_hw3_online_vs_minibatch(run):
    r = run("hw3_online_vs_minibatch")
    m = r.metrics
    files = {
        "history_batch_size_1.jsonl",
        "history_batch_size_32.jsonl",
        "test_accuracy.png",
        "steps_per_second.png",
    }
    report = check_outputs(r, "hw3_online_vs_minibatch", files, "hw3: online versus mini-batch SGD")
    [suptitle] = r.texts("plot_side_by_side")  # hw3_online_vs_minibatch._batch_size_figures
    assert "784-16-10 relu" in suptitle and "600 training images" in suptitle
    n = 600  # max_examples
    assert m["batch_sizes"] == [1, 32] and m["num_train"] == n
    for b in (1, 32):
        x = m[f"batch_size={b}"]
        steps = n // b  # one epoch, the last partial batch dropped
        every = max(1, steps // 4)  # checks_per_epoch = 4
        assert x["batch_size"] == b and x["steps"] == steps and x["steps_per_epoch"] == steps
        assert x["eval_every"] == every
        assert 0.0 <= x["test_accuracy"] <= 1.0
        assert x["examples_per_second"] == pytest.approx(x["steps_per_second"] * b)
        assert x["train_seconds_per_epoch"] == pytest.approx(steps / x["steps_per_second"])
        assert len(x["epoch_seconds"]) == 1 and x["compile_seconds"] > 0
        records = read_history(r.workdir / f"history_batch_size_{b}.jsonl")
        assert [y["step"] for y in records] == list(range(steps))
        assert [y["step"] for y in records if "val_accuracy" in y] == list(range(0, steps, every))
        assert f"{x['test_accuracy']:.4f}" in report


def _grid_sets(m_num_test: int):
    """Training, validation and test sets of the hw3_logreg_grid run, by hand."""
    xs, ys = ARRAYS["train_images"], ARRAYS["train_labels"]
    x_tr, y_tr, _ = two_digits(xs[:1200], ys[:1200], GRID_DIGITS)
    x_va, y_va, _ = two_digits(xs[-700:], ys[-700:], GRID_DIGITS)
    x_te, y_te, idx = two_digits(
        ARRAYS["test_images"], ARRAYS["test_labels"], GRID_DIGITS, m_num_test
    )
    return (x_tr, y_tr), (x_va, y_va), (x_te, y_te, idx)


def _grid_weights(path: Path) -> tuple[np.ndarray, dict]:
    params, meta = ckpt.load_params(
        path, {"w": np.zeros((785, 1), np.float32)}, kind=hw3_config.CHECKPOINT_KIND
    )
    return np.asarray(params["w"], np.float64)[:, 0], meta


def test_hw3_logreg_grid(run):
    r = run("hw3_logreg_grid")
    m = r.metrics
    files = {f"history_{i:02d}.jsonl" for i in range(9)} | {
        hw3_config.CHECKPOINT_NAME,
        "grid_val_accuracy.png",
        "grid_objective.png",
        "grid_curves.png",
    }
    report = check_outputs(
        r, "hw3_logreg_grid", files, "hw3: regularized logistic regression 3 vs 8"
    )
    assert len(m["grid"]) == 9 and m["num_diverged"] == sum(p["diverged"] for p in m["grid"])
    pairs = sorted((p["l2"], p["learning_rate"]) for p in m["grid"])
    assert pairs == sorted((a, b) for a in (0.01, 0.5, 1.0) for b in (0.1, 0.5, 1.0))
    # The best point: highest validation accuracy, ties to the lower cross-entropy.
    ok = [p for p in m["grid"] if not p["diverged"]]
    ranked = sorted(ok, key=lambda p: (-p["val_accuracy"], p["val_cross_entropy"]))
    assert (m["l2"], m["learning_rate"]) == (ranked[0]["l2"], ranked[0]["learning_rate"])
    assert m["grid"][m["best_index"]] == ranked[0]
    for i, p in enumerate(m["grid"]):  # one full-batch step per epoch, 20 epochs
        steps = [x["step"] for x in read_history(r.workdir / f"history_{i:02d}.jsonl")]
        # A diverged point stops at the step whose objective was not finite.
        assert steps == list(range(len(steps))) and (len(steps) < 20) == p["diverged"]

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te, _) = _grid_sets(100)
    assert m["num_train"] == len(y_tr) and m["num_val"] == len(y_va)
    assert f"the {len(y_va)} images of digits 3 and 8 among the last 700 training images" in report
    # Held-out 3s and 8s at positions >= 600, the test set's size: the case that once failed.
    held = two_digits(ARRAYS["train_images"][-700:], ARRAYS["train_labels"][-700:], GRID_DIGITS)
    assert held[2].max() >= FAKE["num_test"]

    # The checkpoint: the best point's weights after 20 full-batch steps.
    assert m["checkpoint"] == hw3_config.CHECKPOINT_NAME and m["checkpoint_step"] == 20
    w, meta = _grid_weights(r.workdir / hw3_config.CHECKPOINT_NAME)
    assert meta["step"] == 20 and meta["data"]["digits"] == list(GRID_DIGITS)
    assert meta["config"]["model"] == "logistic" and meta["config"]["l2_bias"] is False
    assert meta["config"]["batch_size"] == len(y_tr)

    # Recount by hand: the first 100 test images of 3s and 8s, unit scale, threshold 0.5.
    acc, test_ce = logistic_numbers(w, pixels(x_te, "unit", True), y_te)
    assert m["test_total"] == 100 and m["test_correct"] == round(acc * 100)
    assert m["test_cross_entropy"] == pytest.approx(test_ce, rel=1e-4)
    assert f"**{m['test_correct']} of 100**" in report
    val_acc, _ = logistic_numbers(w, pixels(x_va, "unit", True), y_va)
    assert m["val_accuracy"] == pytest.approx(val_acc, abs=1e-6)
    # Final objective: mean cross-entropy + lambda * sum of squared weights, w0 excluded.
    _, ce = logistic_numbers(w, pixels(x_tr, "unit", True), y_tr)
    assert m["final_train_cross_entropy"] == pytest.approx(ce, rel=1e-4)
    assert m["final_objective"] == pytest.approx(ce + m["l2"] * np.sum(w[:-1] ** 2), rel=1e-4)

    # Each lambda's exact optimum by hand: the gap of every point, its GD limit and the
    # optimum's test count.
    x_tr64 = pixels(x_tr, "unit", True).astype(np.float32).astype(np.float64)
    x_te64 = pixels(x_te, "unit", True).astype(np.float32).astype(np.float64)
    by_hand = {}
    for lam in sorted({p["l2"] for p in m["grid"]}):
        w_opt = _optimum_by_hand(x_tr64, y_tr, lam)
        _, ce_opt = logistic_numbers(w_opt, x_tr64, y_tr)
        p_opt = 1.0 / (1.0 + np.exp(-(x_tr64 @ w_opt)))
        by_hand[lam] = (
            ce_opt + lam * np.sum(w_opt[:-1] ** 2),
            _lr_limit_by_hand(x_tr64, p_opt, lam),
        )
        correct_opt = round(logistic_numbers(w_opt, x_te64, y_te)[0] * len(y_te))
        assert m["optimum_test_correct"][f"{lam:g}"] == correct_opt
    for p in m["grid"]:
        optimum, limit = by_hand[p["l2"]]
        assert p["optimum_objective"] == pytest.approx(optimum, rel=1e-7)
        assert p["gap"] == pytest.approx(p["train_objective"] - p["optimum_objective"])
        assert p["diverged"] or p["gap"] > -1e-6  # nothing beats the optimum
        assert p["lr_limit"] == pytest.approx(limit, rel=1e-6)
        assert p["lr_over_limit"] == pytest.approx(p["learning_rate"] / limit, rel=1e-6)
        assert p["unstable"] == (p["learning_rate"] > p["lr_limit"])
    assert m["num_unstable"] == sum(p["unstable"] for p in m["grid"])


def test_hw3_misclassified_from_the_grid_checkpoint(run):
    grid = run("hw3_logreg_grid")
    r = run("hw3_misclassified")
    m = r.metrics
    assert r.workdir != grid.workdir
    report = check_outputs(
        r,
        "hw3_misclassified",
        {"misclassified.png"},
        "hw3: most confidently misclassified test images, 3 vs 8",
    )
    [suptitle] = r.texts("plot_image_grid")
    assert "of 100 test images (3 vs 8;" in suptitle
    assert m["checkpoint"] == r.overrides["grid_checkpoint"]
    assert m["test_total"] == 100
    assert m["test_correct"] == grid.metrics["test_correct"]
    assert m["num_misclassified"] == 100 - grid.metrics["test_correct"] > 0
    assert m["shown"] == min(20, m["num_misclassified"]) == len(m["misclassified"])
    assert f"{m['test_correct']} correct, {m['num_misclassified']} misclassified" in report

    # The ranking by hand, from the checkpoint's weights.
    w, _ = _grid_weights(grid.workdir / hw3_config.CHECKPOINT_NAME)
    _, _, (x_te, y_te, idx) = _grid_sets(100)
    p = 1.0 / (1.0 + np.exp(-(pixels(x_te, "unit", True) @ w)))
    pred = (p >= 0.5).astype(np.int64)
    conf = np.abs(p - 0.5) + 0.5
    wrong = np.flatnonzero(pred != y_te)
    assert len(wrong) == m["num_misclassified"]
    expected = wrong[np.argsort(-conf[wrong], kind="stable")][:20]
    assert [it["test_index"] for it in m["misclassified"]] == [int(idx[i]) for i in expected]
    names = {1: GRID_DIGITS[0], 0: GRID_DIGITS[1]}
    for it, i in zip(m["misclassified"], expected, strict=True):
        assert it["true_digit"] == names[int(y_te[i])]
        assert it["predicted_digit"] == names[int(pred[i])] != it["true_digit"]
        assert ARRAYS["test_labels"][it["test_index"]] == it["true_digit"]
        assert it["confidence"] == pytest.approx(conf[i], rel=1e-4)
        assert f"| {it['rank']} | {it['test_index']} |" in report


def test_hw3_misclassified_leaves_the_grid_workdir_untouched(run):
    r = run("hw3_misclassified")
    assert r.grid_after == r.grid_before
    assert any(k.endswith(hw3_config.CHECKPOINT_NAME) for k in r.grid_before)


def test_hw3_grid_checkpoint_and_run_record_what_hw3_misclassified_checks(run):
    r = run("hw3_logreg_grid")
    _, meta = _grid_weights(r.workdir / hw3_config.CHECKPOINT_NAME)
    # The grid's data section as config.json has it, nothing rewritten by hand beside it.
    assert meta["data"] == json.loads((r.workdir / "config.json").read_text())["data"]
    assert meta["data"]["dataset"] == "fake" and meta["data"]["dtype"] == "float32"
    assert "digits" not in meta and "dataset" not in meta
    info = json.loads((r.workdir / "latest" / ".run.json").read_text())
    assert info["kind"] == "hw3_logreg_grid"


# ---------------------------------------------------------------------------------------------
# regularization_path.


def _optimum_by_hand(x_ND, y_N, lam: float, iters: int = 60) -> np.ndarray:
    """Minimum of mean cross-entropy + lam * sum(w[:-1]^2) (bias w[-1] not penalised).

    At the optimum the penalised weights are v = X_v^T a (the gradient condition X_v^T r / N
    + 2 lam v = 0, r = p - y), so numpy Newton runs on (a, b): N + 1 unknowns instead of D
    (small linear solves; LAPACK on a D x D matrix is very slow on a loaded 2-core machine).
    """
    n = len(y_N)
    x_v = x_ND[:, :-1]
    k_NN = x_v @ x_v.T
    a, b = np.zeros(n), 0.0

    def objective(a, b):
        z = k_NN @ a + b
        return np.mean(np.logaddexp(0.0, z) - y_N * z) + lam * a @ k_NN @ a

    for _ in range(iters):
        z = k_NN @ a + b
        p = 1.0 / (1.0 + np.exp(-z))
        s = p * (1 - p)
        g = np.r_[k_NN @ (p - y_N) / n + 2 * lam * k_NN @ a, np.sum(p - y_N) / n]
        j = np.c_[k_NN, np.ones(n)]  # dz / d(a, b)
        h = (j.T * s) @ j / n
        h[:n, :n] += 2 * lam * k_NN
        step = np.linalg.solve(h, g)
        if g @ step < 1e-26:
            break
        t, f0 = 1.0, objective(a, b)
        # Backtrack while the objective rises by more than its rounding (1e-14).
        while objective(a - t * step[:n], b - t * step[n]) > f0 - 0.25 * t * (g @ step) + 1e-14:
            t /= 2
        a, b = a - t * step[:n], b - t * step[n]
    return np.r_[x_v.T @ a, b]


def _lr_limit_by_hand(x_ND, p_N, lam: float, iters: int = 500) -> float:
    """2 / the largest eigenvalue of X^T diag(p(1-p)) X / N + 2 lam diag(1, .., 1, 0), by
    power iteration (matrix-vector products only)."""
    s_N = p_N * (1 - p_N) / len(p_N)
    m_D = np.r_[np.ones(x_ND.shape[1] - 1), 0.0]
    v = np.ones(x_ND.shape[1])
    for _ in range(iters):
        hv = x_ND.T @ (s_N * (x_ND @ v)) + 2 * lam * m_D * v
        v = hv / np.linalg.norm(hv)
    hv = x_ND.T @ (s_N * (x_ND @ v)) + 2 * lam * m_D * v
    return 2.0 / float(v @ hv)


def test_regularization_path(run):
    r = run("regularization_path")
    m = r.metrics
    title = "Regularization path, logistic 3 vs 8"
    report = check_outputs(r, "regularization_path", {"table.md", "path.png"}, title)
    assert r.texts("plot_side_by_side") == ["Regularization path of logistic regression, 3 vs 8"]
    lambdas = np.geomspace(1e-4, 1.0, r.overrides["num_l2"])  # the default l2_range
    keys = [f"lambda={lam:g}" for lam in lambdas]
    assert m["num_l2"] == len(lambdas) and [k for k in m if k.startswith("lambda=")] == keys
    table = (r.workdir / "table.md").read_text()
    assert table.strip() in report and len(table.strip().splitlines()) == 2 + len(lambdas)

    # Each optimum by hand (float64 Newton in numpy) on the same examples: float64 pixels
    # x / 255 (scale unit) plus the bias feature, the optimum of the images (not of the
    # float32 features the runs train on).
    def features(images):
        return pixels(images, "unit", True)

    (x_tr, y_tr), (x_va, y_va), (x_te, y_te, _) = _grid_sets(100)
    x_tr, x_va, x_te = features(x_tr), features(x_va), features(x_te)
    assert f"{len(y_tr)} training / {len(y_va)} validation examples" in report
    for key, lam in zip(keys, lambdas, strict=True):
        e = m[key]
        assert e["l2"] == pytest.approx(lam) and e["converged"]
        assert e["grad_norm"] <= 1e-10  # the default tol
        w = _optimum_by_hand(x_tr, y_tr, float(lam))
        p = 1.0 / (1.0 + np.exp(-(x_tr @ w)))
        grad = x_tr.T @ (p - y_tr) / len(y_tr) + 2 * lam * np.r_[w[:-1], 0.0]
        assert np.linalg.norm(grad) < 1e-9, "the hand solution is not the optimum"
        acc, ce = logistic_numbers(w, x_tr, y_tr)
        assert e["cross_entropy"] == pytest.approx(ce, rel=1e-7), key
        assert e["objective"] == pytest.approx(ce + lam * np.sum(w[:-1] ** 2), rel=1e-7), key
        assert e["weight_norm"] == pytest.approx(np.linalg.norm(w[:-1]), rel=1e-6), key
        assert e["train_accuracy"] == pytest.approx(acc, abs=1e-12)
        # "separated": every training example right at the optimum (finite for lambda > 0).
        assert e["separated"] == bool(np.all((x_tr @ w > 0) == (y_tr == 1)))
        assert e["val_accuracy"] == pytest.approx(logistic_numbers(w, x_va, y_va)[0], abs=1e-12)
        assert e["test_accuracy"] == pytest.approx(logistic_numbers(w, x_te, y_te)[0], abs=1e-12)
        # Gradient descent's limit 2 / lambda_max(H) at the optimum and at zero weights.
        assert e["lr_limit"] == pytest.approx(_lr_limit_by_hand(x_tr, p, lam), rel=1e-6), key
        half = np.full(len(y_tr), 0.5)
        assert e["lr_limit_init"] == pytest.approx(_lr_limit_by_hand(x_tr, half, lam), rel=1e-6)
    # More penalty, smaller weights.
    norms = [m[k]["weight_norm"] for k in keys]
    assert norms == sorted(norms, reverse=True)


@pytest.mark.parametrize(
    "data",
    [
        dict(digits=GRID_DIGITS, split="holdout", num_train=1200, num_val=700, scale="unit"),
        dict(num_train=None, scale="symmetric"),  # tdt4265: ten digits in [-1, 1]
        dict(num_train=None, max_examples=300, bias_feature=False),
    ],
)
def test_optimum_features_are_the_float64_preprocessing_of_the_images(fake_dir, data):
    cfg = DataConfig(dataset="fake", data_dir=str(fake_dir), **data)
    splits = load_splits(cfg)
    x_ND = optimum_features(cfg, splits)
    # Independently, in numpy float64: the same examples, the same scaling and bias column.
    xs, ys = ARRAYS["train_images"], ARRAYS["train_labels"]
    if cfg.binary:
        images = two_digits(xs[:1200], ys[:1200], GRID_DIGITS)[0]
    else:
        images = xs[: cfg.max_examples]
    expected = pixels(images, cfg.scale, cfg.bias_feature)
    assert x_ND.dtype == np.float64 and x_ND.shape == expected.shape
    np.testing.assert_array_equal(x_ND, expected)
    # Not the float32 training features upcast: those differ from the exact values.
    x32 = np.asarray(splits.data.x_train)
    assert x32.dtype == np.float32 and not np.array_equal(x32.astype(np.float64), x_ND)


def test_float32_and_float64_runs_report_the_same_optimum(run, tmp_path, fake_dir):
    """The optimum belongs to the images: a float32 run's is a float64 run's, to rounding."""
    r32 = run("regularization_path")
    assert r32.overrides.get("dtype", "float32") == "float32"
    over64 = dict(overrides_for("regularization_path", fake_dir), dtype="float64")
    m64 = run_experiment("regularization_path", tmp_path / "f64", over64)
    keys = [k for k in r32.metrics if k.startswith("lambda=")]
    assert keys and keys == [k for k in m64 if k.startswith("lambda=")]
    for key in keys:
        a, b = r32.metrics[key], m64[key]
        assert a["converged"] and b["converged"]
        assert a["objective"] == pytest.approx(b["objective"], rel=1e-12, abs=0), key
        assert a["weight_norm"] == pytest.approx(b["weight_norm"], rel=1e-9), key
        assert a["lr_limit"] == pytest.approx(b["lr_limit"], rel=1e-6), key
    # The test can fail: the optimum of the float32 features upcast is off by far more.
    from jaxlr.core import solver
    from jaxlr.engine.train import model_for

    cfg = make_config("regularization_path", overrides_for("regularization_path", fake_dir))
    splits = load_splits(cfg.data)
    x32 = np.asarray(splits.data.x_train).astype(np.float64)
    lam = float(r32.metrics[keys[0]]["l2"])
    model = model_for(cfg.train, x32.shape[1], np.float64)
    upcast = solver.solve(model, None, x32, splits.data.y_train, lam)
    exact = r32.metrics[keys[0]]["objective"]
    assert abs(float(upcast.objective) - exact) > 1e-12 * abs(exact)


# ---------------------------------------------------------------------------------------------
# The launcher on fake data (a subprocess: flags, --smoke, exit code).


def test_main_runs_a_smoke_experiment_on_fake_data(tmp_path, fake_dir):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = [
        "--experiment=tdt4265_task2",
        f"--workdir={tmp_path}",
        "--smoke",
        "--nocompilation_cache",
        "--dataset=fake",
        f"--data_dir={fake_dir}",
        "--num_train=all",
        "--digits=4,9",
        "--num_epochs=1",  # given flags win over the smoke overrides
    ]
    out = subprocess.run(
        [sys.executable, "-m", "experiments.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = json.loads((tmp_path / "config.json").read_text())
    m = json.loads((tmp_path / "metrics.json").read_text())
    data, train = cfg["data"], cfg["train"]
    assert data["max_examples"] == 256 and train["num_epochs"] == 1 and data["digits"] == [4, 9]
    assert data["num_train"] is None and data["dataset"] == "fake"
    assert m["steps"] == 1 * (256 // 128)
    assert (
        (tmp_path / "report.md")
        .read_text()
        .startswith("# TDT4265 task 2, logistic regression 4 vs 9\n")
    )
    check_png(tmp_path / "loss.png")

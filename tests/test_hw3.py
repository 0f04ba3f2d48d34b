"""End-to-end tests of the hw3 experiments on the real MNIST files.

Each experiment runs once (module fixtures) through `experiments.common.run_experiment` with
its registered smoke overrides (or a config as small) on the real files (skipped with the
reason when they are not found); the tests check the files written and recompute the
numbers in `metrics.json` by hand. The checks that `hw3_misclassified` refuses a missing,
corrupt or foreign checkpoint need no data. The same experiments on fake data:
`tests/test_experiments.py`. Dimension legend: N examples, D features, K classes.
"""

import dataclasses
import json
import os
from pathlib import Path

import numpy as np
import pytest
from realdata import DATA_DIR, PNG_MAGIC, needs_data, require_data

from experiments import (
    hw3_config,
    registry,  # noqa: F401  (registers the experiments)
)
from experiments.common import run_experiment
from experiments.config import EXPERIMENTS, make_config
from jaxlr.data import registry as jregistry
from jaxlr.host import checkpoint as ckpt


def _mnist():
    return jregistry.load_dataset("mnist", DATA_DIR, download=False)


def _read(workdir: Path) -> dict:
    return json.loads((workdir / "metrics.json").read_text())


def _assert_png(path: Path) -> None:
    assert path.exists(), f"{path} missing"
    assert path.read_bytes()[:8] == PNG_MAGIC


def _history_lines(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# ---------------------------------------------------------------------------------------------
# hw3_mlp


def smoke(name: str, **more) -> dict:
    """Experiment `name`'s smoke overrides on the real files (data_dir '' = the usual lookup)."""
    return {**EXPERIMENTS[name].smoke, "data_dir": DATA_DIR or "", **more}


# The smoke run: 1,000 training images (31 steps of 32 per epoch), the first 1,000 test
# images, checks every 10 steps, so the last step (30) is followed by a check.
TINY_MLP = smoke("hw3_mlp")


@pytest.fixture(scope="module")
def mlp_runs(tmp_path_factory):
    require_data()
    out = {}
    for grad in ("analytic", "autodiff"):
        workdir = tmp_path_factory.mktemp(f"hw3_mlp_{grad}")
        run_experiment("hw3_mlp", workdir, {**TINY_MLP, "grad": grad})
        out[grad] = workdir
    return out


@needs_data
def test_hw3_mlp_writes_files_and_consistent_numbers(mlp_runs):
    workdir = mlp_runs["analytic"]
    for name in ("config.json", "metrics.json", "history.jsonl", "report.md"):
        assert (workdir / name).exists(), name
    for name in ("loss.png", "accuracy.png", "per_class_accuracy.png", "confusion_matrix.png"):
        _assert_png(workdir / name)
    m = _read(workdir)
    config = json.loads((workdir / "config.json").read_text())
    assert config["experiment"] == "hw3_mlp" and config["train"]["hidden"] == [24, 12]
    assert config["train"]["bias"] == "explicit" and config["data"]["bias_feature"] is False
    assert m["steps"] == 2 * (1000 // 32) and m["epochs"] == 2 and m["num_train"] == 1000

    # The confusion matrix, per-class and overall accuracy all describe the same 1,000
    # test images, whose true labels are known independently.
    y_test = np.asarray(_mnist().y_test[:1000])
    cm_KK = np.asarray(m["confusion_matrix"])
    assert cm_KK.shape == (10, 10) and cm_KK.sum() == 1000
    np.testing.assert_array_equal(cm_KK.sum(axis=1), np.bincount(y_test, minlength=10))
    assert m["test_total"] == 1000 and m["test_correct"] == np.trace(cm_KK)
    assert m["test_accuracy"] == pytest.approx(np.trace(cm_KK) / 1000)
    np.testing.assert_allclose(m["per_class_accuracy"], np.diag(cm_KK) / cm_KK.sum(axis=1))
    assert m["test_accuracy"] > 0.5, "the tiny network did not learn"

    # The final step (61) is a check of the same weights the final numbers come from.
    records = _history_lines(workdir / "history.jsonl")
    assert [r["step"] for r in records] == list(range(62))
    checks = [r for r in records if "val_accuracy" in r]
    assert [r["step"] for r in checks] == list(range(0, 62, 10))
    assert checks[-1]["step"] == 60  # the last check precedes step 61
    assert m["wall_seconds"] > 0 and m["steps_per_second"] > 0
    report = (workdir / "report.md").read_text()
    assert "confusion_matrix.png" in report and f"{m['test_accuracy']:.4f}" in report


@needs_data
def test_hw3_mlp_analytic_and_autodiff_agree(mlp_runs):
    a = _history_lines(mlp_runs["analytic"] / "history.jsonl")
    b = _history_lines(mlp_runs["autodiff"] / "history.jsonl")
    la = np.array([r["train_loss"] for r in a])
    lb = np.array([r["train_loss"] for r in b])
    # float32 training: the two gradients differ by rounding only, which 62 steps of SGD
    # amplify a little.
    np.testing.assert_allclose(la, lb, rtol=2e-3, atol=1e-4)
    ma, mb = _read(mlp_runs["analytic"]), _read(mlp_runs["autodiff"])
    assert ma["grad"] == "analytic" and mb["grad"] == "autodiff"
    assert abs(ma["test_accuracy"] - mb["test_accuracy"]) <= 0.005


@needs_data
def test_hw3_mlp_holdout_split_and_sigmoid(tmp_path):
    # Validation from the training images, test on the first 300 test images.
    overrides = dict(
        data_dir=DATA_DIR or "",
        hidden=(8,),
        activation="sigmoid",
        split="holdout",
        num_val=200,
        num_test=300,
        max_examples=320,
        num_epochs=1,
        eval_every=5,
        train_eval_size=100,
    )
    m = run_experiment("hw3_mlp", tmp_path, overrides)
    assert m["activation"] == "sigmoid" and m["num_train"] == 320
    assert m["test_total"] == 300 and 0.0 <= m["val_accuracy"] <= 1.0
    np.testing.assert_array_equal(
        np.asarray(m["confusion_matrix"]).sum(axis=1),
        np.bincount(np.asarray(_mnist().y_test[:300]), minlength=10),
    )
    records = _history_lines(tmp_path / "history.jsonl")
    assert len(records) == 320 // 32
    assert "the 200 validation images" in (tmp_path / "report.md").read_text()


# ---------------------------------------------------------------------------------------------
# hw3_online_vs_minibatch


@pytest.fixture(scope="module")
def online_run(tmp_path_factory):
    require_data()
    workdir = tmp_path_factory.mktemp("hw3_online")
    run_experiment(
        "hw3_online_vs_minibatch",
        workdir,
        dict(
            data_dir=DATA_DIR or "",
            hidden=(16,),
            num_train=256,
            max_examples=256,
            batch_sizes=(1, 8),
            num_epochs=1,
            train_eval_size=64,
        ),
    )
    return workdir


@needs_data
def test_hw3_online_vs_minibatch(online_run):
    m = _read(online_run)
    assert m["batch_sizes"] == [1, 8] and m["num_train"] == 256
    for b, steps in ((1, 256), (8, 32)):
        r = m[f"batch_size={b}"]
        assert r["batch_size"] == b and r["steps"] == steps and r["steps_per_epoch"] == steps
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["wall_seconds"] > 0 and r["steps_per_second"] > 0
        assert r["examples_per_second"] == pytest.approx(r["steps_per_second"] * b)
        records = _history_lines(online_run / f"history_batch_size_{b}.jsonl")
        assert len(records) == steps
        # Ten checks per epoch for every batch size: every M // 10 steps.
        checks = [x["step"] for x in records if "val_accuracy" in x]
        assert checks == list(range(0, steps, steps // 10))
        # Timings are not compared between runs: a few milliseconds on a shared machine.
        assert r["train_seconds_per_epoch"] == pytest.approx(steps / r["steps_per_second"])
        assert len(r["epoch_seconds"]) == 1 and r["compile_seconds"] > 0
    _assert_png(online_run / "test_accuracy.png")
    _assert_png(online_run / "steps_per_second.png")
    assert "batch_size=8" in (online_run / "report.md").read_text()


# ---------------------------------------------------------------------------------------------
# hw3_logreg_grid and hw3_misclassified (each in its own workdir)

# The smoke grid: lambda {0.01, 0.5, 1} x lr {0.1, 0.5, 1}, 20 full-batch epochs, the 4s and
# 9s among the first 3,000 training images, validation on those among the last 2,000.
TINY_GRID = smoke("hw3_logreg_grid")
TINY_MIS = smoke("hw3_misclassified")  # the first 100 test images of 4s and 9s


def _tree(folder: Path) -> dict:
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
def grid_run(tmp_path_factory):
    require_data()
    workdir = tmp_path_factory.mktemp("hw3_logreg")
    run_experiment("hw3_logreg_grid", workdir, TINY_GRID)
    grid_metrics = _read(workdir)
    before = _tree(workdir)
    mis_dir = tmp_path_factory.mktemp("hw3_misclassified")
    overrides = dict(TINY_MIS, grid_checkpoint=str(workdir / hw3_config.CHECKPOINT_NAME))
    run_experiment("hw3_misclassified", mis_dir, overrides)
    assert _tree(workdir) == before, "hw3_misclassified changed the grid's workdir"
    return workdir, grid_metrics, mis_dir


def _four_nine(x, y, n=None):
    """Features (x / 255 and the constant 1) and labels (9 -> 1, 4 -> 0) of the 4s and 9s."""
    keep = np.flatnonzero((y == 9) | (y == 4))[:n]
    x_ND = np.asarray(x[keep], np.float64).reshape(len(keep), -1) / 255.0
    x_ND = np.concatenate([x_ND, np.ones((len(keep), 1))], axis=1)
    return x_ND, (y[keep] == 9).astype(np.int64), keep


def _grid_weights(path: Path) -> np.ndarray:
    params, _ = ckpt.load_checkpoint(path, {"w": np.zeros((785, 1), np.float32)}, prefix="params")
    return np.asarray(params["w"], np.float64)[:, 0]


@needs_data
def test_hw3_logreg_grid_checkpoint_and_test_count(grid_run):
    workdir, m, _ = grid_run
    cfg = make_config("hw3_logreg_grid", TINY_GRID)
    for name in ("grid_val_accuracy.png", "grid_objective.png", "grid_curves.png"):
        _assert_png(workdir / name)
    assert (
        (workdir / "report.md")
        .read_text()
        .startswith("# hw3: regularized logistic regression 9 vs 4\n")
    )
    hp = cfg.hparams
    assert len(m["grid"]) == len(hp.lr) * len(hp.l2) == 9
    pairs = sorted((p["l2"], p["learning_rate"]) for p in m["grid"])
    assert pairs == sorted((a, b) for a in hp.l2 for b in hp.lr)
    # The best point: highest validation accuracy, ties to the lower cross-entropy.
    ok = [p for p in m["grid"] if not p["diverged"]]
    ranked = sorted(ok, key=lambda p: (-p["val_accuracy"], p["val_cross_entropy"]))
    assert (m["l2"], m["learning_rate"]) == (ranked[0]["l2"], ranked[0]["learning_rate"])
    assert m["val_accuracy"] == ranked[0]["val_accuracy"]

    # The checkpoint on disk (published beside the report): the logistic weights w_D1
    # (785 x 1), step = 20 full-batch steps.
    assert m["checkpoint"] == hw3_config.CHECKPOINT_NAME
    path = workdir / m["checkpoint"]
    params, meta = ckpt.load_checkpoint(
        path, {"w": np.zeros((785, 1), np.float32)}, prefix="params"
    )
    steps = cfg.train.num_epochs
    assert meta["step"] == steps and m["checkpoint_step"] == steps
    assert meta["kind"] == hw3_config.CHECKPOINT_KIND
    assert meta["config"]["model"] == "logistic" and meta["config"]["l2_bias"] is False
    assert meta["data"]["digits"] == [9, 4]  # the data section, as in config.json
    w = np.asarray(params["w"], np.float64)[:, 0]

    # Recount by hand: the first 100 test images of 4s and 9s, threshold 0.5 (z >= 0).
    ds = _mnist()
    x_test, y_test, _ = _four_nine(np.asarray(ds.x_test), np.asarray(ds.y_test), 100)
    correct = int(np.sum(((x_test @ w) >= 0).astype(np.int64) == y_test))
    assert m["test_total"] == 100 and m["test_correct"] == correct

    # The final objective: mean cross-entropy + lambda * sum of squared weights, w0 excluded,
    # over the 4s and 9s among the first num_train training images.
    n = cfg.data.num_train
    x_tr, y_tr, _ = _four_nine(np.asarray(ds.x_train[:n]), np.asarray(ds.y_train[:n]))
    z = x_tr @ w
    ce = np.mean(np.logaddexp(0.0, z) - y_tr * z)
    assert m["num_train"] == len(y_tr)
    assert m["final_train_cross_entropy"] == pytest.approx(ce, rel=1e-4)
    assert m["final_objective"] == pytest.approx(ce + m["l2"] * np.sum(w[:-1] ** 2), rel=1e-4)
    # Validation: the 4s and 9s among the last num_val training images.
    v = cfg.data.num_val
    _, y_val, _ = _four_nine(np.asarray(ds.x_train[-v:]), np.asarray(ds.y_train[-v:]))
    assert m["num_val"] == len(y_val)


@needs_data
def test_hw3_misclassified_lists_the_most_confident_mistakes(grid_run):
    grid_dir, grid_metrics, workdir = grid_run
    m = _read(workdir)
    _assert_png(workdir / "misclassified.png")
    # Its own workdir, config, metrics and report; the grid's are left alone (fixture).
    config = json.loads((workdir / "config.json").read_text())
    assert config["experiment"] == "hw3_misclassified"
    assert (
        config["grid_checkpoint"] == str(grid_dir / hw3_config.CHECKPOINT_NAME) == m["checkpoint"]
    )
    assert "grid" not in m
    report = (workdir / "report.md").read_text()
    assert report.startswith("# hw3: most confidently misclassified test images, 9 vs 4\n")
    assert "## Grid" not in report
    assert m["test_total"] == 100 and m["test_correct"] == grid_metrics["test_correct"]
    assert m["num_misclassified"] == 100 - grid_metrics["test_correct"]
    assert m["shown"] == min(20, m["num_misclassified"]) == len(m["misclassified"])

    # Recompute the ranking by hand from the checkpoint's weights.
    w = _grid_weights(grid_dir / hw3_config.CHECKPOINT_NAME)
    ds = _mnist()
    x_test, y_test, idx = _four_nine(np.asarray(ds.x_test), np.asarray(ds.y_test), 100)
    p = 1.0 / (1.0 + np.exp(-(x_test @ w)))
    pred = (p >= 0.5).astype(np.int64)
    conf = np.abs(p - 0.5) + 0.5
    wrong = np.flatnonzero(pred != y_test)
    expected = wrong[np.argsort(-conf[wrong], kind="stable")][:20]
    assert [it["test_index"] for it in m["misclassified"]] == [int(idx[i]) for i in expected]
    for it, i in zip(m["misclassified"], expected, strict=True):
        assert it["true_digit"] == (9 if y_test[i] else 4)
        assert it["predicted_digit"] == (9 if pred[i] else 4) != it["true_digit"]
        assert int(ds.y_test[it["test_index"]]) == it["true_digit"]
        assert it["confidence"] == pytest.approx(conf[i], rel=1e-4)
    confs = [it["confidence"] for it in m["misclassified"]]
    assert confs == sorted(confs, reverse=True) and all(c >= 0.5 for c in confs)

    # Running it again into its workdir publishes the same numbers (a second run replaces
    # the first; nothing stacks up).
    before = _tree(grid_dir)
    again = run_experiment(
        "hw3_misclassified",
        workdir,
        dict(TINY_MIS, grid_checkpoint=str(grid_dir / "logreg_best.npz")),
    )
    assert again["misclassified"] == m["misclassified"]
    assert len(list((workdir / ".runs").iterdir())) == 1
    assert _tree(grid_dir) == before


# ---------------------------------------------------------------------------------------------
# Refusals (no data needed: the checkpoint is checked before any image is read).


def test_hw3_misclassified_reads_the_grid_workdir_by_default():
    assert make_config("hw3_misclassified").grid_checkpoint == (
        f"{hw3_config.GRID_WORKDIR}/{hw3_config.CHECKPOINT_NAME}"
    )
    assert hw3_config.GRID_WORKDIR == "runs/hw3_logreg_grid"


def test_hw3_misclassified_refuses_a_missing_checkpoint(tmp_path):
    path = tmp_path / "grid" / hw3_config.CHECKPOINT_NAME
    with pytest.raises(ckpt.CheckpointError) as err:
        run_experiment("hw3_misclassified", tmp_path / "mis", {"grid_checkpoint": str(path)})
    msg = str(err.value)
    assert "\n" not in msg
    assert "no checkpoint" in msg and str(path) in msg
    assert "--experiment=hw3_logreg_grid" in msg and "--grid_checkpoint=PATH" in msg
    assert not (tmp_path / "mis" / "metrics.json").exists()


def test_hw3_misclassified_refuses_a_corrupt_checkpoint(tmp_path):
    path = tmp_path / "broken.npz"
    path.write_bytes(b"PK\x03\x04 this is not a zip archive" * 10)
    with pytest.raises(ckpt.CheckpointError, match="corrupt"):
        run_experiment("hw3_misclassified", tmp_path / "mis", {"grid_checkpoint": str(path)})
    # A real checkpoint cut short is refused too.
    good = ckpt.save_checkpoint(
        tmp_path / "good.npz", {"params": {"w": np.zeros((785, 1), np.float32)}}, step=1
    )
    blob = good.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    with pytest.raises(ckpt.CheckpointError):
        run_experiment("hw3_misclassified", tmp_path / "mis", {"grid_checkpoint": str(path)})


def test_hw3_misclassified_refuses_another_models_checkpoint(tmp_path):
    out = tmp_path / "mis"
    # A network's checkpoint (another kind of run).
    mlp = {"layers": [{"w": np.zeros((784, 8), np.float32), "b": np.zeros(8, np.float32)}]}
    other = ckpt.save_checkpoint(
        tmp_path / "mlp.npz", {"params": mlp}, step=3, meta={"kind": "train_run"}
    )
    with pytest.raises(ckpt.CheckpointError, match="hw3_logreg_grid"):
        run_experiment("hw3_misclassified", out, {"grid_checkpoint": str(other)})
    # Labelled as the grid's, but the weights do not fit a 785-input logistic regression.
    tcfg = dataclasses.replace(make_config("hw3_logreg_grid").train, batch_size=10)
    meta = {
        "kind": hw3_config.CHECKPOINT_KIND,
        "digits": [9, 4],
        "scale": "unit",
        "bias_feature": True,
    }
    wrong = ckpt.save_checkpoint(
        tmp_path / "wrong.npz",
        {"params": {"w": np.zeros((100, 1), np.float32)}},
        step=3,
        config=tcfg.to_dict(),
        meta=meta,
    )
    with pytest.raises(ckpt.CheckpointError, match="shape"):
        run_experiment("hw3_misclassified", out, {"grid_checkpoint": str(wrong)})
    # Right shapes, wrong dtype (a float64 checkpoint for a float32 run).
    wrong64 = ckpt.save_checkpoint(
        tmp_path / "wrong64.npz",
        {"params": {"w": np.zeros((785, 1), np.float64)}},
        step=3,
        config=tcfg.to_dict(),
        meta=meta,
    )
    with pytest.raises(ckpt.CheckpointError, match="float64"):
        run_experiment("hw3_misclassified", out, {"grid_checkpoint": str(wrong64)})
    assert not (out / "metrics.json").exists()

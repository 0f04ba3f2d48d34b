"""TDT4265 Assignment 1: logistic and softmax regression on MNIST, every task as an experiment.

Course protocol (the defaults): images scaled to [-1, 1] plus the constant-1 bias feature,
weights initialised to zeros, train = the first 20,000 training images, validation = the
10,000 test images (for the binary tasks only the digits 2 (label 1) and 3 (label 0) of
both: 4,005 training and 2,042 validation images), batch 128, the last partial batch
dropped, validation every max(1, M // 5) steps with M batches per epoch.

Launch any of them with

    python -m experiments.main --experiment=NAME --workdir=DIR [--data_dir=...] [--FIELD=V]

Every run writes its history as JSON lines (`history.jsonl`, or `history_<run>.jsonl` when
an experiment trains several runs), PNG figures and `report.md` into DIR.

Dimension legend: N examples, D features (785), K classes, P pixels (784), T steps,
C checks, L values of lambda.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import jax.numpy as jnp
import numpy as np

from experiments.common import load_data, register, train_config, write_history, write_report
from jaxlr import plots
from jaxlr.config import TrainConfig, make_hparams
from jaxlr.data import num_batches
from jaxlr.losses import l2_weights
from jaxlr.optim import make_schedule
from jaxlr.train import Data, TrainResult, fit

log = logging.getLogger("jaxlr.experiments.tdt4265")

# Defaults shared by the binary (2 versus 3) tasks and by the ten-class tasks.
BINARY = dict(model="logistic", digits=(2, 3), lr=(0.05,), num_epochs=50, shuffle=False)
SOFTMAX = dict(model="softmax", num_classes=10, digits=(), lr=(0.01,), num_epochs=50, shuffle=True)
# Early-stopped runs (course task 2d): patience 10 checks, up to 500 epochs.
EARLY = dict(early_stopping=True, patience=10, num_epochs=500)


# ---------------------------------------------------------------------------------------------
# Running one configuration.


def _single(cfg: dict, name: str) -> float:
    values = tuple(cfg[name])
    if len(values) != 1:
        raise ValueError(f"this experiment trains with one value of {name}, got {values}")
    return float(values[0])


def _run_slug(key: str) -> str:
    """File-name part of a run key: "lambda=0.1" -> "lambda_0.1"."""
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", key).strip("_") or "run"


def _checkpoint_path(cfg: dict, workdir: Path, key: str | None) -> Path | None:
    # cfg["checkpoint"]: "" for none, else a folder (relative to workdir) holding one
    # checkpoint per run, so an interrupted experiment resumes every run where it was.
    if not cfg["checkpoint"]:
        return None
    folder = Path(cfg["checkpoint"])
    folder = folder if folder.is_absolute() else workdir / folder
    return folder / f"{_run_slug(key or 'run')}.npz"


def train_run(
    cfg: dict,
    data: Data,
    workdir: Path,
    key: str | None = None,
    *,
    learning_rate: float | None = None,
    l2: float | None = None,
    **changes,
) -> TrainResult:
    """Trains one run of the flat config `cfg` with `jaxlr.train.fit`.

    Args:
      cfg: flat experiment config.
      data: preprocessed arrays.
      workdir: experiment folder (for checkpoints).
      key: run name in logs and file names (None for an experiment's only run).
      learning_rate: alpha_0 (default: the config's single `lr`).
      l2: lambda (default: the config's single `l2`).
      **changes: `TrainConfig` fields that differ from `cfg` for this run.

    Returns:
      `TrainResult` of the run.
    """
    tcfg = train_config(cfg, **changes)
    hparams = make_hparams(
        _single(cfg, "lr") if learning_rate is None else learning_rate,
        _single(cfg, "l2") if l2 is None else l2,
        momentum=_single(cfg, "momentum"),
        seed=cfg["seed"],
        dtype=np.asarray(data.x_train).dtype,
    )
    prefix = f"[{key}] " if key else ""
    return fit(
        tcfg,
        hparams,
        data,
        checkpoint_path=_checkpoint_path(cfg, workdir, key),
        log_fn=lambda msg: log.info("%s%s", prefix, msg),
    )


def run_metrics(result: TrainResult, tcfg: TrainConfig, num_train: int) -> dict:
    """The metrics.json object of one run: final numbers from the returned weights and more.

    Args:
      result: the run.
      tcfg: its static config.
      num_train: N (for the schedule numbers).

    Returns:
      dict with train/val loss and accuracy, steps, steps_per_epoch, eval_every,
      wall_seconds and, with early stopping, `early_stopping`.
    """
    out = dict(result.metrics)
    m = num_batches(num_train, tcfg.batch_size, tcfg.drop_last)
    out["steps_per_epoch"] = int(m)
    out["eval_every"] = int(tcfg.eval_every or max(1, m // 5))
    out["wall_seconds"] = float(result.wall_seconds)
    return out


def _summary(result: TrainResult, cfg: dict, data: Data, **changes) -> dict:
    return run_metrics(result, train_config(cfg, **changes), int(np.shape(data.x_train)[0]))


def _write_history(workdir: Path, key: str | None, result: TrainResult) -> str:
    name = "history.jsonl" if key is None else f"history_{_run_slug(key)}.jsonl"
    write_history(workdir / name, result.history)
    return name


# ---------------------------------------------------------------------------------------------
# Figures and report text.


def _zoom(
    arrays: Sequence[np.ndarray],
    *,
    skip: float = 0.05,
    lo_q=1.0,
    hi_q=99.0,
    pad: float = 0.15,
    floor: float | None = None,
    ceil: float | None = None,
):
    """y limits that show the later part of curves in detail (the first steps are far off)."""
    parts = []
    for a in arrays:
        a = np.asarray(a, np.float64)
        a = a[int(len(a) * skip) :]
        parts.append(a[np.isfinite(a)])
    vals = np.concatenate(parts) if parts else np.zeros(0)
    if vals.size == 0:
        return None
    lo, hi = np.percentile(vals, lo_q), np.percentile(vals, hi_q)
    span = max(hi - lo, 1e-3)
    lo, hi = lo - pad * span, hi + pad * span
    if floor is not None:
        lo = max(lo, floor)
    if ceil is not None:
        hi = min(hi, ceil)
    return (float(lo), float(hi))


def _running_mean(x: np.ndarray, window: int) -> np.ndarray:
    """Trailing mean over `window` entries (fewer at the start)."""
    x = np.asarray(x, np.float64)
    c = np.concatenate([[0.0], np.cumsum(x)])
    i = np.arange(1, len(x) + 1)
    lo = np.maximum(0, i - window)
    return (c[i] - c[lo]) / (i - lo)


def _loss_series(h: dict, label: str = "") -> dict:
    """Batch training loss (faint), its mean over the last epoch, and the validation loss."""
    sep = ", " if label else ""
    epoch = np.asarray(h["epoch"])
    m = max(1, int(np.sum(epoch == epoch[0]))) if len(epoch) else 1
    return {
        f"training loss (batch){sep}{label}": (h["step"], h["train_loss"]),
        f"training loss (mean of last {m} batches){sep}{label}": (
            h["step"],
            _running_mean(h["train_loss"], m),
        ),
        f"validation loss{sep}{label}": (h["check_step"], h["val_loss"]),
    }


def _loss_styles(series: dict) -> dict:
    # The batch loss is noisy: drawn faint so that the smoothed and validation curves show.
    return (
        {k: {"alpha": 0.3, "linewidth": 0.7, "color": "C0"} for k in series if "(batch)" in k}
        | {k: {"color": "C0", "linewidth": 1.8} for k in series if "(mean of" in k}
        | {k: {"color": "C1", "linewidth": 1.5} for k in series if k.startswith("validation")}
    )


def _accuracy_series(h: dict, label: str = "") -> dict:
    sep = ", " if label else ""
    return {
        f"training accuracy{sep}{label}": (h["check_step"], h["train_accuracy"]),
        f"validation accuracy{sep}{label}": (h["check_step"], h["val_accuracy"]),
    }


def _loss_ylim(*hs: dict):
    # Fitted to the smoothed training loss and the validation loss; the faint batch loss
    # may leave the frame.
    arrays = []
    for h in hs:
        series = _loss_series(h)
        arrays += [y for k, (_, y) in series.items() if "(batch)" not in k]
    return _zoom(arrays, lo_q=0.0, hi_q=99.5, pad=0.3, floor=0.0)


def _acc_ylim(*hs: dict):
    arrays = [a for h in hs for a in (h["train_accuracy"], h["val_accuracy"])]
    return _zoom(arrays, lo_q=2.0, hi_q=100.0, ceil=1.0 + 1e-3)


def _es_vlines(es: dict | None, label: str = "") -> dict:
    if not es:
        return {}
    sep = ", " if label else ""
    out = {f"best check (step {es['best_step']}){sep}{label}": es["best_step"]}
    if es["stopped"]:
        out[f"early stop (step {es['step']}){sep}{label}"] = es["step"]
    return out


def _metrics_table(runs: dict[str, dict]) -> str:
    """Markdown table of the final numbers of one or several runs."""
    rows = [
        "| run | train loss | val loss | train acc | val acc | steps | wall (s) |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for key, m in runs.items():
        rows.append(
            f"| {key} | {m['train_loss']:.4f} | {m['val_loss']:.4f} | {m['train_accuracy']:.4f} "
            f"| {m['val_accuracy']:.4f} | {m['steps']} | {m['wall_seconds']:.1f} |"
        )
    return "\n".join(rows)


def _es_text(es: dict, m: int) -> str:
    if es["stopped"]:
        stop = (
            f"Early stopping fired after the check of step {es['step']} (epoch {es['epoch']}, "
            f"0-based; {m} steps per epoch)"
        )
    else:
        stop = "Early stopping did not fire before the last epoch"
    return (
        f"{stop}; the returned weights are those of the best check, step {es['best_step']} "
        f"(epoch {es['best_epoch']}), validation loss {es['best_val_loss']:.4f}."
    )


def _protocol_text(cfg: dict, data: Data, tcfg: TrainConfig) -> str:
    n, v = int(np.shape(data.x_train)[0]), int(np.shape(data.x_val)[0])
    m = num_batches(n, tcfg.batch_size, tcfg.drop_last)
    e = tcfg.eval_every or max(1, m // 5)
    what = (
        f"digits {cfg['digits'][0]} (1) vs {cfg['digits'][1]} (0)"
        if cfg["digits"]
        else ("all ten digits")
    )
    return (
        f"Data: {cfg['dataset']}, {what}, {n} training / {v} validation examples "
        f"(split `{cfg['split']}`, scale `{cfg['scale']}`, bias feature {cfg['bias_feature']}). "
        f"Model `{tcfg.model}`, optimizer `{tcfg.optimizer}`, schedule `{tcfg.schedule}`, "
        f"learning rate {cfg['lr'][0]:g}, batch {tcfg.batch_size}, up to {tcfg.num_epochs} "
        f"epochs ({m} steps each), shuffle {tcfg.shuffle}, validation every {e} steps, "
        f"dtype {cfg['dtype']}."
    )


def _image(name: str, caption: str) -> str:
    return f"![{caption}]({name})"


# ---------------------------------------------------------------------------------------------
# Task 2: logistic regression, 2 versus 3.


def _single_run_report(cfg: dict, workdir: Path, key: str, title: str, **changes) -> dict:
    """Trains one run and writes history, loss and accuracy figures and the report."""
    splits = load_data(cfg)
    data = splits.data
    result = train_run(cfg, data, workdir, **changes)
    m = _summary(result, cfg, data, **changes)
    hist = _write_history(workdir, None, result)
    h = result.history
    es = m.get("early_stopping")
    vl = _es_vlines(es)
    plots.plot_curves(
        workdir / "loss.png",
        _loss_series(h),
        styles=_loss_styles(_loss_series(h)),
        xlabel="training step",
        ylabel="cross-entropy loss",
        title=f"{title}: loss",
        ylim=_loss_ylim(h),
        vlines=vl,
    )
    plots.plot_curves(
        workdir / "accuracy.png",
        _accuracy_series(h),
        xlabel="training step",
        ylabel="accuracy",
        title=f"{title}: accuracy",
        ylim=_acc_ylim(h),
        vlines=vl,
    )
    sections = [
        _protocol_text(cfg, data, train_config(cfg, **changes)),
        "## Final numbers (returned weights)\n\n" + _metrics_table({key: m}),
    ]
    if es:
        sections.append("## Early stopping\n\n" + _es_text(es, m["steps_per_epoch"]))
    sections.append(
        "## Figures\n\n"
        + _image("loss.png", "training and validation loss")
        + "\n\n"
        + _image("accuracy.png", "training and validation accuracy")
        + f"\n\nHistory: `{hist}` (training loss per step; validation at checks)."
    )
    write_report(workdir / "report.md", title, sections)
    return m


@register("tdt4265_task2", **BINARY)
def task2(cfg: dict, workdir: Path) -> dict:
    """Task 2b/2c: logistic regression 2 vs 3, lr 0.05, 50 epochs, no shuffle.

    Launch:  python -m experiments.main --experiment=tdt4265_task2 --workdir=runs/tdt4265_task2
    Runtime: about 6 s on 2 CPU cores (1,550 steps, 259 checks; 2 s of it training).
    Result:  validation accuracy 0.9789 (2,042 images), validation loss 0.0652; the
             validation curves show spikes every 186 steps (see tdt4265_task2e).
    """
    return _single_run_report(
        cfg, workdir, f"lr={cfg['lr'][0]:g}", "TDT4265 task 2, logistic regression 2 vs 3"
    )


@register("tdt4265_task2d", **{**BINARY, **EARLY})
def task2d(cfg: dict, workdir: Path) -> dict:
    """Task 2d: task 2 with early stopping (patience 10 checks), up to 500 epochs.

    Launch:  python -m experiments.main --experiment=tdt4265_task2d --workdir=runs/tdt4265_task2d
    Runtime: about 5 s on 2 CPU cores.
    Result:  stops after the check of step 1038 (epoch 33, 0-based); best check step 978
             (epoch 31), whose weights give validation accuracy 0.9789, loss 0.0657.
    """
    return _single_run_report(cfg, workdir, "early stopping", "TDT4265 task 2d, early stopping")


# ---------------------------------------------------------------------------------------------
# Task 2e: shuffling or not.


def _shuffle_text(m: dict) -> str:
    period = math.lcm(m["steps_per_epoch"], m["eval_every"])
    return (
        "Without shuffling every epoch presents the batches in the same order, so the "
        "weights go through the same cycle within every epoch: right after certain batches "
        "they are worse for the validation set. The checks (every "
        f"{m['eval_every']} steps, {m['steps_per_epoch']} steps per epoch) land on the same "
        f"position within an epoch only every lcm = {period} steps, so those dips show up as "
        f"spikes with a period of {period} steps. With shuffling the batch order changes every "
        "epoch and the pattern disappears; the curves are noisy, not periodic."
    )


@register("tdt4265_task2e", **{**BINARY, **EARLY})
def task2e(cfg: dict, workdir: Path) -> dict:
    """Task 2e: with versus without shuffling every epoch, both with early stopping.

    Launch:  python -m experiments.main --experiment=tdt4265_task2e --workdir=runs/tdt4265_task2e
    Runtime: about 11 s on 2 CPU cores.
    Result:  without shuffling the validation loss spikes every lcm(31, 6) = 186 steps and
             the run stops at step 1038 (epoch 33); with shuffling the spikes are gone and
             it stops at step 900 (epoch 29); validation accuracy 0.9789 and 0.9785.
    """
    data = load_data(cfg).data
    results, metrics, hists = {}, {}, {}
    for shuffle in (False, True):
        key = f"shuffle={str(shuffle).lower()}"
        results[key] = train_run(cfg, data, workdir, key, shuffle=shuffle)
        metrics[key] = _summary(results[key], cfg, data, shuffle=shuffle)
        hists[key] = _write_history(workdir, key, results[key])
    loss_series, acc_series, vlines, styles = {}, {}, {}, {}
    for i, (key, r) in enumerate(results.items()):
        h = r.history
        loss_series[f"validation loss, {key}"] = (h["check_step"], h["val_loss"])
        acc_series[f"validation accuracy, {key}"] = (h["check_step"], h["val_accuracy"])
        styles[f"validation loss, {key}"] = styles[f"validation accuracy, {key}"] = {
            "color": f"C{i}"
        }
        es = metrics[key].get("early_stopping")
        if es and es["stopped"]:
            vlines[f"early stop, {key} (step {es['step']})"] = {"x": es["step"], "color": f"C{i}"}
    hs = [r.history for r in results.values()]
    plots.plot_side_by_side(
        workdir / "validation.png",
        [
            dict(
                series=loss_series,
                xlabel="training step",
                ylabel="cross-entropy loss",
                title="validation loss",
                styles=styles,
                ylim=_zoom([h["val_loss"] for h in hs], lo_q=0, hi_q=98, floor=0.0),
                vlines=vlines,
            ),
            dict(
                series=acc_series,
                xlabel="training step",
                ylabel="accuracy",
                title="validation accuracy",
                styles=styles,
                ylim=_zoom([h["val_accuracy"] for h in hs], lo_q=2, hi_q=100, ceil=1.001),
                vlines=vlines,
            ),
        ],
        suptitle="TDT4265 task 2e: shuffling the training set every epoch or not",
    )
    sections = [
        _protocol_text(cfg, data, train_config(cfg)),
        "## Final numbers (returned weights: best check)\n\n" + _metrics_table(metrics),
        "## Early stopping\n\n"
        + "\n".join(
            f"- {k}: {_es_text(m['early_stopping'], m['steps_per_epoch'])}"
            for k, m in metrics.items()
        ),
        "## Figures\n\n"
        + _image("validation.png", "validation loss and accuracy with and without shuffling")
        + "\n\n"
        + _shuffle_text(metrics["shuffle=false"])
        + "\n\n"
        + "History: "
        + ", ".join(f"`{n}`" for n in hists.values())
        + ".",
    ]
    write_report(workdir / "report.md", "TDT4265 task 2e: shuffling", sections)
    return metrics


# ---------------------------------------------------------------------------------------------
# Task 3: softmax regression on ten digits.


@register("tdt4265_task3", **SOFTMAX)
def task3(cfg: dict, workdir: Path) -> dict:
    """Task 3b-d: softmax regression on all ten digits, lr 0.01, 50 epochs, shuffle.

    Launch:  python -m experiments.main --experiment=tdt4265_task3 --workdir=runs/tdt4265_task3
    Runtime: about 16 s on 2 CPU cores (7,800 steps, 252 checks).
    Result:  validation accuracy 0.9164 (loss 0.2991), training accuracy 0.9233: a gap of
             0.007 that grows slowly through training.
    """
    data = load_data(cfg).data
    result = train_run(cfg, data, workdir)
    m = _summary(result, cfg, data)
    hist = _write_history(workdir, None, result)
    h = result.history
    m["accuracy_gap"] = m["train_accuracy"] - m["val_accuracy"]
    m["loss_gap"] = m["val_loss"] - m["train_loss"]
    title = "TDT4265 task 3, softmax regression"
    plots.plot_curves(
        workdir / "loss.png",
        _loss_series(h),
        styles=_loss_styles(_loss_series(h)),
        xlabel="training step",
        ylabel="cross-entropy loss",
        title=f"{title}: loss",
        ylim=_loss_ylim(h),
    )
    plots.plot_curves(
        workdir / "accuracy.png",
        _accuracy_series(h),
        xlabel="training step",
        ylabel="accuracy",
        title=f"{title}: accuracy",
        ylim=_acc_ylim(h),
    )
    gap = np.asarray(h["train_accuracy"]) - np.asarray(h["val_accuracy"])
    plots.plot_curves(
        workdir / "gap.png",
        {"training minus validation accuracy": (h["check_step"], gap)},
        xlabel="training step",
        ylabel="accuracy gap",
        title=f"{title}: generalisation gap",
    )
    sections = [
        _protocol_text(cfg, data, train_config(cfg)),
        "## Final numbers (returned weights)\n\n" + _metrics_table({"softmax": m}),
        "## Training versus validation\n\n"
        f"Final training accuracy {m['train_accuracy']:.4f} against validation accuracy "
        f"{m['val_accuracy']:.4f}: a gap of {m['accuracy_gap']:+.4f}; the validation loss "
        f"exceeds the training loss by {m['loss_gap']:+.4f}. A linear model of 7,850 weights "
        "overfits 20,000 images only a little: the gap grows slowly as training goes on "
        "while the validation accuracy flattens.",
        "## Figures\n\n"
        + _image("loss.png", "training and validation loss")
        + "\n\n"
        + _image("accuracy.png", "training and validation accuracy")
        + "\n\n"
        + _image("gap.png", "training minus validation accuracy")
        + f"\n\nHistory: `{hist}`.",
    ]
    write_report(workdir / "report.md", title, sections)
    return m


# ---------------------------------------------------------------------------------------------
# Task 4: L2 regularisation.


def pixel_weights_KP(params: dict, bias_feature: bool = True) -> np.ndarray:
    """The weights of each class as a flattened image (the bias row dropped).

    Args:
      params: linear-model params `{"w": w_DK}` (or with an explicit `"b"`).
      bias_feature: whether the last input feature is the constant 1.

    Returns:
      weights_KP (K = 1 for logistic regression).
    """
    w = np.asarray(params["w"])
    w_DK = w.reshape(w.shape[0], -1)
    return (w_DK[:-1] if bias_feature and "b" not in params else w_DK).T


def weight_norm(params: dict, include_bias: bool = True) -> float:
    """||w||_2 over the weights that the L2 penalty covers."""
    return float(
        np.sqrt(sum(float(np.sum(np.square(a))) for a in l2_weights(params, include_bias)))
    )


def train_l2_runs(cfg: dict, data: Data, workdir: Path, lambdas: Sequence[float]) -> dict:
    """Trains one run per L2 strength, the same config otherwise, in one vmapped sweep.

    All lambdas train together in one compiled call (`jaxlr.sweep.run_sweep`): the same
    numbers as separate `fit` runs up to float rounding (tests/test_sweep.py checks it).
    With `cfg["checkpoint"]` set it falls back to a loop of resumable `fit` runs, since a
    sweep keeps no checkpoints.

    Args:
      cfg: flat experiment config.
      data: preprocessed arrays.
      workdir: experiment folder (checkpoints).
      lambdas: the L values of lambda.

    Returns:
      lambda -> (params, history, metrics) where metrics is `run_metrics`'s dict (its
      `wall_seconds` is the whole sweep's, shared by every lambda).
    """
    out = {}
    if cfg["checkpoint"]:
        for lam in lambdas:
            key = f"lambda={lam:g}"
            r = train_run(cfg, data, workdir, key, l2=float(lam))
            out[float(lam)] = (r.params, r.history, _summary(r, cfg, data))
        return out
    from jaxlr import sweep as jsweep

    tcfg = train_config(cfg)
    point = dict(learning_rate=_single(cfg, "lr"), momentum=_single(cfg, "momentum"))
    grid = jsweep.grid_from_points(
        [dict(point, l2=float(lam), seed=int(cfg["seed"])) for lam in lambdas],
        dtype=np.asarray(data.x_train).dtype,
    )
    res = jsweep.run_sweep(
        tcfg,
        grid,
        data,
        block_size=int(cfg["block_size"]) or None,
        log_fn=lambda msg: log.info("[lambda sweep] %s", msg),
    )
    for i, lam in enumerate(lambdas):
        m = res.point_metrics(i)
        m["steps_per_epoch"] = int(res.num_batches)
        m["eval_every"] = int(tcfg.eval_every or max(1, res.num_batches // 5))
        m["wall_seconds"] = float(res.wall_seconds)
        out[float(lam)] = (res.point_params(i), res.histories[i], m)
    return out


@register("tdt4265_task4", **SOFTMAX, l2=(1.0, 0.1, 0.01, 0.001), l2_convention="sum", l2_bias=True)
def task4(cfg: dict, workdir: Path) -> dict:
    """Task 4b-e: L2 regularisation R(w) = sum w^2 of softmax regression, lambda 0 and `l2`.

    Launch:  python -m experiments.main --experiment=tdt4265_task4 --workdir=runs/tdt4265_task4
    Runtime: about 30 s on 2 CPU cores (the five lambdas train as one vmapped sweep).
    Result:  validation accuracy 0.9164 / 0.8008 / 0.8797 / 0.9096 / 0.9159 and ||w||_2
             4.89 / 0.60 / 1.66 / 3.30 / 4.62 for lambda 0 / 1 / 0.1 / 0.01 / 0.001; lambda 1
             gives smooth, digit-like weight images.
    """
    lambdas = [float(v) for v in cfg["l2"]]
    if any(v <= 0 for v in lambdas):
        raise ValueError(f"l2 values must be > 0 (lambda 0 is always run), got {lambdas}")
    # lambda 0 is always trained: it is the reference row of the weight images.
    grid = [0.0] + sorted(set(lambdas), reverse=True)
    data = load_data(cfg).data
    runs = train_l2_runs(cfg, data, workdir, grid)
    metrics, hists = {}, {}
    for lam, (params, history, m) in runs.items():
        key = f"lambda={lam:g}"
        m = dict(m, l2=lam, weight_norm=weight_norm(params, cfg["l2_bias"]))
        m["weight_norm_squared"] = m["weight_norm"] ** 2
        metrics[key] = m
        hists[key] = f"history_{_run_slug(key)}.jsonl"
        write_history(workdir / hists[key], history)
    big = max(lambdas)
    rows = {
        f"lambda={lam:g}": pixel_weights_KP(runs[lam][0], cfg["bias_feature"]) for lam in (0.0, big)
    }
    plots.plot_weight_images(
        workdir / "weights.png",
        rows,
        title="Softmax weights of each digit (bias dropped), each image scaled to its own range",
    )
    # lambda = 0 is the reference: drawn last (on top), black and dotted.
    acc_series = {}
    for lam in [*grid[1:], 0.0]:
        h = runs[lam][1]
        label = f"$\\lambda$ = {lam:g}" + (" (no penalty)" if lam == 0 else "")
        acc_series[label] = (h["check_step"], h["val_accuracy"])
    plots.plot_curves(
        workdir / "val_accuracy.png",
        acc_series,
        xlabel="training step",
        ylabel="validation accuracy",
        title="Validation accuracy for each L2 strength $\\lambda$, $R(w) = \\sum w^2$",
        ylim=_zoom([s[1] for s in acc_series.values()], lo_q=0, hi_q=100, ceil=1.001),
        styles={"$\\lambda$ = 0 (no penalty)": {"color": "black", "linestyle": ":"}},
    )
    pos = sorted(lambdas)
    norms = [metrics[f"lambda={lam:g}"]["weight_norm"] for lam in pos]
    norm0 = metrics["lambda=0"]["weight_norm"]
    plots.plot_curves(
        workdir / "weight_norm.png",
        {
            "final weights": (pos, norms),
            f"$\\lambda$ = 0 (no penalty): {norm0:.2f}": ([pos[0], pos[-1]], [norm0, norm0]),
        },
        xlabel="$\\lambda$ (log scale)",
        ylabel="$\\|w\\|_2$",
        title="L2 norm of the final weights against $\\lambda$",
        logx=True,
        marker="o",
        styles={f"$\\lambda$ = 0 (no penalty): {norm0:.2f}": {"linestyle": "--", "marker": ""}},
    )
    metrics["weight_norm_by_lambda"] = {
        f"{lam:g}": metrics[f"lambda={lam:g}"]["weight_norm"] for lam in grid
    }
    table = _metrics_table({k: v for k, v in metrics.items() if k.startswith("lambda=")})
    norm_rows = ["| lambda | val acc | L2 norm of w |", "| ---: | ---: | ---: |"] + [
        f"| {lam:g} | {metrics[f'lambda={lam:g}']['val_accuracy']:.4f} "
        f"| {metrics[f'lambda={lam:g}']['weight_norm']:.4f} |"
        for lam in grid
    ]
    sections = [
        _protocol_text(cfg, data, train_config(cfg))
        + f" L2 convention `{cfg['l2_convention']}` (R(w) = sum w^2 for `sum`), bias "
        f"regularised: {cfg['l2_bias']}.",
        "## Final numbers (returned weights)\n\n" + table,
        "## Weight norm against lambda\n\n" + "\n".join(norm_rows),
        "## Figures\n\n"
        + _image("weights.png", f"weight images, lambda 0 and {big:g}")
        + "\n\n"
        + _image("val_accuracy.png", "validation accuracy for each lambda")
        + "\n\n"
        + _image("weight_norm.png", "weight norm against lambda")
        + "\n\nA strong penalty keeps only the weights that many images agree on, so the "
        "images turn smooth and digit-like, at the cost of validation accuracy: the linear "
        "model has little variance to remove.\n\nHistory: "
        + ", ".join(f"`{n}`" for n in hists.values())
        + ".",
    ]
    write_report(workdir / "report.md", "TDT4265 task 4: L2 regularisation", sections)
    return metrics


# ---------------------------------------------------------------------------------------------
# Learning-rate annealing.


def _learning_rates(tcfg: TrainConfig, lr: float, steps: np.ndarray, total: int) -> np.ndarray:
    """The learning rate of `tcfg`'s schedule at every step in `steps` (host side)."""
    steps = np.asarray(steps)
    rates = np.asarray(make_schedule(tcfg, lr, total)(jnp.asarray(steps)), np.float64)
    return np.broadcast_to(rates, steps.shape).copy()


@register("lr_annealing", **BINARY, anneal_steps=1000.0)
def lr_annealing(cfg: dict, workdir: Path) -> dict:
    """Constant learning rate versus alpha_0 / (1 + t/T) on the 2 vs 3 task (task 2 protocol).

    Launch:  python -m experiments.main --experiment=lr_annealing --workdir=runs/lr_annealing
    Runtime: about 8 s on 2 CPU cores (two runs of 1,550 steps).
    Result:  with T = 1000 steps (rate 0.05 -> 0.0196) the validation loss jitters a third
             as much late in training (0.0012 vs 0.0036 per check) but ends a little higher:
             validation accuracy 0.9775 against 0.9789 for the constant rate.
    """
    data = load_data(cfg).data
    lr = _single(cfg, "lr")
    runs, metrics, hists = {}, {}, {}
    for schedule in ("constant", "anneal"):
        key = f"schedule={schedule}"
        runs[key] = train_run(cfg, data, workdir, key, schedule=schedule)
        metrics[key] = _summary(runs[key], cfg, data, schedule=schedule)
        tcfg = train_config(cfg, schedule=schedule)
        total = metrics[key]["steps_per_epoch"] * tcfg.num_epochs
        metrics[key]["final_learning_rate"] = float(
            _learning_rates(tcfg, lr, np.array([max(0, metrics[key]["steps"] - 1)]), total)[0]
        )
        # How much the validation loss still jumps between checks late in training.
        late = np.asarray(runs[key].history["val_loss"])
        late = late[len(late) // 2 :]
        metrics[key]["late_val_loss_jitter"] = float(np.mean(np.abs(np.diff(late))))
        hists[key] = _write_history(workdir, key, runs[key])
    hs = {k: r.history for k, r in runs.items()}
    loss_lim = _loss_ylim(*hs.values())
    acc_lim = _acc_ylim(*hs.values())
    names = {
        "schedule=constant": f"constant $\\alpha$ = {lr:g}",
        "schedule=anneal": (
            f"$\\alpha_0 / (1 + t/T)$, $\\alpha_0$ = {lr:g}, T = {cfg['anneal_steps']:g} steps"
        ),
    }
    plots.plot_side_by_side(
        workdir / "loss.png",
        [
            dict(
                series=_loss_series(h),
                styles=_loss_styles(_loss_series(h)),
                xlabel="training step",
                ylabel="cross-entropy loss",
                title=names[k],
                ylim=loss_lim,
            )
            for k, h in hs.items()
        ],
        suptitle="Learning-rate annealing, 2 vs 3: loss",
        sharey=True,
    )
    plots.plot_side_by_side(
        workdir / "accuracy.png",
        [
            dict(
                series=_accuracy_series(h),
                xlabel="training step",
                ylabel="accuracy",
                title=names[k],
                ylim=acc_lim,
            )
            for k, h in hs.items()
        ],
        suptitle="Learning-rate annealing, 2 vs 3: accuracy",
        sharey=True,
    )
    rate_series = {}
    for k, h in hs.items():
        tcfg = train_config(cfg, schedule=k.split("=")[1])
        total = metrics[k]["steps_per_epoch"] * tcfg.num_epochs
        rate_series[names[k]] = (h["step"], _learning_rates(tcfg, lr, h["step"], total))
    plots.plot_curves(
        workdir / "learning_rate.png",
        rate_series,
        xlabel="training step",
        ylabel="learning rate",
        title="Learning rate per step",
        ylim=(0.0, 1.1 * lr),
    )
    sections = [
        _protocol_text(cfg, data, train_config(cfg)),
        "## Final numbers (returned weights)\n\n" + _metrics_table(metrics),
        "Final learning rate: "
        + ", ".join(f"{k}: {m['final_learning_rate']:.3g}" for k, m in metrics.items())
        + ". Jitter of the validation loss over the second half of training (mean absolute "
        "change between consecutive checks): "
        + ", ".join(f"{k}: {m['late_val_loss_jitter']:.4f}" for k, m in metrics.items())
        + ". The decaying rate damps the step-to-step jumps of the weights (and the "
        "periodic spikes of the unshuffled batch order), but it also slows the descent, so "
        "after the same number of steps the loss has not come down as far.",
        "## Figures\n\n"
        + _image("loss.png", "loss, constant versus annealed learning rate")
        + "\n\n"
        + _image("accuracy.png", "accuracy, constant versus annealed learning rate")
        + "\n\n"
        + _image("learning_rate.png", "learning rate per step")
        + "\n\nHistory: "
        + ", ".join(f"`{n}`" for n in hists.values())
        + ".",
    ]
    write_report(workdir / "report.md", "Learning-rate annealing", sections)
    return metrics


# ---------------------------------------------------------------------------------------------
# Mean images versus weights.


def class_mean_images_KP(x_ND: Any, y_N: Any, num_classes: int, num_pixels: int) -> np.ndarray:
    """The average input image of every class (NaN for a class with no example).

    Args:
      x_ND: preprocessed inputs; the first `num_pixels` features are the pixels.
      y_N: integer labels.
      num_classes: K.
      num_pixels: P.

    Returns:
      means_KP.
    """
    x_NP = np.asarray(x_ND, np.float64)[:, :num_pixels]
    y_N = np.asarray(y_N)
    means_KP = np.full((num_classes, num_pixels), np.nan)
    for k in range(num_classes):
        if np.any(y_N == k):
            means_KP[k] = x_NP[y_N == k].mean(axis=0)
    return means_KP


def _correlations(a_KP: np.ndarray, b_KP: np.ndarray) -> np.ndarray:
    a = a_KP - a_KP.mean(axis=1, keepdims=True)
    b = b_KP - b_KP.mean(axis=1, keepdims=True)
    denom = np.linalg.norm(a, axis=1) * np.linalg.norm(b, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sum(a * b, axis=1) / denom


@register("mean_images", **SOFTMAX)
def mean_images(cfg: dict, workdir: Path) -> dict:
    """The average training image of each digit above the softmax weight image of that digit.

    Launch:  python -m experiments.main --experiment=mean_images --workdir=runs/mean_images
    Runtime: about 11 s on 2 CPU cores (the task 3 protocol).
    Result:  validation accuracy 0.9164; every weight image correlates positively with its
             digit's mean image (Pearson 0.30 for 5 to 0.53 for 0).
    """
    data = load_data(cfg).data
    result = train_run(cfg, data, workdir)
    m = _summary(result, cfg, data)
    hist = _write_history(workdir, None, result)
    w_KP = pixel_weights_KP(result.params, cfg["bias_feature"])
    k, p = w_KP.shape
    means_KP = class_mean_images_KP(data.x_train, data.y_train, k, p)
    corr_K = _correlations(means_KP, w_KP)
    m["mean_weight_correlation"] = {str(i): float(c) for i, c in enumerate(corr_K)}
    plots.plot_weight_images(
        workdir / "mean_images.png",
        {"mean image": means_KP, "weights": w_KP},
        title="Average training image of each digit (top) and its softmax weights (bottom)",
    )
    rows = [
        "| digit | " + " | ".join(str(i) for i in range(k)) + " |",
        "| --- |" + " ---: |" * k,
        "| correlation | " + " | ".join(f"{c:.3f}" for c in corr_K) + " |",
    ]
    sections = [
        _protocol_text(cfg, data, train_config(cfg)),
        "## Final numbers (returned weights)\n\n" + _metrics_table({"softmax": m}),
        "## Mean image versus weights\n\nPearson correlation of each digit's weight image "
        "with its mean training image:\n\n" + "\n".join(rows),
        "## Figures\n\n"
        + _image("mean_images.png", "mean images and weight images")
        + "\n\nThe weights of a digit are large where its images are bright and the other "
        "digits' are not, so each weight image looks like a sharpened, contrasted mean "
        f"image.\n\nHistory: `{hist}`.",
    ]
    write_report(workdir / "report.md", "Mean images and softmax weights", sections)
    return m


__all__ = [
    "class_mean_images_KP",
    "pixel_weights_KP",
    "run_metrics",
    "train_l2_runs",
    "train_run",
    "weight_norm",
]

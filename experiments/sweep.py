"""The `sweep` experiment: any grid of learning rate x L2 lambda x momentum x seed in one call.

Protocol defaults follow the model: `--model=logistic` (the flat config's default) is the
`tdt4265_task2` protocol (digits 2 vs 3, lr 0.05, 50 epochs, batch 128, no shuffling);
`--model=softmax` (and `mlp`) the `tdt4265_task3` protocol (all ten digits, lr 0.01, 50
epochs, batch 128, shuffling). The model-dependent fields (`digits`, `lr`, `shuffle`) are
registered as None, meaning "not given on the command line"; the experiment fills them in
from the model's protocol, so every value given on the command line wins and nothing needs
to guess which fields the user set. `config.json` is rewritten with the resolved values.

Dimension legend: S grid points, T steps.
"""

from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np

from experiments.common import load_data, register, train_config, write_history, write_report
from jaxlr import plots
from jaxlr import sweep as jsweep
from jaxlr.io import atomic_write_json, atomic_write_text

log = logging.getLogger("jaxlr.experiments.sweep")

# Model-dependent defaults (tdt4265_task2 for the binary model, tdt4265_task3 otherwise).
PROTOCOLS = {
    "logistic": dict(digits=(2, 3), lr=(0.05,), shuffle=False),
    "softmax": dict(digits=(), lr=(0.01,), shuffle=True),
}
# Beyond this many points the curves figure has no legend (colour = learning rate).
_MAX_LEGEND = 16


def resolve_protocol(cfg: dict) -> dict:
    """Fills the model-dependent fields left at None with the model's protocol values."""
    proto = PROTOCOLS["logistic" if cfg["model"] == "logistic" else "softmax"]
    out = dict(cfg)
    for k, v in proto.items():
        if out.get(k) is None:
            out[k] = v
    return out


def grid_of(cfg: dict, dtype) -> jsweep.Grid:
    """The grid of a flat config: lr x l2 x momentum x (seed .. seed + seeds - 1)."""
    if int(cfg["seeds"]) < 1:
        raise ValueError(f"seeds must be >= 1, got {cfg['seeds']}")
    return jsweep.make_grid(
        learning_rate=tuple(cfg["lr"]),
        l2=tuple(cfg["l2"]),
        momentum=tuple(cfg["momentum"]),
        seed=tuple(int(cfg["seed"]) + i for i in range(int(cfg["seeds"]))),
        dtype=dtype,
    )


def _label(p: dict, grid: jsweep.Grid) -> str:
    parts = [f"lr={p['learning_rate']:g}", f"l2={p['l2']:g}"]
    if "momentum" in grid.axes:
        parts.append(f"mom={p['momentum']:g}")
    if len(grid.values.get("seed", ())) > 1:
        parts.append(f"seed={p['seed']}")
    return ", ".join(parts)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9.+-]+", "_", text).strip("_")


def write_heatmaps(result: jsweep.SweepResult, workdir: Path) -> list[str]:
    """Validation accuracy over lambda (rows) x learning rate (columns), mean over seeds.

    One heatmap per momentum value when the grid has several. Returns the file names.
    """
    grid = result.grid
    mean = jsweep.mean_over(result, result.metrics["val_accuracy"], ("seed",))  # l2, lr[, mom]
    rows = [f"{v:g}" for v in grid.values["l2"]]
    cols = [f"{v:g}" for v in grid.values["learning_rate"]]
    nseeds = len(grid.values["seed"])
    avg = f", mean of {nseeds} seeds" if nseeds > 1 else ""
    names = []
    moms = grid.values.get("momentum", (None,))
    for j, mom in enumerate(moms):
        values = mean[..., j] if mom is not None else mean
        name = "heatmap_val_accuracy.png" if mom is None else f"heatmap_val_accuracy_mom{mom:g}.png"
        plots.plot_heatmap(
            workdir / name,
            values,
            rows,
            cols,
            xlabel="learning rate",
            ylabel="L2 lambda",
            title="Validation accuracy" + avg + (f", momentum {mom:g}" if mom is not None else ""),
            fmt="{:.4f}",
            colorbar_label="validation accuracy",
        )
        names.append(name)
    return names


def write_curves(result: jsweep.SweepResult, workdir: Path) -> str:
    """Validation accuracy against the step for every point; returns the file name."""
    grid = result.grid
    name = "curves_val_accuracy.png"
    title = f"Validation accuracy of all {grid.size} grid points"
    if grid.size <= _MAX_LEGEND:
        series = {
            _label(grid.point(i), grid): (h["check_step"], h["val_accuracy"])
            for i, h in enumerate(result.histories)
        }
        plots.plot_curves(
            workdir / name,
            series,
            xlabel="training step",
            ylabel="validation accuracy",
            title=title,
        )
        return name
    # Many points: one colour per learning rate (log scale), no per-point legend.
    import matplotlib

    fig = plots.new_figure((7.5, 4.8))
    ax = fig.subplots()
    lrs = np.asarray(grid.hparams.learning_rate, np.float64)
    lo, hi = np.log10(lrs.min()), np.log10(lrs.max())
    cmap = matplotlib.colormaps["viridis"]
    for i, h in enumerate(result.histories):
        c = cmap(0.5 if hi == lo else (np.log10(lrs[i]) - lo) / (hi - lo))
        ax.plot(h["check_step"], h["val_accuracy"], color=c, linewidth=0.7, alpha=0.6)
    sm = matplotlib.cm.ScalarMappable(
        cmap=cmap, norm=matplotlib.colors.Normalize(vmin=lo, vmax=hi if hi > lo else lo + 1)
    )
    fig.colorbar(sm, ax=ax, label="log10 learning rate")
    ax.set_xlabel("training step")
    ax.set_ylabel("validation accuracy")
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    plots.save_figure(fig, workdir / name)
    return name


def _best(result: jsweep.SweepResult, by: str) -> dict | None:
    if result.diverged.all():
        return None
    i = result.best_index(by)
    return {"index": i, **result.records()[i]}


@register("sweep", digits=None, lr=None, shuffle=None, num_epochs=50, batch_size=128)
def run(cfg: dict, workdir: Path) -> dict:
    """A grid of lr x l2 x momentum x seeds trained in one vmapped call (`jaxlr.sweep`).

    Launch:  python -m experiments.main --experiment=sweep --workdir=runs/sweep \\
               --model=softmax --l2=0,0.001,0.01,0.1 --lr=0.001,0.01,0.1 --seeds=3
             (`--model=logistic` (default): tdt4265_task2 protocol, 2 vs 3, lr 0.05;
             `--model=softmax`: tdt4265_task3 protocol; any field can be overridden.)
    Runtime: the 36-point softmax grid above, 50 epochs: about 3 minutes on 2 (shared) CPU
             cores; the default logistic protocol with one point: about 5 s.
    Result:  table.md / table.csv with one row per point (best in bold), heatmap of the
             validation accuracy over lambda x lr (mean over seeds), curves of all points,
             history_<point>.jsonl, metrics.json with every point and the best one. For the
             grid above: mean validation accuracy about 0.916 at lr 0.01 or 0.1 with lambda
             <= 0.001, 0.89 at lr 0.001, and 0.62 at lr 0.1 with lambda 0.1 (the step is too
             large for the penalty: the accuracy oscillates).
    """
    cfg = resolve_protocol(cfg)
    atomic_write_json(workdir / "config.json", {"experiment": "sweep", **cfg})
    splits = load_data(cfg)
    data = splits.data
    tcfg = train_config(cfg)
    grid = grid_of(cfg, np.asarray(data.x_train).dtype)
    result = jsweep.run_sweep(
        tcfg,
        grid,
        data,
        block_size=int(cfg["block_size"]) or None,
        log_fn=log.info,
    )
    histories = {}
    for i, h in enumerate(result.histories):
        name = f"history_{i:03d}_{_slug(_label(grid.point(i), grid))}.jsonl"
        write_history(workdir / name, h)
        histories[i] = name
    atomic_write_text(workdir / "table.csv", jsweep.table_csv(result))
    table = jsweep.table_markdown(result)
    atomic_write_text(workdir / "table.md", table)
    heatmaps = write_heatmaps(result, workdir)
    curves = write_curves(result, workdir)

    records = result.records()
    for rec in records:
        rec["history"] = histories[rec["index"]]
    best_loss, best_acc = _best(result, "val_loss"), _best(result, "val_accuracy")
    n, v = int(np.shape(data.x_train)[0]), int(np.shape(data.x_val)[0])
    what = f"digits {cfg['digits'][0]} vs {cfg['digits'][1]}" if cfg["digits"] else "ten digits"
    proto = (
        f"Model `{tcfg.model}`, {cfg['dataset']} {what}: {n} training / {v} validation "
        f"examples, batch {tcfg.batch_size}, up to {tcfg.num_epochs} epochs of "
        f"{result.num_batches} steps, shuffle {tcfg.shuffle}, optimizer `{tcfg.optimizer}`, "
        f"early stopping {tcfg.early_stopping}, dtype {cfg['dtype']}. Grid axes "
        + " x ".join(f"{a} {list(grid.values[a])}" for a in grid.axes)
        + f" = {grid.size} points, trained in one vmapped sweep in {result.wall_seconds:.1f} s."
    )
    best_text = "Every point diverged."
    if best_loss is not None:
        best_text = (
            f"Best by validation loss: point {best_loss['index']} "
            f"({_label(grid.point(best_loss['index']), grid)}), val loss "
            f"{best_loss['val_loss']:.4f}, val accuracy {best_loss['val_accuracy']:.4f}. "
            f"Best by validation accuracy: point {best_acc['index']} "
            f"({_label(grid.point(best_acc['index']), grid)}), val accuracy "
            f"{best_acc['val_accuracy']:.4f}."
        )
    # The seed only draws the data order and a random initialisation.
    zero_init = tcfg.init == "zeros" or (tcfg.init == "auto" and tcfg.model != "mlp")
    if len(grid.values["seed"]) > 1 and not tcfg.shuffle and zero_init:
        best_text += (
            " (Without shuffling and with zero initialisation the seeds change nothing: "
            "their rows are identical.)"
        )
    ndiv = int(result.diverged.sum())
    if ndiv:
        best_text += f" {ndiv} point(s) diverged (flagged in the table, never chosen)."
    sections = [
        proto,
        "## Best point\n\n" + best_text,
        "## All points\n\n" + table + "\n(`table.csv` holds the same rows.)",
        "## Figures\n\n"
        + "\n\n".join(f"![validation accuracy heatmap]({h})" for h in heatmaps)
        + f"\n\n![validation accuracy of every point]({curves})",
    ]
    write_report(workdir / "report.md", "Hyper-parameter sweep", sections)
    return {
        "num_points": grid.size,
        "axes": list(grid.axes),
        "shape": list(grid.shape),
        "values": {k: list(v) for k, v in grid.values.items()},
        "num_diverged": ndiv,
        "best_by_val_loss": best_loss,
        "best_by_val_accuracy": best_acc,
        "points": records,
        "wall_seconds": result.wall_seconds,
    }


__all__ = ["PROTOCOLS", "grid_of", "resolve_protocol", "write_curves", "write_heatmaps"]

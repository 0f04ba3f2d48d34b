"""Tests of the report figures (`jaxlr.report.figures`, `image_plots`, `history_plots`,
`sweep_plots`): valid PNGs, atomic writes, clear errors."""

from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pytest

from jaxlr.report import figures, history_plots, image_plots

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def read_png(path):
    """Checks the PNG signature and decodes the image (H, W, channels)."""
    data = path.read_bytes()
    assert data[:8] == PNG_MAGIC, f"{path} is not a PNG"
    img = mpimg.imread(path)
    assert img.ndim == 3 and img.shape[0] > 50 and img.shape[1] > 50
    return img


def no_temp_files(folder):
    return [p.name for p in folder.iterdir() if p.name.endswith(".tmp")] == []


def test_curves_side_by_side_and_log_axes(tmp_path):
    x = np.arange(50)
    series = {"train": (x, np.exp(-x / 10)), "val": (x[::5], np.exp(-x[::5] / 12) + 0.01)}
    p = figures.plot_curves(
        tmp_path / "sub" / "c.png", series, xlabel="step", ylabel="loss", title="t", ylim=(0, 1)
    )
    assert p == tmp_path / "sub" / "c.png"
    read_png(p)
    figures.plot_curves(
        tmp_path / "log.png",
        {"norm": ([0.001, 0.01, 0.1, 1.0], [4.0, 3.0, 1.0, 0.2])},
        xlabel="lambda",
        ylabel="norm",
        title="t",
        logx=True,
        logy=True,
        marker="o",
        styles={"norm": {"color": "red"}},
        vlines={"stop": 0.05},
    )
    panels = [
        dict(series=series, xlabel="x", ylabel="y", title="a"),
        dict(series={"one point": ([1.0], [2.0])}, xlabel="x", ylabel="y", title="b", logy=True),
    ]
    wide = read_png(figures.plot_side_by_side(tmp_path / "s.png", panels, suptitle="row"))
    narrow = read_png(tmp_path / "sub" / "c.png")
    assert wide.shape[1] > 1.6 * narrow.shape[1]  # two panels side by side
    assert no_temp_files(tmp_path)


def test_nan_values_leave_gaps_not_errors(tmp_path):
    y = np.array([1.0, np.nan, 0.5, np.inf, 0.2])
    read_png(
        figures.plot_curves(
            tmp_path / "n.png", {"a": (np.arange(5), y)}, xlabel="x", ylabel="y", title="t"
        )
    )
    read_png(
        image_plots.plot_heatmap(
            tmp_path / "h.png",
            [[0.1, np.nan, 0.3], [0.4, 0.5, np.inf]],
            ["r0", "r1"],
            ["c0", "c1", "c2"],
            xlabel="lr",
            ylabel="lambda",
            title="h",
            fmt="{:.2f}",
        )
    )
    read_png(
        figures.plot_bar(
            tmp_path / "b.png", ["a", "b"], [0.5, np.nan], ylabel="y", title="t", errors=[0.1, 0.0]
        )
    )


def test_weight_images_and_image_grid(tmp_path):
    rng = np.random.default_rng(0)
    w_KP = rng.normal(size=(10, 784))
    rows = {"lambda=0": w_KP, "lambda=1": 0.1 * w_KP}
    each = tmp_path / "each.png"
    shared = tmp_path / "all.png"
    read_png(image_plots.plot_weight_images(each, rows, title="w"))
    read_png(image_plots.plot_weight_images(shared, rows, title="w", scale="all"))
    # Per-image scaling makes the two rows look alike; one shared scale greys out the
    # second row, so the two renderings differ.
    assert each.read_bytes() != shared.read_bytes()
    grid = image_plots.plot_image_grid(
        tmp_path / "g.png", rng.random((5, 28, 28)), [f"#{i}" for i in range(5)], 2, 3, "grid"
    )
    read_png(grid)
    read_png(image_plots.plot_image_grid(tmp_path / "g2.png", rng.random((3, 784)), None, 1, 3))


def test_overwrite_is_atomic_and_leaves_no_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = tmp_path / "c.png"
    x = np.arange(3)
    figures.plot_curves(path, {"a": (x, x)}, xlabel="x", ylabel="y", title="first")
    first = path.read_bytes()
    figures.plot_curves(path, {"a": (x, -x)}, xlabel="x", ylabel="y", title="second")
    assert path.read_bytes() != first
    assert no_temp_files(tmp_path)
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda p: figures.plot_curves(p, {"a": ([1, 2], [1])}, xlabel="", ylabel="", title=""),
            "shape",
        ),
        (lambda p: figures.plot_curves(p, {}, xlabel="", ylabel="", title="t"), "no series"),
        (
            lambda p: figures.plot_side_by_side(
                p, [dict(series={}, xlabel="", ylabel="", tite="")]
            ),
            "unknown keys",
        ),
        (lambda p: image_plots.plot_weight_images(p, {"w": np.zeros((10, 785))}), "bias"),
        (
            lambda p: image_plots.plot_weight_images(
                p, {"a": np.zeros((10, 784)), "b": np.zeros((9, 784))}
            ),
            "same number",
        ),
        (lambda p: image_plots.plot_image_grid(p, np.zeros((7, 28, 28)), None, 2, 3), "fit"),
        (
            lambda p: image_plots.plot_heatmap(
                p, np.zeros((2, 3)), ["a"], ["x", "y", "z"], xlabel="", ylabel="", title=""
            ),
            "labels",
        ),
        (lambda p: figures.plot_bar(p, ["a"], [1.0, 2.0], ylabel="", title=""), "labels"),
    ],
)
def test_bad_inputs_raise_and_write_nothing(tmp_path, call, message):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=message):
        call(path)
    assert not path.exists()
    assert no_temp_files(tmp_path)


# ---------------------------------------------------------------------------------------------
# History panels (the experiments' loss and accuracy figures).

HISTORY = {
    "step": np.arange(6),
    "epoch": np.array([0, 0, 0, 1, 1, 1]),
    "train_loss": np.array([6.0, 5.0, 4.0, 3.0, 2.0, 1.0]),
    "check_step": np.array([0, 3, 5]),
    "val_loss": np.array([5.0, 3.5, 2.0]),
    "val_accuracy": np.array([0.5, 0.75, 0.875]),
    "train_accuracy": np.array([0.5, 0.8, 0.9]),
}


def test_robust_ylim_by_hand():
    # skip 5% of 0..99 -> 5..99 (95 values); 1st / 99th percentile 5.94 / 98.06 (linear
    # interpolation), span 92.12, 15% of it added on each side.
    lo, hi = figures.robust_ylim([np.arange(100.0)])
    assert lo == pytest.approx(5.94 - 0.15 * 92.12) and hi == pytest.approx(98.06 + 0.15 * 92.12)
    assert figures.robust_ylim([np.arange(100.0)], floor=0.0, ceil=100.0)[0] == 0.0
    assert figures.robust_ylim([np.arange(100.0)], ceil=100.0)[1] == 100.0
    # Constant curve: the span is at least 1e-3; NaN and inf are ignored.
    lo, hi = figures.robust_ylim([[2.0, 2.0, np.nan, np.inf]], skip=0.0, pad=1.0)
    assert (lo, hi) == pytest.approx((2.0 - 1e-3, 2.0 + 1e-3))
    assert figures.robust_ylim([[np.nan]]) is None and figures.robust_ylim([]) is None


def test_loss_and_accuracy_series_by_hand():
    s = history_plots.loss_series(HISTORY)
    assert list(s) == [
        "training loss (batch)",
        "training loss (mean of last 3 batches)",
        "validation loss",
    ]
    np.testing.assert_allclose(s["training loss (mean of last 3 batches)"][1], [6, 5.5, 5, 4, 3, 2])
    np.testing.assert_array_equal(s["validation loss"][0], [0, 3, 5])
    labelled = history_plots.loss_series(HISTORY, label="run a")
    assert list(labelled)[0] == "training loss (batch), run a"
    assert history_plots.loss_styles(labelled) == {
        "training loss (batch), run a": {"alpha": 0.3, "linewidth": 0.7, "color": "C0"},
        "training loss (mean of last 3 batches), run a": {"color": "C0", "linewidth": 1.8},
        "validation loss, run a": {"color": "C1", "linewidth": 1.5},
    }
    acc = history_plots.accuracy_series(HISTORY, "b")
    assert list(acc) == ["training accuracy, b", "validation accuracy, b"]
    np.testing.assert_array_equal(acc["validation accuracy, b"][1], HISTORY["val_accuracy"])


def test_loss_and_accuracy_ylim_follow_their_rules():
    smooth = [6, 5.5, 5, 4, 3, 2]
    want = figures.robust_ylim(
        [smooth, HISTORY["val_loss"]], lo_q=0.0, hi_q=99.5, pad=0.3, floor=0.0
    )
    assert history_plots.loss_ylim(HISTORY) == want
    # Several histories: the smoothed and validation curves of each.
    other = dict(HISTORY, val_loss=np.array([9.0, 8.0, 7.0]))
    assert history_plots.loss_ylim(HISTORY, other) == figures.robust_ylim(
        [smooth, HISTORY["val_loss"], smooth, other["val_loss"]],
        lo_q=0.0,
        hi_q=99.5,
        pad=0.3,
        floor=0.0,
    )
    assert history_plots.accuracy_ylim(HISTORY) == figures.robust_ylim(
        [HISTORY["train_accuracy"], HISTORY["val_accuracy"]], lo_q=2.0, hi_q=100.0, ceil=1.001
    )
    # All ones: the minimum span 1e-3 padded by 15% on each side.
    ones = dict(HISTORY, val_accuracy=np.ones(3), train_accuracy=np.ones(3))
    assert history_plots.accuracy_ylim(ones) == pytest.approx((1.0 - 1.5e-4, 1.0 + 1.5e-4))


def test_early_stopping_vlines():
    es = {"stopped": True, "step": 1038, "best_step": 978}
    assert history_plots.early_stopping_vlines(es) == {
        "best check (step 978)": 978,
        "early stop (step 1038)": 1038,
    }
    assert history_plots.early_stopping_vlines(dict(es, stopped=False), "x") == {
        "best check (step 978), x": 978
    }
    assert history_plots.early_stopping_vlines(None) == {}


def test_history_figures_and_confusion_matrix(tmp_path):
    es = {"stopped": True, "step": 5, "best_step": 3}
    a, b = history_plots.plot_history(
        tmp_path / "l.png", tmp_path / "a.png", HISTORY, "t", early_stopping=es
    )
    read_png(a)
    read_png(b)
    a2, _ = history_plots.plot_history(tmp_path / "l2.png", tmp_path / "a2.png", HISTORY, "t")
    assert a2.read_bytes() != a.read_bytes()  # the early-stopping markers are drawn
    cm = np.array([[980, 0, 3], [2, 1120, 0], [7, 1, 1000]])
    read_png(image_plots.plot_confusion(tmp_path / "cm.png", cm, "confusions"))
    assert no_temp_files(tmp_path)


@pytest.mark.parametrize("cm", [np.zeros((2, 3)), np.array([[1, -1], [0, 1]]), np.zeros((0, 0))])
def test_plot_confusion_refuses_bad_matrices(tmp_path, cm):
    with pytest.raises(ValueError, match="cm_KK"):
        image_plots.plot_confusion(tmp_path / "cm.png", cm, "t")
    assert not (tmp_path / "cm.png").exists()


# ---------------------------------------------------------------------------------------------
# Without a path: the figure comes back (a notebook shows it), nothing is written.


def _written(folder):
    return sorted(p.name for p in folder.rglob("*"))


def test_without_a_path_every_plot_returns_its_figure(tmp_path, monkeypatch):
    from matplotlib.figure import Figure

    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    x = np.arange(5.0)
    figs = [
        figures.plot_curves(None, {"a": (x, x**2)}, xlabel="x", ylabel="y", title="curves"),
        figures.plot_side_by_side(
            None, [dict(series={"a": (x, x)}, xlabel="x", ylabel="y", title="p")], suptitle="row"
        ),
        figures.plot_bar(None, ["a", "b"], [0.5, 0.7], ylabel="y", title="bars"),
        image_plots.plot_heatmap(
            None, [[0.1, 0.2]], ["r"], ["c0", "c1"], xlabel="lr", ylabel="l2", title="heat"
        ),
        image_plots.plot_weight_images(None, {"w": rng.normal(size=(3, 784))}, title="weights"),
        image_plots.plot_image_grid(None, rng.random((2, 28, 28)), ["a", "b"], 1, 2, "grid"),
        image_plots.plot_confusion(None, np.eye(3, dtype=int) * 5, "confusions"),
        *history_plots.plot_history(None, None, HISTORY, "run"),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    titles = [f.axes[0].get_title() for f in figs[:4]]
    assert titles == ["curves", "p", "bars", "heat"]
    assert figs[-2].axes[0].get_title() == "run: loss"
    assert figs[-1].axes[0].get_title() == "run: accuracy"
    assert _written(tmp_path) == []
    # The figure renders as it would have been written: the same PNG bytes.
    path = figures.save_figure(figs[2], tmp_path / "bars.png")
    again = figures.plot_bar(
        tmp_path / "again.png", ["a", "b"], [0.5, 0.7], ylabel="y", title="bars"
    )
    assert again == tmp_path / "again.png"
    assert path.read_bytes() == again.read_bytes()
    # One path of two: the other figure comes back.
    loss, acc = history_plots.plot_history(tmp_path / "l.png", None, HISTORY, "run")
    assert loss == tmp_path / "l.png" and isinstance(acc, Figure)
    read_png(loss)


def test_confusion_axes_speak_of_the_classes_they_are_given():
    names = ["T-shirt/top", "Trouser", "Pullover"]
    fig = image_plots.plot_confusion(
        None, np.eye(3, dtype=int), "t", class_names=names, noun="class"
    )
    ax = fig.axes[0]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("predicted class", "true class")
    assert [t.get_text() for t in ax.get_xticklabels()] == names
    assert [t.get_text() for t in ax.get_yticklabels()] == names
    ax = image_plots.plot_confusion(None, np.eye(2, dtype=int), "t", noun="digit").axes[0]
    assert ax.get_xlabel() == "predicted digit"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0", "1"]
    with pytest.raises(ValueError, match="2 class names"):
        image_plots.plot_confusion(None, np.eye(3, dtype=int), "t", class_names=names[:2])


def test_importing_the_plots_and_the_experiments_does_not_import_matplotlib():
    import subprocess
    import sys

    code = (
        "import sys\n"
        "import jaxlr.report.figures, jaxlr.report.history_plots, jaxlr.report.image_plots\n"
        "import jaxlr.report.sweep_plots, experiments.registry\n"
        "assert 'matplotlib' not in sys.modules, 'matplotlib imported at import time'\n"
        "from jaxlr.report import figures\n"
        "figures.new_figure((1, 1))\n"
        "assert 'matplotlib' in sys.modules\n"
    )
    root = Path(__file__).resolve().parents[1]
    out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
    assert out.returncode == 0, out.stderr[-2000:]

"""Tests of the report figures (`jaxlr.plots`): valid PNGs, atomic writes, clear errors."""

import matplotlib.image as mpimg
import numpy as np
import pytest

from jaxlr import plots

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
    p = plots.plot_curves(
        tmp_path / "sub" / "c.png", series, xlabel="step", ylabel="loss", title="t", ylim=(0, 1)
    )
    assert p == tmp_path / "sub" / "c.png"
    read_png(p)
    plots.plot_curves(
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
    wide = read_png(plots.plot_side_by_side(tmp_path / "s.png", panels, suptitle="row"))
    narrow = read_png(tmp_path / "sub" / "c.png")
    assert wide.shape[1] > 1.6 * narrow.shape[1]  # two panels side by side
    assert no_temp_files(tmp_path)


def test_nan_values_leave_gaps_not_errors(tmp_path):
    y = np.array([1.0, np.nan, 0.5, np.inf, 0.2])
    read_png(
        plots.plot_curves(
            tmp_path / "n.png", {"a": (np.arange(5), y)}, xlabel="x", ylabel="y", title="t"
        )
    )
    read_png(
        plots.plot_heatmap(
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
        plots.plot_bar(
            tmp_path / "b.png", ["a", "b"], [0.5, np.nan], ylabel="y", title="t", errors=[0.1, 0.0]
        )
    )


def test_weight_images_and_image_grid(tmp_path):
    rng = np.random.default_rng(0)
    w_KP = rng.normal(size=(10, 784))
    rows = {"lambda=0": w_KP, "lambda=1": 0.1 * w_KP}
    each = tmp_path / "each.png"
    shared = tmp_path / "all.png"
    read_png(plots.plot_weight_images(each, rows, title="w"))
    read_png(plots.plot_weight_images(shared, rows, title="w", scale="all"))
    # Per-image scaling makes the two rows look alike; one shared scale greys out the
    # second row, so the two renderings differ.
    assert each.read_bytes() != shared.read_bytes()
    grid = plots.plot_image_grid(
        tmp_path / "g.png", rng.random((5, 28, 28)), [f"#{i}" for i in range(5)], 2, 3, "grid"
    )
    read_png(grid)
    read_png(plots.plot_image_grid(tmp_path / "g2.png", rng.random((3, 784)), None, 1, 3))


def test_overwrite_is_atomic_and_leaves_no_pyplot_figures(tmp_path):
    import matplotlib.pyplot as plt

    before = plt.get_fignums()
    path = tmp_path / "c.png"
    x = np.arange(3)
    plots.plot_curves(path, {"a": (x, x)}, xlabel="x", ylabel="y", title="first")
    first = path.read_bytes()
    plots.plot_curves(path, {"a": (x, -x)}, xlabel="x", ylabel="y", title="second")
    assert path.read_bytes() != first
    assert no_temp_files(tmp_path)
    assert plt.get_fignums() == before


@pytest.mark.parametrize(
    "call, message",
    [
        (
            lambda p: plots.plot_curves(p, {"a": ([1, 2], [1])}, xlabel="", ylabel="", title=""),
            "shape",
        ),
        (lambda p: plots.plot_curves(p, {}, xlabel="", ylabel="", title="t"), "no series"),
        (
            lambda p: plots.plot_side_by_side(p, [dict(series={}, xlabel="", ylabel="", tite="")]),
            "unknown keys",
        ),
        (lambda p: plots.plot_weight_images(p, {"w": np.zeros((10, 785))}), "bias"),
        (
            lambda p: plots.plot_weight_images(
                p, {"a": np.zeros((10, 784)), "b": np.zeros((9, 784))}
            ),
            "same number",
        ),
        (lambda p: plots.plot_image_grid(p, np.zeros((7, 28, 28)), None, 2, 3), "fit"),
        (
            lambda p: plots.plot_heatmap(
                p, np.zeros((2, 3)), ["a"], ["x", "y", "z"], xlabel="", ylabel="", title=""
            ),
            "labels",
        ),
        (lambda p: plots.plot_bar(p, ["a"], [1.0, 2.0], ylabel="", title=""), "labels"),
    ],
)
def test_bad_inputs_raise_and_write_nothing(tmp_path, call, message):
    path = tmp_path / "bad.png"
    with pytest.raises(ValueError, match=message):
        call(path)
    assert not path.exists()
    assert no_temp_files(tmp_path)

"""Fashion-MNIST runs speak of its classes: `fashion_softmax` and the words of every report.

The class names and the noun of a data set come from the registry
(`jaxlr.data.registry.DatasetSpec`). On fake files registered under a Fashion-MNIST-like
entry (the fake set's files, Fashion-MNIST's class names and noun), the experiments write
reports and draw figures whose every text names the classes and never says "digit". On the
real Fashion-MNIST files (skipped without them) `fashion_softmax --smoke` runs through the
launcher.
"""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from realdata import DATA_DIR
from test_experiments import FAKE, FIT, check_png

from experiments import registry  # noqa: F401  (registers the experiments)
from experiments.common import data_text, task_name
from experiments.config import EXPERIMENTS
from jaxlr.data import idx as jidx
from jaxlr.data import registry as jregistry
from jaxlr.data.config import DataConfig
from jaxlr.data.fake import write_fake_dataset
from jaxlr.engine.step import Data
from jaxlr.report import figures, history_plots, image_plots, sweep_plots

REPO = Path(__file__).resolve().parents[1]
NAMES = jregistry.FASHION_MNIST_CLASSES


def test_the_registry_names_the_classes_of_each_data_set():
    mnist, fashion = jregistry.get_spec("mnist"), jregistry.get_spec("fashion-mnist")
    assert mnist.class_names == tuple("0123456789") and (mnist.noun, mnist.plural) == (
        "digit",
        "digits",
    )
    assert fashion.class_names[0] == "T-shirt/top" and fashion.class_names[9] == "Ankle boot"
    assert len(fashion.class_names) == fashion.num_classes == 10
    assert (fashion.noun, fashion.plural) == ("class", "classes")
    with pytest.raises(ValueError, match="3 class names for 10 classes"):
        dataclasses.replace(mnist, class_names=("a", "b", "c"))


def test_task_and_data_prose_use_the_registry_words():
    data = Data(np.zeros((5, 3)), np.zeros(5), np.zeros((2, 3)), np.zeros(2))
    assert task_name(DataConfig(digits=(2, 3))) == "2 vs 3"
    assert task_name(DataConfig()) == "ten digits"
    assert task_name(DataConfig(dataset="fashion_mnist", digits=(2, 3))) == "Pullover vs Dress"
    assert task_name(DataConfig(dataset="fashion_mnist")) == "ten classes"
    text = data_text(DataConfig(dataset="fashion_mnist", digits=(4, 8)), data)
    assert "classes Coat (label 1) vs Bag (label 0), 5 training / 2 validation" in text
    assert "all ten digits, 5 training" in data_text(DataConfig(), data)


# ---------------------------------------------------------------------------------------------
# Every text of a run on a Fashion-MNIST-like data set.


@pytest.fixture(scope="module")
def fashion_like(tmp_path_factory):
    """Fake files under a registry entry with Fashion-MNIST's class names and noun."""
    spec = dataclasses.replace(
        jregistry.DATASETS["fake"],
        name="fake_fashion",
        folder_names=("fake_fashion",),
        class_names=NAMES,
        noun="class",
        plural="classes",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setitem(jregistry.DATASETS, "fake_fashion", spec)
        yield write_fake_dataset(tmp_path_factory.mktemp("fake_fashion"), **FAKE)


def _strings(value):
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for k, v in value.items():
            yield from _strings(k)
            yield from _strings(v)
    elif isinstance(value, (list, tuple)):
        for v in value:
            yield from _strings(v)


@pytest.mark.parametrize(
    "name, expect",
    [
        ("fashion_softmax", "T-shirt/top"),
        ("tdt4265_task2", "Coat vs Ankle boot"),  # digits 4, 9 of FIT
        ("mean_images", "Ankle boot"),
        ("hw3_mlp", "Sneaker"),
        ("hw3_logreg_grid", "Dress"),  # 3 vs 8
    ],
)
def test_a_fashion_run_names_its_classes_and_never_says_digit(
    tmp_path, fashion_like, monkeypatch, name, expect
):
    from experiments.common import run_experiment

    texts, nouns = [], []
    modules = (figures, history_plots, image_plots, sweep_plots)
    for module, fn_name in [(m, n) for m in modules for n in dir(m) if n.startswith("plot_")]:
        fn = getattr(module, fn_name)
        if fn.__module__ != module.__name__:
            continue

        def spy(*args, _fn=fn, **kwargs):
            texts.extend(_strings([a for a in args if isinstance(a, (str, dict, list, tuple))]))
            texts.extend(_strings(kwargs))
            if "noun" in kwargs:
                nouns.append(kwargs["noun"])
            return _fn(*args, **kwargs)

        monkeypatch.setattr(module, fn_name, spy)
    overrides = {
        **EXPERIMENTS[name].smoke,
        **FIT[name],
        "dataset": "fake_fashion",
        "data_dir": str(fashion_like),
    }
    overrides.pop("checkpoint", None)
    run_experiment(name, tmp_path / name, overrides)
    report = (tmp_path / name / "report.md").read_text()
    assert expect in report + "\n".join(texts)
    for text in [report, *texts]:
        assert "digit" not in text.lower(), f"{name} says digit: {text[:300]!r}"
    if name in ("fashion_softmax", "hw3_mlp"):  # their confusion matrices: "predicted class"
        assert nouns == ["class"]


# ---------------------------------------------------------------------------------------------
# The real Fashion-MNIST files, through the launcher.


def _fashion_missing() -> str | None:
    try:
        jregistry.find_dataset_files("fashion_mnist", DATA_DIR, download=False)
    except jidx.DataError:
        return "real Fashion-MNIST files not found: set JAXLR_DATA_DIR (e.g. ../shared/data)"
    return None


@pytest.mark.realdata
@pytest.mark.skipif(_fashion_missing() is not None, reason=_fashion_missing() or "")
def test_fashion_softmax_smoke_on_the_real_files(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["--experiment=fashion_softmax", f"--workdir={tmp_path}", "--smoke"]
    if DATA_DIR:
        args.append(f"--data_dir={DATA_DIR}")
    out = subprocess.run(
        [sys.executable, "-m", "experiments.main", *args],
        cwd=REPO,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert out.returncode == 0, out.stderr[-2000:]
    cfg = json.loads((tmp_path / "config.json").read_text())
    m = json.loads((tmp_path / "metrics.json").read_text())
    assert cfg["data"]["dataset"] == "fashion_mnist" and cfg["data"]["max_examples"] == 512
    assert cfg["hparams"]["lr"] == 0.01
    assert cfg["train"]["shuffle"] is True and cfg["train"]["batch_size"] == 128
    assert m["steps"] == 2 * (512 // 128)
    assert set(m["per_class_val_accuracy"]) == set(NAMES)
    cm_KK = np.asarray(m["confusion_matrix"])
    assert cm_KK.sum() == 512 and np.trace(cm_KK) / 512 == pytest.approx(m["val_accuracy"])
    report = (tmp_path / "report.md").read_text()
    assert report.startswith("# Softmax regression, fashion_mnist\n")
    assert "all ten classes" in report and "Ankle boot" in report
    assert "digit" not in report.lower()
    for png in ("per_class_accuracy.png", "confusion_matrix.png", "weights.png", "loss.png"):
        check_png(tmp_path / png)

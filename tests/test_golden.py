"""Golden numbers: the first checks of `tdt4265_task2` on fixed fake data (nanodo style).

The fake data set (`jaxlr.data.fake.write_fake_dataset`, 3,000 training / 500 test images, seed 0)
and the experiment's defaults fix every number: 600 examples of 2s and 3s, 4 batches of 128
per epoch, a check after every step. A change in any of these numbers means a change in the
arithmetic of training (data order, preprocessing, gradient, update, check) or of the fake
data.

When it is right to update GOLDEN: only after a change meant to alter the numbers (say so in
the commit), having checked the new numbers another way (the NumPy baseline of
`benchmarks/numpy_baseline.py`, or the real-data results in WORKSPACE.md). Regenerate with
the body of `test_task2_first_checks_match_the_recorded_numbers` printing `got`.
"""

import json

import numpy as np

from experiments import registry  # noqa: F401  (registers the experiments)
from experiments.common import run_experiment
from jaxlr.data import fake as jfake

# step -> (train_loss, val_loss, val_accuracy, train_accuracy), recorded 2026-11-30.
GOLDEN = {
    0: (0.6931474804878235, 0.1926341950893402, 0.9300000071525574, 0.9600000381469727),
    1: (0.18610697984695435, 0.1473570317029953, 0.949999988079071, 0.9500000476837158),
    2: (0.1607121378183365, 0.14055433869361877, 0.9300000071525574, 0.9500000476837158),
    3: (0.08567840605974197, 0.13390007615089417, 0.9399999976158142, 0.9500000476837158),
    4: (0.12833285331726074, 0.1322663128376007, 0.9399999976158142, 0.9533333778381348),
    5: (0.0996897965669632, 0.131291463971138, 0.9399999976158142, 0.9516667127609253),
}
# float32 training: identical on one machine; other CPUs or XLA versions may differ in the
# last bits of a sum.
RTOL = 1e-5


def test_task2_first_checks_match_the_recorded_numbers(tmp_path):
    folder = jfake.write_fake_dataset(tmp_path / "fake", num_train=3000, num_test=500, seed=0)
    overrides = dict(dataset="fake", data_dir=str(folder), num_train=None, num_epochs=2)
    metrics = run_experiment("tdt4265_task2", tmp_path / "wd", overrides)
    assert metrics["steps"] == 8 and metrics["steps_per_epoch"] == 4 and metrics["eval_every"] == 1
    records = [json.loads(line) for line in (tmp_path / "wd" / "history.jsonl").open()]
    got = {
        r["step"]: (r["train_loss"], r["val_loss"], r["val_accuracy"], r["train_accuracy"])
        for r in records
        if "val_loss" in r and r["step"] in GOLDEN
    }
    assert sorted(got) == sorted(GOLDEN)
    for step, expected in GOLDEN.items():
        np.testing.assert_allclose(
            got[step],
            expected,
            rtol=RTOL,
            err_msg=f"step {step} differs from the recorded numbers; see the module docstring "
            "for when it is right to update GOLDEN",
        )

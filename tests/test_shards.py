"""Sweeps in shards (`jaxlr.engine.shards`, `sweep --shard=I/N`, `sweep_merge`): slices, SLURM
variables, merged outputs equal to the unsharded sweep's, refusals, a killed shard resumed."""

import csv
import io
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from experiments import main as launcher
from experiments import registry  # noqa: F401
from experiments.common import run_experiment
from jaxlr.data import fake as jfake
from jaxlr.engine import shards as jshards
from jaxlr.host import checkpoint as ckpt

REPO = Path(__file__).resolve().parents[1]
# A 12-point grid (3 lr x 2 lambda x 2 seeds: every point has its own seed) on tiny fake data.
GRID = dict(
    model="softmax",
    dataset="fake",
    num_train=None,
    num_epochs=2,
    batch_size=32,
    lr=(0.05, 0.2, 0.8),
    l2=(0.0, 0.01),
    seeds=2,
    optimum=False,  # the merge solves the optimum the same way (tested once, marked slow)
)
# 36 points (4 lr x 3 lambda x 3 seeds), early stopping after every epoch's chunk: points stop
# at different epochs, so the blocks shrink (compaction) in the whole sweep and in each shard.
GRID36 = dict(
    GRID,
    lr=(0.05, 0.2, 0.8, 3.2),
    l2=(0.0, 0.01, 0.1),
    seeds=3,
    num_epochs=3,
    epochs_per_call=1,
    early_stopping=True,
    patience=3,
)


@pytest.fixture(scope="module")
def fake_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("data")
    return jfake.write_fake_dataset(root / "fake", 256, 128, seed=0, image_shape=(8, 8))


@pytest.fixture(scope="module")
def unsharded(fake_dir, tmp_path_factory):
    workdir = tmp_path_factory.mktemp("whole")
    metrics = run_experiment("sweep", workdir, {**GRID, "data_dir": str(fake_dir)})
    return workdir, metrics


def _shard_runs(root: Path, fake_dir, count: int, **extra) -> list[str]:
    workdirs = []
    for i in range(count):
        w = root / f"shard_{i}"
        run_experiment(
            "sweep", w, {**GRID, "data_dir": str(fake_dir), "shard": f"{i}/{count}", **extra}
        )
        workdirs.append(str(w))
    return workdirs


def _rows(path: Path) -> list[dict]:
    return list(csv.DictReader(io.StringIO(path.read_text())))


# ---------------------------------------------------------------------------------------------
# Slices and the SLURM environment.


def test_parse_shard_and_slices():
    assert jshards.parse_shard("3/8") == jshards.Shard(3, 8) and str(jshards.Shard(3, 8)) == "3/8"
    for bad, why in (
        ("8/8", r"I must be in \[0, 8\)"),
        ("1/0", "N must be >= 1"),
        ("a/b", "is not I/N"),
    ):
        with pytest.raises(ValueError, match=why) as err:
            jshards.parse_shard(bad)
        assert "\n" not in str(err.value)
    for s in (1, 7, 12, 36):
        for n in (1, 3, 4, 5, 8):
            parts = [jshards.shard_indices(s, jshards.Shard(i, n)) for i in range(n)]
            expect = np.array_split(np.arange(s), n)
            assert all(np.array_equal(a, b) for a, b in zip(parts, expect, strict=True)), (s, n)


def test_slurm_array_variables_are_read():
    env = {"SLURM_ARRAY_TASK_ID": "5", "SLURM_ARRAY_TASK_COUNT": "8"}
    assert jshards.shard_from_env(env) == jshards.Shard(5, 8)
    # --array=1-8: ids 1..8 are shards 0..7.
    env = {"SLURM_ARRAY_TASK_ID": "1", "SLURM_ARRAY_TASK_MIN": "1", "SLURM_ARRAY_TASK_MAX": "8"}
    assert jshards.shard_from_env({**env, "SLURM_ARRAY_TASK_COUNT": "8"}) == jshards.Shard(0, 8)
    assert jshards.shard_from_env({**env, "SLURM_ARRAY_TASK_ID": "8"}) == jshards.Shard(7, 8)
    assert jshards.shard_from_env({"SLURM_JOB_ID": "12"}) is None
    bad = [
        ({**env, "SLURM_ARRAY_TASK_STEP": "4"}, "SLURM_ARRAY_TASK_STEP=4"),
        ({**env, "SLURM_ARRAY_TASK_COUNT": "2"}, "not consecutive"),
        ({**env, "SLURM_ARRAY_TASK_ID": "9"}, "outside"),
        ({"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "2"}, "not a whole number"),
        ({"SLURM_ARRAY_TASK_ID": "1"}, "neither SLURM_ARRAY_TASK_COUNT"),
    ]
    for environ, why in bad:
        with pytest.raises(ValueError, match=why) as err:
            jshards.shard_from_env(environ)
        assert "\n" not in str(err.value)


def test_the_sweep_experiment_takes_its_shard_from_slurm(fake_dir, tmp_path, monkeypatch):
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "2")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "3")
    metrics = run_experiment("sweep", tmp_path / "a", {**GRID, "data_dir": str(fake_dir)})
    assert metrics["shard"] == "2/3" and [p["index"] for p in metrics["points"]] == [8, 9, 10, 11]
    # --shard wins over the environment; --shard=none trains every point.
    metrics = run_experiment(
        "sweep", tmp_path / "b", {**GRID, "data_dir": str(fake_dir), "shard": "0/6"}
    )
    assert metrics["shard"] == "0/6" and metrics["num_points"] == 2
    whole = run_experiment(
        "sweep", tmp_path / "c", {**GRID, "data_dir": str(fake_dir), "shard": "none"}
    )
    assert "shard" not in whole and whole["num_points"] == 12


# ---------------------------------------------------------------------------------------------
# Merged shards equal the unsharded sweep.


@pytest.mark.parametrize("count", [1, 3, 4, 5])
def test_merged_shards_equal_the_unsharded_sweep(count, fake_dir, unsharded, tmp_path):
    _check_merged_equals_unsharded(count, fake_dir, unsharded, tmp_path)


@pytest.mark.slow
def test_merged_shards_with_the_optimum_equal_the_unsharded_sweep(fake_dir, tmp_path):
    whole = tmp_path / "whole"
    metrics = run_experiment("sweep", whole, {**GRID, "data_dir": str(fake_dir), "optimum": True})
    _check_merged_equals_unsharded(4, fake_dir, (whole, metrics), tmp_path, optimum=True)
    assert "lr_over_limit" in (tmp_path / "merged" / "table.csv").read_text().splitlines()[0]


def _check_merged_equals_unsharded(count, fake_dir, unsharded, tmp_path, optimum=False):
    whole_dir, whole = unsharded
    workdirs = _shard_runs(tmp_path, fake_dir, count, optimum=optimum)
    merged = run_experiment(
        "sweep_merge", tmp_path / "merged", {"shards": tuple(reversed(workdirs))}
    )
    ref, got = whole_dir / "table.csv", tmp_path / "merged" / "table.csv"
    a, b = _rows(ref), _rows(got)
    assert [list(r) for r in a] == [list(r) for r in b]  # columns (with the optimum's)
    for ra, rb in zip(a, b, strict=True):
        assert ra == rb, ra["index"]  # a row that differs, named before the bytes
    # Blocks of other widths round alike (points computed in fixed groups): every byte.
    assert got.read_bytes() == ref.read_bytes()
    assert merged["num_points"] == 12 and len(merged["shards"]) == count
    for key in ("best_by_val_loss", "best_by_val_accuracy"):
        assert merged[key]["index"] == whole[key]["index"], key
    assert merged["point_steps"] == whole["point_steps"]
    for name in ("heatmap_val_accuracy.png", "curves_val_accuracy.png", "table.md", "report.md"):
        assert (tmp_path / "merged" / name).exists(), name
    report = (tmp_path / "merged" / "report.md").read_text()
    assert f"trained in {count} shards" in report and "Best by validation loss" in report
    hist = [p["history"] for p in merged["points"]]
    assert hist == [p["history"] for p in whole["points"]]


def test_a_36_point_grid_in_4_shards_merges_to_the_unsharded_sweep_bit_for_bit(fake_dir, tmp_path):
    whole = run_experiment("sweep", tmp_path / "whole", {**GRID36, "data_dir": str(fake_dir)})
    workdirs = []
    for i in range(4):
        w = tmp_path / f"shard_{i}"
        run_experiment("sweep", w, {**GRID36, "data_dir": str(fake_dir), "shard": f"{i}/4"})
        workdirs.append(str(w))
    merged = run_experiment("sweep_merge", tmp_path / "merged", {"shards": tuple(workdirs)})
    stopped = [p["early_stopping"]["stopped"] for p in whole["points"]]
    assert whole["num_points"] == 36 and 0 < sum(stopped) < 36  # compaction did happen
    ref = (tmp_path / "whole" / "table.csv").read_bytes()
    assert (tmp_path / "merged" / "table.csv").read_bytes() == ref
    # Every per-point number (metrics, stopping, history) is the same bits.
    assert merged["points"] == whole["points"]


@pytest.mark.parametrize("kind,group", [("logistic", 256), ("logistic", 16), ("softmax", 64)])
def test_a_point_is_the_same_bits_in_blocks_of_any_width(kind, group):
    # A point's check (on shared validation data) and step (loss and gradient of a shared
    # batch), vmapped in groups of `group` points in blocks of 1 to 300 points (one group or
    # several, padded), at any position and with any other points, are the bits of the same
    # point in the 300-point block (XLA CPU sums a wide [N, D] x [D, G K] product and the
    # batch reductions in a width-dependent order; `points_in_groups` computes fixed groups).
    # The widths: the widest groups of the two linear models on MNIST and a stopping grid's.
    import jax
    import jax.numpy as jnp

    from jaxlr.core.objective import make_model
    from jaxlr.engine.step import points_in_groups

    d, k, s = 785, (1 if kind == "logistic" else 10), 300
    model = make_model(kind, num_features=d)
    rng = np.random.default_rng(0)
    x = jnp.asarray(rng.random((1000, d)), jnp.float32)
    y = jnp.asarray(rng.integers(0, model.num_classes, 1000), jnp.int32)
    w = jnp.asarray(rng.normal(size=(s, d, k)) * 0.05, jnp.float32)
    l2 = jnp.linspace(0.0, 0.1, s, dtype=jnp.float32)

    def check(w, l2, x, y):
        obj, ce = model.loss({"w": w}, x, y, l2)
        return obj, ce, model.accuracy(model.apply({"w": w}, x), y)

    def step(w, l2, x, y):
        obj, ce = model.loss({"w": w}, x[:128], y[:128], l2)
        return obj, ce, model.grad({"w": w}, x[:128], y[:128], l2)["w"]

    widths = (1, 2, 7, 9, 17, 33, group - 1, group + 1, 2 * group + 3, 299)
    for fn in (check, step):
        run = jax.jit(jax.vmap(points_in_groups(fn, group), in_axes=(0, 0, None, None)))
        ref = [np.asarray(a) for a in run(w, l2, x, y)]
        for g in sorted({v for v in widths if 1 <= v < s}):
            for i in (0, 13, 63, 299):
                others = rng.permutation(np.delete(np.arange(s), i))[: g - 1]
                idx = rng.permutation(np.r_[i, others])
                pos = int(np.flatnonzero(idx == i)[0])
                got = run(w[idx], l2[idx], x, y)
                for a, r in zip(got, ref, strict=True):
                    assert np.array_equal(np.asarray(a)[pos], r[i]), (fn.__name__, g, i, pos)


def test_group_size_depends_on_a_point_only():
    from jaxlr.engine.step import MAX_GROUP, group_size

    assert group_size(786) == 256 == MAX_GROUP  # logistic regression on MNIST
    assert group_size(7851) == 64  # softmax regression
    assert group_size(10_000_000) == 1 and group_size(0) == MAX_GROUP
    from jaxlr.core.objective import make_model
    from jaxlr.engine.blocks import smallest_block, sweep_group

    logistic = make_model("logistic", num_features=785)
    softmax = make_model("softmax", num_features=785)
    assert smallest_block(logistic, 785) == 8 and smallest_block(softmax, 785) == 2
    # A sweep's group: the widest, at most the sweep (a power of two); with stopping,
    # about an eighth of the sweep (at least 16) so that compaction has room; 1 off the CPU.
    assert sweep_group(logistic, 256, False, "cpu") == 256
    assert sweep_group(logistic, 1000, False, "cpu") == 256
    assert sweep_group(logistic, 36, False, "cpu") == 64
    assert sweep_group(softmax, 256, False, "cpu") == 64
    assert sweep_group(logistic, 256, True, "cpu") == 32
    assert sweep_group(logistic, 36, True, "cpu") == 16
    assert sweep_group(logistic, 1, False, "cpu") == 1
    assert sweep_group(logistic, 256, False, "gpu") == 1


# ---------------------------------------------------------------------------------------------
# Refusals: one line, exit 1 (exit 2 for a bad flag), nothing published.


def _launch(monkeypatch, capsys, argv):
    monkeypatch.setattr(sys, "argv", ["main", *argv])
    with pytest.raises(SystemExit) as exc:
        launcher.run_main()
    out = capsys.readouterr()
    return exc.value.code, out.err.strip()


@pytest.fixture(scope="module")
def three_shards(fake_dir, tmp_path_factory):
    root = tmp_path_factory.mktemp("three")
    return _shard_runs(root, fake_dir, 3), root


def test_merge_refusals_are_one_line(three_shards, fake_dir, tmp_path, monkeypatch, capsys):
    workdirs, root = three_shards
    other = tmp_path / "other"  # shard 2/3 of a sweep with other learning rates
    run_experiment(
        "sweep", other, {**GRID, "data_dir": str(fake_dir), "shard": "2/3", "lr": (0.05, 0.2, 0.9)}
    )
    dup = tmp_path / "dup"  # shard 1/3 again, in another workdir
    run_experiment("sweep", dup, {**GRID, "data_dir": str(fake_dir), "shard": "1/3"})
    unfinished = tmp_path / "unfinished"
    (unfinished / "ckpt").mkdir(parents=True)
    whole = tmp_path / "whole"
    run_experiment(
        "sweep",
        whole,
        {**GRID, "data_dir": str(fake_dir), "num_epochs": 1, "lr": (0.1,), "seeds": 1},
    )
    four = tmp_path / "four"
    run_experiment("sweep", four, {**GRID, "data_dir": str(fake_dir), "shard": "3/4"})
    w0, w1, w2 = workdirs
    cases = [
        (
            [w0, w1, str(other)],
            "is of another sweep",
            "config lr [0.05, 0.2, 0.8] vs [0.05, 0.2, 0.9]",
        ),
        ([w0, w2], "1 of 3 shards missing: 1/3", "give the workdir of every shard"),
        ([w0, w1, w2, str(dup)], "shard 1/3 is given twice", str(dup)),
        ([w0, w1, w1 + "/", w2], "is given twice", w1),
        ([w0, w1, str(unfinished)], "has no finished run", "resumes"),
        ([w0, w1, str(tmp_path / "nowhere")], "does not exist", "nowhere"),
        ([w0, w1, str(whole)], "no shard", "--shard=I/N"),
        ([w0, w1, w2, str(four)], "different numbers of tasks", "3/4"),
    ]
    for shards, what, detail in cases:
        out = tmp_path / "merged"
        code, err = _launch(
            monkeypatch,
            capsys,
            ["--experiment=sweep_merge", f"--workdir={out}", "--shards=" + ",".join(shards)],
        )
        assert code == 1, (what, err)
        assert err.count("\n") == 0 and err.startswith("error: "), err
        assert what in err and detail in err, err
        assert not (out / "metrics.json").exists() and not (out / "latest").exists()
    # The shards themselves are untouched and still merge.
    code, err = _launch(
        monkeypatch,
        capsys,
        [
            "--experiment=sweep_merge",
            f"--workdir={tmp_path / 'merged'}",
            "--shards=" + ",".join(workdirs),
        ],
    )
    assert code == 0, err
    assert json.loads((tmp_path / "merged" / "metrics.json").read_text())["num_points"] == 12


def test_bad_shards_and_halving_are_refused(fake_dir, tmp_path, monkeypatch, capsys):
    base = [
        "--experiment=sweep",
        f"--workdir={tmp_path / 'w'}",
        "--dataset=fake",
        f"--data_dir={fake_dir}",
    ]
    base += ["--model=softmax", "--lr=0.1,0.2", "--num_train=all", "--num_epochs=1"]
    for flags, what in (
        (["--shard=4/4"], "--shard=4/4: '4/4': I must be in [0, 4)"),
        (["--shard=1-4"], "is not I/N"),
        (["--shard=2/3"], "holds no point: use at most 2 shards"),
        (["--shard=0/2", "--prune=halving"], "cannot be combined with --prune=halving"),
    ):
        code, err = _launch(monkeypatch, capsys, [*base, *flags])
        assert code == 2 and err.count("\n") == 0 and what in err, (flags, err)
    # From the environment: exit 1, naming the variable.
    monkeypatch.setenv("SLURM_ARRAY_TASK_ID", "0")
    monkeypatch.setenv("SLURM_ARRAY_TASK_COUNT", "2")
    # Halving needs a rung before the last epoch (refused before the shard check otherwise).
    halving = [f for f in base if f != "--num_epochs=1"]
    halving += ["--num_epochs=2", "--rung_epochs=1", "--prune=halving"]
    code, err = _launch(monkeypatch, capsys, halving)
    assert (
        code == 1 and err.count("\n") == 0 and "SLURM array task 0/2" in err and "halving" in err
    ), err
    monkeypatch.setenv("SLURM_ARRAY_TASK_STEP", "2")
    code, err = _launch(monkeypatch, capsys, base)
    assert code == 1 and err.count("\n") == 0 and "SLURM_ARRAY_TASK_STEP=2" in err, err
    assert not (tmp_path / "w" / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------
# A shard killed with SIGKILL resumes from its checkpoint to the same merged table.


def _shard_command(workdir, fake_dir, shard):
    return [
        sys.executable,
        "-m",
        "experiments.main",
        "--experiment=sweep",
        f"--workdir={workdir}",
        f"--data_dir={fake_dir}",
        *(f"--{k}={v}" if v != "" else f"--{k}" for k, v in KILL_FLAGS.items()),
        f"--shard={shard}",
        f"--checkpoint={workdir / 'ckpt'}",  # relative to the current folder otherwise
    ]


KILL_FLAGS = dict(
    dataset="fake",
    model="softmax",
    num_train="all",
    batch_size=32,
    lr="0.05,0.2,0.8",
    l2="0,0.01",
    seeds=2,
    num_epochs=40,
    epochs_per_call=1,
    nooptimum="",
)


def test_a_shard_killed_with_sigkill_resumes_to_the_same_merged_table(fake_dir, tmp_path):
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(REPO))
    for k in [k for k in env if k.startswith("SLURM_")]:
        del env[k]

    def launch(workdir, shard):
        r = subprocess.run(
            _shard_command(workdir, fake_dir, shard),
            cwd=REPO,
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
        )
        assert r.returncode == 0, r.stderr[-2000:]
        return r.stderr

    ref, killed = tmp_path / "ref_1", tmp_path / "killed_1"
    launch(ref, "1/2")
    proc = subprocess.Popen(
        _shard_command(killed, fake_dir, "1/2"),
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    path = killed / "ckpt" / "sweep.npz"
    try:
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and proc.poll() is None:
            if path.exists():
                try:
                    if ckpt.load_flat(path)[1]["chunk"] >= 2:
                        break
                except ckpt.CheckpointError:
                    pass  # replaced while being read
            time.sleep(0.01)
        assert proc.poll() is None, "the shard finished before it could be killed"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.wait(timeout=60)
    assert ckpt.load_flat(path)[1]["epoch"] < 16
    assert not (killed / "latest").exists()
    # Shard 0 (in this process; the merge only reads its file).
    flags = {k: v for k, v in KILL_FLAGS.items() if k != "nooptimum"}
    flags.update(data_dir=str(fake_dir), shard="0/2", optimum=False)
    run_experiment("sweep", tmp_path / "shard_0", flags)
    with pytest.raises(jshards.ShardError, match="has no finished run"):
        run_experiment(
            "sweep_merge", tmp_path / "m0", {"shards": (str(tmp_path / "shard_0"), str(killed))}
        )
    assert "resumed from" in launch(killed, "1/2")
    for name, w1 in (("m_ref", ref), ("m_killed", killed)):
        run_experiment(
            "sweep_merge", tmp_path / name, {"shards": (str(tmp_path / "shard_0"), str(w1))}
        )
    table = (tmp_path / "m_ref" / "table.csv").read_bytes()
    assert (tmp_path / "m_killed" / "table.csv").read_bytes() == table
    a, b = (json.loads((tmp_path / n / "metrics.json").read_text()) for n in ("m_ref", "m_killed"))
    assert a["points"] == b["points"] and len(a["points"]) == 12

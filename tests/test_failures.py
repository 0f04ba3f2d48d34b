"""Runs that fail, as whole processes: exit codes, one-line messages, the workdir unchanged.

Every case runs `python -m experiments.main` on small fake IDX data written by the test (so it
runs without the real files) and checks the behaviour a user sees: the exit code, a single
line on stderr without a traceback, and a finished workdir whose files are byte for byte what
they were before.
"""

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from jaxlr.data import fake as jfake

REPO = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def fake(tmp_path_factory):
    folder = tmp_path_factory.mktemp("fake")
    return jfake.write_fake_dataset(folder, num_train=3000, num_test=500, seed=0)


def _cmd(fake, workdir, *flags, experiment="tdt4265_task2"):
    # A flag given twice is refused: --num_train=all only when the test gives none.
    num_train = [] if any(f.startswith("--num_train=") for f in flags) else ["--num_train=all"]
    return [
        sys.executable, "-m", "experiments.main", f"--experiment={experiment}",
        f"--workdir={workdir}", "--dataset=fake", f"--data_dir={fake}", *num_train,
        "--nocompilation_cache", *flags,
    ]  # fmt: skip


def _env():
    return dict(os.environ, MPLBACKEND="Agg")


def _run(cmd, timeout=300):
    return subprocess.run(
        cmd, cwd=REPO, capture_output=True, text=True, timeout=timeout, env=_env()
    )


def _snapshot(workdir: Path) -> dict:
    """Every visible entry of the workdir: link targets and file contents (sha256)."""
    out = {}
    for p in sorted(workdir.rglob("*")):
        rel = str(p.relative_to(workdir))
        if rel == ".lock":
            continue
        if p.is_symlink():
            out[rel] = "link:" + os.readlink(p)
        elif p.is_file():
            out[rel] = hashlib.sha256(p.read_bytes()).hexdigest()
    return out


def _one_line(stderr: str) -> str:
    """The last line of stderr, after checking it is the only non-log line and no traceback."""
    assert "Traceback" not in stderr, stderr
    lines = [ln for ln in stderr.strip().splitlines() if not ln[:2].isdigit()]
    assert len(lines) == 1, stderr
    return lines[0]


@pytest.fixture(scope="module")
def finished(fake, tmp_path_factory):
    """A workdir holding one finished run, and its snapshot."""
    workdir = tmp_path_factory.mktemp("finished") / "wd"
    r = _run(_cmd(fake, workdir, "--num_epochs=2"))
    assert r.returncode == 0, r.stderr
    return workdir, _snapshot(workdir)


def test_divergence_is_one_line_exit_1_and_leaves_the_workdir(fake, finished):
    workdir, before = finished
    r = _run(_cmd(fake, workdir, "--lr=1e6", "--num_epochs=2"))
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert line.startswith("error: training diverged at step") and "learning rate 1e+06" in line
    assert "diverge_factor" in line
    assert _snapshot(workdir) == before


def test_every_grid_point_diverged_is_one_line(fake, tmp_path):
    flags = ["--smoke", "--num_train=2000", "--num_val=1000", "--lr=1e6,1e7"]
    r = _run(_cmd(fake, tmp_path / "wd", *flags, experiment="hw3_logreg_grid"))
    assert r.returncode == 1
    assert "every one of the 6 grid points diverged" in _one_line(r.stderr)
    assert not (tmp_path / "wd" / "metrics.json").exists()


def test_a_run_that_ends_before_its_optimum_leaves_no_compiling_thread():
    """`optimum_ahead` compiles on a thread; a run that fails before its optimum stops it
    after the current program and waits (`run_experiment` does, and so does exit: a thread
    inside XLA's compiler when the interpreter finalizes aborted the process, rc -6, in the
    refusals above), and a stopped `prepare` starts no program."""
    from types import SimpleNamespace

    import numpy as np

    from experiments import common
    from jaxlr.engine.config import TrainConfig

    data = SimpleNamespace(x_train=np.zeros((61, 7), np.float32), y_train=np.zeros(61, np.int32))
    tcfg = TrainConfig(model="softmax", num_classes=3)
    ahead = common.optimum_ahead(tcfg, SimpleNamespace(data=data), [0.0, 0.1, 0.01])
    common.stop_optimum_ahead()
    assert ahead.stop.is_set() and not ahead.thread.is_alive()
    assert not common._PENDING


def test_bad_value_over_a_finished_workdir_changes_nothing(fake, finished):
    workdir, before = finished
    r = _run(_cmd(fake, workdir, "--lr=nan"))
    assert r.returncode == 2 and _one_line(r.stderr).startswith("error: --lr=nan")
    assert _snapshot(workdir) == before


@pytest.mark.parametrize("what", ["workdir", "data_dir"])
def test_a_file_where_a_folder_belongs(fake, tmp_path, what):
    path = tmp_path / "a_file"
    path.write_text("not a folder")
    if what == "workdir":
        cmd = _cmd(fake, path)
    else:
        cmd = _cmd(fake, tmp_path / "wd")
        cmd[cmd.index(f"--data_dir={fake}")] = f"--data_dir={path}"
    r = _run(cmd)
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert line.startswith("error:") and str(path) in line
    assert path.read_text() == "not a folder"


def _wait_for(proc, stderr_path: Path, text: str, timeout: float = 120.0) -> None:
    t0 = time.time()
    while text not in stderr_path.read_text():
        assert proc.poll() is None, stderr_path.read_text()
        assert time.time() - t0 < timeout, f"{text!r} did not appear"
        time.sleep(0.1)


def test_busy_workdir_refused_and_sigint_keeps_the_finished_run(fake, finished, tmp_path):
    workdir, before = finished
    log = tmp_path / "first.err"
    with log.open("w") as err:
        first = subprocess.Popen(
            _cmd(fake, workdir, "--num_epochs=5000"),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
        )
    try:
        _wait_for(first, log, "epoch 3/5000")
        # A second run into the busy workdir: refused at once, naming the holder.
        t0 = time.time()
        second = _run(_cmd(fake, workdir, "--num_epochs=2"))
        assert second.returncode == 1
        line = _one_line(second.stderr)
        assert f"in use by process {first.pid}" in line and str(workdir) in line
        assert time.time() - t0 < 60
        # Ctrl-C: exit 130, one line saying where it stopped; the finished run is untouched.
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130, log.read_text()[-4000:]
    finally:
        if first.poll() is None:
            first.kill()
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("interrupted at") and "epoch" in last and "unchanged" in last
    assert _snapshot(workdir) == before


def test_interrupted_checkpointed_run_resumes_with_the_same_command(fake, tmp_path):
    workdir = tmp_path / "wd"
    # --checkpoint is relative to the current folder (the repository here): give a path.
    cmd = _cmd(fake, workdir, "--num_epochs=3000", f"--checkpoint={tmp_path / 'ckpt'}")
    log = tmp_path / "err"
    with log.open("w") as err:
        proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.DEVNULL, stderr=err, env=_env())
    _wait_for(proc, log, "epoch 3/3000")
    proc.send_signal(signal.SIGINT)
    assert proc.wait(timeout=60) == 130, log.read_text()[-4000:]
    last = log.read_text().strip().splitlines()[-1]
    assert "the same command resumes" in last, last
    assert (tmp_path / "ckpt" / "run.npz").exists()
    assert not (workdir / "metrics.json").exists()


@pytest.mark.parametrize("experiment", ["sweep", "hw3_mlp"])
def test_a_model_that_cannot_fit_is_refused_before_allocating(fake, tmp_path, experiment):
    flags = ["--smoke", "--hidden=100000000"] + (["--model=mlp"] if experiment == "sweep" else [])
    cmd = _cmd(fake, tmp_path / "wd", *flags, experiment=experiment)
    if experiment == "hw3_mlp":  # split full takes every training image: no --num_train
        cmd.remove("--num_train=all")
    r = _run(cmd, timeout=120)
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert "needs about" in line and "is available" in line and "TiB" in line
    assert not (tmp_path / "wd" / "metrics.json").exists()


# ---------------------------------------------------------------------------------------------
# What a run may not take over, hw3_misclassified's checkpoint, signals that end a run.


def _copy(workdir: Path, dest: Path) -> Path:
    shutil.copytree(workdir, dest, symlinks=True)
    return dest


def test_users_own_files_in_the_workdir_are_refused_before_training(fake, tmp_path):
    workdir = tmp_path / "mine"
    workdir.mkdir()
    (workdir / "report.md").write_text("my report")
    (workdir / "metrics.json").write_text('{"mine": 1}')
    r = _run(_cmd(fake, workdir, "--num_epochs=2"))
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert "no run published there" in line and "move it away" in line, line
    assert str(workdir / "metrics.json") in line
    assert "epoch" not in r.stderr  # refused before training
    assert (workdir / "report.md").read_text() == "my report"
    assert (workdir / "metrics.json").read_text() == '{"mine": 1}'
    assert sorted(os.listdir(workdir)) == [".lock", "metrics.json", "report.md"]


@pytest.mark.parametrize("latest", ["regular file", "dangling link"])
def test_a_broken_latest_link_is_refused_and_nothing_deleted(fake, finished, tmp_path, latest):
    workdir = _copy(finished[0], tmp_path / "wd")
    (workdir / "latest").unlink()
    if latest == "regular file":
        (workdir / "latest").write_text("not a link")
    else:
        os.symlink(".runs/20990101-000000-000000-1", workdir / "latest")
    before = _snapshot(workdir)
    r = _run(_cmd(fake, workdir, "--num_epochs=2"))
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert str(workdir / "latest") in line and "nothing was changed" in line, line
    assert "epoch" not in r.stderr
    assert _snapshot(workdir) == before  # the published run folder is still there


def test_sigterm_ends_a_run_like_ctrl_c(fake, finished, tmp_path):
    workdir = _copy(finished[0], tmp_path / "wd")
    before = _snapshot(workdir)
    log = tmp_path / "err"
    with log.open("w") as err:
        proc = subprocess.Popen(
            _cmd(fake, workdir, "--num_epochs=5000"),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
        )
    try:
        _wait_for(proc, log, "epoch 3/5000")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 128 + signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
    text = log.read_text()
    assert "Traceback" not in text and "KeyboardInterrupt" not in text
    last = text.strip().splitlines()[-1]
    assert last.startswith("interrupted by SIGTERM at") and "unchanged" in last, last
    assert _snapshot(workdir) == before  # staging folder removed, earlier outputs intact


def test_interrupt_line_of_an_experiment_without_checkpoints():
    from experiments import main as launcher

    saved = dict(launcher._RUNNING)
    try:
        for name, expected in (
            ("hw3_logreg_grid", "hw3_logreg_grid does not resume"),
            ("hw3_misclassified", "hw3_misclassified does not resume"),
            ("tdt4265_task2", "add --checkpoint=DIR"),
        ):
            parsed = launcher.parse(["main", f"--experiment={name}", "--workdir=w"])
            launcher._RUNNING["parsed"] = parsed
            line = launcher._interrupt_message()
            assert expected in line, line
            if name.startswith("hw3"):
                assert "--checkpoint" not in line, line
    finally:
        launcher._RUNNING.clear()
        launcher._RUNNING.update(saved)


@pytest.fixture(scope="module")
def grid(fake, tmp_path_factory):
    """A finished hw3_logreg_grid workdir (without the optimum: its report table too)."""
    workdir = tmp_path_factory.mktemp("grid") / "wd"
    flags = ["--smoke", "--num_train=2000", "--num_val=1000", "--nooptimum"]
    r = _run(_cmd(fake, workdir, *flags, experiment="hw3_logreg_grid"))
    assert r.returncode == 0, r.stderr
    return workdir


def test_grid_without_the_optimum_publishes_its_report(grid):
    text = (grid / "report.md").read_text()
    assert "| lambda | lr | val accuracy |" in text and "| gap |" not in text
    assert (grid / "logreg_best.npz").exists() and (grid / "metrics.json").exists()


def _mis_cmd(fake, workdir, checkpoint, *flags):
    return [
        sys.executable, "-m", "experiments.main", "--experiment=hw3_misclassified",
        f"--workdir={workdir}", f"--data_dir={fake}", f"--grid_checkpoint={checkpoint}",
        "--num_test=20", "--nocompilation_cache", *flags,
    ]  # fmt: skip


def test_misclassified_into_the_grids_workdir_is_refused(fake, grid):
    before = _snapshot(grid)
    r = _run(_mis_cmd(fake, grid, grid / "logreg_best.npz", "--dataset=fake"))
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert "holds the published outputs of hw3_logreg_grid" in line, line
    assert "hw3_misclassified" in line and "--workdir" in line
    assert _snapshot(grid) == before


def test_misclassified_checkpoint_inside_its_workdir_is_refused(fake, grid, tmp_path):
    workdir = tmp_path / "mis"
    (workdir / "in").mkdir(parents=True)
    ckpt = workdir / "in" / "logreg_best.npz"
    ckpt.write_bytes((grid / "logreg_best.npz").read_bytes())
    r = _run(_mis_cmd(fake, workdir, ckpt, "--dataset=fake"))
    assert r.returncode == 1
    line = _one_line(r.stderr)
    assert f"--grid_checkpoint={ckpt} lies inside --workdir={workdir}" in line, line
    assert ckpt.read_bytes() == (grid / "logreg_best.npz").read_bytes()
    assert not (workdir / "metrics.json").exists()


@pytest.mark.parametrize(
    "flags, expected",
    [
        (
            (),
            "trained with --dataset=fake, this run evaluates with --dataset=mnist: "
            "add --dataset=fake",
        ),
        (("--dataset=fake", "--dtype=float64"), "add --dtype=float32"),
    ],
)
def test_misclassified_refuses_another_data_set_or_dtype(fake, grid, tmp_path, flags, expected):
    workdir = tmp_path / "mis"
    r = _run(_mis_cmd(fake, workdir, grid / "logreg_best.npz", *flags))
    assert r.returncode == 1
    assert expected in _one_line(r.stderr)
    assert not (workdir / "metrics.json").exists()


def test_misclassified_on_the_checkpoints_data_set(fake, grid, tmp_path):
    workdir = tmp_path / "mis"
    r = _run(_mis_cmd(fake, workdir, grid / "logreg_best.npz", "--dataset=fake"))
    assert r.returncode == 0, r.stderr
    m = json.loads((workdir / "metrics.json").read_text())
    assert m["test_total"] == 20
    assert json.loads((workdir / "config.json").read_text())["data"]["dataset"] == "fake"


# ---------------------------------------------------------------------------------------------
# Bad inputs refused before training, checkpoints shared by two runs, OS errors in words.


def _refused_before_training(r, *parts):
    assert r.returncode == 1, r.stderr
    line = _one_line(r.stderr)
    for part in parts:
        assert part in line, line
    assert "epoch" not in r.stderr, r.stderr  # nothing trained
    return line


@pytest.mark.parametrize(
    "experiment, flags, parts",
    [
        (
            "sweep",
            ("--smoke", "--model=softmax", "--num_classes=3"),
            ("run_sweep: data.y_train holds label", "the softmax model has 3 classes"),
        ),
        (
            "tdt4265_task2",
            ("--smoke", "--max_examples=5"),
            ("fit: batch_size 128 is larger than the", "training examples"),
        ),
        (
            "tdt4265_task2",
            ("--smoke", "--train_eval_size=100000"),
            ("fit: train_eval_size 100000 is larger than the", "allowed: 0 (all of them) to"),
        ),
    ],
)
def test_data_the_run_cannot_train_on_is_one_line_exit_1(fake, tmp_path, experiment, flags, parts):
    r = _run(_cmd(fake, tmp_path / "wd", *flags, experiment=experiment))
    _refused_before_training(r, "error: ", *parts)
    # Refused after the data were loaded: the workdir it had created is gone again.
    assert not (tmp_path / "wd").exists()


def test_a_checkpoint_path_that_is_a_file_is_refused_in_words(fake, tmp_path):
    path = tmp_path / "a_file"
    path.write_text("mine")
    r = _run(_cmd(fake, tmp_path / "wd", "--smoke", f"--checkpoint={path}", experiment="sweep"))
    line = _refused_before_training(r, f"cannot create the folder {path}", "in the way")
    assert "Errno" not in line and path.read_text() == "mine"


def test_a_corrupt_checkpoint_is_one_line_naming_it(fake, tmp_path):
    ckdir = tmp_path / "ck"
    ckdir.mkdir()
    (ckdir / "sweep.npz").write_bytes(os.urandom(4000))
    r = _run(_cmd(fake, tmp_path / "wd", "--smoke", f"--checkpoint={ckdir}", experiment="sweep"))
    line = _refused_before_training(r, f"checkpoint {ckdir / 'sweep.npz'} is corrupt")
    assert line.endswith("remove it or give another path") and "allow_pickle" not in line


def test_two_sweeps_sharing_one_checkpoint_the_second_is_refused_at_once(fake, tmp_path):
    ckdir = tmp_path / "shared"
    common = ["--smoke", f"--checkpoint={ckdir}", "--num_epochs=5000"]
    log = tmp_path / "first.err"
    with log.open("w") as err:
        first = subprocess.Popen(
            _cmd(fake, tmp_path / "wd1", *common, experiment="sweep"),
            cwd=REPO,
            stdout=subprocess.DEVNULL,
            stderr=err,
            env=_env(),
        )
    try:
        _wait_for(first, log, "epoch 3/5000")
        stamp = (ckdir / "sweep.npz").stat().st_mtime_ns
        # Another sweep (another grid, another workdir) into the same checkpoint folder.
        r = _run(_cmd(fake, tmp_path / "wd2", *common, "--lr=0.5", experiment="sweep"))
        _refused_before_training(r, f"in use by process {first.pid}", str(ckdir / "sweep.npz"))
        assert (ckdir / "sweep.npz").stat().st_mtime_ns >= stamp  # still the first's
        first.send_signal(signal.SIGINT)
        assert first.wait(timeout=60) == 130, log.read_text()[-4000:]
    finally:
        if first.poll() is None:
            first.kill()
    assert not (tmp_path / "wd2" / "metrics.json").exists()


def test_os_errors_name_the_path_and_say_what_failed():
    import errno

    from experiments.main import _error_line

    def mkdir(path, code):  # how pathlib's mkdir fails
        raise OSError(code, os.strerror(code), path)

    for code, words in (
        (errno.EACCES, "cannot create the folder /r/wd: permission denied"),
        (errno.EROFS, "cannot create the folder /r/wd: the file system is read-only"),
        (errno.EEXIST, "cannot create the folder /r/wd: a file of that name is in the way"),
        (errno.ENOTDIR, "a part of the path is a file, not a folder"),
    ):
        try:
            mkdir("/r/wd", code)
        except OSError as err:
            line = _error_line(err)
        assert words in line and "Errno" not in line, line
    from jaxlr.host import io

    try:  # write() fails without a file name: atomic_open adds the destination
        with io.atomic_open("/tmp/jaxlr-test-enospc/metrics.json", "w"):
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
    except OSError as err:
        line = _error_line(err)
    assert line.startswith("cannot write /tmp/jaxlr-test-enospc/metrics.json: no space left"), line
    shutil.rmtree("/tmp/jaxlr-test-enospc", ignore_errors=True)


def test_interrupt_line_only_offers_flags_the_experiment_has():
    import re

    from experiments import main as launcher
    from experiments.config import EXPERIMENTS, flag_fields

    saved = dict(launcher._RUNNING)
    try:
        for name, exp in sorted(EXPERIMENTS.items()):
            parsed = launcher.parse(["main", f"--experiment={name}", "--workdir=w"])
            launcher._RUNNING["parsed"] = parsed
            line = launcher._interrupt_message()
            for flag in re.findall(r"--([a-z_]+)", line):
                assert flag in flag_fields(exp.config_cls), (name, line)
            if getattr(exp.config_cls, "CHECKPOINT_IS_INPUT", False):
                assert "--checkpoint" not in line and "does not resume" in line, line
    finally:
        launcher._RUNNING.clear()
        launcher._RUNNING.update(saved)


def test_hw3_mlp_report_counts_the_training_images_its_checks_use():
    """--train_eval_size above the training set: the checks use every image, and say so."""
    import collections

    import numpy as np

    from experiments.hw3_config import Mlp
    from experiments.hw3_mlp import _mlp_sections

    cfg = Mlp()  # train_eval_size 10000
    metrics = collections.defaultdict(float, test_correct=1, test_total=2)
    text = "\n".join(_mlp_sections(cfg, 784, 1000, 31, 500, "test", metrics, np.eye(10)))
    assert "and the first 1000 training images." in text, text
    assert "10000 training images" not in text


@pytest.mark.parametrize("folder", ["latest", "latest/ck", ".runs"])
def test_a_checkpoint_inside_the_published_run_is_refused(fake, finished, tmp_path, folder):
    workdir = _copy(finished[0], tmp_path / "wd")
    before = _snapshot(workdir)
    r = _run(_cmd(fake, workdir, "--num_epochs=2", f"--checkpoint={workdir / folder}"))
    line = _refused_before_training(r, f"folder {workdir / folder} lies inside", "publish")
    assert "give a folder of its own" in line
    assert _snapshot(workdir) == before  # nothing written into the published run

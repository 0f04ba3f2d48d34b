"""Tests of multi-process sweeps (`jaxlr.engine.distributed`, `experiments/launch.py`).

Two processes on localhost with two forced CPU devices each run a small sweep through
`tests/dist_worker.py`, started by the local launcher; the results must equal those of one
process with four devices and of one process with one device, and a process that dies must
make the run fail within a bounded time.
"""

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from jaxlr.engine import distributed

REPO = Path(__file__).resolve().parents[1]


def _env(devices: int) -> dict:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    env["JAX_PLATFORMS"] = "cpu"
    flags = [f for f in env.get("XLA_FLAGS", "").split() if "device_count" not in f]
    env["XLA_FLAGS"] = " ".join(flags + [f"--xla_force_host_platform_device_count={devices}"])
    return env


def _launch(out: Path, num_processes: int, devices: int, *extra, timeout=240):
    cmd = [
        sys.executable,
        "-m",
        "experiments.launch",
        f"--num_processes={num_processes}",
        f"--devices_per_process={devices}",
        "--module=tests.dist_worker",
        "--timeout=200",
        "--grace=5",
        "--oversubscribe",  # the test's process count, whatever the machine's cores
        "--",
        f"--out={out}",
        *extra,
    ]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd, cwd=REPO, env=_env(devices), capture_output=True, text=True, timeout=timeout
    )
    return proc, time.monotonic() - t0


def _single(out: Path, devices: int):
    proc = subprocess.run(
        [sys.executable, "-m", "tests.dist_worker", f"--out={out}"],
        cwd=REPO,
        env=_env(devices),
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    return json.loads((out / "result_0.json").read_text())


def test_two_processes_equal_one_process_with_four_devices_and_one_device(tmp_path):
    proc, _ = _launch(tmp_path / "two", 2, 2)
    assert proc.returncode == 0, proc.stdout[-4000:]
    lines = proc.stdout.splitlines()
    assert any(ln.startswith("[p0] ") for ln in lines) and any(
        ln.startswith("[p1] ") for ln in lines
    )
    r0 = json.loads((tmp_path / "two" / "result_0.json").read_text())
    r1 = json.loads((tmp_path / "two" / "result_1.json").read_text())
    assert (r0["num_processes"], r0["devices"], r0["main"], r1["main"]) == (2, 4, True, False)
    # Every process holds the whole result (gathered), so process 0 alone can write it.
    assert r0["table"] == r1["table"] and r0["params"] == r1["params"]
    four = _single(tmp_path / "four", 4)
    one = _single(tmp_path / "one", 1)
    assert (four["num_processes"], four["devices"], one["devices"]) == (1, 4, 1)
    stopped = sum(s >= 0 for s in r0["stop_step"])
    assert stopped >= 4, "the test grid should stop points early (compaction across processes)"
    assert r0["computed_point_steps"] < 16 * 12 * 8
    for other in (four, one):
        # Per-point seeds: parameters, steps and stopping bit for bit; numbers of the
        # shared-data evaluations up to rounding.
        assert r0["params"] == other["params"]
        assert r0["steps"] == other["steps"] and r0["stop_step"] == other["stop_step"]
        assert r0["train_loss"] == other["train_loss"]
        assert r0["point_steps"] == other["point_steps"]
        a = [ln.split(",") for ln in r0["table"].splitlines()]
        b = [ln.split(",") for ln in other["table"].splitlines()]
        assert a[0] == b[0] and len(a) == len(b) == 17
        for ra, rb in zip(a[1:], b[1:], strict=True):
            for x, y in zip(ra, rb, strict=True):
                try:
                    np.testing.assert_allclose(float(x), float(y), rtol=1e-12)
                except ValueError:
                    assert x == y


def test_the_launcher_stops_everything_when_one_process_fails(tmp_path):
    proc, seconds = _launch(tmp_path / "dead", 2, 2, "--die_after_chunks=2", "--heartbeat=60")
    assert proc.returncode == 3, proc.stdout[-3000:]
    assert "[p1] process 1: dying on purpose" in proc.stdout
    assert "[launch] process 1 failed with status 3; stopping the others" in proc.stdout
    assert not (tmp_path / "dead" / "result_0.json").exists()
    assert seconds < 100, seconds


@pytest.mark.parametrize("dying", [0, 1])
def test_a_dead_process_makes_the_others_fail_within_bounded_time(tmp_path, dying):
    # No launcher: the survivor alone must notice. It is then in a collective with the
    # dead process, which fails at once (gloo: connection closed); the coordination
    # service's heartbeat timeout (10 s here) bounds the exit.
    from experiments.launch import free_port

    addr = f"127.0.0.1:{free_port()}"
    procs = [
        subprocess.Popen(
            [
                sys.executable,
                "-m",
                "tests.dist_worker",
                f"--out={tmp_path}",
                f"--coordinator_address={addr}",
                "--num_processes=2",
                f"--process_id={i}",
                "--die_after_chunks=2",
                f"--dying_process={dying}",
                "--heartbeat=10",
            ],
            cwd=REPO,
            env=_env(2),
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        for i in range(2)
    ]
    t0 = time.monotonic()
    try:
        outs = [p.communicate(timeout=150)[0] for p in procs]
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    seconds = time.monotonic() - t0
    assert procs[dying].returncode == 3, outs[dying][-2000:]
    survivor = procs[1 - dying]
    assert survivor.returncode != 0, outs[1 - dying][-2000:]
    assert not (tmp_path / f"result_{1 - dying}.json").exists()
    assert seconds < 120, seconds


def test_initialize_arguments():
    with pytest.raises(ValueError, match="missing num_processes, process_id"):
        distributed.initialize("127.0.0.1:1234")
    with pytest.raises(ValueError, match=r"process_id must be in \[0, 2\), got 2"):
        distributed.initialize("127.0.0.1:1234", 2, 2)
    with pytest.raises(ValueError, match="coordinator_address must be host:port"):
        distributed.initialize("localhost", 2, 0)
    # No arguments and no cluster manager: one process, nothing to do.
    if distributed.cluster_detected() is None:
        assert distributed.initialize() is False
    assert distributed.is_main_process()
    assert distributed.process_mesh().devices.size == len(__import__("jax").devices())


def test_launcher_rejects_bad_arguments():
    from experiments import launch

    with pytest.raises(launch.LaunchError, match="--num_processes=0: must be a whole number >= 1"):
        launch.launch([], 0)
    check = launch.check_arguments
    # More processes than cores: refused (64 on 2 cores ran for minutes, then crashed in
    # JAX's native code when stopped), unless asked for.
    with pytest.raises(launch.LaunchError, match="--num_processes=64: more processes than the 2"):
        check(64, cores=2)
    check(64, cores=2, oversubscribe=True)
    check(2, cores=2)
    for kwargs, match in (
        (dict(devices_per_process=-1), "--devices_per_process=-1: must be >= 0"),
        (dict(timeout=-5.0), "--timeout=-5: must be seconds >= 0"),
        (dict(grace=float("nan")), "--grace=nan: must be seconds >= 0"),
        (dict(port=70000), "--port=70000: must be 1 to 65535"),
    ):
        with pytest.raises(launch.LaunchError, match=match):
            check(1, cores=2, **kwargs)
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        with pytest.raises(launch.LaunchError, match=f"--port={port}: cannot be used"):
            check(1, port=port)


@pytest.mark.parametrize(
    "argv,line",
    [
        (["--num_processes=0"], "error: --num_processes=0: must be a whole number >= 1"),
        (["--num_processes=x"], "error: argument --num_processes: invalid int value: 'x'"),
        (["--num_processes=1", "--bogus"], "error: unrecognized arguments: --bogus"),
    ],
)
def test_launcher_bad_command_lines_are_one_line_exit_2(argv, line, capsys):
    from experiments import launch

    try:
        code = launch.main([*argv, "--", "--experiment=sweep"])
    except SystemExit as exit_:
        code = exit_.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and err.startswith(line), err


def _free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_parse_address():
    assert distributed.parse_address("localhost:1234") == ("localhost", 1234)
    assert distributed.parse_address("[::1]:80") == ("::1", 80)
    for bad in ("localhost", "host:0", "host:70000", ":12", "host:x"):
        with pytest.raises(ValueError, match="host:port"):
            distributed.parse_address(bad)


def test_preflight_refuses_a_busy_port_at_once():
    import socket

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        t0 = time.monotonic()
        with pytest.raises(distributed.DistributedError, match=f"port {port} is in use"):
            distributed.preflight(f"127.0.0.1:{port}", 2, 0, timeout=30)
        assert time.monotonic() - t0 < 5


def _preflight_threads(address, hellos, timeout):
    """Runs process 0's preflight and the given (num_processes, process_id) check-ins in threads."""
    import threading

    errors: dict = {}

    def run(key, n, pid):
        try:
            distributed.preflight(address, n, pid, timeout=timeout)
            errors[key] = None
        except distributed.DistributedError as err:
            errors[key] = str(err)

    threads = [threading.Thread(target=run, args=("p0", hellos[0][0], 0))]
    threads += [
        threading.Thread(target=run, args=(f"p{i}", n, pid))
        for i, (n, pid) in enumerate(hellos[1:], 1)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout + 10)
    return errors


def test_preflight_accepts_distinct_ids_and_refuses_duplicates_and_count_mismatch():
    port = _free_port()
    ok = _preflight_threads(f"127.0.0.1:{port}", [(3, 0), (3, 1), (3, 2)], timeout=20)
    assert ok == {"p0": None, "p1": None, "p2": None}

    port = _free_port()
    dup = _preflight_threads(f"127.0.0.1:{port}", [(3, 0), (3, 1), (3, 1)], timeout=20)
    assert "two processes have process_id 1" in dup["p0"]
    assert all("process_id 1" in dup[k] for k in ("p1", "p2")), dup

    port = _free_port()
    count = _preflight_threads(f"127.0.0.1:{port}", [(2, 0), (3, 1)], timeout=20)
    assert "num_processes=3" in count["p0"] and "num_processes=3" in count["p1"]


def test_preflight_reports_a_process_that_never_checks_in_in_bounded_time():
    port = _free_port()
    t0 = time.monotonic()
    errors = _preflight_threads(f"127.0.0.1:{port}", [(3, 0), (3, 1)], timeout=2)
    assert "process(es) 2 of 3 never connected" in errors["p0"]
    assert errors["p1"] is not None
    assert time.monotonic() - t0 < 15

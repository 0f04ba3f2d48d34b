"""Local launcher: N processes of one distributed JAX run on this machine.

    python -m experiments.launch --num_processes=2 [--devices_per_process=2] [--timeout=3600]
        -- --experiment=sweep --workdir=runs/sweep2 --data_dir=../shared/data ...

starts `python -m experiments.main <everything after -->` N times, each with
`--coordinator_address=127.0.0.1:PORT --num_processes=N --process_id=i` added (a free port),
and forwards every line they print with a prefix `[p0] `, `[p1] `, ... . If one process fails,
the others are terminated (SIGTERM, then SIGKILL after `--grace` seconds) and the launcher
exits with the failed process's status; past `--timeout` seconds of wall clock every process
is killed and the launcher exits with 124 (no limit by default: a dead process is noticed
by the others through JAX's heartbeats, see `jaxlr.engine.distributed`); SIGTERM or Ctrl-C to the
launcher stops every process (exit 130). `--devices_per_process` forces that many CPU
devices per process (`XLA_FLAGS=--xla_force_host_platform_device_count`), to try a
multi-device, multi-process sweep on one CPU. `--module` runs another module than
`experiments.main` (the tests use `tests.dist_worker`).

Bad arguments are one line on stderr and exit 2, before any process starts: counts and times
out of range, a `--port` in use, and more processes than the CPU cores the launcher may run on
(each process runs the whole program, so more only slow each other down and each holds its own
copy of JAX and the data; `--oversubscribe` runs them anyway, as MPI's flag of that name).

On a cluster, use the cluster's launcher instead (e.g. SLURM: `srun` one task per host, and
no `--coordinator_address`: `jax.distributed.initialize()` reads SLURM's environment).
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import subprocess
import sys
import threading
import time

EXIT_TIMEOUT = 124
EXIT_USAGE = 2


class LaunchError(ValueError):
    """A launcher argument that cannot work (one line naming the flag, value and what is
    allowed); nothing was started."""


def _cpu_count() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def check_arguments(
    num_processes: int,
    *,
    devices_per_process: int = 0,
    timeout: float = 0.0,
    grace: float = 10.0,
    port: int = 0,
    oversubscribe: bool = False,
    cores: int | None = None,
) -> None:
    """Refuses, before anything starts, launcher arguments that cannot work.

    Raises:
      LaunchError: one line naming the flag, the value and what is allowed.
    """
    if num_processes < 1:
        raise LaunchError(f"--num_processes={num_processes}: must be a whole number >= 1")
    cores = _cpu_count() if cores is None else cores
    if num_processes > cores and not oversubscribe:
        raise LaunchError(
            f"--num_processes={num_processes}: more processes than the {cores} CPU core"
            f"{'s' if cores != 1 else ''} this machine gives the launcher; each process runs the "
            f"whole program, so they would only slow each other down: use at most {cores}, or "
            "add --oversubscribe to run them anyway"
        )
    if devices_per_process < 0:
        raise LaunchError(
            f"--devices_per_process={devices_per_process}: must be >= 0 (0: XLA_FLAGS as set)"
        )
    for name, value, allowed in (
        ("timeout", timeout, "seconds >= 0 (0: no limit)"),
        ("grace", grace, "seconds >= 0"),
    ):
        if not 0 <= value < float("inf"):
            raise LaunchError(f"--{name}={value:g}: must be {allowed}")
    if port:
        if not 1 <= port <= 65535:
            raise LaunchError(f"--port={port}: must be 1 to 65535 (0: a free port)")
        try:
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
        except OSError as err:
            raise LaunchError(
                f"--port={port}: cannot be used on 127.0.0.1 ({err.strerror or err}); leave "
                "--port out for a free one"
            ) from None


def free_port() -> int:
    """A TCP port that was free on 127.0.0.1 a moment ago."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _forward(stream, prefix: str, out, lock: threading.Lock) -> None:
    for line in iter(stream.readline, b""):
        text = line.decode(errors="replace")
        with lock:
            out.write(prefix + text if text.endswith("\n") else prefix + text + "\n")
            out.flush()
    stream.close()


def _stop(procs, grace: float) -> None:
    """SIGTERM to every process still running, SIGKILL to those alive after `grace` s."""
    for p in procs:
        if p.poll() is None:
            p.send_signal(signal.SIGTERM)
    deadline = time.monotonic() + grace
    for p in procs:
        left = max(0.0, deadline - time.monotonic())
        try:
            p.wait(timeout=left)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def launch(
    args: list[str],
    num_processes: int,
    *,
    module: str = "experiments.main",
    devices_per_process: int = 0,
    timeout: float = 0.0,
    grace: float = 10.0,
    port: int = 0,
    oversubscribe: bool = False,
    out=None,
) -> int:
    """Runs `python -m module args` in `num_processes` processes of one distributed run.

    Args:
      args: arguments for every process (the distributed flags are appended).
      num_processes: N >= 1.
      module: the module to run.
      devices_per_process: force this many CPU devices per process (0: leave XLA_FLAGS).
      timeout: wall-clock limit in seconds for the whole run (0: none).
      grace: seconds between SIGTERM and SIGKILL when stopping the others.
      port: coordinator port on 127.0.0.1 (0: a free one).
      oversubscribe: allow more processes than CPU cores.
      out: where the prefixed lines go (default sys.stdout).
    Raises:
      LaunchError: arguments that cannot work (`check_arguments`); nothing was started.
    Returns:
      0 if every process succeeded; else the first failure's exit status (a signal as
      128 + its number), or 124 on timeout.
    """
    check_arguments(
        num_processes,
        devices_per_process=devices_per_process,
        timeout=timeout,
        grace=grace,
        port=port,
        oversubscribe=oversubscribe,
    )
    out = out or sys.stdout
    port = port or free_port()
    env = dict(os.environ)
    env["PYTHONUNBUFFERED"] = "1"
    if devices_per_process:
        flags = env.get("XLA_FLAGS", "").split()
        flags = [f for f in flags if not f.startswith("--xla_force_host_platform_device_count")]
        flags.append(f"--xla_force_host_platform_device_count={devices_per_process}")
        env["XLA_FLAGS"] = " ".join(flags)
    lock = threading.Lock()
    procs, threads = [], []
    for i in range(num_processes):
        cmd = [sys.executable, "-u", "-m", module, *args]
        cmd += [
            f"--coordinator_address=127.0.0.1:{port}",
            f"--num_processes={num_processes}",
            f"--process_id={i}",
        ]
        p = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        procs.append(p)
        t = threading.Thread(target=_forward, args=(p.stdout, f"[p{i}] ", out, lock), daemon=True)
        t.start()
        threads.append(t)
    start = time.monotonic()
    status = 0

    def on_term(signum, frame):  # the launcher itself told to stop: stop the children too
        raise KeyboardInterrupt

    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, on_term)
    try:
        while True:
            codes = [p.poll() for p in procs]
            failed = [(i, c) for i, c in enumerate(codes) if c not in (None, 0)]
            if failed:
                i, c = failed[0]
                status = 128 - c if c < 0 else c
                with lock:
                    out.write(f"[launch] process {i} failed with status {c}; stopping the others\n")
                _stop(procs, grace)
                break
            if all(c == 0 for c in codes):
                break
            if timeout and time.monotonic() - start > timeout:
                with lock:
                    out.write(f"[launch] timeout after {timeout:g} s; stopping every process\n")
                _stop(procs, grace)
                status = EXIT_TIMEOUT
                break
            time.sleep(0.05)
    except KeyboardInterrupt:
        _stop(procs, grace)
        status = 130
    finally:
        if threading.current_thread() is threading.main_thread():
            signal.signal(signal.SIGTERM, previous)
    for t in threads:
        t.join(timeout=5)
    return status


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--" in argv:
        cut = argv.index("--")
        own, rest = argv[:cut], argv[cut + 1 :]
    else:
        own, rest = argv, []
    parser = _Parser(
        prog="python -m experiments.launch",
        description="Run N processes of one distributed JAX run on this machine.",
    )
    parser.add_argument("--num_processes", type=int, required=True)
    parser.add_argument("--devices_per_process", type=int, default=0)
    parser.add_argument("--timeout", type=float, default=0.0, help="seconds; 0: none")
    parser.add_argument("--grace", type=float, default=10.0)
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--module", default="experiments.main")
    parser.add_argument(
        "--oversubscribe", action="store_true", help="allow more processes than CPU cores"
    )
    opts = parser.parse_args(own)
    try:
        return launch(
            rest,
            opts.num_processes,
            module=opts.module,
            devices_per_process=opts.devices_per_process,
            timeout=opts.timeout,
            grace=opts.grace,
            port=opts.port,
            oversubscribe=opts.oversubscribe,
        )
    except LaunchError as err:
        sys.stderr.write(f"error: {err}\n")
        return EXIT_USAGE


class _Parser(argparse.ArgumentParser):
    """argparse with its errors as one line (no usage block), exit 2."""

    def error(self, message: str):
        self.exit(EXIT_USAGE, f"error: {message} (see python -m experiments.launch --help)\n")


if __name__ == "__main__":
    sys.exit(main())

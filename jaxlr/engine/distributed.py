"""Many processes and hosts on JAX's own distributed runtime (`jax.distributed`).

A sweep over several processes is the same program as over the devices of one: after
`initialize`, `jax.devices()` lists every device of every process, `jaxlr.engine.sweep.run_sweep`
shards the sweep axis over all of them (a `Mesh` over the global device list), every process
loads the same data and runs the same host loop, and the results are gathered to every
process (`multihost_utils.process_allgather`), so that process 0 alone can write the files
(`is_main_process`). On CPU the cross-process collectives use gloo
(`jax_cpu_collectives_implementation`); on GPUs and TPUs JAX picks its own (NCCL, ICI), and
the code path is the same.

`initialize` takes the three arguments of `jax.distributed.initialize` (coordinator address,
number of processes, this process's id), all or none. With none, under a cluster manager
that JAX detects (SLURM, Open MPI, TPU pods, Kubernetes), it calls
`jax.distributed.initialize()` without arguments and the cluster supplies them; with none and
no cluster it does nothing (one process). A process that dies is noticed by the others
through the coordination service's heartbeats: they exit with an error after
`heartbeat_timeout_seconds` (JAX's default is 100 s; this module's is shorter).

Faults at start-up end in one line, not in a native crash. JAX's own start-up reports them
badly: a busy coordinator port makes process 0 segfault, and a missing or duplicated process
leaves every process silent until `initialization_timeout`, then aborts with a C++ stack
trace. So, with explicit arguments, `initialize` first runs a pre-flight handshake over
plain TCP on the coordinator's own port (`preflight`): process 0 binds the port (busy: a
`DistributedError` at once), every other process connects and says its id, its
`num_processes`, its host name and CPU count; process 0 checks that the ids are distinct
and in range and that everyone agrees on the count, answers "ok" or the fault to each, then
closes the port and hands it to JAX. A process that never checks in (or a coordinator that
never answers) is reported after `initialization_timeout` seconds (60 by default), while the
wait is logged every 10 s. `jax.distributed.initialize` itself then runs under a watchdog
thread: if it has not returned within `initialization_timeout` more seconds (JAX's own limit
is set 30 s later, so the watchdog fires first), the watchdog prints one line to stderr and
ends the process with exit status 1 (`os._exit`: the main thread is inside native code and
cannot be interrupted). The same watchdog guards the cluster path (no arguments). Process 0
warns in one line when some host runs more processes than it has CPU cores.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
import threading
import time
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

log = logging.getLogger("jaxlr.distributed")

# Seconds without heartbeats after which the coordination service declares a process dead
# and the other processes fail (instead of hanging in a collective).
HEARTBEAT_TIMEOUT_SECONDS = 30
# Seconds to wait for every process to check in at start-up (the handshake), and again for
# `jax.distributed.initialize` to return (the watchdog).
INITIALIZATION_TIMEOUT_SECONDS = 60
# JAX's own start-up limit is this much later than the watchdog's, so that the one-line
# error comes first, not JAX's abort.
_JAX_TIMEOUT_MARGIN_SECONDS = 30
# Seconds between "still waiting" lines during the handshake.
_WAIT_LOG_SECONDS = 10.0
# Exit status of a process whose start-up the watchdog ends.
EXIT_STARTUP_FAILED = 1

_state = {"initialized": False}


class DistributedError(RuntimeError):
    """A fault of a multi-process start-up, in one line (the process should exit 1)."""


def parse_address(address: str) -> tuple[str, int]:
    """Splits "host:port" (IPv6 hosts in brackets: "[::1]:1234"); ValueError if malformed."""
    text = str(address)
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ValueError(
            f"coordinator_address must be host:port with a port in [1, 65535], got {text!r}"
        )
    return host, int(port)


def cpu_count() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def bind_port(port: int) -> socket.socket:
    """A listening socket on `port` of every interface, as JAX's coordinator binds it.

    SO_REUSEADDR as gRPC sets it (a port in TIME_WAIT is free); no SO_REUSEPORT, so a port
    that another program or another process 0 listens on is refused.
    Raises:
      DistributedError: the port is in use.
    """
    errors = []
    for family, host in ((socket.AF_INET6, "::"), (socket.AF_INET, "0.0.0.0")):
        try:
            sock = socket.socket(family, socket.SOCK_STREAM)
        except OSError as err:  # no IPv6 on this machine: IPv4 alone
            errors.append(err)
            continue
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            if family == socket.AF_INET6:
                sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            sock.bind((host, port))
            sock.listen(64)
            return sock
        except OSError as err:
            sock.close()
            errors.append(err)
            if family == socket.AF_INET6 and err.errno not in (97, 99):  # in use, not "no v6"
                break
    raise DistributedError(
        f"coordinator port {port} is in use on this machine (another program, or another "
        f"process started with process_id 0): choose another port in coordinator_address "
        f"({errors[-1].strerror})"
    )


def _send(conn: socket.socket, message: dict) -> None:
    try:
        conn.sendall((json.dumps(message) + "\n").encode())
    except OSError:  # that process is gone: nothing to tell it
        pass


def _read_line(conn: socket.socket, deadline: float) -> str:
    data = b""
    while not data.endswith(b"\n"):
        left = deadline - time.monotonic()
        if left <= 0:
            raise TimeoutError
        conn.settimeout(left)
        chunk = conn.recv(4096)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            break
    return data.decode(errors="replace").strip()


def _hello(num_processes: int, process_id: int) -> dict:
    return {
        "jaxlr": 1,
        "process_id": process_id,
        "num_processes": num_processes,
        "host": socket.gethostname(),
        "cpus": cpu_count(),
    }


def _coordinate(listener: socket.socket, num_processes: int, timeout: float) -> dict:
    """Process 0's half of the handshake; returns {process id: hello} for ids 1..N-1."""
    deadline = time.monotonic() + timeout
    next_log = time.monotonic() + _WAIT_LOG_SECONDS
    seen: dict[int, dict] = {}
    conns: list[socket.socket] = []
    fault = ""
    try:
        while len(seen) < num_processes - 1 and not fault:
            now = time.monotonic()
            if now >= deadline:
                missing = sorted(set(range(1, num_processes)) - set(seen))
                fault = (
                    f"process(es) {', '.join(map(str, missing))} of {num_processes} never "
                    f"connected to the coordinator within {timeout:g} s (started? same "
                    f"coordinator_address and num_processes?)"
                )
                break
            if now >= next_log:
                log.info(
                    "distributed: %d of %d processes checked in; waiting up to %.0f s more",
                    len(seen) + 1,
                    num_processes,
                    deadline - now,
                )
                next_log = now + _WAIT_LOG_SECONDS
            listener.settimeout(min(deadline - now, max(0.05, next_log - now)))
            try:
                conn, _ = listener.accept()
            except TimeoutError:
                continue
            try:
                hello = json.loads(_read_line(conn, min(deadline, time.monotonic() + 5)))
                pid, n = int(hello["process_id"]), int(hello["num_processes"])
            except (OSError, ValueError, KeyError, TypeError, TimeoutError):
                conn.close()  # not one of ours (or it gave up): not a process of this run
                continue
            conns.append(conn)
            if n != num_processes:
                fault = (
                    f"process {pid} has num_processes={n}, process 0 has {num_processes}: "
                    f"give every process the same num_processes"
                )
            elif not 0 < pid < num_processes:
                fault = f"process_id {pid} is not in [0, {num_processes})"
            elif pid in seen:
                fault = f"two processes have process_id {pid}: give each process its own id"
            else:
                seen[pid] = hello
        for conn in conns:
            _send(conn, {"ok": not fault, "error": fault})
    finally:
        for conn in conns:
            conn.close()
    if fault:
        raise DistributedError(fault)
    return seen


def _check_in(host: str, port: int, num_processes: int, process_id: int, timeout: float):
    """A non-zero process's half of the handshake: connect, say hello, wait for the answer."""
    deadline = time.monotonic() + timeout
    next_log = time.monotonic() + _WAIT_LOG_SECONDS
    where = f"{host}:{port}"
    while True:
        now = time.monotonic()
        if now >= deadline:
            raise DistributedError(
                f"process {process_id}: no coordinator answered at {where} within "
                f"{timeout:g} s (is process 0 running, with the same coordinator_address?)"
            )
        if now >= next_log:
            log.info("distributed: process %d still waiting for %s", process_id, where)
            next_log = now + _WAIT_LOG_SECONDS
        try:
            conn = socket.create_connection((host, port), timeout=min(5.0, deadline - now))
        except OSError:  # not listening yet (or not reachable yet): try again
            time.sleep(0.2)
            continue
        try:
            _send(conn, _hello(num_processes, process_id))
            try:
                line = _read_line(conn, deadline)
            except TimeoutError:
                raise DistributedError(
                    f"process {process_id}: the coordinator at {where} did not let the run "
                    f"start within {timeout:g} s (all {num_processes} processes started?)"
                ) from None
            except OSError:
                line = ""
        finally:
            conn.close()
        try:
            answer = json.loads(line)
        except ValueError:
            # Closed without an answer: something else on that port, or a coordinator that
            # is just starting JAX's service after a handshake this process missed.
            raise DistributedError(
                f"process {process_id}: {where} is not a jaxlr coordinator waiting for this "
                f"run (a run already started there, or another program holds the port)"
            ) from None
        if not answer.get("ok"):
            raise DistributedError(f"process {process_id}: {answer.get('error')}")
        return


def preflight(
    coordinator_address: str,
    num_processes: int,
    process_id: int,
    timeout: float = INITIALIZATION_TIMEOUT_SECONDS,
) -> None:
    """Checks, before JAX's start-up, what it would report as a crash or a long silence.

    Process 0 binds the coordinator port (busy: error at once) and waits up to `timeout`
    seconds for every other process to check in with a distinct id in range and the same
    `num_processes`; the others connect (retrying until `timeout`) and wait for its answer.
    Process 0 logs one warning line when some host runs more processes than CPU cores.
    Raises:
      DistributedError: the fault, in one line (the same line on every process told of it).
    """
    host, port = parse_address(coordinator_address)
    if process_id != 0:
        _check_in(host, port, num_processes, process_id, timeout)
        return
    listener = bind_port(port)
    try:
        seen = _coordinate(listener, num_processes, timeout)
    finally:
        listener.close()
    hosts: dict[str, list[int]] = {socket.gethostname(): [1, cpu_count()]}
    for hello in seen.values():
        count = hosts.setdefault(str(hello.get("host")), [0, int(hello.get("cpus") or 1)])
        count[0] += 1
    for name, (procs, cpus) in sorted(hosts.items()):
        if procs > cpus:
            log.warning(
                "distributed: host %s runs %d processes on %d CPU cores: expect them to be "
                "slower together than fewer processes",
                name,
                procs,
                cpus,
            )


def _watchdog(what: str, seconds: float) -> threading.Event:
    """Ends the process (one line on stderr, exit 1) unless the event is set within `seconds`."""
    done = threading.Event()

    def watch():
        if not done.wait(seconds):
            sys.stderr.write(
                f"error: distributed: {what} did not finish within {seconds:g} s (a process "
                f"stopped or unreachable?); exiting\n"
            )
            sys.stderr.flush()
            os._exit(EXIT_STARTUP_FAILED)

    threading.Thread(target=watch, name="jaxlr-distributed-watchdog", daemon=True).start()
    return done


def cluster_detected() -> str | None:
    """The name of the cluster environment JAX detects (e.g. "SlurmCluster"), or None.

    Opt-in methods (mpi4py) are not probed. Uses JAX's own detectors where this JAX has
    them, else the environment variables of SLURM and Open MPI.
    """
    try:
        from jax._src import clusters

        for env in clusters.ClusterEnv._cluster_types:
            if getattr(env, "opt_in_only_method", False):
                continue
            try:
                if env.is_env_present():
                    return env.__name__
            except Exception:  # noqa: BLE001  (a detector that cannot probe: not present)
                continue
        return None
    except (ImportError, AttributeError):
        if "SLURM_JOB_ID" in os.environ and "SLURM_PROCID" in os.environ:
            return "SlurmCluster"
        if "OMPI_COMM_WORLD_SIZE" in os.environ:
            return "OmpiCluster"
        return None


def initialize(
    coordinator_address: str | None = None,
    num_processes: int | None = None,
    process_id: int | None = None,
    *,
    local_device_ids: Sequence[int] | None = None,
    heartbeat_timeout_seconds: int = HEARTBEAT_TIMEOUT_SECONDS,
    initialization_timeout: int = INITIALIZATION_TIMEOUT_SECONDS,
    shutdown_timeout_seconds: int = HEARTBEAT_TIMEOUT_SECONDS,
) -> bool:
    """Joins this process to a multi-process JAX run (call before any JAX computation).

    Args:
      coordinator_address: "host:port" of process 0's coordination service.
      num_processes: number of processes (>= 1).
      process_id: this process's id in [0, num_processes).
      local_device_ids: the local devices this process uses (default: all).
      heartbeat_timeout_seconds: a process silent this long is declared dead, and the
        others fail with an error instead of waiting for it.
      initialization_timeout: seconds to wait for every process to check in, and again for
        JAX's start-up to finish.
      shutdown_timeout_seconds: seconds a finishing process waits for the others at exit.
    Returns:
      True if the distributed runtime is (now) initialized, False for a single process
      (no arguments and no cluster detected).
    Raises:
      ValueError: only some of the three arguments given, or a value out of range.
      DistributedError: a fault found by the handshake (`preflight`) or reported by JAX.
    A start-up that hangs past `initialization_timeout` ends the process (exit 1, one line).
    """
    given = {
        "coordinator_address": coordinator_address,
        "num_processes": num_processes,
        "process_id": process_id,
    }
    missing = [k for k, v in given.items() if v is None]
    if 0 < len(missing) < 3:
        raise ValueError(
            f"distributed.initialize: give coordinator_address, num_processes and process_id "
            f"together or none of them; missing {', '.join(missing)}"
        )
    if not missing:
        if isinstance(num_processes, bool) or int(num_processes) < 1:
            raise ValueError(
                f"distributed.initialize: num_processes must be >= 1, got {num_processes}"
            )
        if not 0 <= int(process_id) < int(num_processes):
            raise ValueError(
                f"distributed.initialize: process_id must be in [0, {num_processes}), "
                f"got {process_id}"
            )
        try:
            parse_address(coordinator_address)
        except ValueError as err:
            raise ValueError(f"distributed.initialize: {err}") from None
    if _state["initialized"]:
        return True
    cluster = None
    if missing:
        cluster = cluster_detected()
        if cluster is None:
            return False
    # Cross-process collectives on CPU (gloo); other backends ignore this setting. It must
    # be set before the CPU client is created.
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
    kwargs = dict(
        heartbeat_timeout_seconds=int(heartbeat_timeout_seconds),
        initialization_timeout=int(initialization_timeout) + _JAX_TIMEOUT_MARGIN_SECONDS,
        shutdown_timeout_seconds=int(shutdown_timeout_seconds),
    )
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    if missing:
        log.info("distributed: %s detected, initializing from the cluster's environment", cluster)
        args = ()
    else:
        args = (str(coordinator_address), int(num_processes), int(process_id))
        preflight(*args, timeout=initialization_timeout)
    done = _watchdog("jax.distributed.initialize", initialization_timeout)
    try:
        jax.distributed.initialize(*args, **kwargs)
    except Exception as err:  # noqa: BLE001  (JAX's error, as one line)
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DistributedError(f"jax.distributed.initialize failed: {first}") from err
    finally:
        done.set()
    _state["initialized"] = True
    log.info(
        "distributed: process %d of %d, %d local / %d global devices",
        jax.process_index(),
        jax.process_count(),
        jax.local_device_count(),
        jax.device_count(),
    )
    return True


def shutdown() -> None:
    """Leaves the distributed runtime (no-op if not initialized)."""
    if _state["initialized"]:
        jax.distributed.shutdown()
        _state["initialized"] = False


def is_main_process() -> bool:
    """True in process 0 (the one that writes files), and in a single process."""
    return jax.process_index() == 0


def process_mesh(axis: str = "sweep") -> Mesh:
    """A one-axis `Mesh` over every device of every process (the sweep's mesh)."""
    return Mesh(np.asarray(jax.devices()), (axis,))


def describe() -> str:
    """One line: process index and count, local and global devices, platform."""
    return (
        f"process {jax.process_index()} of {jax.process_count()}: "
        f"{jax.local_device_count()} local / {jax.device_count()} global "
        f"{jax.devices()[0].platform} device(s)"
    )


__all__ = [
    "EXIT_STARTUP_FAILED",
    "HEARTBEAT_TIMEOUT_SECONDS",
    "INITIALIZATION_TIMEOUT_SECONDS",
    "DistributedError",
    "bind_port",
    "cluster_detected",
    "cpu_count",
    "describe",
    "initialize",
    "is_main_process",
    "parse_address",
    "preflight",
    "process_mesh",
    "shutdown",
]

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
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence

import jax
import numpy as np
from jax.sharding import Mesh

log = logging.getLogger("jaxlr.distributed")

# Seconds without heartbeats after which the coordination service declares a process dead
# and the other processes fail (instead of hanging in a collective).
HEARTBEAT_TIMEOUT_SECONDS = 30
# Seconds to wait for every process to join at start-up.
INITIALIZATION_TIMEOUT_SECONDS = 120

_state = {"initialized": False}


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
      initialization_timeout: seconds to wait for every process to join.
      shutdown_timeout_seconds: seconds a finishing process waits for the others at exit.
    Returns:
      True if the distributed runtime is (now) initialized, False for a single process
      (no arguments and no cluster detected).
    Raises:
      ValueError: only some of the three arguments given, or a value out of range.
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
        if int(num_processes) < 1:
            raise ValueError(
                f"distributed.initialize: num_processes must be >= 1, got {num_processes}"
            )
        if not 0 <= int(process_id) < int(num_processes):
            raise ValueError(
                f"distributed.initialize: process_id must be in [0, {num_processes}), "
                f"got {process_id}"
            )
        if ":" not in str(coordinator_address):
            raise ValueError(
                f"distributed.initialize: coordinator_address must be host:port, got "
                f"{coordinator_address!r}"
            )
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
        initialization_timeout=int(initialization_timeout),
        shutdown_timeout_seconds=int(shutdown_timeout_seconds),
    )
    if local_device_ids is not None:
        kwargs["local_device_ids"] = list(local_device_ids)
    if missing:
        log.info("distributed: %s detected, initializing from the cluster's environment", cluster)
        jax.distributed.initialize(**kwargs)
    else:
        jax.distributed.initialize(
            str(coordinator_address), int(num_processes), int(process_id), **kwargs
        )
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
    "HEARTBEAT_TIMEOUT_SECONDS",
    "INITIALIZATION_TIMEOUT_SECONDS",
    "cluster_detected",
    "describe",
    "initialize",
    "is_main_process",
    "process_mesh",
    "shutdown",
]

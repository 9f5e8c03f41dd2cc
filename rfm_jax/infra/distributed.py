"""Runs across devices and processes.  The leading run axis R (seeds x swept values) of every
array the train step takes or returns is split over a 1-D mesh ``("runs",)`` of all devices:
the local ones, or every process's after ``initialize``.  Runs share nothing while training, so
the compiled program has no collectives; each process steps only its own runs' environments.

    initialize(coordinator="host:1234", num_processes=2, process_id=0)   # or () on SLURM etc.
    layout = Layout.make(num_runs)          # refuses R % devices != 0, naming the fields
    fns = compile_seeds(step_fns, layout.sharding)
    obs_g = layout.to_global(obs_local)     # this process's [R_local, ...] -> global [R, ...]
    act = layout.to_local(actions_g)        # global [R, ...] -> this process's [R_local, ...] (numpy)

Process p owns the runs ``layout.local`` (a contiguous block, in run order).  With one process
``to_global`` passes numpy arrays through (jit places them) and ``to_local`` is ``device_get``,
so one device costs what it did before sharding.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

AXIS = "runs"


def initialize(coordinator: str | None = None, num_processes: int | None = None, process_id: int | None = None):
    """``jax.distributed.initialize`` with CPU collectives over gloo (what CPU-only multi-process
    runs need).  With no arguments JAX reads the cluster's environment (SLURM, Open MPI, ...)."""
    jax.config.update("jax_cpu_collectives_implementation", "gloo")  # read by the CPU backend only
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num_processes, process_id=process_id)


class Layout(NamedTuple):
    """How R runs lie on the devices: the mesh, the sharding of axis 0, this process's runs."""

    num_runs: int
    mesh: Mesh
    sharding: NamedSharding
    local: np.ndarray  # [R_local] indices of the runs this process owns, ascending

    @staticmethod
    def make(num_runs: int, devices=None) -> Layout:
        """The layout of ``num_runs`` runs over ``devices`` (default: every device of every process).
        Raises a one-line ValueError when ``num_runs`` is not a multiple of the device count."""
        devices = list(jax.devices() if devices is None else devices)
        if num_runs % len(devices):
            raise ValueError(f"{num_runs} runs (config.num_seeds x the sweep's values) cannot be split evenly over "
                             f"{len(devices)} devices: make config.num_seeds x the sweep's size a multiple of "
                             f"{len(devices)}, or use fewer devices (CUDA_VISIBLE_DEVICES, --num_devices)")
        mesh = Mesh(np.asarray(devices), (AXIS,))
        sharding = NamedSharding(mesh, PartitionSpec(AXIS))
        index_map = sharding.addressable_devices_indices_map((num_runs,))
        local = sorted({i for idx in index_map.values() for i in range(num_runs)[idx[0]]})
        if local != list(range(local[0], local[-1] + 1)):
            raise ValueError(f"process {jax.process_index()}'s runs are not contiguous: {local}")
        return Layout(num_runs, mesh, sharding, np.asarray(local))

    @property
    def multiprocess(self) -> bool:
        return len(self.local) != self.num_runs

    def to_global(self, tree):
        """This process's arrays [R_local, ...] -> global arrays [R, ...] sharded over the runs."""
        if not self.multiprocess:
            return tree
        return jax.tree.map(lambda x: jax.make_array_from_process_local_data(self.sharding, np.asarray(x)), tree)

    def replicated_to_global(self, tree):
        """Arrays [R, ...] that every process holds whole (keys, hyperparameters) -> global arrays."""
        if not self.multiprocess:
            return tree
        return jax.tree.map(lambda x: jax.make_array_from_callback(np.shape(x), self.sharding,
                                                                   lambda index: np.asarray(x)[index]), tree)

    def to_local(self, tree):
        """Global arrays [R, ...] -> numpy arrays [R_local, ...] of this process's runs."""
        if not self.multiprocess:
            return jax.device_get(tree)
        return jax.tree.map(_local_rows, tree)

    def gather(self, local: np.ndarray) -> np.ndarray:
        """[R_local, ...] of every process -> [R, ...] on every process (a collective), bit for
        bit (sent as bytes, so float64 stays float64)."""
        local = np.ascontiguousarray(local)
        if not self.multiprocess:
            return local
        data = local.reshape(len(local), -1).view(np.uint8)
        out = np.asarray(multihost_utils.process_allgather(data, tiled=True), np.uint8)
        return np.ascontiguousarray(out).view(local.dtype).reshape(-1, *local.shape[1:])

    def any_of(self, flags: list[bool]) -> list[bool]:
        """Each flag or-ed over the processes (one collective in multi-process runs): stop, skip or
        fail together."""
        if not self.multiprocess:
            return [bool(f) for f in flags]
        gathered = multihost_utils.process_allgather(np.asarray(flags, np.int32)[None], tiled=True)
        return [bool(f) for f in np.asarray(gathered).any(axis=0)]


def _local_rows(x: jax.Array) -> np.ndarray:
    shards = sorted(x.addressable_shards, key=lambda s: s.index[0].start or 0)
    seen, rows = set(), []
    for shard in shards:  # a replicated mesh axis would repeat a block
        if (shard.index[0].start or 0) not in seen:
            seen.add(shard.index[0].start or 0)
            rows.append(np.asarray(shard.data))
    return np.concatenate(rows)

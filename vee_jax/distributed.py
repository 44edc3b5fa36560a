"""Scale out: one ``jax.sharding.Mesh`` over every device of every process, explicit shardings.

The mesh has two axes::

    data   data parallelism: each device holds a slice of the batch
    fsdp   fully sharded data parallelism: the batch is split over this axis too, and every
           large parameter and optimiser-state array is split along one of its dimensions

so a batch of B rows is cut into ``data * fsdp`` slices (``batch_sharding``); parameters
are replicated when ``fsdp == 1`` and otherwise sharded along their largest dimension that
``fsdp`` divides (``param_spec``). The same code runs on 1 CPU, on 8 fake CPU devices
(``JAX_NUM_CPU_DEVICES=8``), on one or several GPUs, and on several hosts: JAX inserts the
collectives (gradient all-reduce, parameter all-gather) from the shardings alone.

Multi-host (``initialize``): every process runs the same command; each reads the whole data
set, makes the same deterministic batch plan and puts only its own rows on its devices
(``shard_batch`` with ``jax.make_array_from_process_local_data``); only process 0 writes
metrics, logs and progress bars (``is_writer``); Orbax saves and restores checkpoints
collectively. A checkpoint holds global arrays, so it restores on any mesh: restoring into a
state laid out for another mesh reshards it (``workdir.restore_checkpoint``).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import jax
import ml_collections
import numpy as np
from jax.sharding import Mesh, NamedSharding, PartitionSpec as P

from .errors import ConfigError

log = logging.getLogger("vee_jax")

AXES = ("data", "fsdp")
BATCH = P(AXES)  # the batch dimension split over both axes; the other dimensions whole


def initialize(mesh_config: ml_collections.ConfigDict) -> None:
    """Join the processes of a multi-host run (``jax.distributed.initialize``) when asked.

    Asked when ``mesh.coordinator`` or the environment variable ``JAX_COORDINATOR_ADDRESS``
    names the coordinator (``host:port`` of process 0). The process count and this process's
    id come from ``mesh.num_processes`` / ``mesh.process_id`` or ``JAX_NUM_PROCESSES`` /
    ``JAX_PROCESS_ID``. ``mesh.coordinator = "auto"``: JAX detects all three (Slurm, Open MPI,
    TPU pods). Must run before any JAX computation; a second call in the same process does
    nothing.
    """
    coordinator = mesh_config.get("coordinator", "") or os.environ.get("JAX_COORDINATOR_ADDRESS", "")
    if not coordinator or _initialized():
        return
    if coordinator == "auto":
        jax.distributed.initialize()
        log.info("process %d of %d joined (cluster detected by JAX): %d local / %d global devices",
                 jax.process_index(), jax.process_count(), jax.local_device_count(), jax.device_count())
        return
    num = int(mesh_config.get("num_processes", 0) or os.environ.get("JAX_NUM_PROCESSES", 0) or 0) or None
    pid = mesh_config.get("process_id", -1)
    pid = int(pid if pid >= 0 else os.environ.get("JAX_PROCESS_ID", -1))
    jax.distributed.initialize(coordinator_address=coordinator, num_processes=num,
                               process_id=pid if pid >= 0 else None)
    log.info("process %d of %d joined %s: %d local / %d global devices", jax.process_index(),
             jax.process_count(), coordinator, jax.local_device_count(), jax.device_count())


def _initialized() -> bool:
    from jax._src import distributed  # no public query of the state in JAX 0.10

    return distributed.global_state.client is not None


def make_mesh(mesh_config: ml_collections.ConfigDict, devices: list | None = None) -> Mesh:
    """The ``(data, fsdp)`` mesh of ``mesh.data`` x ``mesh.fsdp`` devices.

    ``mesh.data = -1`` takes every device left: ``jax.device_count() // fsdp``. The product
    must equal the number of devices used (all of them by default), so that no device idles.
    """
    devices = list(jax.devices() if devices is None else devices)
    fsdp, data = int(mesh_config.fsdp), int(mesh_config.data)
    n = len(devices)
    if fsdp < 1 or n % fsdp:
        raise ConfigError(f"config.mesh.fsdp={fsdp} must be >= 1 and divide the {n} devices")
    if data == -1:
        data = n // fsdp
    if data < 1 or data * fsdp != n:
        raise ConfigError(f"config.mesh.data={mesh_config.data} x config.mesh.fsdp={fsdp} = {data * fsdp} devices, "
                          f"but {n} are available ({devices[0].platform}); use data=-1 to take them all")
    return Mesh(np.asarray(devices).reshape(data, fsdp), AXES)


def data_mesh(n: int) -> Mesh:
    """A ``(data=n, fsdp=1)`` mesh over the first ``n`` devices (-1: all): inference, parameters replicated."""
    n = jax.device_count() if n == -1 else n
    if not 1 <= n <= jax.device_count():
        raise ConfigError(f"--mesh-data {n}: {jax.device_count()} device(s) are available (-1 takes them all)")
    return make_mesh(ml_collections.ConfigDict({"data": n, "fsdp": 1}), jax.devices()[:n])


def batch_divisor(mesh: Mesh) -> int:
    """Batch sizes must be multiples of this: the number of batch slices (``data * fsdp``)."""
    return mesh.shape["data"] * mesh.shape["fsdp"]


def check_batch_size(mesh: Mesh, batch_size: int, field: str) -> None:
    k = batch_divisor(mesh)
    if batch_size % k:
        raise ConfigError(f"{field}={batch_size} must be a multiple of {k} (mesh data={mesh.shape['data']} x "
                          f"fsdp={mesh.shape['fsdp']}): each device takes an equal slice of every batch")


def param_spec(shape: tuple[int, ...], fsdp: int, min_size: int) -> P:
    """Where one array of ``shape`` lives: its largest dimension divisible by ``fsdp`` is split
    over the ``fsdp`` axis; arrays under ``min_size`` elements (biases, LayerNorms, scalars),
    or with no such dimension, are replicated (their all-gather would cost more than it saves).
    """
    if fsdp <= 1 or int(np.prod(shape, dtype=np.int64)) < min_size:
        return P()
    dims = [i for i in np.argsort(shape, kind="stable")[::-1] if shape[i] % fsdp == 0]
    if not dims:
        return P()
    spec = [None] * len(shape)
    spec[int(dims[0])] = "fsdp"
    return P(*spec)


def state_shardings(state: Any, mesh: Mesh, min_size: int = 2**14) -> Any:
    """A ``NamedSharding`` for every leaf of ``state`` (arrays or ``ShapeDtypeStruct``s).

    The rule depends only on a leaf's shape, so Adam's moments are sharded like their
    parameters.
    """
    fsdp = mesh.shape["fsdp"]
    return jax.tree.map(lambda x: NamedSharding(mesh, param_spec(tuple(np.shape(x)), fsdp, min_size)), state)


def place(tree: Any, shardings: Any) -> Any:
    """Put host values (the same in every process) onto ``shardings``: global ``jax.Array``s."""

    def put(x, sharding):
        x = np.asarray(x)
        return jax.make_array_from_callback(x.shape, sharding, lambda index: x[index])

    return jax.tree.map(put, tree, shardings)


def shard_batch(batch: dict[str, np.ndarray], mesh: Mesh) -> dict[str, jax.Array]:
    """A global batch (numpy, the same in every process) as arrays split over ``(data, fsdp)``.

    Each process passes only its own rows (``jax.make_array_from_process_local_data``): with P
    processes, process p holds rows ``[p * B / P, (p + 1) * B / P)``, so no process copies
    rows its devices do not hold.
    """
    sharding = NamedSharding(mesh, BATCH)
    nproc, pid = jax.process_count(), jax.process_index()
    out = {}
    for k, v in batch.items():
        v = np.asarray(v)
        rows = v.shape[0] // nproc
        out[k] = jax.make_array_from_process_local_data(sharding, v[pid * rows:(pid + 1) * rows], v.shape)
    return out


def replicated(mesh: Mesh) -> NamedSharding:
    return NamedSharding(mesh, P())


def to_host(x: Any) -> Any:
    """A (possibly multi-process) array tree as numpy; every process gets the whole value."""
    from jax.experimental import multihost_utils

    def get(a):
        if isinstance(a, jax.Array) and not a.is_fully_addressable and not a.is_fully_replicated:
            return np.asarray(multihost_utils.process_allgather(a, tiled=True))
        if isinstance(a, jax.Array) and not a.is_fully_addressable:
            return np.asarray(a.addressable_data(0))
        return np.asarray(a)

    return jax.tree.map(get, x)


def is_writer() -> bool:
    """Only process 0 writes metrics, logs, progress bars and run files."""
    return jax.process_index() == 0


def sync(name: str) -> None:
    """A barrier across processes (no-op in one process)."""
    if jax.process_count() > 1:
        from jax.experimental import multihost_utils

        multihost_utils.sync_global_devices(name)


def make_train_step(spec, optimizer, mesh: Mesh, state_sh: Any):
    """``training._train_step`` jitted for ``mesh``: state in ``state_sh`` (donated), batch split
    over ``(data, fsdp)``, metrics replicated. One compilation per batch shape, as on one device.
    """
    import functools

    from .training import _train_step

    fn = functools.partial(_train_step, spec=spec, optimizer=optimizer)
    return jax.jit(fn, in_shardings=(state_sh, NamedSharding(mesh, BATCH)),
                   out_shardings=(state_sh, replicated(mesh)), donate_argnums=(0,))


def make_eval_step(spec, mesh: Mesh, params_sh: Any):
    """``training._eval_step`` for ``mesh``: ``(state, batch) -> probs [M, B, L, L, K]`` numpy.

    ``state["params"]`` laid out as ``params_sh``; ``batch`` a host batch (``data.collate``),
    split over ``(data, fsdp)`` here; the tables come back replicated, so every process can
    decode every sentence. The ``step`` that ``evaluation.evaluate_exits`` takes.
    """
    from .training import _eval_step

    jitted = jax.jit(lambda params, batch: _eval_step({"params": params}, batch, spec=spec),
                     in_shardings=(params_sh, NamedSharding(mesh, BATCH)), out_shardings=replicated(mesh))
    return lambda state, batch: to_host(jitted(state["params"], shard_batch(batch, mesh)))


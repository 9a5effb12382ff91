"""Devices, meshes and shardings: one module owns them.

One device is the same code path as many: a mesh of one. The mesh has two
axes, `('population', 'data')`: members of a population of seeds are spread
over 'population', the batch of every step over 'data'. Parameters,
optimizer states, datasets and teacher parameters are replicated over 'data'
(and split over 'population' when they carry a leading population axis).

    mesh = parallel.make_mesh(population=1)     # all local devices on 'data'
    place = parallel.Placement(mesh)
    source = place.replicated(source)           # once, before the loop
    step = jax.jit(step_fn, in_shardings=..., out_shardings=...)

Random sampling inside a sharded step stays correct and cheap because
`jax_threefry_partitionable` (on by default since JAX 0.5) lets each device
generate only its shard of the random bits, identical to one device's.

Many hosts: `initialize_distributed` calls `jax.distributed.initialize` from
flags or the environment (TPU pods and SLURM allocations are detected by
JAX itself); every process then runs the same program over the global mesh
and `is_main_process()` says which one writes files; `barrier` orders the
others' reads after its writes; `my_share` and `gather_json` split work
(evaluation episodes) across processes and gather the results.

Letters: P population members, D devices on 'data'.
"""

from collections.abc import Sequence
import json
import os
from typing import Any

from absl import logging
import jax
import numpy as np
from jax.sharding import Mesh
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

AXES = ('population', 'data')


def make_mesh(population: int = 1,
              devices: Sequence[jax.Device] | None = None) -> Mesh:
  """A ('population', 'data') mesh over the devices.

  Args:
    population: devices along 'population'; it must divide the device count
      (members of a population are split into that many groups).
    devices: default every device of every process (`jax.devices()`).

  Returns:
    A mesh of shape (population, num_devices // population) with `Auto` axis
    types (explicit axes reject the timestep-embedding gather).

  Raises:
    ValueError: the devices cannot be split so.
  """
  devices = list(jax.devices() if devices is None else devices)
  if population < 1 or len(devices) % population:
    raise ValueError(f'parallel.make_mesh: population={population} must be'
                     f' >= 1 and divide the {len(devices)} devices')
  grid = np.asarray(devices, dtype=object).reshape(population, -1)
  return Mesh(grid, AXES, axis_types=(jax.sharding.AxisType.Auto,) * 2)


def population_shards(mesh_config: Any, num_members: int) -> int:
  """How many devices go on the 'population' axis.

  Args:
    mesh_config: `config.mesh` with `population` (0: as many as divide both
      the member count and the device count, preferring population).
    num_members: P.

  Returns:
    The size of the 'population' axis.
  """
  n = jax.device_count()
  want = int(mesh_config.population)
  if want > 0:
    return want
  return max(d for d in range(1, n + 1) if n % d == 0 and num_members % d == 0)


MODES = ('auto', 'vmap', 'map')


def population_mode(mesh_config: Any) -> str:
  """'vmap' or 'map': how a population's members share one program.

  Args:
    mesh_config: `config.mesh`; its `members` is 'vmap' (the members batched
      into every operation), 'map' (each device group runs its members one
      after another inside the program) or 'auto' (absent: 'auto'): 'map' on
      CPU, 'vmap' on accelerators. On XLA:CPU a member's step already keeps
      the cores busy, and batched matmuls with per-member weights run at a
      third of the FLOP rate of the same matmuls one at a time, so members in
      turn are cheaper (docs/scale.md); an accelerator is far from full with
      one small member and gains from the batch.

  Returns:
    The mode.

  Raises:
    ValueError: naming `config.mesh.members` when it is not one of MODES.
  """
  mode = (mesh_config.get('members', 'auto') if mesh_config is not None
          else 'auto')
  if mode not in MODES:
    raise ValueError(f'config.mesh.members={mode!r}: one of {MODES}')
  if mode == 'auto':
    return 'map' if jax.default_backend() == 'cpu' else 'vmap'
  return mode


TEACHER_VMAP = (True, False, 'auto')


def teacher_vmap(value: Any) -> bool:
  """Whether a run's teachers train vmapped in one step or one by one.

  The same choice as `population_mode`, for the teachers of one run: on
  XLA:CPU one teacher's step already keeps the cores busy and the batched
  matmuls with per-teacher weights are slower, so four 2 x 64 teachers one
  by one took 0.88-0.95 of the vmapped step on 2 cores (docs/performance.md);
  an accelerator is far from full with one small teacher and gains from the
  batch.

  Args:
    value: `config.teacher.vmap`: True (vmapped), False (one by one) or
      'auto' ('auto': one by one on CPU, vmapped on GPUs and TPUs).

  Returns:
    True when the teachers are vmapped.

  Raises:
    ValueError: naming `config.teacher.vmap` when it is not one of
      TEACHER_VMAP.
  """
  if isinstance(value, bool):
    return value
  if value != 'auto':
    raise ValueError(f'config.teacher.vmap={value!r}: one of {TEACHER_VMAP}')
  return jax.default_backend() != 'cpu'


def over_members(fn, in_axes: Sequence[int | None], mode: str = 'vmap',
                 groups: int = 1):
  """`fn` applied to every member of a population, in one program.

  Args:
    fn: one member's function; its outputs are pytrees of arrays.
    in_axes: per positional argument, 0 (carries a leading population axis
      P) or None (shared by all members).
    mode: 'vmap' (`jax.vmap`: every operation batched over P) or 'map'
      (`lax.map`: members in turn, each the same computation as a run of its
      own).
    groups: the mesh's 'population' size G (dividing P). With 'map', the
      members are split into G groups, one per device along 'population'
      (vmapped there, so each device holds one group), and each group's
      members run in turn; with 'vmap' it changes nothing.

  Returns:
    `f(*args)` with outputs carrying the leading [P] axis.
  """
  if mode == 'vmap':
    return jax.vmap(fn, in_axes=tuple(in_axes), spmd_axis_name='population')
  if mode != 'map':
    raise ValueError(f'parallel.over_members: mode={mode!r}: one of'
                     ' vmap, map')
  mapped = [i for i, ax in enumerate(in_axes) if ax == 0]

  def in_turn(*args):
    def one(xs):
      full = list(args)
      for i, x in zip(mapped, xs):
        full[i] = x
      return fn(*full)
    return jax.lax.map(one, [args[i] for i in mapped])

  if groups == 1:
    return in_turn

  def grouped(*args):
    num = jax.tree.leaves(args[mapped[0]])[0].shape[0]
    if num % groups:
      raise ValueError(f'parallel.over_members: {num} members do not split'
                       f' into {groups} groups')
    split = lambda x: x.reshape((groups, num // groups) + x.shape[1:])
    args = [jax.tree.map(split, a) if ax == 0 else a
            for a, ax in zip(args, in_axes)]
    out = jax.vmap(in_turn, in_axes=tuple(in_axes),
                   spmd_axis_name='population')(*args)
    return jax.tree.map(lambda x: x.reshape((num,) + x.shape[2:]), out)

  return grouped


class Placement:
  """Shardings on one mesh, for trees with or without a population axis."""

  def __init__(self, mesh: Mesh):
    self.mesh = mesh

  def sharding(self, spec: P) -> NamedSharding:
    return NamedSharding(self.mesh, spec)

  @property
  def replicated_sharding(self) -> NamedSharding:
    return self.sharding(P())

  @property
  def member_sharding(self) -> NamedSharding:
    """Leading population axis split over 'population', the rest whole."""
    return self.sharding(P('population'))

  @property
  def batch_sharding(self) -> NamedSharding:
    """A batch's leading axis split over 'data'."""
    return self.sharding(P('data'))

  def replicated(self, tree: Any) -> Any:
    """Puts every leaf on every device (datasets, single-run state)."""
    return put(tree, self.replicated_sharding)

  def per_member(self, tree: Any) -> Any:
    """Puts a tree with a leading population axis, split over members."""
    return put(tree, self.member_sharding)


def put(tree: Any, sharding: NamedSharding) -> Any:
  """`jax.device_put` that also works across processes.

  On a mesh that spans other processes' devices, every process passes the
  same host value and keeps only its own shards (typed PRNG keys included).

  Args:
    tree: arrays (device or host) with the same values in every process.
    sharding: where to put them.

  Returns:
    The tree of global arrays.
  """
  if sharding.is_fully_addressable:
    return jax.device_put(tree, sharding)

  def one(x):
    if jax.dtypes.issubdtype(getattr(x, 'dtype', None), jax.dtypes.prng_key):
      return jax.random.wrap_key_data(one(jax.random.key_data(x)),
                                      impl=jax.random.key_impl(x))
    host = np.asarray(x)
    return jax.make_array_from_callback(host.shape, sharding,
                                        lambda index: host[index])

  return jax.tree.map(one, tree)


def constrain_batch(tree: Any, placement: Placement | None, axis: int = 0
                    ) -> Any:
  """Inside a jitted step: split a batch's `axis` over 'data'.

  Args:
    tree: a batch (any pytree whose leaves share the batch axis).
    placement: None on a plain `jax.jit` without a mesh (nothing to do).
    axis: the batch axis of every leaf.

  Returns:
    The tree with a sharding constraint (the same values).
  """
  if placement is None:
    return tree
  spec = P(*([None] * axis), 'data')
  return jax.lax.with_sharding_constraint(tree, placement.sharding(spec))


def initialize_distributed(coordinator: str | None = None,
                           num_processes: int | None = None,
                           process_id: int | None = None) -> bool:
  """Joins a multi-process run, when asked.

  With all three arguments given (flags) they are passed on; with none,
  `jax.distributed.initialize()` is called only when the environment names
  a cluster (`SLURM_JOB_ID` with more than one task, a TPU pod, or
  `JAX_COORDINATOR_ADDRESS`), and JAX reads the rest from it.

  Args:
    coordinator: 'host:port' of process 0.
    num_processes: number of processes.
    process_id: this process's index.

  Returns:
    Whether `jax.distributed.initialize` ran.
  """
  given = (coordinator, num_processes, process_id)
  if any(x is not None for x in given):
    if any(x is None for x in given):
      raise ValueError('--coordinator, --num_processes and --process_id go'
                       f' together; got {given}')
    jax.distributed.initialize(coordinator, num_processes, process_id)
    return True
  env = os.environ
  cluster = (int(env.get('SLURM_NTASKS', '1')) > 1
             or 'JAX_COORDINATOR_ADDRESS' in env
             or 'TPU_WORKER_HOSTNAMES' in env)
  if not cluster:
    return False
  jax.distributed.initialize()
  logging.info('jax.distributed: process %d of %d', jax.process_index(),
               jax.process_count())
  return True


def is_main_process() -> bool:
  """Whether this process writes files (stamps, reports, metrics, bars)."""
  return jax.process_index() == 0


def barrier(name: str) -> None:
  """Waits for every process (no-op in a single-process run).

  Process 0 writes the files (stamps, moved-aside outputs, checksums); the
  others read them only after the barrier that follows the write.

  Args:
    name: a name unique to this point of the program.
  """
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def my_share(items: Sequence[Any]) -> list[int]:
  """The indices of `items` this process works on (round robin).

  Args:
    items: the units of work (e.g. evaluations), the same in every process.

  Returns:
    Indices i with i % process_count == process_index.
  """
  return list(range(jax.process_index(), len(items), jax.process_count()))


def gather_json(values: dict[int, Any], total: int) -> list[Any]:
  """Gathers every process's share of results (JSON values) in all of them.

  Each process passes `{index: result}` for its `my_share` of `total`
  units; the results go through `process_allgather` as bytes.

  Args:
    values: this process's results, by unit index.
    total: the number of units.

  Returns:
    All `total` results, in unit order, in every process.

  Raises:
    ValueError: a unit has no result.
  """
  if jax.process_count() == 1:
    missing = [i for i in range(total) if i not in values]
    if missing:
      raise ValueError(f'parallel.gather_json: no result for units {missing}')
    return [values[i] for i in range(total)]
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  blob = np.frombuffer(json.dumps({str(k): v for k, v in values.items()})
                       .encode(), np.uint8)
  sizes = np.asarray(multihost_utils.process_allgather(
      np.asarray([blob.size], np.int64))).reshape(-1)
  padded = np.zeros(int(sizes.max()), np.uint8)
  padded[:blob.size] = blob
  blobs = np.asarray(multihost_utils.process_allgather(padded))
  merged = {}
  for size, row in zip(sizes, blobs.reshape(len(sizes), -1)):
    merged.update(json.loads(row[:int(size)].tobytes().decode()))
  missing = [i for i in range(total) if str(i) not in merged]
  if missing:
    raise ValueError(f'parallel.gather_json: no result for units {missing}')
  return [merged[str(i)] for i in range(total)]

"""Checks that run before any work, so that a run fails in seconds, not hours.

    preflight.check_config(config)            # types, ranges, tasks, data
    preflight.check_workdir(config, workdir)   # writable, free disk space

Each error names the config field (as the `--config.` flag that sets it),
the file or the directory, and what is wrong; nothing is written. What is
checked: every numeric and boolean field of the pipeline's configs against
its type and range; the task names against the task table
(`distill.envs.tasks`); each task's dataset (a suite spec's task and
quality; a file's existence, readability as HDF5, keys and observation /
action sizes against the task's environment; a Minari dataset's folder);
that the workdir, the teacher workdir and the dataset cache can be written;
and that the disk holding them has room for the run's checkpoints and
generated datasets.
"""

from collections.abc import Callable
import math
import numbers
import os
import shutil
from typing import Any

import jax
import ml_collections

from distill.data import d4rl
from distill.data import sources
from distill.envs import suite
from distill.envs import tasks as tasks_lib
from distill.models import model as model_lib
from distill.run import pipeline


def _int(lo: int) -> tuple[Callable[[Any], bool], str]:
  return (lambda v: isinstance(v, numbers.Integral) and not isinstance(
      v, bool) and v >= lo), f'an integer >= {lo}'


def _real(lo: float, hi: float = math.inf, *, lo_open: bool = False,
          hi_open: bool = False) -> tuple[Callable[[Any], bool], str]:
  def ok(v):
    if isinstance(v, bool) or not isinstance(v, numbers.Real):
      return False
    v = float(v)
    return (math.isfinite(v) and (v > lo if lo_open else v >= lo)
            and (v < hi if hi_open else v <= hi))
  left, right = '(' if lo_open else '[', ')' if hi_open else ']'
  return ok, f'a finite number in {left}{lo}, {hi}{right}'


_BOOL = (lambda v: isinstance(v, bool), 'True or False')
_POS = _real(0.0, lo_open=True)
# `parallel.teacher_vmap` resolves 'auto' by backend.
_VMAP = (lambda v: isinstance(v, bool) or v == 'auto', "True, False or 'auto'")
_UNIT = _real(0.0, 1.0, hi_open=True)


def _model_fields(prefix: str) -> list[tuple[str, tuple]]:
  return [(f'{prefix}.model.num_layers', _int(1)),
          (f'{prefix}.model.width', _int(1)),
          (f'{prefix}.model.num_heads', _int(1)),
          (f'{prefix}.model.dropout', _UNIT),
          (f'{prefix}.model.log_std_min', _real(-math.inf)),
          (f'{prefix}.model.log_std_max', _real(-math.inf)),
          (f'{prefix}.optimizer.lr', _POS),
          (f'{prefix}.optimizer.weight_decay', _real(0.0)),
          (f'{prefix}.optimizer.warmup_steps', _int(0)),
          (f'{prefix}.optimizer.grad_clip', _POS),
          (f'{prefix}.optimizer.b1', _UNIT),
          (f'{prefix}.optimizer.b2', _UNIT),
          (f'{prefix}.steps', _int(1)),
          (f'{prefix}.batch_size', _int(1)),
          (f'{prefix}.steps_per_dispatch', _int(1)),
          (f'{prefix}.log_every', _int(0)),
          (f'{prefix}.ckpt_every', _int(0)),
          (f'{prefix}.keep', _int(1))]


FIELDS = [
    ('seed', _int(0)),
    ('debug_nans', _BOOL),
    ('data.context_len', _int(1)),
    ('data.rtg_scale', _POS),
    ('data.max_timestep', _int(1)),
    ('data.clip_actions', _BOOL),
    ('teacher.entropy.alpha', _POS),
    ('teacher.entropy.learn', _BOOL),
    ('teacher.entropy.lr', _POS),
    ('teacher.vmap', _VMAP),
    *_model_fields('teacher'),
    *_model_fields('student'),
    ('student.optimizer.decay_steps', _int(1)),
    ('student.optimizer.end_lr_fraction', _real(0.0, 1.0)),
    ('student.temperature', _POS),
    ('student.probe_size', _int(0)),
    ('student.probe_pool', _int(1)),
    ('curriculum.temperature', _POS),
    ('curriculum.epsilon', _real(0.0, 1.0)),
    ('curriculum.lam', _real(-math.inf)),
    ('surgery.decay', _real(0.0, 1.0, hi_open=True)),
    ('eval.episodes', _int(1)),
    ('eval.num_envs', _int(1)),
    ('eval.seed', _int(0)),
    ('eval.deterministic', _BOOL),
    ('eval.max_episode_steps', _int(1)),
    ('report.reps', _int(1)),
]


def _get(config: ml_collections.ConfigDict, dotted: str) -> tuple[bool, Any]:
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, ml_collections.ConfigDict) or part not in node:
      return False, None
    node = node[part]
  return True, node


def _refuse(field: str, value: Any, what: str) -> ValueError:
  return ValueError(f'--config.{field}={value!r}: {what}')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot run (no file is read but datasets').

  Args:
    config: the whole config.

  Raises:
    ValueError: naming the field (as its `--config.` flag) and what is
      wrong; `d4rl.DatasetError` for a dataset (naming the file).
  """
  for field, (ok, what) in FIELDS:
    present, value = _get(config, field)
    if present and not ok(value):
      raise _refuse(field, value, f'must be {what}')
  for prefix in ('teacher', 'student'):
    present, model = _get(config, f'{prefix}.model')
    if not present:
      continue
    if model.width % model.num_heads:
      raise _refuse(f'{prefix}.model.width', model.width,
                    f'must be a multiple of {prefix}.model.num_heads'
                    f' ({model.num_heads})')
    if model.log_std_min >= model.log_std_max:
      raise _refuse(f'{prefix}.model.log_std_min', model.log_std_min,
                    f'must be below {prefix}.model.log_std_max'
                    f' ({model.log_std_max})')
    if model.head not in ('tanh_gaussian', 'deterministic'):
      raise _refuse(f'{prefix}.model.head', model.head,
                    "must be 'tanh_gaussian' or 'deterministic'")
  for prefix in ('teacher', 'student'):
    # The learning-rate schedule (distill/train/optimizer.py), checked here
    # so that a student whose decay ends inside its warmup is refused
    # before the teachers train, not when its distillation starts.
    present, opt = _get(config, f'{prefix}.optimizer')
    decay = int(opt.get('decay_steps', 0) or 0) if present else 0
    if decay and decay <= opt.warmup_steps:
      raise _refuse(f'{prefix}.optimizer.decay_steps', decay,
                    f'must exceed {prefix}.optimizer.warmup_steps'
                    f' ({opt.warmup_steps}); it is the total of steps,'
                    ' warmup included')
  present, pool = _get(config, 'student.probe_pool')
  if present and config.student.probe_size > pool:
    raise _refuse('student.probe_size', config.student.probe_size,
                  f'must be <= student.probe_pool ({pool})')
  present, which = _get(config, 'report.student_checkpoint')
  if present and which not in ('last', 'best'):
    raise _refuse('report.student_checkpoint', which,
                  "must be 'last' or 'best'")
  present, n = _get(config, 'data.suite_transitions')
  if present and n is not None and not _int(1)[0](n):
    raise _refuse('data.suite_transitions', n, 'must be None or an integer'
                  ' >= 1')
  tasks = list(config.tasks)
  if not tasks:
    raise ValueError('--config.tasks: needs at least one task')
  unknown = [t for t in tasks if t not in tasks_lib.ALL_TASKS]
  if unknown or len(set(tasks)) != len(tasks):
    problem = f'unknown tasks {unknown}' if unknown else 'repeats a task'
    raise _refuse('tasks', tuple(tasks),
                  f'{problem}; valid: {", ".join(tasks_lib.ALL_TASKS)}')
  for task in tasks:
    value = pipeline.task_value(config.eval.target_return, task,
                                'eval.target_return')
    if not _real(-math.inf)[0](value):
      raise _refuse(f'eval.target_return.{task.replace("-", "_")}', value,
                    'must be a finite number')
    check_dataset(config, task)


def _spec_field(config: ml_collections.ConfigDict, task: str) -> str:
  specs = config.data.get('specs')
  key = task.replace('-', '_')
  return (f'data.specs.{key}' if specs is not None and key in specs
          else 'data.spec')


def check_dataset(config: ml_collections.ConfigDict, task: str) -> None:
  """Checks the dataset of one task without loading it.

  Args:
    config: the whole config (reads `data`).
    task: a task of the task table.

  Raises:
    d4rl.DatasetError: naming the config field, the spec or file, and the
      problem (unknown suite task or quality, missing or unreadable file,
      missing key, sizes that differ from the task's environment).
  """
  spec = pipeline.dataset_spec(config, task)
  field = _spec_field(config, task)
  want = tasks_lib.get_task(task)
  if spec.startswith(suite.PREFIX):
    name = spec.removeprefix(suite.PREFIX)
    try:
      spec_task, _ = suite.parse_name(name)
    except d4rl.DatasetError as e:
      raise d4rl.DatasetError(f'--config.{field}: {e}') from e
    got = tasks_lib.get_task(spec_task)
    shapes = {'observations': (0, got.obs_dim),
              'actions': (0, got.act_dim)}
  elif spec.startswith('d4rl:'):
    return  # Only the package knows its files; checked when loaded.
  elif spec.startswith('minari:'):
    directory = os.path.join(sources.minari_root(), spec[len('minari:'):])
    if not os.path.isdir(os.path.join(directory, 'data')):
      raise d4rl.DatasetError(f'--config.{field}={spec!r}: no Minari dataset'
                              f' in {directory}')
    return
  else:
    try:
      shapes = d4rl.hdf5_shapes(spec)
    except d4rl.DatasetError as e:
      raise d4rl.DatasetError(f'--config.{field}: {e}') from e
    lengths = {k: s[0] for k, s in shapes.items()}
    if len(set(lengths.values())) > 1:
      raise d4rl.DatasetError(f'--config.{field}: {spec}: the arrays'
                              f' differ in length: {lengths}')
  for key, size in (('observations', want.obs_dim),
                    ('actions', want.act_dim)):
    shape = shapes[key]
    if len(shape) != 2 or shape[1] != size:
      raise d4rl.DatasetError(
          f'--config.{field}: {spec}: key {key!r} has shape {shape}, but'
          f' task {task!r} ({want.env_id}) has {key} of size {size}; point'
          ' the task at its own dataset')


def _existing_parent(path: str) -> str:
  path = os.path.abspath(os.path.expanduser(path))
  while not os.path.exists(path):
    path = os.path.dirname(path)
  return path


def _param_count(model_config, obs_dims, act_dims, data_config) -> int:
  model = model_lib.make_model(
      model_config, obs_dims=obs_dims, act_dims=act_dims,
      context_len=data_config.context_len,
      max_timestep=data_config.max_timestep)
  shapes = jax.eval_shape(lambda k: model_lib.init_params(model, k),
                          jax.random.key(0))
  return sum(math.prod(x.shape) for x in jax.tree.leaves(shapes))


def estimate_bytes(config: ml_collections.ConfigDict) -> dict[str, int]:
  """Disk the run writes at most: checkpoints and generated datasets.

  A checkpoint holds the parameters and AdamW's two moments (float32); a
  directory holds `keep` of them plus one being written.

  Args:
    config: the whole config.

  Returns:
    `{'teachers', 'student', 'datasets'}` in bytes (0 where not written;
    suite datasets already in the cache are not written again).
  """
  tasks = [tasks_lib.get_task(t) for t in config.tasks]
  obs = [t.obs_dim for t in tasks]
  act = [t.act_dim for t in tasks]
  out = {'teachers': 0, 'student': 0, 'datasets': 0}
  if 'teacher' in config:
    n = _param_count(config.teacher.model, (max(obs),), (max(act),),
                     config.data)
    out['teachers'] = len(tasks) * n * 12 * (config.teacher.keep + 1)
  if 'student' in config:
    n = _param_count(config.student.model, obs, act, config.data)
    out['student'] = n * 12 * (config.student.keep + 1) + n * 4 * 2
  rows = (config.data.get('suite_transitions')
          or suite.DEFAULTS['num_transitions'])
  for task in tasks:
    spec = pipeline.dataset_spec(config, task.name)
    if spec.startswith(suite.PREFIX) and not os.path.exists(
        suite.dataset_path(*suite.parse_name(spec[len(suite.PREFIX):]),
                           num_transitions=rows,
                           seed=suite.DEFAULTS['seed'],
                           num_envs=suite.DEFAULTS['num_envs'])):
      out['datasets'] += rows * (2 * task.obs_dim + task.act_dim + 3) * 4
  return out


def check_workdir(config: ml_collections.ConfigDict, workdir: str, *,
                  margin_bytes: int = 64 << 20) -> None:
  """Refuses a workdir that cannot be written or whose disk is too full.

  Creates nothing: for a directory that does not exist yet, its nearest
  existing parent is checked.

  Args:
    config: the whole config.
    workdir: the run's directory.
    margin_bytes: free space required beyond `estimate_bytes` (logs,
      TensorBoard events, reports).

  Raises:
    ValueError: naming the directory and the problem (a file in the way, no
      write permission, too little free space with the figures).
  """
  need = estimate_bytes(config)
  teacher_workdir = config.get('teacher_workdir') or workdir
  places = {workdir: need['student'] + margin_bytes}
  places[teacher_workdir] = places.get(teacher_workdir, 0) + need['teachers']
  if need['datasets']:
    places[suite.data_dir()] = places.get(suite.data_dir(), 0) + (
        need['datasets'])
  by_disk = {}
  for place, n in places.items():
    if os.path.exists(place) and not os.path.isdir(place):
      raise ValueError(f'{place}: is a file, not a directory (--workdir,'
                       ' --config.teacher_workdir or DISTILL_DATA_DIR)')
    parent = _existing_parent(place)
    if not os.access(parent, os.W_OK | os.X_OK):
      raise ValueError(f'{place}: cannot write there ({parent} is not'
                       ' writable)')
    dev = os.stat(parent).st_dev
    by_disk.setdefault(dev, [parent, 0, []])
    by_disk[dev][1] += n
    by_disk[dev][2].append(place)
  for parent, n, names in by_disk.values():
    free = shutil.disk_usage(parent).free
    if free < n:
      raise ValueError(
          f'{", ".join(names)}: {free / 2**20:.0f} MiB free on the disk of'
          f' {parent}, the run needs about {n / 2**20:.0f} MiB (checkpoints'
          f' {need}, plus {margin_bytes / 2**20:.0f} MiB for logs); free'
          ' some space or choose another directory')

"""What a run loads from its config: datasets, the device source, teachers.

The stages of `experiments/stages.py` share these; each function reads only
the sub-configs it names.

    datasets = load_datasets(config)
    stats = [segments.state_stats(d) for d in datasets]
    source = make_source(config.data, datasets, stats)
    clone_source = make_clone_source(config, datasets, stats)  # %BC or None
    teacher, teacher_params_T = load_teachers(teacher_dirs)

Populations: `member_seeds(config)` are the seeds of the run's members;
member `s` of a population writes under `member_dir(workdir, s, config)`
what a single-seed run with `config.seed = s` writes in its workdir.
"""

from collections.abc import Sequence
import copy
import os
from typing import Any

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill import checkpointing
from distill import datasets as datasets_lib
from distill.data import d4rl
from distill.data import filtering
from distill.data import segments
from distill.envs import tasks as tasks_lib
from distill.models import model as model_lib


def dataset_spec(config: ml_collections.ConfigDict, task: str) -> str:
  """The dataset spec of a task.

  Args:
    config: the whole config (reads `data`).
    task: the task name.

  Returns:
    `config.data.specs.<task with '-' as '_'>` when the config has it (e.g. a
    D4RL file per task), else the template `config.data.spec` filled in with
    the task and `config.data.quality`.
  """
  specs = config.data.get('specs')
  key = task.replace('-', '_')
  if specs is not None and key in specs:
    return specs[key]
  return config.data.spec.format(task=task, quality=config.data.quality)


def task_value(field: ml_collections.ConfigDict, task: str, name: str) -> Any:
  """`field.<task with '-' as '_'>`, with an error naming the config key.

  Args:
    field: a per-task sub-config, e.g. `config.eval.target_return`.
    task: the task name.
    name: the field's dotted name, for the error.

  Returns:
    The task's value.

  Raises:
    KeyError: the task has no entry.
  """
  key = task.replace('-', '_')
  if key not in field:
    raise KeyError(f'config: {name}.{key} is missing for task {task!r}; has'
                   f' {sorted(field.keys())}')
  return field[key]


def load_datasets(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Loads (generating on first use) the dataset of every task.

  Args:
    config: the whole config (reads `tasks` and `data`).

  Returns:
    One validated D4RL-style dict per task, in the order of `config.tasks`.

  Raises:
    DatasetError: a dataset is bad, or its observation or action size is
      not its task's (`distill.envs.tasks`); the message names the spec.
  """
  out = []
  for task in config.tasks:
    spec = dataset_spec(config, task)
    data = datasets_lib.load_dataset(
        spec, clip_actions=config.data.clip_actions,
        suite_transitions=config.data.get('suite_transitions'))
    want = tasks_lib.get_task(task)
    for key, size in (('observations', want.obs_dim),
                      ('actions', want.act_dim)):
      if data[key].shape[1] != size:
        raise d4rl.DatasetError(
            f'{spec}: key {key!r} has shape {data[key].shape}, but task'
            f' {task!r} ({want.env_id}) has {key} of size {size}')
    out.append(data)
  return out


def make_source(data_config: ml_collections.ConfigDict,
                datasets: Sequence[dict[str, Any]],
                stats: Sequence[tuple[np.ndarray, np.ndarray]]
                ) -> segments.SegmentSource:
  """Puts the datasets on the device for segment sampling.

  Args:
    data_config: `config.data` (context_len, rtg_scale, max_timestep).
    datasets: from `load_datasets`.
    stats: per-task (mean, std) of the states.

  Returns:
    The on-device `SegmentSource` of all tasks.
  """
  return segments.make_segment_source(
      datasets, context_len=data_config.context_len,
      rtg_scale=data_config.rtg_scale,
      max_timestep=data_config.max_timestep, stats=stats)


def make_clone_source(config: ml_collections.ConfigDict,
                      datasets: Sequence[dict[str, Any]],
                      stats: Sequence[tuple[np.ndarray, np.ndarray]]
                      ) -> segments.SegmentSource | None:
  """The segments the from-scratch student clones, when %BC filters them.

  Args:
    config: the whole config (reads `data` and `student.bc_top_fraction`).
    datasets: from `load_datasets`.
    stats: per-task (mean, std) of the full datasets' states: the filtered
      data is normalized as the teachers' and the evaluation's is.

  Returns:
    None when `student.bc_top_fraction` is 1.0 (clone the training source
    itself), else a source holding only each task's best episodes by
    return (`distill.data.filtering.keep_top_fraction`).
  """
  fraction = float(config.student.get('bc_top_fraction', 1.0))
  if fraction == 1.0:
    return None
  return make_source(config.data, [filtering.keep_top_fraction(d, fraction)
                                   for d in datasets], stats)


@jax.jit
def _stack(trees):
  return jax.tree.map(lambda *xs: jnp.stack(xs), *trees)


def load_teachers(directories: Sequence[str]
                  ) -> tuple[model_lib.DecisionTransformer, Any]:
  """Loads the teachers and stacks their parameters on the device.

  Args:
    directories: one teacher checkpoint directory per task, in task order.

  Returns:
    (module, parameters stacked on a leading T axis, as device arrays).

  Raises:
    ValueError: the teachers do not share one module (padded shape).
  """
  model, params = None, []
  for directory in directories:
    m, p, _ = checkpointing.load_policy(directory)
    if model is not None and m != model:
      raise ValueError(f'{directory}: teacher module {m} differs from the'
                       f' others ({model}); teachers must share one (padded)'
                       ' shape')
    model = m
    params.append(p)
  return model, _stack(params)


def member_seeds(config: ml_collections.ConfigDict) -> tuple[int, ...]:
  """The seeds of the run's members.

  `config.seeds` names them; `--config.seed=s` with `config.seeds` left at
  its default `(0,)` is the one member `s` (the command lines of single-seed
  runs and sweeps keep their meaning).

  Args:
    config: the whole config (reads `seed` and `seeds`).

  Returns:
    One seed per member, in order.

  Raises:
    ValueError: `seed` and `seeds` disagree, `seeds` is empty, holds
      repeats or non-integers.
  """
  seed = config.get('seed', 0)
  seeds = tuple(config.get('seeds', (seed,)))
  if not seeds:
    raise ValueError('config.seeds: needs at least one seed, got ()')
  bad = [s for s in seeds if isinstance(s, bool) or not isinstance(s, int)
         or s < 0]
  if bad:
    raise ValueError(f'config.seeds={seeds}: seeds are integers >= 0; got'
                     f' {bad}')
  if len(set(seeds)) != len(seeds):
    raise ValueError(f'config.seeds={seeds}: a seed is repeated (members'
                     ' with one seed would be the same run)')
  if seeds == (0,):
    return (seed,)
  if seed not in (0, seeds[0]):
    raise ValueError(
        f'config.seed={seed} and config.seeds={seeds} disagree; set only'
        ' --config.seeds (config.seed is the one-member shorthand)')
  return seeds


def member_config(config: ml_collections.ConfigDict, seed: int
                  ) -> ml_collections.ConfigDict:
  """The single-seed config of one member (`seed` and `seeds` set to it)."""
  member = copy.deepcopy(config)
  with member.unlocked():
    member.seed = seed
    member.seeds = (seed,)
  return member


def member_dir(workdir: str, seed: int, num_members: int) -> str:
  """Where a member writes: the workdir itself for a single-seed run,
  `<workdir>/seed_<seed>` in a population."""
  return workdir if num_members == 1 else os.path.join(workdir,
                                                       f'seed_{seed}')

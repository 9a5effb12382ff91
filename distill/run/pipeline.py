"""What a run does with its config: the work of each stage, as functions.

The stage table (`distill/run/stages.py`) calls one of these per stage; each
reads only the sub-configs it names and the directories it is given.

    datasets = load_datasets(config)
    stats = [segments.state_stats(d) for d in datasets]
    source = make_source(config.data, datasets, stats)
    clone_source = make_clone_source(config, datasets, stats)  # %BC or None
    teacher, teacher_params_T = load_teachers(teacher_dirs)

    summarize_datasets(config, datasets)           # the `datasets` stage
    evaluate_teachers(config, [(task, dir), ...])  # `teacher_eval`
    distill(config, teachers=..., ...)             # `distill`
    evaluate_students(config, [(label, dir), ...]) # `student_eval`
    write_reports(config, workdir, members, ...)   # `report`

Populations: `member_seeds(config)` are the seeds of the run's members;
member `s` of a population writes under `<workdir>/seed_<s>/` what a
single-seed run with `config.seed = s` writes in its workdir (`members`).
"""

from collections.abc import Callable, Mapping, Sequence
import copy
import os
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import ml_collections
import numpy as np

from distill.data import d4rl
from distill.data import filtering
from distill.data import scores
from distill.data import segments
from distill.data import summary as summary_lib
from distill.envs import datasets as datasets_lib
from distill.envs import evaluation
from distill.envs import tasks as tasks_lib
from distill.io import fileio
from distill.models import model as model_lib
from distill.report import run_report
from distill.train import checkpointing
from distill.train import distill_loop
from distill.train import loop
from distill.train import parallel


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
  return model, loop.stack(params)


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


class Member(NamedTuple):
  """Where one member of a run writes.

  Attributes:
    seed: its seed.
    directory: its results, report, logs and student (the workdir itself
      in a single-seed run, `<workdir>/seed_<seed>/` in a population).
    teachers: its teachers' directory (a checkpoint per task, `eval.json`),
      under `config.teacher_workdir` when that is set.
  """
  seed: int
  directory: str
  teachers: str

  @property
  def student(self) -> str:
    return os.path.join(self.directory, 'student')

  def teacher_dirs(self, tasks: Sequence[str]) -> list[str]:
    return [os.path.join(self.teachers, task) for task in tasks]


def members(config: ml_collections.ConfigDict, workdir: str) -> list[Member]:
  """The run's members, in the order of `member_seeds`.

  Args:
    config: the whole config (reads `seed`, `seeds`, `teacher_workdir`).
    workdir: the run's directory.

  Returns:
    One `Member` per seed.
  """
  seeds = member_seeds(config)
  teacher_workdir = config.get('teacher_workdir') or workdir
  return [Member(s, member_dir(workdir, s, len(seeds)), os.path.join(
      member_dir(teacher_workdir, s, len(seeds)), 'teachers')) for s in seeds]


def summarize_datasets(config: ml_collections.ConfigDict,
                       datasets: Sequence[dict[str, Any]]
                       ) -> dict[str, dict[str, Any]]:
  """Each task's dataset statistics (`distill.data.summary.summarize`).

  Args:
    config: the whole config (reads `tasks` and `data`).
    datasets: from `load_datasets`.

  Returns:
    `{task: summary}`, each with its `normalized_return_mean`.
  """
  out = {}
  for task, data in zip(config.tasks, datasets):
    spec = dataset_spec(config, task)
    out[task] = summary_lib.summarize(data, spec)
    if 'normalized_return_mean' not in out[task]:
      # The spec's name does not say the task (e.g. a renamed D4RL file):
      # normalize with the task's own references (the score is linear).
      t = tasks_lib.get_task(task)
      out[task]['normalized_return_mean'] = float(scores.normalized_score(
          out[task]['return_mean'], (t.ref_min, t.ref_max)))
    logging.info('dataset %s: %s', spec, out[task])
  return out


def distill(config: ml_collections.ConfigDict, *,
            teachers: Sequence[Sequence[str]], datasets: Sequence[Any],
            stats: Sequence[tuple[np.ndarray, np.ndarray]],
            source: segments.SegmentSource, directories: Sequence[str],
            writers: Sequence[Any], placement: parallel.Placement) -> None:
  """Distills each member's teachers into its student (resumes).

  Args:
    config: the whole config (validated by the run's entry).
    teachers: per member, its teachers' directories in task order.
    datasets: from `load_datasets` (for %BC's filtered source).
    stats: per-task (mean, std) of the states.
    source: the placed training source (`make_source`).
    directories: per member, its student's directory.
    writers: per member, its metric writer.
    placement: where the members and the data live.
  """
  seeds = member_seeds(config)
  loaded = [load_teachers(dirs) for dirs in teachers]
  teacher = loaded[0][0]
  clone = make_clone_source(config, datasets, stats)
  clone = None if clone is None else placement.replicated(clone)
  # One population, of one member for a single seed.
  distill_loop.train_student(
      config, source=source, teacher=teacher,
      teacher_params_T=loop.stack([p for _, p in loaded]), stats=stats,
      directory=list(directories), writer=list(writers),
      placement=placement, seeds=seeds, clone_source=clone)


def _check_result(r: dict[str, Any], who: str, task: str, directory: str
                  ) -> None:
  bad = [k for k in ('normalized_mean', 'normalized_std', 'return_mean')
         if not np.isfinite(r[k])]
  if bad:
    raise FloatingPointError(
        f'{who} {task}: evaluating {directory} (step {r["step"]}) gave a'
        f' non-finite {bad[0]} ({r[bad[0]]}); the policy produced non-finite'
        ' actions. Nothing was written; the run stops here.')


def _shared(units: Sequence[tuple[Any, ...]],
            evaluate: Callable[..., Any]) -> list[Any]:
  """`evaluate(*unit)` for this process's share of the units, gathered in
  every process (`parallel.my_share`)."""
  mine = {}
  for i in parallel.my_share(units):
    mine[i] = evaluate(*units[i])
  return parallel.gather_json(mine, len(units))


def evaluate_teachers(config: ml_collections.ConfigDict,
                      teachers: Sequence[tuple[str, str]]
                      ) -> list[dict[str, Any]]:
  """Evaluates teacher checkpoints, each in its task; a run's processes
  (many hosts) share the work (`distill.train.parallel.my_share`).

  Args:
    config: the whole config (reads `eval`).
    teachers: `(task, checkpoint directory)` pairs.

  Returns:
    Per pair, its `evaluation.evaluate_checkpoint` result with `seconds`.

  Raises:
    FloatingPointError: a non-finite score (nothing is written).
  """
  ec = config.eval

  def one(task, directory):
    start = time.time()
    r = evaluation.evaluate_checkpoint(
        directory, task_index=0, episodes=ec.episodes, num_envs=ec.num_envs,
        seed=ec.seed, deterministic=ec.deterministic,
        target_return=float(task_value(ec.target_return, task,
                                       'eval.target_return')),
        max_episode_steps=ec.max_episode_steps)
    r['seconds'] = time.time() - start
    _check_result(r, 'teacher', task, directory)
    return r

  return _shared(list(teachers), one)


def evaluate_students(config: ml_collections.ConfigDict,
                      students: Sequence[tuple[str, str]]
                      ) -> list[dict[str, dict[str, Any]]]:
  """Evaluates student checkpoints in all tasks side by side (shared by
  the processes as `evaluate_teachers`).

  Args:
    config: the whole config (reads `tasks` and `eval`).
    students: `(label, checkpoint directory)` pairs, e.g. `('last', ...)`.

  Returns:
    Per pair, `{task: result}` (`evaluation.evaluate_checkpoint_tasks`),
    `seconds` of all tasks together.

  Raises:
    FloatingPointError: a non-finite score (nothing is written).
  """
  ec, tasks = config.eval, list(config.tasks)
  targets = {t: float(task_value(ec.target_return, t, 'eval.target_return'))
             for t in tasks}

  def one(label, directory):
    start = time.time()
    # All tasks side by side, one policy call per vector step.
    results = evaluation.evaluate_checkpoint_tasks(
        directory, episodes=ec.episodes, num_envs=ec.num_envs,
        target_returns=targets, seed=ec.seed, tasks=tasks,
        deterministic=ec.deterministic,
        max_episode_steps=ec.max_episode_steps)
    seconds = time.time() - start
    for task, r in results.items():
      r['seconds'] = seconds
      _check_result(r, f'student_{label}', task, directory)
    return results

  return _shared(list(students), one)


def _member_results(config: ml_collections.ConfigDict, workdir: str,
                    member: Member, latency_ms: dict[str, float],
                    params: dict[str, int],
                    wall_s: Mapping[str, float]) -> dict[str, Any]:
  tasks = list(config.tasks)
  history = distill_loop.load_history(member.student)
  results = run_report.assemble_results(
      tasks=tasks,
      datasets=fileio.read_json(os.path.join(workdir, 'datasets.json')),
      teachers=fileio.read_json(os.path.join(member.teachers, 'eval.json')),
      students=fileio.read_json(os.path.join(member.student, 'eval.json')),
      which=config.report.student_checkpoint,
      teacher_params=params['teacher'], student_params=params['student'],
      latency_ms=latency_ms, history=history,
      curriculum=config.curriculum.name, surgery=config.surgery.name,
      wall_s=dict(wall_s), seed=member.seed,
      student_steps=config.student.steps,
      teacher_steps=config.teacher.steps, reps=config.report.reps)
  if parallel.is_main_process():
    run_report.write_report(member.directory, results,
                            steps_N=history.get('step', np.zeros(0)),
                            kl_NxT=history.get('distill/kl',
                                               np.zeros((0, len(tasks)))),
                            choice_N=history.get('curriculum/choice',
                                                 np.zeros(0, np.int32)))
  return results


def write_reports(config: ml_collections.ConfigDict, workdir: str,
                  run_members: Sequence[Member], *,
                  wall_s: Mapping[str, float]) -> None:
  """Writes each member's `results.json`, `report.md` and plots, and a
  population's own (`distill.report.run_report`); process 0 writes.

  Args:
    config: the whole config.
    workdir: the run's directory (its `datasets.json`; a population's
      report).
    run_members: from `members`, with their checkpoints and `eval.json`.
    wall_s: seconds of each stage (`results.json`'s `wall_s`).
  """
  first = run_members[0]
  teacher, params_T = load_teachers(first.teacher_dirs(config.tasks))
  student, student_params, _ = checkpointing.load_policy(
      os.path.join(first.student, 'last'))
  teacher_params = jax.tree.map(lambda x: x[0], params_T)
  # The same modules in every member: their sizes and latency are measured
  # once.
  params = {'teacher': model_lib.count_params(teacher_params),
            'student': model_lib.count_params(student_params)}
  latency_ms = {
      'teacher_batch1': evaluation.batch1_latency_ms(teacher,
                                                     teacher_params),
      'student_batch1': evaluation.batch1_latency_ms(student,
                                                     student_params)}
  results = [_member_results(config, workdir, m, latency_ms, params, wall_s)
             for m in run_members]
  if len(run_members) > 1 and parallel.is_main_process():
    run_report.write_population_report(workdir, results,
                                       reps=config.report.reps)
  parallel.barrier('stage report')

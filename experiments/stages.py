"""The pipeline's stages as one table, and the runner that skips or reruns them.

    datasets -> teachers -> teacher_eval -> distill -> student_eval -> report

Each `Stage` record names its function, the config fields its outputs depend
on, its outputs, what else it consumed (`inputs`: e.g. the upstream
checkpoints' steps) and how to tell that its outputs are complete. A stage
is skipped when `<dir>/stamps/<stage>.json` holds the same hash of those
config fields and inputs, marked done, and its outputs are complete. On a
mismatch its outputs are moved aside (`<name>.stale-<hash>`, never deleted)
and it reruns; the log says so. Fields in `RESUMABLE` (e.g. `teacher.steps`)
are left out of the hash: a rerun continues training from the checkpoints.

With `config.teacher_workdir` set, the teacher stages run in (and are skipped
against) that directory, so several runs (a sweep's members) share one set of
teachers.

To add a stage: write `_foo(ctx)`, add a `Stage` to `STAGES`.
"""

from collections.abc import Callable
import functools
import hashlib
import json
import os
import time
from typing import Any, NamedTuple

from absl import logging
import jax
import ml_collections
import numpy as np

from distill import checkpointing
from distill import evaluation
from distill import fileio
from distill import pipeline
from distill import report
from distill.data import segments
from distill.data import summary as summary_lib
from distill.models import model as model_lib
from distill.train import distill_loop
from distill.train import logs
from distill.train import student as student_lib
from distill.train import teacher as teacher_lib


class Context:
  """What the stages share: the config, the directories, and the setup that
  several stages use (datasets, statistics, device source), built on first
  use."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.teacher_workdir = config.get('teacher_workdir') or workdir
    self.writer = logs.MetricWriter(workdir)

  def teacher_dir(self, task: str) -> str:
    return os.path.join(self.teacher_workdir, 'teachers', task)

  @property
  def student_dir(self) -> str:
    return os.path.join(self.workdir, 'student')

  def teacher_steps(self) -> dict[str, int | None]:
    return {t: checkpointing.latest_step(self.teacher_dir(t))
            for t in self.config.tasks}

  def student_step(self) -> int | None:
    return checkpointing.latest_step(os.path.join(self.student_dir, 'last'))

  @functools.cached_property
  def datasets(self) -> list[dict[str, Any]]:
    return pipeline.load_datasets(self.config)

  @functools.cached_property
  def stats(self) -> list[tuple[np.ndarray, np.ndarray]]:
    return [segments.state_stats(d) for d in self.datasets]

  @functools.cached_property
  def source(self) -> segments.SegmentSource:
    return pipeline.make_source(self.config.data, self.datasets, self.stats)


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def _datasets(ctx: Context) -> None:
  out = {}
  for task, data in zip(ctx.config.tasks, ctx.datasets):
    spec = pipeline.dataset_spec(ctx.config, task)
    out[task] = summary_lib.summarize(data, spec)
    logging.info('dataset %s: %s', spec, out[task])
  fileio.write_json(os.path.join(ctx.workdir, 'datasets.json'), out)


def _teachers(ctx: Context) -> None:
  config = ctx.config
  teacher_lib.train_teachers(
      config.teacher, config.data, tasks=config.tasks, source=ctx.source,
      stats=ctx.stats, directory=os.path.join(ctx.teacher_workdir,
                                              'teachers'),
      seed=config.seed, writer=ctx.writer)


def _evaluate(ctx: Context, directory: str, task: str, who: str
              ) -> dict[str, Any]:
  ec = ctx.config.eval
  start = time.time()
  r = evaluation.evaluate_checkpoint(
      directory, task_index=list(ctx.config.tasks).index(task) if
      who.startswith('student') else 0, episodes=ec.episodes,
      num_envs=ec.num_envs, seed=ec.seed, deterministic=ec.deterministic,
      target_return=float(pipeline.task_value(ec.target_return, task,
                                              'eval.target_return')),
      max_episode_steps=ec.max_episode_steps)
  r['seconds'] = time.time() - start
  logging.info('%s (step %d) %s: normalized %.1f +- %.1f, return %.1f,'
               ' %.1f s', who, r['step'], task, r['normalized_mean'],
               r['normalized_std'], r['return_mean'], r['seconds'])
  ctx.writer.write(r['step'], {
      f'eval/{who}/{task}/normalized_score': r['normalized_mean'],
      f'eval/{who}/{task}/return': r['return_mean']})
  return r


def _teacher_eval(ctx: Context) -> None:
  results = {t: _evaluate(ctx, ctx.teacher_dir(t), t, 'teacher')
             for t in ctx.config.tasks}
  fileio.write_json(os.path.join(ctx.teacher_workdir, 'teachers',
                                 'eval.json'), results)


def _distill(ctx: Context) -> None:
  teacher, teacher_params_T = pipeline.load_teachers(
      [ctx.teacher_dir(t) for t in ctx.config.tasks])
  distill_loop.train_student(
      ctx.config, source=ctx.source, teacher=teacher,
      teacher_params_T=teacher_params_T, stats=ctx.stats,
      directory=ctx.student_dir, writer=ctx.writer)


def _student_eval(ctx: Context) -> None:
  results = {label: {t: _evaluate(ctx, os.path.join(ctx.student_dir, label),
                                  t, f'student_{label}')
                     for t in ctx.config.tasks}
             for label in ('last', 'best')}
  fileio.write_json(os.path.join(ctx.student_dir, 'eval.json'), results)


def _report(ctx: Context) -> None:
  config, tasks = ctx.config, list(ctx.config.tasks)
  teacher, params_T = pipeline.load_teachers(
      [ctx.teacher_dir(t) for t in tasks])
  teacher_params = jax.tree.map(lambda x: x[0], params_T)
  student, student_params, _ = checkpointing.load_policy(
      os.path.join(ctx.student_dir, 'last'))
  history = distill_loop.load_history(ctx.student_dir)
  wall_path = os.path.join(ctx.workdir, 'wall_s.json')
  results = report.assemble_results(
      tasks=tasks,
      datasets=_read_json(os.path.join(ctx.workdir, 'datasets.json')),
      teachers=_read_json(os.path.join(ctx.teacher_workdir, 'teachers',
                                       'eval.json')),
      students=_read_json(os.path.join(ctx.student_dir, 'eval.json')),
      which=config.report.student_checkpoint,
      teacher_params=model_lib.count_params(teacher_params),
      student_params=model_lib.count_params(student_params),
      latency_ms={
          'teacher_batch1': pipeline.batch1_latency_ms(teacher,
                                                       teacher_params),
          'student_batch1': pipeline.batch1_latency_ms(student,
                                                       student_params)},
      history=history, curriculum=config.curriculum.name,
      surgery=config.surgery.name,
      wall_s=_read_json(wall_path) if os.path.exists(wall_path) else {},
      seed=config.seed, student_steps=config.student.steps,
      teacher_steps=config.teacher.steps, reps=config.report.reps)
  report.write_report(ctx.workdir, results,
                      steps_N=history.get('step', np.zeros(0)),
                      kl_NxT=history.get('distill/kl',
                                         np.zeros((0, len(tasks)))),
                      choice_N=history.get('curriculum/choice',
                                           np.zeros(0, np.int32)))
  logging.info('report: %s', os.path.join(ctx.workdir, 'report.md'))


class Stage(NamedTuple):
  """One stage of the pipeline.

  Attributes:
    run: does the work, writing the outputs.
    keys: config fields its outputs depend on (hashed into the stamp).
    outputs: paths its outputs live at, relative to its directory.
    inputs: what else it consumed (e.g. upstream checkpoint steps); a change
      reruns the stage like a config change.
    complete: whether the outputs on disk are complete (a stamp marked done
      is also required).
    teacher_side: lives in `config.teacher_workdir` when that is set.
  """

  run: Callable[[Context], None]
  keys: tuple[str, ...]
  outputs: tuple[str, ...]
  inputs: Callable[[Context], Any] = lambda ctx: None
  complete: Callable[[Context], bool] = lambda ctx: True
  teacher_side: bool = False


_TEACHER = ('seed', 'tasks', 'data', 'teacher')
_STUDENT = _TEACHER + ('student', 'curriculum', 'surgery')

STAGES: dict[str, Stage] = {
    'datasets': Stage(
        _datasets, ('tasks', 'data'), ('datasets.json',),
        complete=lambda ctx: os.path.exists(
            os.path.join(ctx.workdir, 'datasets.json'))),
    'teachers': Stage(
        _teachers, _TEACHER, ('teachers',), teacher_side=True,
        complete=lambda ctx: all(s == ctx.config.teacher.steps
                                 for s in ctx.teacher_steps().values())),
    'teacher_eval': Stage(
        _teacher_eval, _TEACHER + ('eval',), ('teachers/eval.json',),
        inputs=lambda ctx: ctx.teacher_steps(), teacher_side=True,
        complete=lambda ctx: os.path.exists(os.path.join(
            ctx.teacher_workdir, 'teachers', 'eval.json'))),
    'distill': Stage(
        _distill, _STUDENT, ('student',),
        inputs=lambda ctx: ctx.teacher_steps(),
        complete=lambda ctx: ctx.student_step() == ctx.config.student.steps),
    'student_eval': Stage(
        _student_eval, _STUDENT + ('eval',), ('student/eval.json',),
        inputs=lambda ctx: ctx.student_step(),
        complete=lambda ctx: os.path.exists(
            os.path.join(ctx.student_dir, 'eval.json'))),
    'report': Stage(
        _report, _STUDENT + ('eval', 'report'),
        ('results.json', 'report.md', 'kl.png', 'curriculum.png',
         'scores.png'),
        inputs=lambda ctx: (ctx.teacher_steps(), ctx.student_step()),
        complete=lambda ctx: False),  # Cheap; always rewritten.
}

# Fields left out of the hash: a rerun with a new value continues instead of
# starting over (training resumes from the checkpoints).
RESUMABLE = ('teacher.steps', 'teacher.log_every', 'teacher.ckpt_every',
             'teacher.keep', 'teacher.steps_per_dispatch', 'teacher.vmap',
             'student.steps', 'student.log_every', 'student.ckpt_every',
             'student.keep', 'student.steps_per_dispatch')


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot run, before any work.

  Raises:
    ValueError: naming the field and what is wrong.
  """
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f'config.stages: unknown stages {unknown}; known:'
                     f' {list(STAGES)}')
  if not config.tasks:
    raise ValueError('config.tasks: needs at least one task')
  for task in config.tasks:
    pipeline.task_value(config.eval.target_return, task,
                        'eval.target_return')
  if 'student' in config:
    student_lib.check_config(config)


def stage_config(config: ml_collections.ConfigDict, stage: str
                 ) -> dict[str, Any]:
  """The part of the config a stage's outputs depend on (hashed)."""
  sub = {k: config[k].to_dict() if isinstance(config[k],
                                              ml_collections.ConfigDict)
         else config[k] for k in STAGES[stage].keys}
  sub = json.loads(json.dumps(sub, default=list))
  for dotted in RESUMABLE:
    head, _, leaf = dotted.partition('.')
    if head in sub:
      sub[head].pop(leaf, None)
  return sub


def _stamp_path(directory: str, stage: str) -> str:
  return os.path.join(directory, 'stamps', f'{stage}.json')


def stage_hash(config: ml_collections.ConfigDict, stage: str,
               inputs: Any = None) -> str:
  """Hash of a stage's config fields and inputs."""
  blob = json.dumps([stage_config(config, stage), inputs], sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _move_aside(path: str, tag: str) -> str:
  """Renames `path` to a free `<path>.stale-<tag>[-n]`; never deletes."""
  stale, n = f'{path}.stale-{tag}', 1
  while os.path.exists(stale):
    n += 1
    stale = f'{path}.stale-{tag}-{n}'
  os.replace(path, stale)
  return stale


def run_stage(ctx: Context, name: str) -> bool:
  """Runs one stage unless its outputs are up to date.

  Returns:
    Whether it ran.
  """
  stage, config = STAGES[name], ctx.config
  directory = ctx.teacher_workdir if stage.teacher_side else ctx.workdir
  path = _stamp_path(directory, name)
  stamp = _read_json(path) if os.path.exists(path) else None
  inputs = stage.inputs(ctx)
  current = stage_hash(config, name, inputs)
  if stamp is not None and stamp['hash'] != current:
    logging.warning('stage %s: config or inputs changed since the last run'
                    ' (hash %s -> %s); moving its outputs aside and'
                    ' rerunning', name, stamp['hash'], current)
    for rel in stage.outputs:
      if os.path.exists(os.path.join(directory, rel)):
        stale = _move_aside(os.path.join(directory, rel), stamp['hash'][:8])
        logging.warning('stage %s: moved %s/%s to %s', name, directory, rel,
                        stale)
    os.remove(path)
    stamp = None
  if stamp is not None and stamp['done'] and stage.complete(ctx):
    logging.info('stage %s: up to date, skipped', name)
    return False
  record = {'stage': name, 'hash': current,
            'config': stage_config(config, name), 'inputs': inputs}
  fileio.write_json(path, {**record, 'done': False, 'time': time.time()})
  stage.run(ctx)
  fileio.write_json(path, {**record, 'done': True, 'time': time.time()})
  return True


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs `config.stages` in order in `workdir`.

  Args:
    config: the whole config.
    workdir: output directory (created).
  """
  check_config(config)
  os.makedirs(workdir, exist_ok=True)
  fileio.write_json(os.path.join(workdir, 'config.json'),
                    json.loads(config.to_json_best_effort()))
  ctx = Context(config, workdir)
  wall_path = os.path.join(workdir, 'wall_s.json')
  wall = _read_json(wall_path) if os.path.exists(wall_path) else {}
  try:
    for name in config.stages:
      logging.info('stage %s', name)
      start = time.time()
      if run_stage(ctx, name):  # A skipped stage keeps its earlier time.
        wall[name] = time.time() - start
        fileio.write_json(wall_path, wall)
      logging.info('stage %s: %.1f s', name, time.time() - start)
  finally:
    ctx.writer.close()

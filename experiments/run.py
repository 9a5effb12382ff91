r"""Runs the pipeline stages listed in `config.stages` in a workdir.

  python -m experiments.run --config=configs/teachers.py --workdir=runs/teachers
  python -m experiments.run --config=configs/teachers.py:smoke --workdir=/tmp/smoke

Each stage is a plain function `stage_<name>(config, workdir, shared)` listed
in `STAGES`. A stage is skipped when its outputs exist for the same relevant
config: `<workdir>/stamps/<stage>.json` holds a hash of the config fields the
stage depends on (`STAGE_KEYS`, minus `RESUMABLE` fields such as
`teacher.steps` that a rerun continues from checkpoints). On a hash mismatch
the stage's outputs are moved aside (`<name>.stale-<hash>`) and it reruns;
the log says so.

To add a stage: write `stage_foo(config, workdir, shared)`, add it to
`STAGES`, its config fields to `STAGE_KEYS` and its outputs to `OUTPUTS`,
and use `shared.datasets`, `shared.stats`, `shared.source` and
`shared.writer` for the setup it shares with the other stages.
"""

import functools
import hashlib
import json
import logging as std_logging
import os
import shutil
import time
from collections.abc import Callable
from typing import Any

from absl import app
from absl import flags
from absl import logging
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from distill import checkpointing
from distill import evaluation
from distill import fileio
from distill import report
from distill.data import segments
from distill.data import sources
from distill.models import decision_transformer as dt
from distill.train import distill as distill_lib
from distill.train import distill_loop
from distill.train import logs
from distill.train import teacher as teacher_lib
from experiments import dataset_info

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/teachers.py', 'Experiment config.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.',
                               required=True)


# ----------------------------------------------------------------------------
# Shared setup.


def dataset_spec(config: ml_collections.ConfigDict, task: str) -> str:
  """The dataset spec of a task.

  `config.data.specs.<task with '-' as '_'>` when the config has it (e.g. a
  D4RL file per task), else the template `config.data.spec` filled in with
  the task and `config.data.quality`.
  """
  specs = config.data.get('specs')
  key = task.replace('-', '_')
  if specs is not None and key in specs:
    return specs[key]
  return config.data.spec.format(task=task, quality=config.data.quality)


def load_datasets(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Loads (generating on first use) the dataset of every task."""
  return [sources.load_dataset(
      dataset_spec(config, t), clip_actions=config.data.clip_actions,
      suite_transitions=config.data.get('suite_transitions'))
          for t in config.tasks]


def make_source(config: ml_collections.ConfigDict, datasets, stats
                ) -> segments.SegmentSource:
  """Puts the datasets on the device for segment sampling."""
  return segments.make_segment_source(
      datasets, context_len=config.data.context_len,
      rtg_scale=config.data.rtg_scale, max_timestep=config.data.max_timestep,
      stats=stats)


def task_value(field: ml_collections.ConfigDict, task: str, name: str):
  """`field.<task with '-' as '_'>`, with an error naming the config key."""
  key = task.replace('-', '_')
  if key not in field:
    raise KeyError(f'config: {name}.{key} is missing for task {task!r}; has'
                   f' {sorted(field.keys())}')
  return field[key]


class Shared:
  """Setup shared by the stages, built on first use."""

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.writer = logs.MetricWriter(workdir)

  @functools.cached_property
  def datasets(self) -> list[dict[str, Any]]:
    return load_datasets(self.config)

  @functools.cached_property
  def stats(self) -> list[tuple[np.ndarray, np.ndarray]]:
    return [segments.state_stats(d) for d in self.datasets]

  @functools.cached_property
  def source(self) -> segments.SegmentSource:
    return make_source(self.config, self.datasets, self.stats)


# ----------------------------------------------------------------------------
# Stamps.

# Config fields each stage depends on.
STAGE_KEYS = {
    'datasets': ('tasks', 'data'),
    'teachers': ('seed', 'tasks', 'data', 'teacher'),
    'teacher_eval': ('seed', 'tasks', 'data', 'teacher', 'eval'),
    'distill': ('seed', 'tasks', 'data', 'teacher', 'student', 'curriculum',
                'surgery'),
    'student_eval': ('seed', 'tasks', 'data', 'teacher', 'student',
                     'curriculum', 'surgery', 'eval'),
    'report': ('seed', 'tasks', 'data', 'teacher', 'student', 'curriculum',
               'surgery', 'eval'),
}
# Fields left out of the hash: a rerun with a new value continues instead of
# starting over (training resumes from the checkpoints).
RESUMABLE = ('teacher.steps', 'teacher.log_every', 'teacher.ckpt_every',
             'teacher.keep', 'teacher.steps_per_dispatch', 'teacher.vmap',
             'student.steps', 'student.log_every', 'student.ckpt_every',
             'student.keep', 'student.steps_per_dispatch')
# Outputs (relative to the workdir) moved aside when the config changed.
OUTPUTS = {
    'datasets': ('datasets.json',),
    'teachers': ('teachers',),
    'teacher_eval': ('teachers/eval.json',),
    'distill': ('student',),
    'student_eval': ('student/eval.json',),
    'report': ('results.json', 'report.md'),
}


def stage_config(config: ml_collections.ConfigDict, stage: str
                 ) -> dict[str, Any]:
  """The part of the config a stage's outputs depend on (hashed)."""
  sub = {k: config[k].to_dict() if isinstance(config[k],
                                              ml_collections.ConfigDict)
         else config[k] for k in STAGE_KEYS[stage]}
  sub = json.loads(json.dumps(sub, default=list))
  for dotted in RESUMABLE:
    head, _, leaf = dotted.partition('.')
    if head in sub:
      sub[head].pop(leaf, None)
  return sub


def _stamp_path(workdir: str, stage: str) -> str:
  return os.path.join(workdir, 'stamps', f'{stage}.json')


def stage_hash(config: ml_collections.ConfigDict, stage: str) -> str:
  blob = json.dumps(stage_config(config, stage), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def read_stamp(workdir: str, stage: str) -> dict[str, Any] | None:
  path = _stamp_path(workdir, stage)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def write_stamp(workdir: str, config, stage: str, *, done: bool,
                **extra) -> None:
  fileio.write_json(_stamp_path(workdir, stage), {
      'stage': stage, 'hash': stage_hash(config, stage), 'done': done,
      'config': stage_config(config, stage), 'time': time.time(), **extra})


def prepare_stage(config, workdir: str, stage: str) -> dict[str, Any] | None:
  """Moves stale outputs aside; returns the stamp if it matches the config."""
  stamp = read_stamp(workdir, stage)
  if stamp is None or stamp['hash'] == stage_hash(config, stage):
    return stamp
  logging.warning('stage %s: config changed since the last run (hash %s ->'
                  ' %s); moving its outputs aside and rerunning', stage,
                  stamp['hash'], stage_hash(config, stage))
  for rel in OUTPUTS[stage]:
    path = os.path.join(workdir, rel)
    if os.path.exists(path):
      stale = f'{path}.stale-{stamp["hash"][:8]}'
      if os.path.exists(stale):
        shutil.rmtree(stale) if os.path.isdir(stale) else os.remove(stale)
      os.replace(path, stale)
      logging.warning('stage %s: moved %s to %s', stage, path, stale)
  os.remove(_stamp_path(workdir, stage))
  return None


# ----------------------------------------------------------------------------
# Stages.


def stage_datasets(config, workdir: str, shared: Shared) -> None:
  """Loads every task's dataset; writes `datasets.json` (summaries)."""
  stamp = prepare_stage(config, workdir, 'datasets')
  out = os.path.join(workdir, 'datasets.json')
  if stamp and stamp['done'] and os.path.exists(out):
    logging.info('stage datasets: up to date, skipped')
    return False
  summary = {}
  for task, data in zip(config.tasks, shared.datasets):
    spec = dataset_spec(config, task)
    summary[task] = dataset_info.summarize(data, spec)
    logging.info('dataset %s: %s', spec, summary[task])
  fileio.write_json(out, summary)
  write_stamp(workdir, config, 'datasets', done=True)


def teacher_dir(workdir: str, task: str) -> str:
  """Checkpoint directory of one task's teacher."""
  return os.path.join(workdir, 'teachers', task)


def stage_teachers(config, workdir: str, shared: Shared) -> None:
  """Trains (or resumes) one teacher per task; `teachers/<task>/`."""
  stamp = prepare_stage(config, workdir, 'teachers')
  steps = [checkpointing.latest_step(teacher_dir(workdir, t))
           for t in config.tasks]
  if (stamp and stamp['done']
      and all(s == config.teacher.steps for s in steps)):
    logging.info('stage teachers: up to date at step %d, skipped',
                 config.teacher.steps)
    return False
  write_stamp(workdir, config, 'teachers', done=False)
  teacher_lib.train_teachers(
      config.teacher, config.data, tasks=config.tasks, source=shared.source,
      stats=shared.stats, directory=os.path.join(workdir, 'teachers'),
      seed=config.seed, writer=shared.writer)
  write_stamp(workdir, config, 'teachers', done=True,
              steps=config.teacher.steps)


def stage_teacher_eval(config, workdir: str, shared: Shared) -> None:
  """Evaluates every teacher; writes `teachers/eval.json`."""
  prepare_stage(config, workdir, 'teacher_eval')
  out = os.path.join(workdir, 'teachers', 'eval.json')
  steps = {t: checkpointing.latest_step(teacher_dir(workdir, t))
           for t in config.tasks}
  missing = [t for t, s in steps.items() if s is None]
  if missing:
    raise FileNotFoundError(f'stage teacher_eval: no teacher checkpoint for'
                            f' {missing} in {workdir}/teachers; run the'
                            " 'teachers' stage first")
  if os.path.exists(out):
    with open(out, encoding='utf-8') as f:
      old = json.load(f)
    stamp = read_stamp(workdir, 'teacher_eval')
    if stamp and stamp['done'] and all(
        t in old and old[t]['step'] == s for t, s in steps.items()):
      logging.info('stage teacher_eval: up to date, skipped')
      return False
  results = {}
  ec = config.eval
  for task in config.tasks:
    target = float(task_value(ec.target_return, task, 'eval.target_return'))
    start = time.time()
    r = evaluation.evaluate_checkpoint(
        teacher_dir(workdir, task), episodes=ec.episodes,
        num_envs=ec.num_envs, target_return=target, seed=ec.seed,
        deterministic=ec.deterministic,
        max_episode_steps=ec.max_episode_steps)
    r['seconds'] = time.time() - start
    results[task] = r
    logging.info('teacher %s (step %d): normalized %.1f +- %.1f, return %.1f'
                 ' (target %.0f), %.1f s', task, r['step'],
                 r['normalized_mean'], r['normalized_std'], r['return_mean'],
                 target, r['seconds'])
    shared.writer.write(r['step'], {
        f'eval/teacher/{task}/normalized_score': r['normalized_mean'],
        f'eval/teacher/{task}/return': r['return_mean']})
  fileio.write_json(out, results)
  write_stamp(workdir, config, 'teacher_eval', done=True)


def load_teachers(config, workdir: str):
  """The teachers' module and their parameters stacked on a leading T axis."""
  model, params = None, []
  for task in config.tasks:
    m, p, _ = checkpointing.load_policy(teacher_dir(workdir, task))
    if model is not None and m != model:
      raise ValueError(f'{teacher_dir(workdir, task)}: teacher module {m}'
                       f' differs from the others ({model}); teachers must'
                       ' share one (padded) shape')
    model = m
    params.append(p)
  return model, jax.tree.map(lambda *x: np.stack(x), *params)


def student_dir(workdir: str) -> str:
  """Output directory of the distillation stage."""
  return os.path.join(workdir, 'student')


def stage_distill(config, workdir: str, shared: Shared) -> bool:
  """Distills the teachers into one student; `student/{last,best}/`."""
  stamp = prepare_stage(config, workdir, 'distill')
  last = checkpointing.latest_step(os.path.join(student_dir(workdir), 'last'))
  if stamp and stamp['done'] and last == config.student.steps:
    logging.info('stage distill: up to date at step %d, skipped', last)
    return False
  distill_lib.check_config(config)
  write_stamp(workdir, config, 'distill', done=False)
  teacher, teacher_params_T = load_teachers(config, workdir)
  distill_loop.train_student(
      config, source=shared.source, teacher=teacher,
      teacher_params_T=teacher_params_T, stats=shared.stats,
      directory=student_dir(workdir), writer=shared.writer)
  write_stamp(workdir, config, 'distill', done=True,
              steps=config.student.steps)
  return True


def evaluate_student(config, directory: str, task_index: int
                     ) -> dict[str, Any]:
  """Evaluates the student saved in `directory` on one task."""
  model, params, meta = checkpointing.load_policy(directory)
  ec = config.eval
  task = meta['tasks'][task_index]
  policy = evaluation.make_policy(model, params, task_id=task_index,
                                  deterministic=ec.deterministic)
  result = evaluation.evaluate(
      policy, task, episodes=ec.episodes, num_envs=ec.num_envs,
      target_return=float(task_value(ec.target_return, task,
                                     'eval.target_return')),
      seed=ec.seed, context_len=meta['context_len'],
      rtg_scale=meta['rtg_scale'], max_timestep=meta['max_timestep'],
      state_mean=np.asarray(meta['state_mean'][task_index], np.float32),
      state_std=np.asarray(meta['state_std'][task_index], np.float32),
      state_size=model.state_size, action_size=model.action_size,
      max_episode_steps=ec.max_episode_steps)
  result['step'] = meta['step']
  return result


def stage_student_eval(config, workdir: str, shared: Shared) -> bool:
  """Evaluates the last and the best student; `student/eval.json`."""
  stamp = prepare_stage(config, workdir, 'student_eval')
  out = os.path.join(student_dir(workdir), 'eval.json')
  last_dir = os.path.join(student_dir(workdir), 'last')
  last = checkpointing.latest_step(last_dir)
  if last is None:
    raise FileNotFoundError(f'stage student_eval: no student checkpoint in'
                            f" {last_dir}; run the 'distill' stage first")
  if stamp and stamp['done'] and os.path.exists(out):
    with open(out, encoding='utf-8') as f:
      old = json.load(f)
    if all(old['last'][t]['step'] == last for t in config.tasks):
      logging.info('stage student_eval: up to date, skipped')
      return False
  results = {}
  for label in ('last', 'best'):
    results[label] = {}
    for i, task in enumerate(config.tasks):
      start = time.time()
      r = evaluate_student(config, os.path.join(student_dir(workdir), label),
                           i)
      r['seconds'] = time.time() - start
      results[label][task] = r
      logging.info('student (%s, step %d) %s: normalized %.1f +- %.1f,'
                   ' return %.1f, %.1f s', label, r['step'], task,
                   r['normalized_mean'], r['normalized_std'],
                   r['return_mean'], r['seconds'])
      shared.writer.write(r['step'], {
          f'eval/student_{label}/{task}/normalized_score':
              r['normalized_mean']})
  fileio.write_json(out, results)
  write_stamp(workdir, config, 'student_eval', done=True)
  return True


def batch1_latency_ms(model, params, *, repeats: int = 200) -> float:
  """Median wall time (ms) of one jitted batch-1 action call."""
  k = model.context_len
  args = (np.zeros((1, k, 1), np.float32),
          np.zeros((1, k, model.state_size), np.float32),
          np.zeros((1, k, model.action_size), np.float32),
          np.zeros((1, k), np.int32), np.ones((1, k), np.float32),
          np.zeros((1,), np.int32))
  act = jax.jit(lambda p, *a: jax.numpy.tanh(
      model.apply({'params': p}, *a, train=False)[0][:, -1]))
  jax.block_until_ready(act(params, *args))
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    jax.block_until_ready(act(params, *args))
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def _read_json(path: str) -> Any:
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def stage_report(config, workdir: str, shared: Shared) -> bool:
  """Writes `results.json`, `report.md` and the plots."""
  del shared
  prepare_stage(config, workdir, 'report')
  datasets = _read_json(os.path.join(workdir, 'datasets.json'))
  teachers = _read_json(os.path.join(workdir, 'teachers', 'eval.json'))
  students = _read_json(os.path.join(student_dir(workdir), 'eval.json'))
  teacher, teacher_params_T = load_teachers(config, workdir)
  student, student_params, _ = checkpointing.load_policy(
      os.path.join(student_dir(workdir), 'last'))
  history = distill_loop.load_history(student_dir(workdir))
  tasks = list(config.tasks)
  which = config.report.student_checkpoint
  per_task = {}
  for t in tasks:
    per_task[t] = {
        'dataset_score': datasets[t].get('normalized_return_mean'),
        'teacher_score': teachers[t]['normalized_mean'],
        'teacher_score_std': teachers[t]['normalized_std'],
        'student_score': students[which][t]['normalized_mean'],
        'student_score_std': students[which][t]['normalized_std'],
        'student_last_score': students['last'][t]['normalized_mean'],
        'student_best_score': students['best'][t]['normalized_mean'],
        'teacher_return': teachers[t]['return_mean'],
        'student_return': students[which][t]['return_mean'],
    }
  one_teacher = jax.tree.map(lambda x: x[0], teacher_params_T)
  choice = history.get('curriculum/choice', np.zeros(0, np.int32))
  counts = {t: int((choice == i).sum()) for i, t in enumerate(tasks)}
  if config.curriculum.name == 'mixture':
    counts = {t: int(len(choice)) for t in tasks}
  wall = {}
  wall_path = os.path.join(workdir, 'wall_s.json')
  if os.path.exists(wall_path):
    wall = _read_json(wall_path)
  results = {
      'tasks': per_task,
      'teacher_params': {t: dt.count_params(one_teacher) for t in tasks},
      'student_params': dt.count_params(student_params),
      'latency_ms': {
          'teacher_batch1': batch1_latency_ms(teacher, one_teacher),
          'student_batch1': batch1_latency_ms(student, student_params),
      },
      'curriculum': {'name': config.curriculum.name, 'counts': counts},
      'surgery': {
          'name': config.surgery.name,
          'projected_fraction': float(np.mean(history['surgery/projected']))
                                if len(history.get('surgery/projected', []))
                                else 0.0,
      },
      'wall_s': wall,
      'seed': config.seed,
      'student_checkpoint': which,
      'student_steps': int(config.student.steps),
      'teacher_steps': int(config.teacher.steps),
      'aggregate': {
          who: report.aggregate_scores(np.array(
              [[per_task[t][key] for t in tasks]]), reps=config.report.reps)
          for who, key in (('teacher', 'teacher_score'),
                           ('student', 'student_score'))},
  }
  kl = history.get('distill/kl', np.zeros((0, len(tasks))))
  report.write_report(workdir, results,
                      steps_N=history.get('step', np.zeros(0)),
                      kl_NxT=kl, choice_N=choice)
  write_stamp(workdir, config, 'report', done=True)
  logging.info('report: %s', os.path.join(workdir, 'report.md'))
  return True


STAGES: dict[str, Callable[[Any, str, Shared], bool | None]] = {
    'datasets': stage_datasets,
    'teachers': stage_teachers,
    'teacher_eval': stage_teacher_eval,
    'distill': stage_distill,
    'student_eval': stage_student_eval,
    'report': stage_report,
}


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs `config.stages` in order in `workdir`."""
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f'config.stages: unknown stages {unknown}; known:'
                     f' {list(STAGES)}')
  if 'distill' in config.stages:  # Refuse a bad combination before any work.
    distill_lib.check_config(config)
  os.makedirs(workdir, exist_ok=True)
  fileio.write_json(os.path.join(workdir, 'config.json'),
                    json.loads(config.to_json_best_effort()))
  shared = Shared(config, workdir)
  wall_path = os.path.join(workdir, 'wall_s.json')
  wall = {}
  if os.path.exists(wall_path):
    wall = _read_json(wall_path)
  try:
    for stage in config.stages:
      logging.info('stage %s', stage)
      start = time.time()
      ran = STAGES[stage](config, workdir, shared)
      seconds = time.time() - start
      logging.info('stage %s: %.1f s', stage, seconds)
      if ran is not False:  # A skipped stage keeps its earlier wall time.
        wall[stage] = seconds
        fileio.write_json(wall_path, wall)
  finally:
    shared.writer.close()


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's INFO chatter (several lines per save and restore)."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or (
        f'{os.sep}orbax{os.sep}' not in record.pathname)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'experiments/run.py: unexpected arguments {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietOrbax())
  logging.info('JAX devices: %s', jax.devices())
  run(_CONFIG.value, _WORKDIR.value)


if __name__ == '__main__':
  app.run(main)

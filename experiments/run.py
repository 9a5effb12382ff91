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
import tempfile
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
from distill.data import segments
from distill.data import sources
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
  """The dataset spec of a task: `config.data.spec` filled in."""
  return config.data.spec.format(task=task, quality=config.data.quality)


def load_datasets(config: ml_collections.ConfigDict) -> list[dict[str, Any]]:
  """Loads (generating on first use) the dataset of every task."""
  return [sources.load_dataset(dataset_spec(config, t),
                               clip_actions=config.data.clip_actions)
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
}
# Fields left out of the hash: a rerun with a new value continues instead of
# starting over (training resumes from the checkpoints).
RESUMABLE = ('teacher.steps', 'teacher.log_every', 'teacher.ckpt_every',
             'teacher.keep', 'teacher.steps_per_dispatch', 'teacher.vmap')
# Outputs (relative to the workdir) moved aside when the config changed.
OUTPUTS = {
    'datasets': ('datasets.json',),
    'teachers': ('teachers',),
    'teacher_eval': ('teachers/eval.json',),
}


def write_json(path: str, obj: Any) -> None:
  """Writes JSON atomically (temp file in the same directory, then rename)."""
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory, suffix='.tmp')
  with os.fdopen(fd, 'w', encoding='utf-8') as f:
    json.dump(obj, f, indent=1, sort_keys=True)
  os.replace(tmp, path)


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
  write_json(_stamp_path(workdir, stage), {
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
    return
  summary = {}
  for task, data in zip(config.tasks, shared.datasets):
    spec = dataset_spec(config, task)
    summary[task] = dataset_info.summarize(data, spec)
    logging.info('dataset %s: %s', spec, summary[task])
  write_json(out, summary)
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
    return
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
      return
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
  write_json(out, results)
  write_stamp(workdir, config, 'teacher_eval', done=True)


STAGES: dict[str, Callable[[Any, str, Shared], None]] = {
    'datasets': stage_datasets,
    'teachers': stage_teachers,
    'teacher_eval': stage_teacher_eval,
}


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs `config.stages` in order in `workdir`."""
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f'config.stages: unknown stages {unknown}; known:'
                     f' {list(STAGES)}')
  os.makedirs(workdir, exist_ok=True)
  write_json(os.path.join(workdir, 'config.json'),
             json.loads(config.to_json_best_effort()))
  shared = Shared(config, workdir)
  try:
    for stage in config.stages:
      logging.info('stage %s', stage)
      start = time.time()
      STAGES[stage](config, workdir, shared)
      logging.info('stage %s: %.1f s', stage, time.time() - start)
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

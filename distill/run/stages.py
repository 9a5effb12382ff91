"""The pipeline's stage table, and `run`, the entry of a run.

    datasets -> teachers -> teacher_eval -> distill -> student_eval -> report

`STAGES` declares each stage once: its body, the config fields its outputs
depend on, its outputs, what else it consumed (the datasets' fingerprints,
the upstream checkpoints' steps and content digests, upstream files'
SHA-256), how to tell that its outputs are complete, and the files whose
SHA-256 its stamp records. `distill.run.engine` runs the table: it skips a
stage whose outputs are up to date, moves stale or damaged outputs aside
and reruns it. Each body calls one library function (`pipeline`,
`train_teachers`) and writes what it returns.

Fields in `RESUMABLE` (e.g. `teacher.steps`) are left out of the hash: a
rerun continues training from the checkpoints, and what consumed the old
checkpoints reruns because its inputs changed. With `config.teacher_workdir`
set, the `shared` stages (the teachers) run in, and are skipped against,
that directory, so several runs (a sweep's members) share one set of
teachers; `TEACHER_STAGES` and `TEACHER_FIELDS` (what a sweep's teacher job
runs, and the fields it is keyed by) are derived from the table.

Before any stage, `check_config` and `check_workdir` refuse what cannot run
(field types and ranges, tasks, datasets' files and sizes, writable
directories, free disk space; see `distill.run.preflight`); this is the only
place a config is validated. During the run, SIGTERM and SIGINT stop it
cleanly (a training stage saves its checkpoint first; `distill.train.guards`),
and a rerun of the same command continues: a run killed at any point ends
with the same results as one never stopped.

To add a stage: write `_foo(run)`, add a `Stage` to `STAGES`.
"""

import contextlib
import functools
import hashlib
import json
import os
from typing import Any

from absl import logging
import jax
import ml_collections
import numpy as np

from distill.data import segments
from distill.envs import datasets as datasets_lib
from distill.io import fileio
from distill.io import lock
from distill.run import engine
from distill.run import pipeline
from distill.run import preflight
from distill.train import checkpointing
from distill.train import guards
from distill.train import logs
from distill.train import parallel
from distill.train import student as student_lib
from distill.train import teacher as teacher_lib


class _NoWriter:
  """The metric writer of a process that is not process 0: writes nothing."""

  def start_run(self, info):
    del info

  def write(self, step, metrics):
    del step, metrics

  def close(self):
    pass


class Run:
  """What the stages share: the config, the members' directories, and the
  data, writers and mesh, set up on first use (a rerun that skips every
  stage loads no dataset).

  A population (`config.seeds` with several seeds) keeps member `s`'s
  teachers, student, logs and report in `<workdir>/seed_<s>/`, laid out as
  a single-seed run's workdir (`pipeline.members`).
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.members = pipeline.members(config, workdir)
    self.population = len(self.members) > 1

  def each(self, values: list[Any]) -> Any:
    """Per-member values as the training loops take them: the list in a
    population, the one value in a single-seed run."""
    return values if self.population else values[0]

  def name(self, member: pipeline.Member, name: str) -> str:
    return f'seed_{member.seed}/{name}' if self.population else name

  def paths(self, rels: tuple[str, ...]) -> list[str]:
    """A stage's paths, `{member}` expanded: '' in a single-seed run, each
    member's `seed_<s>/` in a population (duplicates dropped)."""
    out = []
    for rel in rels:
      for m in (self.members if '{member}' in rel else self.members[:1]):
        path = rel.format(member=f'seed_{m.seed}/' if self.population else '')
        if path not in out:
          out.append(path)
    return out

  @functools.cached_property
  def writers(self) -> list[Any]:
    """One metric writer per member (process 0 only; others write none)."""
    if not parallel.is_main_process():
      return [_NoWriter() for _ in self.members]
    return [logs.MetricWriter(m.directory) for m in self.members]

  @functools.cached_property
  def run_writer(self) -> Any:
    """The run's own writer: the member's in a single-seed run."""
    if not self.population:
      return self.writers[0]
    return (logs.MetricWriter(self.workdir) if parallel.is_main_process()
            else _NoWriter())

  @functools.cached_property
  def placement(self) -> parallel.Placement:
    mesh_config = self.config.get('mesh') or ml_collections.ConfigDict(
        {'population': 0})
    shards = parallel.population_shards(mesh_config, len(self.members))
    return parallel.Placement(parallel.make_mesh(population=shards))

  @functools.cached_property
  def datasets(self) -> list[dict[str, Any]]:
    return pipeline.load_datasets(self.config)

  @functools.cached_property
  def stats(self) -> list[tuple[np.ndarray, np.ndarray]]:
    return [segments.state_stats(d) for d in self.datasets]

  @functools.cached_property
  def source(self) -> segments.SegmentSource:
    """The training segments, placed once on every device of the mesh."""
    return self.placement.replicated(
        pipeline.make_source(self.config.data, self.datasets, self.stats))

  @functools.cached_property
  def dataset_fingerprints(self) -> dict[str, Any]:
    return {t: datasets_lib.fingerprint(
        pipeline.dataset_spec(self.config, t),
        suite_transitions=self.config.data.get('suite_transitions'))
            for t in self.config.tasks}

  def close(self) -> None:
    if 'writers' in self.__dict__:
      for w in self.writers:
        w.close()
    if self.population and 'run_writer' in self.__dict__:
      self.run_writer.close()


def _log_result(run: Run, i: int, r: dict[str, Any], who: str,
                task: str) -> None:
  # Tasks that report success (Meta-World) log their success rate too.
  success = ('' if r.get('success_rate') is None
             else f', success {r["success_rate"]:.2f}')
  logging.info('%s%s (step %d) %s: normalized %.1f +- %.1f, return %.1f%s,'
               ' %.1f s', f'seed_{run.members[i].seed} ' if run.population
               else '', who, r['step'], task, r['normalized_mean'],
               r['normalized_std'], r['return_mean'], success, r['seconds'])
  scalars = {f'eval/{who}/{task}/normalized_score': r['normalized_mean'],
             f'eval/{who}/{task}/return': r['return_mean']}
  if r.get('success_rate') is not None:
    scalars[f'eval/{who}/{task}/success_rate'] = r['success_rate']
  run.writers[i].write(r['step'], scalars)


# The stage bodies: each calls one library function and writes its outputs.


def _datasets(run: Run) -> None:
  engine.write_json(os.path.join(run.workdir, 'datasets.json'),
                    pipeline.summarize_datasets(run.config, run.datasets))


def _teachers(run: Run) -> None:
  config = run.config
  teacher_lib.train_teachers(
      config.teacher, config.data, tasks=config.tasks, source=run.source,
      stats=run.stats, directory=run.each([m.teachers for m in run.members]),
      seed=run.each([m.seed for m in run.members]),
      writer=run.each(run.writers), placement=run.placement,
      members=parallel.population_mode(config.get('mesh')))


def _teacher_eval(run: Run) -> None:
  tasks = list(run.config.tasks)
  results = iter(pipeline.evaluate_teachers(run.config, [
      (t, d) for m in run.members for t, d in zip(tasks, m.teacher_dirs(tasks))
  ]))
  for i, m in enumerate(run.members):
    out = {task: next(results) for task in tasks}
    for task, r in out.items():
      _log_result(run, i, r, 'teacher', task)
    engine.write_json(os.path.join(m.teachers, 'eval.json'), out)


def _distill(run: Run) -> None:
  pipeline.distill(
      run.config, teachers=[m.teacher_dirs(run.config.tasks)
                            for m in run.members],
      datasets=run.datasets, stats=run.stats, source=run.source,
      directories=[m.student for m in run.members], writers=run.writers,
      placement=run.placement)


def _student_eval(run: Run) -> None:
  labels = ('last', 'best')
  results = iter(pipeline.evaluate_students(run.config, [
      (label, os.path.join(m.student, label)) for m in run.members
      for label in labels]))
  for i, m in enumerate(run.members):
    out = {label: next(results) for label in labels}
    for label, r in out.items():
      for task in run.config.tasks:
        _log_result(run, i, r[task], f'student_{label}', task)
    engine.write_json(os.path.join(m.student, 'eval.json'), out)


def _report(run: Run) -> None:
  pipeline.write_reports(run.config, run.workdir, run.members,
                         wall_s=engine.read_wall_times(run.workdir))
  logging.info('report: %s', os.path.join(run.workdir, 'report.md'))


# What a stage consumed, recorded in its stamp (`Stage.inputs`).


def _teacher_dirs(run: Run) -> dict[str, str]:
  tasks = run.config.tasks
  return {run.name(m, t): d for m in run.members
          for t, d in zip(tasks, m.teacher_dirs(tasks))}


def _student_dirs(run: Run) -> dict[str, str]:
  return {run.name(m, label): os.path.join(m.student, label)
          for m in run.members for label in ('last', 'best')}


def _fingerprints(dirs: dict[str, str]) -> dict[str, Any]:
  """Each checkpoint's step and content digest."""
  return {k: checkpointing.fingerprint(d) for k, d in dirs.items()}


def _digests(run: Run) -> dict[str, str | None]:
  """The SHA-256 of the files the report reads."""
  out = {}
  for directory, rels in (
      (run.workdir, ('datasets.json',)),
      (run.config.get('teacher_workdir') or run.workdir,
       ('{member}teachers/eval.json',)),
      (run.workdir, ('{member}student/eval.json',
                     '{member}student/history.npz'))):
    for rel in run.paths(rels):
      path = os.path.join(directory, rel)
      out[rel] = fileio.sha256_file(path) if os.path.isfile(path) else None
  return out


def _trained(run: Run) -> bool:
  return all(checkpointing.latest_step(d) == run.config.teacher.steps
             for d in _teacher_dirs(run).values())


def _distilled(run: Run) -> bool:
  return all(
      checkpointing.latest_step(os.path.join(m.student, 'last'))
      == run.config.student.steps and checkpointing.latest_step(
          os.path.join(m.student, 'best')) is not None for m in run.members)


_TEACHER = ('seed', 'tasks', 'data', 'teacher')
_STUDENT = _TEACHER + ('student', 'curriculum', 'surgery')
Stage = engine.Stage

STAGES: dict[str, Stage] = {
    'datasets': Stage(
        _datasets, ('tasks', 'data'), ('datasets.json',),
        inputs=lambda run: run.dataset_fingerprints,
        files=('datasets.json',)),
    'teachers': Stage(
        _teachers, _TEACHER, ('{member}teachers',), shared=True,
        inputs=lambda run: run.dataset_fingerprints, complete=_trained),
    'teacher_eval': Stage(
        _teacher_eval, _TEACHER + ('eval',), ('{member}teachers/eval.json',),
        inputs=lambda run: _fingerprints(_teacher_dirs(run)), shared=True,
        files=('{member}teachers/eval.json',)),
    'distill': Stage(
        _distill, _STUDENT, ('{member}student',),
        inputs=lambda run: {'teachers': _fingerprints(_teacher_dirs(run)),
                            'datasets': run.dataset_fingerprints},
        complete=_distilled, files=('{member}student/history.npz',)),
    'student_eval': Stage(
        _student_eval, _STUDENT + ('eval',), ('{member}student/eval.json',),
        inputs=lambda run: _fingerprints(_student_dirs(run)),
        files=('{member}student/eval.json',)),
    'report': Stage(
        _report, _STUDENT + ('eval', 'report'),
        ('{member}results.json', '{member}report.md', '{member}kl.png',
         '{member}curriculum.png', '{member}scores.png', 'results.json',
         'report.md'),
        inputs=lambda run: {'teachers': _fingerprints(_teacher_dirs(run)),
                            'student': _fingerprints(_student_dirs(run)),
                            'files': _digests(run)},
        complete=lambda run: False),  # Cheap; always rewritten.
}

# Fields left out of the hash: a rerun with a new value continues instead of
# starting over (training resumes from the checkpoints).
RESUMABLE = ('teacher.steps', 'teacher.log_every', 'teacher.ckpt_every',
             'teacher.keep', 'teacher.steps_per_dispatch', 'teacher.vmap',
             'student.steps', 'student.log_every', 'student.ckpt_every',
             'student.keep', 'student.steps_per_dispatch')
# Fields every stage reads but no stamp hashes: the members' seeds (hashed
# through `seed`, see `stage_config`) and how the members are placed on the
# devices (which changes no result).
RUN_FIELDS = ('seeds', 'mesh')
# A sweep's teacher job (`distill.run.sweeps`): the stages up to the last shared
# one, and the config fields they read, which key the teachers' sharing.
TEACHER_STAGES = tuple(list(STAGES)[:1 + max(
    i for i, s in enumerate(STAGES.values()) if s.shared)])
TEACHER_FIELDS = tuple(dict.fromkeys(
    [k for name in TEACHER_STAGES for k in STAGES[name].keys] +
    list(RUN_FIELDS)))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses a config that cannot run, before any work.

  Checks the stage names, then every field's type and range, the tasks and
  their datasets (`distill.run.preflight.check_config`), then the curriculum,
  surgery and loss combination. `run` calls it once, at the run's entry;
  nothing later validates the config again.

  Raises:
    ValueError: naming the field and what is wrong (`DatasetError`, a
      `ValueError`, for a dataset, naming the file); KeyError for a missing
      per-task entry.
  """
  unknown = [s for s in config.stages if s not in STAGES]
  if unknown:
    raise ValueError(f'config.stages: unknown stages {unknown}; known:'
                     f' {list(STAGES)}')
  if not config.tasks:
    raise ValueError('config.tasks: needs at least one task')
  seeds = pipeline.member_seeds(config)
  mesh = config.get('mesh')
  if mesh is not None:
    want = mesh.population
    if isinstance(want, bool) or not isinstance(want, int) or want < 0:
      raise ValueError(f'config.mesh.population={want!r}: an integer >= 0'
                       ' (0: as many devices as divide both the members and'
                       ' the devices)')
    n = jax.device_count()
    if want and (n % want or len(seeds) % want):
      raise ValueError(
          f'config.mesh.population={want} must divide both the'
          f' {len(seeds)} members (config.seeds={seeds}) and the {n}'
          ' devices')
    parallel.population_mode(mesh)  # names config.mesh.members if bad
  preflight.check_config(config)
  if 'student' in config:
    student_lib.check_config(config)


def _directory(run: Run, name: str) -> str:
  return ((run.config.get('teacher_workdir') or run.workdir)
          if STAGES[name].shared else run.workdir)


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir the run cannot use, before any work.

  Checks that the directories can be written and have room
  (`distill.run.preflight.check_workdir`), and that no teacher or student
  checkpoint that the run would continue is already past the configured
  steps (lowering `teacher.steps` cannot un-train a teacher).

  Raises:
    ValueError: naming the directory or the flag and what is wrong.
  """
  preflight.check_workdir(config, workdir)
  run = Run(config, workdir)
  for name, flag, dirs in (
      ('teachers', 'teacher.steps', _teacher_dirs(run)),
      ('distill', 'student.steps', {
          run.name(m, 'student'): os.path.join(m.student, 'last')
          for m in run.members})):
    if name not in config.stages or engine.stamp_config_hash(
        _directory(run, name), name) != stage_hash(config, name,
                                                   with_inputs=False):
      continue
    limit = config[flag.split('.')[0]].steps
    steps = {k: checkpointing.latest_step(d) for k, d in dirs.items()}
    ahead = {k: v for k, v in steps.items() if v is not None and v > limit}
    if ahead:
      raise ValueError(
          f'--config.{flag}={limit}: the checkpoints in {workdir} are already'
          f' at steps {ahead}; raise it to at least that, or use another'
          ' --workdir')


def stage_config(config: ml_collections.ConfigDict, stage: str
                 ) -> dict[str, Any]:
  """The part of the config a stage's outputs depend on (hashed)."""
  sub = {k: config[k].to_dict() if isinstance(config[k],
                                              ml_collections.ConfigDict)
         else config[k] for k in STAGES[stage].keys}
  sub = json.loads(json.dumps(sub, default=list))
  if 'seed' in sub:
    # The members: `--config.seed=1` and `--config.seeds=(1,)` are one run,
    # hashed as single-seed runs always were.
    seeds = pipeline.member_seeds(config)
    sub['seed'] = seeds[0] if len(seeds) == 1 else list(seeds)
  for dotted in RESUMABLE:
    head, _, leaf = dotted.partition('.')
    if head in sub:
      sub[head].pop(leaf, None)
  # Plain cloning (the default) is hashed as before %BC existed, so the
  # workdirs distilled then keep their stamps.
  if sub.get('student', {}).get('bc_top_fraction') == 1.0:
    del sub['student']['bc_top_fraction']
  return sub


def stage_hash(config: ml_collections.ConfigDict, stage: str,
               inputs: Any = None, *, with_inputs: bool = True) -> str:
  """Hash of a stage's config fields (and inputs), as its stamp holds it."""
  return engine.stage_hash(stage_config(config, stage), inputs,
                           with_inputs=with_inputs)


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs `config.stages` in order in `workdir`: the entry of a run.

  Everything that can be checked before any work is (`check_config`,
  `check_workdir`). SIGTERM and SIGINT stop the run cleanly: a training
  stage saves a checkpoint first (see `distill.train.guards`); the same
  command continues. `config.debug_nans` turns on `jax_debug_nans` for the
  run, which stops at the operation that makes a NaN.

  Args:
    config: the whole config.
    workdir: output directory (created).

  Only one run uses a workdir at a time: once the checks pass, process 0
  holds `<workdir>/.lock` until the run ends (`distill.io.lock`), and a
  second launch is refused before it changes anything.

  Raises:
    guards.Stopped: a stop signal; a `SystemExit` with status 128 + signal.
    lock.LockedError: another live run holds the workdir.
  """
  check_config(config)
  check_workdir(config, workdir)
  # The other processes of a multi-host run share the workdir by design.
  held = (lock.hold(workdir) if parallel.is_main_process()
          else contextlib.nullcontext())
  with held:
    os.makedirs(workdir, exist_ok=True)
    engine.write_json(os.path.join(workdir, 'config.json'),
                      json.loads(config.to_json_best_effort()))
    state = Run(config, workdir)
    state.run_writer.start_run({
        'config_hash': hashlib.sha256(config.to_json_best_effort(
            sort_keys=True).encode()).hexdigest()[:16],
        'stages': list(config.stages)})
    debug_nans = jax.config.jax_debug_nans
    jax.config.update('jax_debug_nans', bool(config.get('debug_nans')))
    try:
      with guards.handle_signals():
        engine.run_stages(
            STAGES, config.stages, state, workdir=workdir,
            shared_dir=config.get('teacher_workdir') or workdir,
            config=functools.partial(stage_config, config),
            paths=state.paths, fault=guards.fault)
    finally:
      jax.config.update('jax_debug_nans', debug_nans)
      state.close()

"""The pipeline's stages as one table, and the runner that skips or reruns them.

    datasets -> teachers -> teacher_eval -> distill -> student_eval -> report

Each `Stage` record names its function, the config fields its outputs depend
on, its outputs, what else it consumed (`inputs`: the datasets' fingerprints,
the upstream checkpoints' steps and content digests, upstream files' SHA-256)
and how to tell that its outputs are complete. A stage is skipped when
`<dir>/stamps/<stage>.json` holds the same hash of those config fields and
inputs, marked done, its outputs are complete and its files still match the
SHA-256 the stamp recorded. On a mismatch its outputs are moved aside
(`<name>.stale-<hash>[-n]`, never deleted, never overwritten) and it reruns;
a damaged output file is moved aside (`<name>.damaged[-n]`) and the stage
reruns; the log says so. Fields in `RESUMABLE` (e.g. `teacher.steps`) are
left out of the hash: a rerun continues training from the checkpoints, and
what consumed the old checkpoints reruns because its inputs changed.

Before any stage, `check_config` and `check_workdir` refuse what cannot run
(field types and ranges, tasks, datasets' files and sizes, writable
directories, free disk space; see `distill.preflight`). During the run,
SIGTERM and SIGINT stop it cleanly (a training stage saves its checkpoint
first; `distill.train.guards`), and a rerun of the same command continues:
a run killed at any point ends with the same results as one never stopped.

With `config.teacher_workdir` set, the teacher stages run in (and are skipped
against) that directory, so several runs (a sweep's members) share one set of
teachers.

To add a stage: write `_foo(ctx)`, add a `Stage` to `STAGES`.
"""

from collections.abc import Callable
import contextlib
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
from distill import datasets as datasets_lib
from distill import evaluation
from distill import fileio
from distill import lock
from distill import parallel
from distill import pipeline
from distill import preflight
from distill import report
from distill.data import scores
from distill.data import segments
from distill.data import summary as summary_lib
from distill.envs import tasks as tasks_lib
from distill.models import model as model_lib
from distill.train import distill_loop
from distill.train import guards
from distill.train import logs
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


class Context:
  """What the stages share: the config, the directories, and the setup that
  several stages use (datasets, statistics, device source, the mesh), built
  on first use.

  A population (`config.seeds` with several seeds) keeps member `s`'s
  teachers, student, logs and report in `<workdir>/seed_<s>/`, laid out as
  a single-seed run's workdir; a single-seed run is laid out as always.
  """

  def __init__(self, config: ml_collections.ConfigDict, workdir: str):
    self.config = config
    self.workdir = workdir
    self.teacher_workdir = config.get('teacher_workdir') or workdir
    self.seeds = pipeline.member_seeds(config)

  @property
  def population(self) -> bool:
    return len(self.seeds) > 1

  def member_dir(self, seed: int, teacher_side: bool = False) -> str:
    return pipeline.member_dir(
        self.teacher_workdir if teacher_side else self.workdir, seed,
        len(self.seeds))

  @functools.cached_property
  def writers(self) -> dict[int, Any]:
    """One metric writer per member (process 0 only; others write none)."""
    if not parallel.is_main_process():
      return {s: _NoWriter() for s in self.seeds}
    return {s: logs.MetricWriter(self.member_dir(s)) for s in self.seeds}

  @property
  def writer(self) -> Any:
    """The run's own metric writer (the first member's in a population is
    its own; the run's start is logged in the workdir)."""
    return self.writers[self.seeds[0]] if not self.population else (
        self.run_writer)

  @functools.cached_property
  def run_writer(self) -> Any:
    if not parallel.is_main_process():
      return _NoWriter()
    return logs.MetricWriter(self.workdir)

  @functools.cached_property
  def placement(self) -> parallel.Placement:
    mesh_config = self.config.get('mesh') or ml_collections.ConfigDict(
        {'population': 0})
    shards = parallel.population_shards(mesh_config, len(self.seeds))
    return parallel.Placement(parallel.make_mesh(population=shards))

  def path(self, rel: str, teacher_side: bool = False) -> str:
    return os.path.join(self.teacher_workdir if teacher_side else
                        self.workdir, rel)

  def teacher_dir(self, task: str, seed: int | None = None) -> str:
    seed = self.seeds[0] if seed is None else seed
    return os.path.join(self.member_dir(seed, True), 'teachers', task)

  def student_dir(self, seed: int | None = None) -> str:
    seed = self.seeds[0] if seed is None else seed
    return os.path.join(self.member_dir(seed), 'student')

  def _name(self, seed: int, name: str) -> str:
    return f'seed_{seed}/{name}' if self.population else name

  def teacher_steps(self) -> dict[str, int | None]:
    return {self._name(s, t): checkpointing.latest_step(
        self.teacher_dir(t, s)) for s in self.seeds for t in self.config.tasks}

  def student_steps(self) -> dict[str, int | None]:
    return {self._name(s, 'student'): checkpointing.latest_step(
        os.path.join(self.student_dir(s), 'last')) for s in self.seeds}

  def distilled(self) -> bool:
    return all(
        checkpointing.latest_step(os.path.join(self.student_dir(s), 'last'))
        == self.config.student.steps and checkpointing.latest_step(
            os.path.join(self.student_dir(s), 'best')) is not None
        for s in self.seeds)

  # What a stage consumed, recorded in its stamp (see `Stage.inputs`).

  def teacher_checkpoints(self) -> dict[str, Any]:
    return {self._name(s, t): checkpointing.fingerprint(self.teacher_dir(t, s))
            for s in self.seeds for t in self.config.tasks}

  def student_checkpoints(self) -> dict[str, Any]:
    return {self._name(s, label): checkpointing.fingerprint(
        os.path.join(self.student_dir(s), label))
            for s in self.seeds for label in ('last', 'best')}

  @functools.cached_property
  def dataset_fingerprints(self) -> dict[str, Any]:
    return {t: datasets_lib.fingerprint(
        pipeline.dataset_spec(self.config, t),
        suite_transitions=self.config.data.get('suite_transitions'))
            for t in self.config.tasks}

  def file_digest(self, rel: str, teacher_side: bool = False) -> str | None:
    path = self.path(rel, teacher_side)
    return fileio.sha256_file(path) if os.path.isfile(path) else None

  @functools.cached_property
  def datasets(self) -> list[dict[str, Any]]:
    return pipeline.load_datasets(self.config)

  @functools.cached_property
  def stats(self) -> list[tuple[np.ndarray, np.ndarray]]:
    return [segments.state_stats(d) for d in self.datasets]

  @functools.cached_property
  def source(self) -> segments.SegmentSource:
    # Placed once, on every device of the mesh.
    return self.placement.replicated(
        pipeline.make_source(self.config.data, self.datasets, self.stats))

  def close(self) -> None:
    for w in [*self.writers.values(), *(
        [self.run_writer] if self.population else [])]:
      w.close()


def _write_json(path: str, value: Any) -> None:
  """Process 0 writes; the others go on once it has."""
  if parallel.is_main_process():
    fileio.write_json(path, value)
  parallel.barrier(f'write:{path}')


def _member_outputs(ctx: 'Context', rels: tuple[str, ...]) -> list[str]:
  """A stage's paths, `{member}` expanded: '' in a single-seed run, each
  member's `seed_<s>/` in a population (duplicates dropped)."""
  out = []
  for rel in rels:
    for s in (ctx.seeds if '{member}' in rel else ctx.seeds[:1]):
      path = rel.format(member=f'seed_{s}/' if ctx.population else '')
      if path not in out:
        out.append(path)
  return out


_read_json = fileio.read_json


def _datasets(ctx: Context) -> None:
  out = {}
  for task, data in zip(ctx.config.tasks, ctx.datasets):
    spec = pipeline.dataset_spec(ctx.config, task)
    out[task] = summary_lib.summarize(data, spec)
    if 'normalized_return_mean' not in out[task]:
      # The spec's name does not say the task (e.g. a renamed D4RL file):
      # normalize with the task's own references (the score is linear).
      t = tasks_lib.get_task(task)
      out[task]['normalized_return_mean'] = float(scores.normalized_score(
          out[task]['return_mean'], (t.ref_min, t.ref_max)))
    logging.info('dataset %s: %s', spec, out[task])
  _write_json(os.path.join(ctx.workdir, 'datasets.json'), out)


def _teachers(ctx: Context) -> None:
  config = ctx.config
  dirs = [os.path.join(ctx.member_dir(s, True), 'teachers')
          for s in ctx.seeds]
  writers = [ctx.writers[s] for s in ctx.seeds]
  teacher_lib.train_teachers(
      config.teacher, config.data, tasks=config.tasks, source=ctx.source,
      stats=ctx.stats, directory=dirs if ctx.population else dirs[0],
      seed=list(ctx.seeds) if ctx.population else ctx.seeds[0],
      writer=writers if ctx.population else writers[0],
      placement=ctx.placement,
      members=parallel.population_mode(config.get('mesh')))


def _check_result(r: dict[str, Any], who: str, task: str, directory: str
                  ) -> None:
  bad = [k for k in ('normalized_mean', 'normalized_std', 'return_mean')
         if not np.isfinite(r[k])]
  if bad:
    raise FloatingPointError(
        f'{who} {task}: evaluating {directory} (step {r["step"]}) gave a'
        f' non-finite {bad[0]} ({r[bad[0]]}); the policy produced non-finite'
        ' actions. Nothing was written; the run stops here.')


def _log_result(ctx: Context, seed: int, r: dict[str, Any], who: str,
                task: str) -> None:
  # Tasks that report success (Meta-World) log their success rate too.
  success = ('' if r.get('success_rate') is None
             else f', success {r["success_rate"]:.2f}')
  logging.info('%s%s (step %d) %s: normalized %.1f +- %.1f, return %.1f%s,'
               ' %.1f s', f'seed_{seed} ' if ctx.population else '', who,
               r['step'], task, r['normalized_mean'], r['normalized_std'],
               r['return_mean'], success, r['seconds'])
  scalars = {f'eval/{who}/{task}/normalized_score': r['normalized_mean'],
             f'eval/{who}/{task}/return': r['return_mean']}
  if r.get('success_rate') is not None:
    scalars[f'eval/{who}/{task}/success_rate'] = r['success_rate']
  ctx.writers[seed].write(r['step'], scalars)


def _evaluate_units(ctx: Context, units: list[tuple[Any, ...]],
                    evaluate: Callable[..., dict[str, Any]]) -> list[Any]:
  """Runs `evaluate(*unit)` for this process's share of the units and
  gathers every result in every process (`parallel.my_share`)."""
  mine = {}
  for i in parallel.my_share(units):
    mine[i] = evaluate(*units[i])
  return parallel.gather_json(mine, len(units))


def _teacher_eval(ctx: Context) -> None:
  ec, tasks = ctx.config.eval, list(ctx.config.tasks)

  def one(seed, task):
    directory = ctx.teacher_dir(task, seed)
    start = time.time()
    r = evaluation.evaluate_checkpoint(
        directory, task_index=0, episodes=ec.episodes, num_envs=ec.num_envs,
        seed=ec.seed, deterministic=ec.deterministic,
        target_return=float(pipeline.task_value(ec.target_return, task,
                                                'eval.target_return')),
        max_episode_steps=ec.max_episode_steps)
    r['seconds'] = time.time() - start
    _check_result(r, 'teacher', task, directory)
    return r

  units = [(s, t) for s in ctx.seeds for t in tasks]
  results = _evaluate_units(ctx, units, one)
  for s in ctx.seeds:
    out = {}
    for (seed, task), r in zip(units, results):
      if seed == s:
        _log_result(ctx, s, r, 'teacher', task)
        out[task] = r
    _write_json(os.path.join(ctx.member_dir(s, True), 'teachers',
                             'eval.json'), out)


def _load_teachers(ctx: Context, seed: int):
  return pipeline.load_teachers([ctx.teacher_dir(t, seed)
                                 for t in ctx.config.tasks])


def _distill(ctx: Context) -> None:
  loaded = [_load_teachers(ctx, s) for s in ctx.seeds]
  teacher = loaded[0][0]
  clone = pipeline.make_clone_source(ctx.config, ctx.datasets, ctx.stats)
  clone = None if clone is None else ctx.placement.replicated(clone)
  if ctx.population:
    params = jax.tree.map(lambda *xs: np.stack(xs),
                          *[jax.device_get(p) for _, p in loaded])
    distill_loop.train_student(
        ctx.config, source=ctx.source, teacher=teacher,
        teacher_params_T=params, stats=ctx.stats,
        directory=[ctx.student_dir(s) for s in ctx.seeds],
        writer=[ctx.writers[s] for s in ctx.seeds],
        placement=ctx.placement, seeds=ctx.seeds, clone_source=clone)
  else:
    distill_loop.train_student(
        pipeline.member_config(ctx.config, ctx.seeds[0]), source=ctx.source,
        teacher=teacher, teacher_params_T=loaded[0][1], stats=ctx.stats,
        directory=ctx.student_dir(), writer=ctx.writers[ctx.seeds[0]],
        placement=ctx.placement, clone_source=clone)


def _student_eval(ctx: Context) -> None:
  ec, tasks = ctx.config.eval, list(ctx.config.tasks)
  targets = {t: float(pipeline.task_value(ec.target_return, t,
                                          'eval.target_return'))
             for t in tasks}

  def one(seed, label):
    directory = os.path.join(ctx.student_dir(seed), label)
    start = time.time()
    # All tasks side by side, one policy call per vector step.
    results = evaluation.evaluate_checkpoint_tasks(
        directory, episodes=ec.episodes, num_envs=ec.num_envs,
        target_returns=targets, seed=ec.seed, tasks=tasks,
        deterministic=ec.deterministic,
        max_episode_steps=ec.max_episode_steps)
    seconds = time.time() - start
    for task, r in results.items():
      r['seconds'] = seconds  # Of the evaluation of all tasks together.
      _check_result(r, f'student_{label}', task, directory)
    return results

  units = [(s, label) for s in ctx.seeds for label in ('last', 'best')]
  results = _evaluate_units(ctx, units, one)
  for s in ctx.seeds:
    out = {}
    for (seed, label), r in zip(units, results):
      if seed == s:
        for task in tasks:
          _log_result(ctx, s, r[task], f'student_{label}', task)
        out[label] = r
    _write_json(os.path.join(ctx.student_dir(s), 'eval.json'), out)


def _member_results(ctx: Context, seed: int, latency_ms: dict[str, float],
                    wall_s: dict[str, float]) -> dict[str, Any]:
  config, tasks = ctx.config, list(ctx.config.tasks)
  _, params_T = _load_teachers(ctx, seed)
  teacher_params = jax.tree.map(lambda x: x[0], params_T)
  _, student_params, _ = checkpointing.load_policy(
      os.path.join(ctx.student_dir(seed), 'last'))
  history = distill_loop.load_history(ctx.student_dir(seed))
  results = report.assemble_results(
      tasks=tasks,
      datasets=_read_json(os.path.join(ctx.workdir, 'datasets.json')),
      teachers=_read_json(os.path.join(ctx.member_dir(seed, True),
                                       'teachers', 'eval.json')),
      students=_read_json(os.path.join(ctx.student_dir(seed), 'eval.json')),
      which=config.report.student_checkpoint,
      teacher_params=model_lib.count_params(teacher_params),
      student_params=model_lib.count_params(student_params),
      latency_ms=latency_ms, history=history,
      curriculum=config.curriculum.name, surgery=config.surgery.name,
      wall_s=wall_s, seed=seed, student_steps=config.student.steps,
      teacher_steps=config.teacher.steps, reps=config.report.reps)
  if parallel.is_main_process():
    report.write_report(ctx.member_dir(seed), results,
                        steps_N=history.get('step', np.zeros(0)),
                        kl_NxT=history.get('distill/kl',
                                           np.zeros((0, len(tasks)))),
                        choice_N=history.get('curriculum/choice',
                                             np.zeros(0, np.int32)))
  return results


def _report(ctx: Context) -> None:
  teacher, params_T = _load_teachers(ctx, ctx.seeds[0])
  student, student_params, _ = checkpointing.load_policy(
      os.path.join(ctx.student_dir(), 'last'))
  # The same modules in every member: their latency is measured once.
  latency_ms = {
      'teacher_batch1': evaluation.batch1_latency_ms(
          teacher, jax.tree.map(lambda x: x[0], params_T)),
      'student_batch1': evaluation.batch1_latency_ms(student,
                                                     student_params)}
  wall_path = os.path.join(ctx.workdir, 'wall_s.json')
  wall_s = _read_json(wall_path) if os.path.exists(wall_path) else {}
  members = [_member_results(ctx, s, latency_ms, wall_s) for s in ctx.seeds]
  if ctx.population and parallel.is_main_process():
    report.write_population_report(ctx.workdir, members,
                                   reps=ctx.config.report.reps)
  parallel.barrier('stage report')
  logging.info('report: %s', os.path.join(ctx.workdir, 'report.md'))


class Stage(NamedTuple):
  """One stage of the pipeline.

  Attributes:
    run: does the work, writing the outputs.
    keys: config fields its outputs depend on (hashed into the stamp).
    outputs: paths its outputs live at, relative to its directory; moved
      aside when the config or inputs change.
    inputs: what else it consumed (dataset fingerprints, the upstream
      checkpoints' steps and digests, upstream files' digests); a change
      reruns the stage like a config change.
    complete: whether the outputs on disk are complete (a stamp marked done
      is also required).
    teacher_side: lives in `config.teacher_workdir` when that is set.
    files: files whose SHA-256 the stamp records when the stage is done; a
      file that no longer matches is moved aside and the stage reruns.

  In `outputs` and `files`, `{member}` is '' in a single-seed run and each
  member's `seed_<s>/` in a population.
  """

  run: Callable[[Context], None]
  keys: tuple[str, ...]
  outputs: tuple[str, ...]
  inputs: Callable[[Context], Any] = lambda ctx: None
  complete: Callable[[Context], bool] = lambda ctx: True
  teacher_side: bool = False
  files: tuple[str, ...] = ()


_TEACHER = ('seed', 'tasks', 'data', 'teacher')
_STUDENT = _TEACHER + ('student', 'curriculum', 'surgery')

STAGES: dict[str, Stage] = {
    'datasets': Stage(
        _datasets, ('tasks', 'data'), ('datasets.json',),
        inputs=lambda ctx: ctx.dataset_fingerprints,
        files=('datasets.json',)),
    'teachers': Stage(
        _teachers, _TEACHER, ('{member}teachers',), teacher_side=True,
        inputs=lambda ctx: ctx.dataset_fingerprints,
        complete=lambda ctx: all(s == ctx.config.teacher.steps
                                 for s in ctx.teacher_steps().values())),
    'teacher_eval': Stage(
        _teacher_eval, _TEACHER + ('eval',), ('{member}teachers/eval.json',),
        inputs=lambda ctx: ctx.teacher_checkpoints(), teacher_side=True,
        files=('{member}teachers/eval.json',)),
    'distill': Stage(
        _distill, _STUDENT, ('{member}student',),
        inputs=lambda ctx: {'teachers': ctx.teacher_checkpoints(),
                            'datasets': ctx.dataset_fingerprints},
        complete=lambda ctx: ctx.distilled(),
        files=('{member}student/history.npz',)),
    'student_eval': Stage(
        _student_eval, _STUDENT + ('eval',), ('{member}student/eval.json',),
        inputs=lambda ctx: ctx.student_checkpoints(),
        files=('{member}student/eval.json',)),
    'report': Stage(
        _report, _STUDENT + ('eval', 'report'),
        ('{member}results.json', '{member}report.md', '{member}kl.png',
         '{member}curriculum.png', '{member}scores.png', 'results.json',
         'report.md'),
        inputs=lambda ctx: {
            'teachers': ctx.teacher_checkpoints(),
            'student': ctx.student_checkpoints(),
            'files': {rel: ctx.file_digest(rel, side) for side, rels in (
                (False, ('datasets.json',)),
                (True, ('{member}teachers/eval.json',)),
                (False, ('{member}student/eval.json',
                         '{member}student/history.npz')))
                      for rel in _member_outputs(ctx, rels)}},
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

  Checks the stage names, then every field's type and range, the tasks and
  their datasets (`distill.preflight.check_config`), then the curriculum,
  surgery and loss combination.

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
  if mesh is not None:
    parallel.population_mode(mesh)  # names config.mesh.members if bad
  preflight.check_config(config)
  if 'student' in config:
    student_lib.check_config(config)


def check_workdir(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Refuses a workdir the run cannot use, before any work.

  Checks that the directories can be written and have room
  (`distill.preflight.check_workdir`), and that no teacher or student
  checkpoint that the run would continue is already past the configured
  steps (lowering `teacher.steps` cannot un-train a teacher).

  Raises:
    ValueError: naming the directory or the flag and what is wrong.
  """
  preflight.check_workdir(config, workdir)
  ctx = Context(config, workdir)
  for name, flag, steps in (
      ('teachers', 'teacher.steps', ctx.teacher_steps),
      ('distill', 'student.steps', ctx.student_steps)):
    if name not in config.stages or _stamp_hash(ctx, name) != stage_hash(
        config, name, None, with_inputs=False):
      continue
    limit = config[flag.split('.')[0]].steps
    ahead = {k: v for k, v in steps().items() if v is not None and v > limit}
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


def _stamp_path(directory: str, stage: str) -> str:
  return os.path.join(directory, 'stamps', f'{stage}.json')


def stage_hash(config: ml_collections.ConfigDict, stage: str,
               inputs: Any = None, *, with_inputs: bool = True) -> str:
  """Hash of a stage's config fields (and inputs)."""
  blob = json.dumps([stage_config(config, stage)]
                    + ([inputs] if with_inputs else []), sort_keys=True)
  return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _stamp_hash(ctx: Context, name: str) -> str | None:
  """The config-only hash in a stage's stamp (None: none or unreadable)."""
  path = _stamp_path(ctx.path('', STAGES[name].teacher_side), name)
  try:
    return fileio.read_json(path).get('config_hash')
  except (OSError, fileio.DamagedFileError, AttributeError):
    return None


_move_aside = fileio.move_aside


def _read_stamp(path: str, name: str) -> dict[str, Any] | None:
  """The stamp at `path`, or None; a damaged one is moved aside (warned)."""
  if not os.path.exists(path):
    return None
  try:
    stamp = fileio.read_json(path)
    if isinstance(stamp, dict) and {'hash', 'done'} <= set(stamp):
      return stamp
    problem = f'lacks its fields (has {sorted(stamp)[:5]})'
  except fileio.DamagedFileError as e:
    problem = str(e)
  moved = _move_aside(path, 'damaged') if parallel.is_main_process() else path
  parallel.barrier(f'stage {name}: damaged stamp')
  logging.warning('stage %s: its stamp %s %s; moved it to %s', name, path,
                  problem, moved)
  return {'hash': 'unknown', 'done': False}


def _outputs_problem(directory: str, stamp: dict[str, Any]) -> str | None:
  for rel, digest in stamp.get('files', {}).items():
    path = os.path.join(directory, rel)
    if not os.path.isfile(path):
      return f'{path} is missing'
    if fileio.sha256_file(path) != digest:
      return f'{path} is damaged (its SHA-256 differs from the stamp)'
  return None


def run_stage(ctx: Context, name: str) -> bool:
  """Runs one stage unless its outputs are up to date.

  Returns:
    Whether it ran.
  """
  stage, config = STAGES[name], ctx.config
  directory = ctx.teacher_workdir if stage.teacher_side else ctx.workdir
  path = _stamp_path(directory, name)
  stamp = _read_stamp(path, name)
  inputs = stage.inputs(ctx)
  current = stage_hash(config, name, inputs)
  outputs = _member_outputs(ctx, stage.outputs)
  existing = [rel for rel in outputs
              if os.path.lexists(os.path.join(directory, rel))]
  if (stamp is None and existing) or (stamp is not None
                                      and stamp['hash'] != current):
    old = stamp['hash'] if stamp else 'unknown'
    logging.warning('stage %s: config or inputs changed since the last run'
                    ' (hash %s -> %s); moving its outputs aside and'
                    ' rerunning', name, old, current)
    if parallel.is_main_process():
      for rel in existing:
        stale = _move_aside(os.path.join(directory, rel),
                            f'stale-{old[:8]}')
        logging.warning('stage %s: moved %s/%s to %s', name, directory, rel,
                        stale)
      if os.path.exists(path):
        _move_aside(path, f'stale-{old[:8]}')
    parallel.barrier(f'stage {name}: stale')
    stamp = None
  if stamp is not None and stamp['done']:
    problem = _outputs_problem(directory, stamp)
    if problem is None and stage.complete(ctx):
      logging.info('stage %s: up to date, skipped', name)
      return False
    if problem is not None:
      for rel in stamp.get('files', {}):
        if os.path.exists(os.path.join(directory, rel)) and (
            parallel.is_main_process()):
          _move_aside(os.path.join(directory, rel), 'damaged')
      parallel.barrier(f'stage {name}: damaged')
      logging.warning('stage %s: %s; moved aside, rerunning the stage', name,
                      problem)
  record = {'stage': name, 'hash': current,
            'config_hash': stage_hash(config, name, with_inputs=False),
            'config': stage_config(config, name), 'inputs': inputs}
  _write_json(path, {**record, 'done': False, 'time': time.time()})
  guards.fault(f'stage/{name}/start')
  stage.run(ctx)
  guards.fault(f'stage/{name}/end')
  files = {rel: fileio.sha256_file(os.path.join(directory, rel))
           for rel in _member_outputs(ctx, stage.files)
           if os.path.isfile(os.path.join(directory, rel))}
  _write_json(path, {**record, 'done': True, 'time': time.time(),
                     'files': files})
  return True


def run(config: ml_collections.ConfigDict, workdir: str) -> None:
  """Runs `config.stages` in order in `workdir`.

  Everything that can be checked before any work is (`check_config`,
  `check_workdir`). SIGTERM and SIGINT stop the run cleanly: a training
  stage saves a checkpoint first (see `distill.train.guards`); the same
  command continues. `config.debug_nans` turns on `jax_debug_nans` for the
  run, which stops at the operation that makes a NaN.

  Args:
    config: the whole config.
    workdir: output directory (created).

  Only one run uses a workdir at a time: once the checks pass, process 0
  holds `<workdir>/.lock` until the run ends (`distill.lock`), and a
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
    _run_checked(config, workdir)


def _run_checked(config: ml_collections.ConfigDict, workdir: str) -> None:
  """`run` after its checks, with the workdir held."""
  os.makedirs(workdir, exist_ok=True)
  _write_json(os.path.join(workdir, 'config.json'),
              json.loads(config.to_json_best_effort()))
  ctx = Context(config, workdir)
  ctx.writer.start_run({
      'config_hash': hashlib.sha256(config.to_json_best_effort(
          sort_keys=True).encode()).hexdigest()[:16],
      'stages': list(config.stages)})
  wall_path = os.path.join(workdir, 'wall_s.json')
  try:
    wall = _read_json(wall_path) if os.path.exists(wall_path) else {}
  except fileio.DamagedFileError as e:
    moved = (_move_aside(wall_path, 'damaged')
             if parallel.is_main_process() else wall_path)
    logging.warning('%s; moved it to %s and starting the wall times afresh',
                    e, moved)
    wall = {}
  debug_nans = jax.config.jax_debug_nans
  jax.config.update('jax_debug_nans', bool(config.get('debug_nans')))
  try:
    with guards.handle_signals():
      for name in config.stages:
        logging.info('stage %s', name)
        start = time.time()
        try:
          ran = run_stage(ctx, name)
        except guards.Stopped as e:
          if e.where == 'the run':
            e.where = f'stage {name}'
          logging.warning('%s', e)
          raise
        if ran:  # A skipped stage keeps its earlier time.
          wall[name] = time.time() - start
          _write_json(wall_path, wall)
        logging.info('stage %s: %.1f s', name, time.time() - start)
  finally:
    jax.config.update('jax_debug_nans', debug_nans)
    ctx.close()

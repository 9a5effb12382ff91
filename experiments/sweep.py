r"""Runs every member of a config's sweep through submitit, then aggregates.

  python -m experiments.sweep --config=configs/study.py --workdir=runs/study
  python -m experiments.sweep --config=configs/study.py:smoke \
      --workdir=runs/smoke --parallel=2
  python -m experiments.sweep --config=configs/study.py --workdir=runs/study \
      --executor=slurm --parallel=64 --slurm_partition=gpu --gpus_per_job=1
  python -m experiments.sweep --config=configs/study.py --workdir=runs/study \
      --print

The config module defines `get_sweep(arg)` (see distill/run/sweeps.py). Every
job is the plain command line that `--print` shows (run them from the same
directory, teachers first, with any other scheduler):

  1. one teacher job per distinct teacher configuration and seed,
     `python -m experiments.run --config=... --workdir=DIR/teachers/<name>
     --config.seed=... \
     "--config.stages=('datasets','teachers','teacher_eval')"`;
  2. every member, `python -m experiments.run --config=...
     --workdir=DIR/members/<name> --config.<field>=<value> ...
     --config.teacher_workdir=DIR/teachers/<name>`, as soon as its teachers
     are done, before any teacher job still waiting (a sweep cut short
     leaves whole seeds); at most `--parallel` jobs run at once.

Executors (submitit): `local` (subprocesses on this machine, the default),
`slurm` (`sbatch`; needs SLURM), `debug` (in this process, one at a time: for
tests). A job's output goes to `<its workdir>/sweep_job.log`; the sweep's
state (each job's command, status, log, wall time) to
`DIR/sweep_state.json`. The jobs share one JAX compilation cache,
`DIR/jax_cache` (`--compilation_cache`; an inherited
`JAX_COMPILATION_CACHE_DIR` wins): members of one configuration and seeds of
one method compile the same programs, and a cached executable is the same
executable, so results do not change. A rerun skips finished jobs and reruns
the others, which resume from their checkpoints; a failed job is reported with
its log and does not stop the others (members of a failed teacher job fail
without running), and the sweep then exits with status 1. A sweep launched
again while jobs of an earlier launch still run on this host (their
records' pids alive) does not start them a second time: it waits for each
and adopts its result (done: kept; ended unfinished: run again), running
the other jobs meanwhile. With `--publish=DEST`, a sweep started in an
empty directory (a fresh machine, a new session) resumes the published
study: members already in `DEST/members.jsonl`, done at the same recipe
hash (config less paths), do not run again, nor do teacher jobs needed by
no other member (`mark_published`). At the end the
finished members are aggregated (`python -m experiments.aggregate DIR`:
`sweep.json`, `sweep.md`, plots).
"""

import math
import os
import shlex
import shutil
import subprocess
import sys
import time
from typing import Any

from absl import app
from absl import flags
from absl import logging
import submitit

from experiments import publish
from experiments import relaunch
from distill.io import fileio
from distill.report import sweep_summary
from distill.run import cost
from distill.run import provenance
from distill.run import sweeps

FLAGS = flags.FLAGS


def define_flags() -> None:
  """Defines the command's flags, only when it runs as a command (tests
  import this module beside other commands that define flags of the same
  names)."""
  flags.DEFINE_string(
      'config', None, 'Config file with get_sweep(), `path[:arg]`.',
      required=True)
  flags.DEFINE_string('workdir', None, 'Sweep directory.',
                      required=True)
  flags.DEFINE_enum('executor', 'local', ['local', 'slurm', 'debug'],
                    'submitit executor.')
  flags.DEFINE_integer('parallel', 1, 'Jobs running at once.')
  flags.DEFINE_bool('print', False, 'Print the command lines (teachers'
                    ' first) and their estimated machine time'
                    ' (distill/run/cost.py) instead of running them.')
  flags.DEFINE_integer('timeout_min', 24 * 60,
                       'Time limit of one job, in minutes.')
  flags.DEFINE_string('slurm_partition', '',
                      'SLURM partition (--executor=slurm).')
  flags.DEFINE_integer('gpus_per_job', 0, 'GPUs per job (SLURM); the'
                       ' local executor leaves CUDA_VISIBLE_DEVICES as'
                       ' it is.')
  flags.DEFINE_string(
      'publish', '', 'Directory (inside the repository) that receives each'
      " finished member's results, record and curves (one line of its"
      ' members.jsonl each) and the aggregate (see experiments/publish.py);'
      ' "" publishes nothing.')
  flags.DEFINE_bool(
      'publish_commit', False, 'git-commit --publish after each member, so'
      ' the results of an interrupted sweep are kept.')
  flags.DEFINE_float(
      'publish_aggregate_s', 0.0, 'Re-aggregate the --publish directory at'
      ' most once per this many seconds (0: after every member); the end of'
      " the sweep always does. Aggregating a large study costs about a"
      " minute of CPU, which a member's publishing otherwise takes from the"
      ' running jobs.')
  flags.DEFINE_bool(
      'allow_dirty', False, 'Publish (--publish) even when the working tree'
      ' has uncommitted changes outside the sweep and publish directories;'
      ' without it the sweep refuses to start and a member that ran in a'
      ' dirty tree is not published. Each member records its commit and'
      ' changed files either way (sweep_job.json `code`).')
  flags.DEFINE_bool(
      'compilation_cache', True, "Give the jobs one JAX compilation cache in"
      ' DIR/jax_cache (unless JAX_COMPILATION_CACHE_DIR is set).')
  flags.DEFINE_string('baseline', None, 'Configuration the others'
                      " are compared with (default: the sweep's).")


POLL_S = 2.0
PROGRESS_EVERY_S = 60.0


def check_flags() -> None:
  """Refuses bad flag values before any work."""
  if FLAGS.parallel < 1:
    raise app.UsageError(f'--parallel={FLAGS.parallel}: must be >= 1')
  if FLAGS.timeout_min < 1:
    raise app.UsageError(f'--timeout_min={FLAGS.timeout_min}: must be >= 1')
  if FLAGS.gpus_per_job < 0:
    raise app.UsageError(f'--gpus_per_job={FLAGS.gpus_per_job}: must be >= 0')
  if FLAGS.publish_aggregate_s < 0:
    raise app.UsageError(f'--publish_aggregate_s={FLAGS.publish_aggregate_s}:'
                         ' must be >= 0')
  if FLAGS.publish_commit and not FLAGS.publish:
    raise app.UsageError('--publish_commit needs --publish=DIR')
  if FLAGS.publish:
    near = os.path.abspath(FLAGS.publish)
    while not os.path.isdir(near):
      near = os.path.dirname(near)
    inside = subprocess.run(['git', '-C', near, 'rev-parse', '--git-dir'],
                            capture_output=True, text=True, check=False)
    if FLAGS.publish_commit and inside.returncode:
      raise app.UsageError(f'--publish={FLAGS.publish}: not inside a git'
                           ' repository, so --publish_commit cannot commit'
                           ' it')
    if not FLAGS.allow_dirty and not FLAGS.print:
      try:
        publish.check_clean(os.getcwd(), (FLAGS.publish, FLAGS.workdir))
      except publish.DirtyTreeError as e:
        raise app.UsageError(f'--publish={FLAGS.publish}: {e}') from e
  missing = [c for c in ('sbatch', 'srun') if shutil.which(c) is None]
  if FLAGS.executor == 'slurm' and not FLAGS.print and missing:
    raise app.UsageError(f'--executor=slurm: {" and ".join(missing)} not on'
                         ' PATH (no SLURM here); use --executor=local or'
                         ' --print')


def make_executor(folder: str) -> submitit.Executor:
  """The submitit executor named by --executor."""
  if FLAGS.executor == 'debug':
    return submitit.DebugExecutor(folder)
  if FLAGS.executor == 'local':
    executor = submitit.LocalExecutor(folder)
    executor.update_parameters(timeout_min=FLAGS.timeout_min)
    return executor
  executor = submitit.AutoExecutor(folder, cluster='slurm')
  params = dict(timeout_min=FLAGS.timeout_min, gpus_per_node=FLAGS.gpus_per_job,
                name='distill-sweep')
  if FLAGS.slurm_partition:
    params['slurm_partition'] = FLAGS.slurm_partition
  executor.update_parameters(**params)
  return executor


def job_env(executor: str, parallel: int, cache_dir: str | None
            ) -> dict[str, str | None]:
  """Environment updates for the jobs' commands (None unsets a variable).

  Args:
    executor: --executor.
    parallel: --parallel.
    cache_dir: the shared JAX compilation cache, or None for none.

  Returns:
    The variables to set or unset.
  """
  env = {}
  if cache_dir and 'JAX_COMPILATION_CACHE_DIR' not in os.environ:
    env['JAX_COMPILATION_CACHE_DIR'] = cache_dir
  if executor != 'local':
    return env
  # submitit's local executor hides every GPU from a job that asks for none;
  # give the command this process's view back.
  env['CUDA_VISIBLE_DEVICES'] = os.environ.get('CUDA_VISIBLE_DEVICES')
  if parallel > 1 and 'XLA_PYTHON_CLIENT_PREALLOCATE' not in os.environ:
    # Several JAX processes on one GPU: each must not claim 75% of it.
    env['XLA_PYTHON_CLIENT_PREALLOCATE'] = 'false'
  return env


def shell_line(command: list[str]) -> str:
  """`command` for a POSIX shell, double-quoting tuples for readability."""
  out = []
  for arg in command:
    if shlex.quote(arg) != arg and not set(arg) & set('"$`\\!'):
      out.append(f'"{arg}"')
    else:
      out.append(shlex.quote(arg))
  return ' '.join(out)


def _fmt_s(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  return f'{seconds // 60}m{seconds % 60:02d}s'


# A job's statuses that need no run: done now, finished in this sweep
# directory earlier ('skipped'), or already in the --publish directory
# ('published', `mark_published`).
FINISHED = ('done', 'skipped', 'published')


class Sweep:
  """The state of a running sweep: each job's status and record."""

  def __init__(self, root: str, teachers: list[sweeps.Job],
               members: list[sweeps.Job], info: dict[str, Any]):
    self.root, self.info = root, info
    self.jobs = teachers + members
    self.by_name = {(j.kind, j.name): j for j in self.jobs}
    self.status, self.records, self.started = {}, {}, {}
    for job in self.jobs:
      key = (job.kind, job.name)
      self.records[key] = sweeps.read_record(job) or {}
      self.status[key] = 'skipped' if sweeps.is_finished(job) else 'pending'
    self.durations = {'teacher': [], 'member': []}
    self.on_done = None  # called with each job that finishes well
    # Jobs an earlier launch still runs on this host: key -> its pid. This
    # launch waits for them and adopts what they leave (`relaunch.adopt`).
    self.earlier = {}
    self.ignore_dirty = []  # paths whose changes are results, not code

  def write_state(self) -> None:
    counts = {}
    for s in self.status.values():
      counts[s] = counts.get(s, 0) + 1
    jobs = []
    for job in self.jobs:
      key = (job.kind, job.name)
      rec = self.records[key]
      jobs.append({
          'name': job.name, 'kind': job.kind,
          'configuration': job.configuration, 'seed': job.seed,
          'overrides': job.overrides, 'teacher': job.teacher,
          'workdir': job.workdir, 'command': job.command,
          'shell': shell_line(job.command), 'status': self.status[key],
          'log': job.log, 'wall_s': rec.get('wall_s'),
          'error': rec.get('error', '')})
    fileio.write_json(os.path.join(self.root, sweeps.STATE), {
        **self.info, 'updated': time.time(), 'counts': counts, 'jobs': jobs})

  def eta_s(self, parallel: int) -> float | None:
    """Seconds left: mean duration so far per kind, over `parallel` slots."""
    mean = {k: sum(v) / len(v) for k, v in self.durations.items() if v}
    if not mean:
      return None
    left = 0.0
    for key, status in self.status.items():
      est = mean.get(key[0], next(iter(mean.values())))
      if status == 'pending':
        left += est
      elif status == 'running':
        left += max(est - (time.time() - self.started[key]), 0.0)
    return left / parallel

  def progress(self, parallel: int) -> str:
    parts = []
    for kind in ('teacher', 'member'):
      st = [s for k, s in self.status.items() if k[0] == kind]
      done = sum(s in FINISHED for s in st)
      parts.append(f'{kind}s {done}/{len(st)} done,'
                   f' {st.count("running")} running,'
                   f' {st.count("failed")} failed')
    eta = self.eta_s(parallel)
    return ('sweep: ' + '; '.join(parts) + '; ETA '
            + ('unknown' if eta is None else _fmt_s(eta)))


def _launch(sweep: Sweep, running: dict, executor: submitit.Executor,
            parallel: int, env: dict[str, str | None]) -> bool:
  """Submits the ready jobs, up to `parallel` running; True if any changed.

  Members whose teachers are trained go before teacher jobs still to run,
  so a sweep cut short (a session's end, a machine handed back) leaves
  whole seeds finished rather than teachers whose members never ran: on
  a fresh machine a published member needs nothing, an unfinished one its
  teachers trained again.
  """
  changed = False
  ready = lambda j: (j.kind == 'member' and sweep.status[
      ('teacher', j.teacher)] in FINISHED)
  order = ([j for j in sweep.jobs if ready(j)]
           + [j for j in sweep.jobs if not ready(j)])
  for job in order:
    key = (job.kind, job.name)
    if len(running) + len(sweep.earlier) >= parallel:
      break
    if sweep.status[key] != 'pending':
      continue
    pid = relaunch.earlier_pid(job)
    if pid is not None:
      # Running the job again beside the earlier process would write the
      # same workdir twice; wait for it and take its result instead.
      sweep.earlier[key] = pid
      sweep.status[key], sweep.started[key] = 'running', time.time()
      logging.info('waiting for %s %s: an earlier launch still runs it (pid'
                   ' %d)', job.kind, job.name, pid)
      changed = True
      continue
    if job.kind == 'member':
      teacher = sweep.by_name[('teacher', job.teacher)]
      t_status = sweep.status[('teacher', job.teacher)]
      if t_status == 'failed':
        sweep.status[key] = 'failed'
        sweep.records[key] = {'error': f'teacher job {teacher.name} failed'
                                       f' (log: {teacher.log})'}
        logging.error('member %s not run: teacher job %s failed; log: %s',
                      job.name, teacher.name, teacher.log)
        changed = True
        continue
      if t_status not in FINISHED:
        continue
    running[key] = executor.submit(
        sweeps.run_job, job, cwd=os.getcwd(), env_updates=env,
        ignore_dirty=sweep.ignore_dirty)
    sweep.status[key], sweep.started[key] = 'running', time.time()
    logging.info('started %s %s: %s', job.kind, job.name,
                 shell_line(job.command))
    changed = True
  return changed


def _collect(sweep: Sweep, running: dict) -> bool:
  """Records the finished jobs; True if any finished."""
  changed = False
  for key, sj in list(running.items()):
    if not sj.done():
      continue
    job = sweep.by_name[key]
    try:
      record = sj.result()
    except Exception as e:  # pylint: disable=broad-except
      # The job engine lost the job (killed, out of memory, timeout).
      record = {**(sweeps.read_record(job) or {}), 'status': 'failed',
                'error': f'{type(e).__name__}: {str(e)[-500:]}',
                'wall_s': time.time() - sweep.started[key]}
    del running[key]
    sweep.status[key], sweep.records[key] = record['status'], record
    sweep.durations[job.kind].append(record['wall_s'])
    if record['status'] == 'failed':
      logging.error('%s %s FAILED (%s); log: %s', job.kind, job.name,
                    record['error'], job.log)
    else:
      logging.info('%s %s done in %s', job.kind, job.name,
                   _fmt_s(record['wall_s']))
      if sweep.on_done is not None:
        sweep.on_done(job)
    changed = True
  return changed


def run_jobs(sweep: Sweep, executor: submitit.Executor, parallel: int,
             env: dict[str, str | None]) -> None:
  """Runs the pending jobs, each teacher job before its members.

  Args:
    sweep: the sweep's jobs and their status (updated in place).
    executor: where the jobs run.
    parallel: the most jobs running at once.
    env: environment updates for the jobs' commands.
  """
  running = {}
  last_progress = time.time()
  logging.info('%s', sweep.progress(parallel))
  try:
    while True:
      changed = _collect(sweep, running)
      changed = relaunch.adopt(sweep) or changed
      changed = _launch(sweep, running, executor, parallel, env) or changed
      if changed:
        sweep.write_state()
      if changed or time.time() - last_progress > PROGRESS_EVERY_S:
        logging.info('%s', sweep.progress(parallel))
        last_progress = time.time()
      if not running and not sweep.earlier:
        break
      if not changed:
        time.sleep(POLL_S)
  except KeyboardInterrupt:
    for key, sj in running.items():
      sj.cancel(check=False)
      sweep.status[key] = 'pending'
    for key in sweep.earlier:  # Not ours to cancel.
      sweep.status[key] = 'pending'
    sweep.write_state()
    logging.error('interrupted; %d running jobs cancelled (a rerun resumes'
                  ' them)', len(running))
    raise


def aggregate_sweep(root: str, baseline: str, reps: int, *,
                    strict: bool) -> str | None:
  """Writes `sweep.json`, `sweep.md` and plots; returns sweep.md's path.

  Args:
    root: the sweep directory.
    baseline: configuration to compare with ('' for none).
    reps: bootstrap replications.
    strict: raise when the baseline has no results (else compare with none).
  """
  _, runs, missing = sweeps.collect_runs(root)
  if not runs:
    logging.warning('aggregate: no member of %s has results yet', root)
    return None
  if baseline and baseline not in {r['configuration'] for r in runs}:
    if strict:
      raise app.UsageError(f'--baseline={baseline}: no finished member of'
                           f' that configuration in {root}')
    logging.warning('aggregate: baseline %s has no results; no probability'
                    ' of improvement', baseline)
    baseline = ''
  summary = sweep_summary.summarize(runs, baseline=baseline, reps=reps,
                                    missing=missing)
  sweep_summary.write_sweep_report(root, summary,
                                   title=f'Sweep {os.path.basename(root)}')
  return os.path.join(root, 'sweep.md')


def _same_recipe(record: dict[str, Any], job: sweeps.Job) -> bool:
  """Whether a published record ran `job`'s config, wherever it ran.

  Records hold `recipe_sha256`; older ones only `config_sha256`, which is
  compared with this job's config given the record's own machine paths
  (read back from its command's `--config.<field>=` arguments).
  """
  if 'recipe_sha256' in record:
    return record['recipe_sha256'] == provenance.recipe_hash(job.config)
  config = dict(job.config)
  for arg in record.get('command') or []:
    for field in provenance.MACHINE_FIELDS:
      if arg.startswith(f'--config.{field}='):
        config[field] = arg.split('=', 1)[1]
  return record.get('config_sha256') == provenance.config_hash(config)


def mark_published(sweep: Sweep, published: dict[str, dict[str, Any]]
                   ) -> tuple[int, int]:
  """Marks what `published` already holds as not to be run again.

  A sweep directory lives on one machine; its published directory lives in
  the repository. On a fresh machine (an empty --workdir, the same
  --publish), a member already published, done, with the recipe hash this
  sweep plans for it (`provenance.recipe_hash`: its config less the sweep
  directory's paths; `_same_recipe`), is 'published' and does not run
  again; a teacher job
  whose members are all finished or published is 'published' too (its
  teachers are retrained only for a member that still has to run). A
  published member whose config differs runs again and replaces its line.

  Args:
    sweep: the sweep (its statuses are updated in place).
    published: `sweeps.published_members` of the --publish directory.

  Returns:
    (members, teacher jobs) marked.
  """
  members = teachers = 0
  for job in sweep.jobs:
    key = (job.kind, job.name)
    entry = published.get(job.name)
    if job.kind != 'member' or sweep.status[key] != 'pending' or not entry:
      continue
    record = entry.get('record') or {}
    if record.get('status') != 'done' or not _same_recipe(record, job):
      logging.warning('member %s: its published record (status %s) is not'
                      ' of this sweep\'s config; it runs again', job.name,
                      record.get('status'))
      continue
    sweep.status[key] = 'published'
    members += 1
  for job in sweep.jobs:
    key = (job.kind, job.name)
    if job.kind != 'teacher' or sweep.status[key] != 'pending':
      continue
    own = [sweep.status[(m.kind, m.name)] for m in sweep.jobs
           if m.kind == 'member' and m.teacher == job.name]
    if own and all(s in FINISHED for s in own):
      sweep.status[key] = 'published'
      teachers += 1
  return members, teachers


def make_publisher(sweep: Sweep, dest: str, baseline: str, reps: int,
                   commit: bool, aggregate_every_s: float = 0.0,
                   allow_dirty: bool = False):
  """The `on_done` of a sweep with --publish: copy, aggregate, commit.

  The published aggregate is recomputed after a member when
  `aggregate_every_s` seconds have passed since it last was (0: always);
  `finish_publishing` recomputes it at the end. A member that ran in a
  dirty tree is not published unless `allow_dirty` (the error names its
  changed files).
  """
  os.makedirs(dest, exist_ok=True)
  last = [-math.inf]

  def on_done(job: sweeps.Job) -> None:
    if job.kind != 'member':
      return
    try:
      publish.publish_member(job, sweep.root, dest, allow_dirty)
      sweep.write_state()
      publish.publish_state(sweep.root, dest)
      if time.monotonic() - last[0] >= aggregate_every_s:
        aggregate_sweep(dest, baseline, reps, strict=False)
        last[0] = time.monotonic()
    except (OSError, ValueError, KeyError) as e:
      logging.error('publish %s to %s failed: %s', job.name, dest, e)
      return
    if commit and publish.commit(dest, f'study: {job.name} finished'
                                 f' ({os.path.basename(dest)})'):
      logging.info('published and committed %s', job.name)
  return on_done


def finish_publishing(dest: str, baseline: str, reps: int,
                      commit: bool) -> None:
  """The published aggregate over every published member, committed."""
  try:
    aggregate_sweep(dest, baseline, reps, strict=False)
  except (OSError, ValueError, KeyError) as e:
    logging.error('publish: aggregate of %s failed: %s', dest, e)
    return
  if commit and publish.commit(dest, f'study: aggregate'
                               f' ({os.path.basename(dest)})'):
    logging.info('published and committed the aggregate of %s', dest)


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f'experiments/sweep.py: unexpected arguments'
                         f' {argv[1:]}')
  check_flags()
  root = os.path.abspath(FLAGS.workdir)
  try:
    sweep_def = sweeps.load_sweep(FLAGS.config)
    teachers, members = sweeps.plan(FLAGS.config, sweep_def, root)
    base = sweeps.resolve_config(FLAGS.config, [])
  except ValueError as e:
    raise app.UsageError(str(e)) from e
  baseline = sweep_def.baseline if FLAGS.baseline is None else FLAGS.baseline
  names = list(dict.fromkeys(m.configuration for m in members))
  if baseline and baseline not in names:
    raise app.UsageError(f'--baseline={baseline!r} is not a configuration of'
                         f' the sweep; configurations: {names}')
  if FLAGS.print:
    print(f'# {len(teachers)} teacher jobs: run these first')
    for job in teachers:
      print(shell_line(job.command))
    print(f'# {len(members)} members')
    for job in members:
      print(shell_line(job.command))
    print('\n'.join(cost.format_estimate(
        cost.sweep_estimate(teachers, members, FLAGS.parallel))))
    return
  busy = relaunch.still_running(teachers + members)
  if busy:
    # One launch per sweep: this one waits for them and adopts their
    # results (`relaunch.adopt`) while it runs the other jobs.
    logging.info('%s: jobs of an earlier launch still run here: %s; waiting'
                 ' for them', root, busy)
  os.makedirs(root, exist_ok=True)
  reps = int(base.report.reps) if 'report' in base else 2000
  sweep = Sweep(root, teachers, members, {
      'config': FLAGS.config, 'workdir': root, 'executor': FLAGS.executor,
      'parallel': FLAGS.parallel, 'baseline': baseline, 'reps': reps,
      'python': sys.executable, 'cwd': os.getcwd()})
  # Results, not code: a member's record ignores changes under these.
  sweep.ignore_dirty = [root] + ([os.path.abspath(FLAGS.publish)]
                                 if FLAGS.publish else [])
  skipped = sum(s == 'skipped' for s in sweep.status.values())
  logging.info('sweep %s: %d teacher jobs, %d members; %d finished earlier'
               ' (skipped)', root, len(teachers), len(members), skipped)
  sweep.write_state()
  if FLAGS.publish:
    dest = os.path.abspath(FLAGS.publish)
    sweep.on_done = make_publisher(sweep, dest, baseline, reps,
                                   FLAGS.publish_commit,
                                   FLAGS.publish_aggregate_s,
                                   FLAGS.allow_dirty)
    published = sweeps.published_members(dest) or {}
    marked = mark_published(sweep, published)
    if any(marked):
      logging.info('sweep %s: %d members and %d teacher jobs already in %s'
                   ' (published; not run again)', root, *marked, dest)
      sweep.write_state()
    for job in members:  # finished in an earlier sweep, not yet published
      if (sweep.status[(job.kind, job.name)] == 'skipped'
          and job.name not in published):
        sweep.on_done(job)
  start = time.time()
  executor = make_executor(os.path.join(root, 'submitit', '%j'))
  cache = os.path.join(root, 'jax_cache') if FLAGS.compilation_cache else None
  run_jobs(sweep, executor, FLAGS.parallel,
           job_env(FLAGS.executor, FLAGS.parallel, cache))
  failed = [sweep.by_name[k] for k, s in sweep.status.items()
            if s == 'failed']
  logging.info('sweep finished in %s: %s', _fmt_s(time.time() - start),
               sweep.progress(FLAGS.parallel))
  report = aggregate_sweep(root, baseline, reps, strict=False)
  if report:
    logging.info('aggregate: %s', report)
  if FLAGS.publish and FLAGS.publish_aggregate_s > 0:
    finish_publishing(os.path.abspath(FLAGS.publish), baseline, reps,
                      FLAGS.publish_commit)
  if failed:
    for job in failed:
      logging.error('FAILED %s %s: %s; log: %s', job.kind, job.name,
                    sweep.records[(job.kind, job.name)].get('error'),
                    job.log)
    sys.exit(1)


if __name__ == '__main__':
  define_flags()
  app.run(main)

"""The host loop of distillation: dispatch, logging, checkpoints, history.

`train_student` builds the student, selector, optimizer and probe pool from the
config (`distill.train.student`), runs the jitted multi-step in dispatches of
`student.steps_per_dispatch` steps with one device-to-host transfer each, logs
windowed metrics, keeps the `last` and `best` (lowest mean probe KL)
checkpoints, and resumes from `last`.

A population (`seeds`) trains one student per member in the same compiled
program (`student.make_population_step`), each with its own teachers,
checkpoints, history and best window; a single seed is a population of one
(`loop.over_members`). The host loop is `loop.run`.

Shape letters: N logged steps, T tasks, P members of a population.
"""

from collections.abc import Sequence
import io
import os
from typing import Any
import zipfile

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill.data import segments
from distill.io import fileio
from distill.models import model as model_lib
from distill.train import checkpointing
from distill.train import guards
from distill.train import logs
from distill.train import loop
from distill.train import parallel
from distill.train import student as student_lib

HISTORY_KEYS = (
    'step',
    'curriculum/choice',
    'curriculum/counts',
    'distill/kl',
    'surgery/projected',
    'surgery/cos_prev',
    'train/loss',
)


def _save_history(path: str, history: dict[str, np.ndarray]) -> None:
  buf = io.BytesIO()
  np.savez(buf, **{k.replace('/', '|'): v for k, v in history.items()})
  fileio.write_atomic(path, buf.getvalue())


def load_history(directory: str) -> dict[str, np.ndarray]:
  """Per-step metrics of a distillation run (`<directory>/history.npz`).

  Raises:
    DamagedFileError: the file exists but does not read as an npz archive
      (the message names it).
  """
  path = os.path.join(directory, 'history.npz')
  if not os.path.exists(path):
    return {}
  try:
    with np.load(path) as f:
      return {k.replace('|', '/'): f[k] for k in f.files}
  except (OSError, ValueError, EOFError, zipfile.BadZipFile) as e:
    raise fileio.DamagedFileError(
        f'{path}: damaged, not an npz archive ({e}); move it away and rerun'
        ' to have it written again from the last checkpoint') from e


def _cat(history: dict[str, list]) -> dict[str, np.ndarray]:
  return {k: np.concatenate(v) for k, v in history.items() if v}


def _window_kl(kl_NxT: np.ndarray, start: int, end: int) -> np.ndarray:
  """Mean probe KL per task over steps start+1..end (history rows)."""
  return kl_NxT[start:end].mean(0)


def _log_points(steps: int, log_every: int, upto: int) -> list[int]:
  points = list(range(log_every, upto + 1, log_every)) if log_every > 0 else []
  if upto == steps and (not points or points[-1] != steps):
    points.append(steps)
  return points


def _best_step(kl_NxT: np.ndarray, steps: int, log_every: int,
               upto: int) -> int | None:
  """The step of the best (lowest mean probe KL) window up to `upto`."""
  best, best_step, last = np.inf, None, 0
  for p in _log_points(steps, log_every, upto):
    kl = float(_window_kl(kl_NxT, last, p).mean())
    if kl < best:
      best, best_step = kl, p
    last = p
  return best_step


class _Member:
  """One member's host-side bookkeeping: checkpoints, history, best."""

  def __init__(self, directory, writer, keep):
    self.directory = directory
    self.writer = writer
    self.manager = checkpointing.make_manager(
        os.path.join(directory, 'last'), keep=keep)
    self.best_manager = checkpointing.make_manager(
        os.path.join(directory, 'best'), keep=1)
    self.history: dict[str, list] = {}
    self.best = {'kl': np.inf, 'step': None}
    self.last_log = 0


def train_student(
    config: ml_collections.ConfigDict,
    *,
    source: segments.SegmentSource,
    teacher: model_lib.DecisionTransformer,
    teacher_params_T,
    stats,
    directory: str | Sequence[str],
    writer: logs.MetricWriter | Sequence[logs.MetricWriter] | None = None,
    placement: parallel.Placement | None = None,
    seeds: Sequence[int] | None = None,
    clone_source: segments.SegmentSource | None = None,
) -> Any:
  """Distills the frozen teachers into one student; resumes from checkpoints.

  The config is not validated here: the run's entry checks it once
  (`distill.run.stages.check_config`, which calls
  `student.check_config`).

  Args:
    config: the whole config (reads `tasks`, `data`, `student`, `curriculum`,
      `surgery`, `seed`).
    source: training segments of all tasks (normalized with the teachers'
      statistics; placed by the caller when `placement` is given).
    teacher: the teachers' module.
    teacher_params_T: teacher parameters stacked on a leading T axis (put
      on the device once here); [P, T, ...] in a population.
    stats: per-task (mean, std) the source's states were normalized with
      (saved beside the weights so the student can be evaluated from its
      directory alone).
    directory: output directory: `<directory>/last/` checkpoints of the
      state, `<directory>/best/` the parameters with the lowest mean probe KL
      (both loadable with `checkpointing.load_policy`), and
      `<directory>/history.npz` the per-step metrics. One per member in a
      population.
    writer: metric writer (one per member in a population).
    placement: the device mesh: batches split over 'data', states created
      and kept replicated (members split over 'population'); None: plain
      `jax.jit` on the default device.
    seeds: a population: one student per seed (instead of `config.seed`),
      each with its own teachers (`teacher_params_T[p]`), trained in one
      compiled program (`student.make_population_step`); member p ends
      where a single run with `config.seed = seeds[p]` ends. None: a
      population of one, `config.seed` (`loop.over_members`).
    clone_source: the segments the training batches come from instead of
      `source` (%BC: `pipeline.make_clone_source`; placed like `source`);
      the probe pool is still drawn from `source`. None: `source`.

  Returns:
    `(state, student, best_params, history)`: the final state, the student
    module, the best parameters (lowest mean probe KL over a logging window),
    and per-step metrics (`step`, `curriculum/choice`, `curriculum/counts`
    [N, T], `distill/kl` [N, T], `surgery/projected`, `surgery/cos_prev`,
    `train/loss`). A list of them, one per member, in a population.

  A run stopped at any point (SIGTERM, SIGINT, a kill, a damaged
  checkpoint) and started again ends with the same `last` and `best`
  parameters and history as a run never stopped: the history is saved in
  each `last` checkpoint, the logging windows and the best window are
  computed from it, and the best probe KL is kept in float64.

  Raises:
    FloatingPointError: a loss, gradient norm, probe KL or parameter became
      non-finite (names the step, the task learned from and the metric);
      checkpoints are checked before each save, so they stay finite.
    guards.Stopped: SIGTERM/SIGINT arrived; `last` was saved at the step
      reached.
  """
  scfg = config.student
  tasks = tuple(config.tasks)
  if (clone_source is None) != (scfg.get('bc_top_fraction', 1.0) == 1.0):
    raise ValueError(
        f'train_student: student.bc_top_fraction={scfg.bc_top_fraction}'
        ' needs a clone_source of the filtered episodes exactly when it is'
        ' below 1 (pipeline.make_clone_source)')
  train_source = source if clone_source is None else clone_source
  num_tasks = len(tasks)
  pop = loop.members('train_student',
                     config.seed if seeds is None else seeds, directory,
                     writer)
  seeds, dirs, writers = pop.seeds, pop.directories, pop.writers
  tags = [f' (member {x})' if x else '' for x in pop.labels]
  if pop.single:  # A population of one: [1, T, ...].
    teacher_params_T = jax.tree.map(lambda x: x[None], teacher_params_T)
  num_members = len(seeds)
  obs_dims = [int(x) for x in np.asarray(source.obs_dims)]
  act_dims = [int(x) for x in np.asarray(source.act_dims)]
  student = model_lib.make_model(
      scfg.model, obs_dims=obs_dims, act_dims=act_dims,
      context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  rep = member_sh = None
  if placement is not None:
    rep, member_sh = placement.replicated_sharding, placement.member_sharding
  on_mesh = lambda sh: {} if placement is None else {'out_shardings': sh}
  # On the device once, [P, T, ...]: every dispatch below reuses these.
  teacher_params_PxT = (jax.device_put(teacher_params_T) if placement is None
                        else parallel.put(teacher_params_T, member_sh))
  selectors, optimizers, inits, pool_keys = [], [], [], []
  for s in seeds:
    k_sel, k_opt, k_pool, k_init = jax.random.split(
        jax.random.fold_in(jax.random.key(s), 7), 4)
    selectors.append(student_lib.make_selector(
        config.curriculum, num_tasks, source.states.shape[1], k_sel))
    optimizers.append(student_lib.make_optimizer(config, k_opt))
    inits.append(lambda sel=selectors[-1], opt=optimizers[-1], k=k_init:
                 student_lib.init_state(student, sel, opt, k))
    pool_keys.append(k_pool)
  pool = None
  if scfg.probe_size > 0:
    make_pool = lambda tp, k: student_lib.make_probe_pool(
        source, teacher, tp, k, scfg.probe_pool)
    pool_keys = jnp.stack(pool_keys)
    if placement is not None:
      pool_keys = placement.replicated(pool_keys)
    pool = jax.jit(loop.over_members(make_pool, (0, 0), jax.vmap),
                   **on_mesh(member_sh))(teacher_params_PxT, pool_keys)
  # The selectors and optimizers of the members differ only in the keys
  # their `init` puts in the state (STYLE: a key lives in the state), so
  # one step serves them all.
  step_fn = student_lib.make_distill_step(
      config, student, teacher, selectors[0], optimizers[0],
      placement=placement)
  abstract = jax.eval_shape(inits[0])
  members = [_Member(d, w, scfg.keep) for d, w in zip(dirs, writers)]
  meta = checkpointing.policy_meta(
      student, kind='student', tasks=tasks, obs_dims=obs_dims,
      act_dims=act_dims, stats=stats, data_config=config.data)
  loop.align([m.manager for m in members], [f'distill{t}' for t in tags])
  resumed = []
  for m in members:
    state, m.history, m.best = _resume(m.manager, m.best_manager, abstract,
                                       scfg)
    resumed.append(state)
  if len({None if s is None else int(s.step) for s in resumed}) > 1:
    # A member's `last` could not be resumed (and was moved aside): all
    # start again, which ends with the same result.
    for m in members:
      for mgr in (m.manager, m.best_manager):
        for s in mgr.all_steps():
          checkpointing.set_aside(str(mgr.directory), s, 'superseded')
        mgr.reload()
      m.history, m.best = {}, {'kl': np.inf, 'step': None}
    logging.warning('distill: the members resumed from different steps;'
                    ' distilling all again from step 0')
    resumed = [None] * num_members
  states = [jax.jit(f, **on_mesh(rep))() if s is None else
            (s if placement is None else placement.replicated(s))
            for f, s in zip(inits, resumed)]
  unstack = lambda tree: loop.unstack(tree, num_members, sharding=rep)
  mode = parallel.population_mode(config.get('mesh'))
  shards = 1 if placement is None else placement.mesh.shape['population']
  update = loop.fused(
      lambda n: loop.over_members(
          student_lib.make_multi_step(step_fn, n), (0, 0, None, 0),
          lambda f: student_lib.make_population_step(f, mode, shards)),
      **({} if placement is None else dict(
          in_shardings=(member_sh, member_sh, rep, member_sh),
          out_shardings=(member_sh, rep))))
  main = parallel.is_main_process()

  def observe(metrics, prev, step):
    # One transfer per dispatch: the per-step curriculum choices and probe
    # KLs feed the plots.
    fetched = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
    for p, m in enumerate(members):
      host = {k: v[p] for k, v in fetched.items()}
      bad = guards.first_nonfinite({k: v for k, v in host.items()
                                    if k.startswith(('train/', 'distill/'))})
      if bad is not None:
        key, i = bad
        choice = int(np.ravel(host.get('curriculum/choice',
                                       [-1] * (step - prev)))[i])
        task = tasks[choice] if choice >= 0 else 'all tasks (mixture)'
        raise FloatingPointError(
            f'distill{tags[p]}: non-finite {key}'
            f' ({np.ravel(host[key][i])[:4]}) at step {prev + 1 + i},'
            f' learning from {task}; stopped, the last good checkpoint is'
            f' step {m.manager.latest_step()}. Set'
            ' --config.debug_nans=True to stop at the operation that made'
            ' it.')
      host['step'] = np.arange(prev + 1, step + 1)
      for k, v in host.items():
        m.history.setdefault(k, []).append(v)

  def check(state, metrics, *, prev, step, checked):
    del metrics, checked  # Checked every dispatch (`observe`).
    bad_P = np.asarray(loop.count_nonfinite(state.params, sharding=rep))
    for p, m in enumerate(members):
      if bad_P[p]:
        raise FloatingPointError(
            f'distill{tags[p]}: non-finite parameters ({int(bad_P[p])}'
            f' values) at step {step} (in steps {prev + 1}..{step});'
            ' stopped, the last good checkpoint is step'
            f' {m.manager.latest_step()}. Set --config.debug_nans=True to'
            ' stop at the operation that made it.')

  def log(state, host, step):
    del host
    parts, postfix = None, {}
    for p, m in enumerate(members):
      window = {k: v[m.last_log:step] for k, v in _cat(m.history).items()}
      kl_T = _window_kl(window['distill/kl'], 0, step - m.last_log)
      flat = {k: float(np.mean(v)) for k, v in window.items()
              if k not in ('step', 'curriculum/choice', 'distill/kl',
                           'curriculum/counts')}
      flat.update({f'distill/kl/{t}': float(kl_T[i])
                   for i, t in enumerate(tasks)})
      counts = window['curriculum/counts'][-1]
      flat.update({f'curriculum/count/{t}': int(counts[i])
                   for i, t in enumerate(tasks)})
      if m.writer is not None and main:
        m.writer.write(step, flat)
      m.last_log = step
      if float(kl_T.mean()) < m.best['kl']:
        parts = unstack(state) if parts is None else parts
        m.best = {'kl': float(kl_T.mean()), 'step': step}
        checkpointing.save(
            m.best_manager, step,
            {'params': parts[p].params,
             'mean_probe_kl': (
                 jnp.float32(m.best['kl']) if placement is None else
                 placement.replicated(np.float32(m.best['kl'])))},
            {**meta, 'step': step, 'mean_probe_kl': m.best['kl']})
        guards.fault(f'distill/best@{step}')
      if p == 0:
        postfix = {'loss': f'{float(window["train/loss"][-1]):.4f}',
                   'kl': f'{kl_T.mean():.4f}'}
    return postfix

  def save(state, step):
    for m, part in zip(members, unstack(state)):
      checkpointing.save(m.manager, step, part, {**meta, 'step': step},
                         extras={'history': _encode(_cat(m.history))})
      guards.fault(f'distill/last@{step}')
      _write_history(m.directory, _cat(m.history))

  step = int(states[0].step)
  for m in members:
    points = _log_points(scfg.steps, scfg.log_every, step)
    m.last_log = points[-1] if points else 0
  state = loop.run(
      update, loop.stack(states, sharding=member_sh),
      (teacher_params_PxT, train_source, pool), step=step, steps=scfg.steps,
      steps_per_dispatch=scfg.steps_per_dispatch, log_every=scfg.log_every,
      ckpt_every=scfg.ckpt_every,
      desc=(f'students ({num_members} seeds)' if num_members > 1
            else 'student'),
      what='distill', fault='distill', check=check, log=log, save=save,
      observe=observe)
  out = []
  for m, part in zip(members, unstack(state)):
    hist = _cat(m.history)
    _write_history(m.directory, hist)
    best_params = part.params
    if m.best_manager.latest_step() is not None:
      best_params = checkpointing.restore(m.best_manager, _best_abstract(
          abstract))[0]['params']
    m.manager.close()
    m.best_manager.close()
    out.append((part, student, best_params, hist))
  return out[0] if pop.single else out


def _write_history(directory: str, history: dict[str, np.ndarray]) -> None:
  if parallel.is_main_process():
    _save_history(os.path.join(directory, 'history.npz'), history)


def _best_abstract(abstract):
  return {'params': abstract.params,
          'mean_probe_kl': jax.ShapeDtypeStruct((), jnp.float32)}


def _encode(history: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
  # Orbax names files after the tree's keys: no '/' in them.
  return {k.replace('/', '|'): v for k, v in history.items()}


def _resume(manager, best_manager, abstract, scfg):
  """The state, history and best window to continue from.

  Returns `(state or None, history, {'kl', 'step'})`. `last` gives the state
  and the history up to its step. `best` may be ahead of `last` (a run
  killed between the two saves): that is the best the same steps will reach
  again, so it is kept. A `best` behind the one the history points to (it
  was damaged) cannot be rebuilt: both are moved aside and distillation
  starts again from step 0, which ends with the same result.
  """
  history, best = {}, {'kl': np.inf, 'step': None}
  step = manager.latest_step()
  state, problem = None, None
  if step is not None:
    try:
      state, meta = checkpointing.restore(manager, abstract, step=step,
                                          extras={'history': None})
    except (FileNotFoundError, KeyError, ValueError) as e:
      # E.g. a checkpoint written before the history was saved in it.
      problem = f'checkpoint last/{step} cannot be resumed ({e})'
    else:
      history = {k.replace('|', '/'): [np.asarray(v)]
                 for k, v in meta['extras']['history'].items()}
  best_step = best_manager.latest_step()
  if best_step is not None:
    _, best_meta = checkpointing.restore(best_manager,
                                         _best_abstract(abstract))
    # The float64 value from the meta, so that the comparison with the
    # windows computed again is exact.
    best = {'kl': float(best_meta['mean_probe_kl']), 'step': best_step}
  if step is not None and problem is None:
    hist = _cat(history)
    expected = _best_step(hist.get('distill/kl', np.zeros((0, 1))),
                          scfg.steps, scfg.log_every, step)
    if not np.array_equal(hist.get('step', ()), np.arange(1, step + 1)):
      problem = (f'the history in checkpoint last/{step} does not cover steps'
                 f' 1..{step}')
    elif best['step'] != expected and not (best['step'] or 0) > step:
      problem = (f'the best checkpoint is at step {best["step"]}, the best'
                 f' window of the history at step {expected}')
  if problem is not None:
    moved = []
    for m in (manager, best_manager):
      moved += [checkpointing.set_aside(str(m.directory), s, 'superseded')
                for s in m.all_steps()]
      m.reload()
    logging.warning('distill: %s; moved %s aside, distilling again from'
                    ' step 0', problem, moved)
    return None, {}, {'kl': np.inf, 'step': None}
  return state, history, best

"""The host loop of distillation: dispatch, logging, checkpoints, history.

`train_student` builds the student, selector, optimizer and probe pool from the
config (`distill.train.student`), runs the jitted multi-step in dispatches of
`student.steps_per_dispatch` steps with one device-to-host transfer each, logs
windowed metrics, keeps the `last` and `best` (lowest mean probe KL)
checkpoints, and resumes from `last`.

Shape letters: N logged steps, T tasks.
"""

import io
import os
from typing import Any
import zipfile

from absl import logging
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from distill import checkpointing
from distill import fileio
from distill.data import segments
from distill.models import model as model_lib
from distill.train import guards
from distill.train import logs
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


def train_student(
    config: ml_collections.ConfigDict,
    *,
    source: segments.SegmentSource,
    teacher: model_lib.DecisionTransformer,
    teacher_params_T,
    stats,
    directory: str,
    writer: logs.MetricWriter | None = None,
) -> tuple[
    student_lib.StudentState, model_lib.DecisionTransformer, Any,
    dict[str, np.ndarray]]:
  """Distills the frozen teachers into one student; resumes from checkpoints.

  Args:
    config: the whole config (reads `tasks`, `data`, `student`, `curriculum`,
      `surgery`, `seed`).
    source: training segments of all tasks (normalized with the teachers'
      statistics).
    teacher: the teachers' module.
    teacher_params_T: teacher parameters stacked on a leading T axis (put
      on the device once here if they are not already).
    stats: per-task (mean, std) the source's states were normalized with
      (saved beside the weights so the student can be evaluated from its
      directory alone).
    directory: output directory: `<directory>/last/` checkpoints of the
      state, `<directory>/best/` the parameters with the lowest mean probe KL
      (both loadable with `checkpointing.load_policy`), and
      `<directory>/history.npz` the per-step metrics.
    writer: metric writer.

  Returns:
    `(state, student, best_params, history)`: the final state, the student
    module, the best parameters (lowest mean probe KL over a logging window),
    and per-step metrics (`step`, `curriculum/choice`, `curriculum/counts`
    [N, T], `distill/kl` [N, T], `surgery/projected`, `surgery/cos_prev`,
    `train/loss`).

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
  student_lib.check_config(config)
  scfg = config.student
  tasks = tuple(config.tasks)
  num_tasks = len(tasks)
  obs_dims = [int(x) for x in np.asarray(source.obs_dims)]
  act_dims = [int(x) for x in np.asarray(source.act_dims)]
  student = model_lib.make_model(
      scfg.model, obs_dims=obs_dims, act_dims=act_dims,
      context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  key = jax.random.key(config.seed)
  k_sel, k_opt, k_pool, k_init = jax.random.split(jax.random.fold_in(key, 7), 4)
  selector = student_lib.make_selector(
      config.curriculum, num_tasks, source.states.shape[1], k_sel
  )
  optimizer = student_lib.make_optimizer(config, k_opt)
  # On the device once: every dispatch below reuses these buffers.
  teacher_params_T = jax.device_put(teacher_params_T)
  pool = (
      student_lib.make_probe_pool(
          source, teacher, teacher_params_T, k_pool, scfg.probe_pool
      )
      if scfg.probe_size > 0
      else None
  )
  step_fn = student_lib.make_distill_step(
      config, student, teacher, selector, optimizer
  )

  def init():
    return student_lib.init_state(student, selector, optimizer, k_init)

  abstract = jax.eval_shape(init)
  manager = checkpointing.make_manager(
      os.path.join(directory, 'last'), keep=scfg.keep
  )
  best_manager = checkpointing.make_manager(
      os.path.join(directory, 'best'), keep=1
  )
  meta = checkpointing.policy_meta(
      student, kind='student', tasks=tasks, obs_dims=obs_dims,
      act_dims=act_dims, stats=stats, data_config=config.data)
  state, history, best = _resume(manager, best_manager, abstract, scfg)
  if state is None:
    state = init()

  compiled = {}

  def get_multi(n):
    if n not in compiled:
      compiled[n] = jax.jit(
          student_lib.make_multi_step(step_fn, n), donate_argnums=0
      )
    return compiled[n]

  def save_last(step):
    checkpointing.save(manager, step, state, {**meta, 'step': step},
                       extras={'history': _encode(_cat(history))})
    guards.fault(f'distill/last@{step}')

  def check_params(step, prev):
    bad = int(guards.count_nonfinite(state.params))
    if bad:
      raise FloatingPointError(
          f'distill: non-finite parameters ({bad} values) at step {step} (in'
          f' steps {prev + 1}..{step}); stopped, the last good checkpoint is'
          f' step {manager.latest_step()}. Set --config.debug_nans=True to'
          ' stop at the operation that made it.')

  step = int(state.step)
  last_log = _log_points(scfg.steps, scfg.log_every, step)
  last_log = last_log[-1] if last_log else 0
  bar = tqdm.tqdm(
      total=scfg.steps,
      initial=step,
      unit='step',
      desc='student',
      dynamic_ncols=True,
  )
  with guards.deferred():
    while step < scfg.steps:
      n = min(scfg.steps_per_dispatch, scfg.steps - step)
      state, metrics = get_multi(n)(state, teacher_params_T, source, pool)
      prev, step = step, step + n
      bar.update(n)
      # One transfer per dispatch of n steps: the per-step curriculum
      # choices and probe KLs feed the plots.
      host = {k: np.asarray(v) for k, v in jax.device_get(metrics).items()}
      bad = guards.first_nonfinite({k: v for k, v in host.items()
                                    if k.startswith(('train/', 'distill/'))})
      if bad is not None:
        key, i = bad
        choice = int(np.ravel(host.get('curriculum/choice', [-1] * n))[i])
        task = tasks[choice] if choice >= 0 else 'all tasks (mixture)'
        raise FloatingPointError(
            f'distill: non-finite {key} ({np.ravel(host[key][i])[:4]}) at'
            f' step {prev + 1 + i}, learning from {task}; stopped, the last'
            f' good checkpoint is step {manager.latest_step()}. Set'
            ' --config.debug_nans=True to stop at the operation that made'
            ' it.')
      host['step'] = np.arange(prev + 1, step + 1)
      for k, v in host.items():
        history.setdefault(k, []).append(v)
      if guards.fault(f'distill@{step}'):
        state = state._replace(params=guards.poison(state.params))
      stop = guards.stop_requested()
      crossed = lambda every: every > 0 and step // every > prev // every
      if crossed(scfg.log_every) or step == scfg.steps:
        window = {k: v[last_log:step] for k, v in _cat(history).items()}
        kl_T = _window_kl(window['distill/kl'], 0, step - last_log)
        flat = {k: float(np.mean(v)) for k, v in window.items()
                if k not in ('step', 'curriculum/choice', 'distill/kl',
                             'curriculum/counts')}
        flat.update(
            {f'distill/kl/{t}': float(kl_T[i]) for i, t in enumerate(tasks)}
        )
        counts = window['curriculum/counts'][-1]
        flat.update({f'curriculum/count/{t}': int(counts[i])
                     for i, t in enumerate(tasks)})
        if writer is not None:
          writer.write(step, flat)
        last_log = step
        if float(kl_T.mean()) < best['kl']:
          check_params(step, prev)
          best = {'kl': float(kl_T.mean()), 'step': step}
          checkpointing.save(
              best_manager,
              step,
              {'params': state.params,
               'mean_probe_kl': jnp.float32(best['kl'])},
              {**meta, 'step': step, 'mean_probe_kl': best['kl']},
          )
          guards.fault(f'distill/best@{step}')
        bar.set_postfix(loss=f'{float(host["train/loss"][-1]):.4f}',
                        kl=f'{kl_T.mean():.4f}')
      if crossed(scfg.ckpt_every) or step == scfg.steps or stop:
        check_params(step, prev)
        save_last(step)
        _save_history(os.path.join(directory, 'history.npz'), _cat(history))
      if stop:
        bar.close()
        raise guards.Stopped(stop, 'distill', step)
  bar.close()
  hist = _cat(history)
  _save_history(os.path.join(directory, 'history.npz'), hist)
  best_params = state.params
  if best_manager.latest_step() is not None:
    best_params = checkpointing.restore(best_manager, _best_abstract(
        abstract))[0]['params']
  manager.close()
  best_manager.close()
  return state, student, best_params, hist


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

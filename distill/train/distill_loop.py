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

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import tqdm

from distill import checkpointing
from distill import fileio
from distill.data import segments
from distill.models import model as model_lib
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


def _save_history(path: str, history: dict[str, list]) -> None:
  buf = io.BytesIO()
  np.savez(
      buf,
      **{
          k.replace('/', '|'): np.concatenate(v) if v else np.zeros(0)
          for k, v in history.items()
      },
  )
  fileio.write_atomic(path, buf.getvalue())


def load_history(directory: str) -> dict[str, np.ndarray]:
  """Per-step metrics of a distillation run (`<directory>/history.npz`)."""
  path = os.path.join(directory, 'history.npz')
  if not os.path.exists(path):
    return {}
  with np.load(path) as f:
    return {k.replace('|', '/'): f[k] for k in f.files}


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

  Raises:
    FloatingPointError: the loss became non-finite (names the step).
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
  history = {k: [] for k in HISTORY_KEYS}
  best = {'kl': np.inf, 'params': None}
  if manager.latest_step() is not None:
    state, _ = checkpointing.restore(manager, abstract)
    old = load_history(directory)
    history = {k: [old[k]] if k in old else [] for k in HISTORY_KEYS}
    if best_manager.latest_step() is not None:
      saved, _ = checkpointing.restore(
          best_manager,
          {
              'params': abstract.params,
              'mean_probe_kl': jax.ShapeDtypeStruct((), jnp.float32),
          },
      )
      best = {'kl': float(saved['mean_probe_kl']), 'params': saved['params']}
  else:
    state = init()

  compiled = {}

  def get_multi(n):
    if n not in compiled:
      compiled[n] = jax.jit(
          student_lib.make_multi_step(step_fn, n), donate_argnums=0
      )
    return compiled[n]

  step = int(state.step)
  bar = tqdm.tqdm(
      total=scfg.steps,
      initial=step,
      unit='step',
      desc='student',
      dynamic_ncols=True,
  )
  window = []
  while step < scfg.steps:
    n = min(scfg.steps_per_dispatch, scfg.steps - step)
    state, metrics = get_multi(n)(state, teacher_params_T, source, pool)
    prev, step = step, step + n
    bar.update(n)
    # One transfer per dispatch of n steps: the per-step curriculum choices
    # and probe KLs feed the plots.
    host = jax.device_get(metrics)
    loss = float(host['train/loss'][-1])
    if not np.isfinite(host['train/loss']).all():
      bad = prev + 1 + int(np.argmin(np.isfinite(host['train/loss'])))
      raise FloatingPointError(f'distillation: non-finite loss at step {bad}')
    host['step'] = np.arange(prev + 1, step + 1)
    for k in HISTORY_KEYS:
      history[k].append(np.asarray(host[k]))
    window.append(host)
    crossed = lambda every: every > 0 and step // every > prev // every
    if crossed(scfg.log_every) or step == scfg.steps:
      cat = {
          k: np.concatenate([np.atleast_1d(w[k]) for w in window])
          for k in window[0]
          if k not in ('distill/kl', 'curriculum/counts')
      }
      kl_T = np.concatenate([w['distill/kl'] for w in window]).mean(0)
      flat = {
          k: float(np.mean(v))
          for k, v in cat.items()
          if k not in ('step', 'curriculum/choice')
      }
      flat.update(
          {f'distill/kl/{t}': float(kl_T[i]) for i, t in enumerate(tasks)}
      )
      counts = host['curriculum/counts'][-1]
      flat.update(
          {f'curriculum/count/{t}': int(counts[i]) for i, t in enumerate(tasks)}
      )
      if writer is not None:
        writer.write(step, flat)
      window = []
      if float(kl_T.mean()) < best['kl']:
        best = {
            'kl': float(kl_T.mean()),
            'params': jax.tree.map(jnp.copy, state.params),
        }
        checkpointing.save(
            best_manager,
            step,
            {
                'params': best['params'],
                'mean_probe_kl': jnp.float32(best['kl']),
            },
            {**meta, 'step': step, 'mean_probe_kl': best['kl']},
        )
      bar.set_postfix(loss=f'{loss:.4f}', kl=f'{kl_T.mean():.4f}')
    if crossed(scfg.ckpt_every) or step == scfg.steps:
      checkpointing.save(manager, step, state, {**meta, 'step': step})
      _save_history(os.path.join(directory, 'history.npz'), history)
  bar.close()
  manager.close()
  best_manager.close()
  hist = {
      k: np.concatenate(v) if v else np.zeros(0) for k, v in history.items()
  }
  best_params = best['params'] if best['params'] is not None else state.params
  return state, student, best_params, hist

"""Decision Transformer teachers: train step, fused updates, host loop.

Letters in shape suffixes: B batch, K context, S/A padded state/action size,
T tasks in the `SegmentSource`, N teachers trained together.

A teacher is a one-task `DecisionTransformer` over the source's padded sizes
(S, A) = (max obs dim, max act dim), so teachers of different tasks share one
shape and train together in one compiled step, vmapped over the teacher axis;
the per-task action mask (from the batch's task id) keeps padded action dims
out of every loss, and padded state features are zero. A teacher's checkpoint
records its true obs/act dims.

    model = model_lib.make_model(config.model, obs_dims=(S,),
                                 act_dims=(A,), ...)
    optimizer = optimizer_lib.make_optimizer(config.optimizer)
    train_step = make_train_step(model, optimizer, alpha_optimizer, ...)
    update = make_update_fn(train_step, batch_size=64, num_steps=10)
    update = jax.jit(jax.vmap(update, in_axes=(0, None, 0)), donate_argnums=0)
    states_N, metrics_N = update(states_N, source, tasks_N)

The loss of the Gaussian head is the negative log-likelihood of the dataset
action under the tanh-squashed Gaussian minus alpha times its (pre-tanh)
entropy; alpha is fixed or learned towards a target entropy of -act_dim
(Online DT). The deterministic head uses the MSE of tanh(mean).

References:
  Chen et al. (2021), Decision Transformer. arXiv:2106.01345.
  Zheng, Zhang & Grover (2022), Online Decision Transformer. arXiv:2202.05607.
"""

import math
import os
from collections.abc import Callable, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from distill.data import segments
from distill import losses
from distill.models import model as model_lib
from distill.train import checkpointing
from distill.train import guards
from distill.train import logs
from distill.train import loop
from distill.train import optimizer as optimizer_lib
from distill.train import parallel


class TrainState(NamedTuple):
  step: jax.Array  # int32 scalar, updates done.
  params: Any
  opt_state: Any
  rng: jax.Array  # typed key; per-step keys are fold_in(rng, step).
  log_alpha: jax.Array  # f32 scalar, log entropy coefficient.
  alpha_opt_state: Any


def make_init_fn(model: model_lib.DecisionTransformer,
                 optimizer: optax.GradientTransformation,
                 alpha_optimizer: optax.GradientTransformation, *,
                 alpha: float) -> Callable[[jax.Array], TrainState]:
  """Builds the pure `init(key) -> TrainState` (jit it; vmap it for many).

  Args:
    model: the teacher module.
    optimizer: from `optimizer_lib.make_optimizer`.
    alpha_optimizer: from `optimizer_lib.make_alpha_optimizer`.
    alpha: initial entropy coefficient (> 0).

  Returns:
    `init(key)`: parameters and optimizer states at step 0.
  """
  if alpha <= 0:
    raise ValueError(f'teacher.entropy.alpha must be > 0, got {alpha}')

  def init(key):
    init_key, rng = jax.random.split(key)
    params = model_lib.init_params(model, init_key)
    log_alpha = jnp.asarray(math.log(alpha), jnp.float32)
    return TrainState(
        step=jnp.zeros((), jnp.int32), params=params,
        opt_state=optimizer.init(params), rng=rng, log_alpha=log_alpha,
        alpha_opt_state=alpha_optimizer.init(log_alpha))

  return init


def init_state(model: model_lib.DecisionTransformer,
               optimizer: optax.GradientTransformation,
               alpha_optimizer: optax.GradientTransformation,
               key: jax.Array, *, alpha: float) -> TrainState:
  """Initializes parameters and optimizer states (jitted `make_init_fn`).

  Args:
    model: the teacher module.
    optimizer: from `optimizer_lib.make_optimizer`.
    alpha_optimizer: from `optimizer_lib.make_alpha_optimizer`.
    key: a `jax.random.key`.
    alpha: initial entropy coefficient (> 0).

  Returns:
    The `TrainState` at step 0.
  """
  return _run_once(make_init_fn(model, optimizer, alpha_optimizer,
                                alpha=alpha), key)


def _run_once(fn, *args, out_shardings=None):
  """Runs `fn` compiled without XLA optimizations.

  For code that runs once (initialization): op by op, every primitive
  compiles separately (~10x slower on CPU), and XLA's optimizations cost
  ~4x the compile time of the many threefry kernels of an initializer.
  With `out_shardings` the result is created already placed so.
  """
  jitted = (jax.jit(fn) if out_shardings is None else
            jax.jit(fn, out_shardings=out_shardings))
  compiled = jitted.lower(*args).compile(
      compiler_options={'xla_backend_optimization_level': 0})
  return compiled(*args)


def make_train_step(
    model: model_lib.DecisionTransformer,
    optimizer: optax.GradientTransformation,
    alpha_optimizer: optax.GradientTransformation,
    *,
    act_dims: Sequence[int],
) -> Callable[[TrainState, segments.SegmentBatch],
              tuple[TrainState, dict[str, jax.Array]]]:
  """Builds the pure teacher update.

  Args:
    model: a one-task `DecisionTransformer` over padded (S, A).
    optimizer: for the parameters.
    alpha_optimizer: for log-alpha (`optimizer_lib.make_alpha_optimizer`).
    act_dims: true action size of every task of the source, so that the
      batch's task ids give each example its action mask [T, A].

  Returns:
    `train_step(state, batch) -> (state, metrics)`, metrics a flat dict of
    scalars: loss, nll or mse, entropy, alpha, action_mse, grad_norm.
  """
  act_masks_TxA = np.asarray(model_lib.action_mask(act_dims))
  if act_masks_TxA.shape[1] > model.action_size:
    raise ValueError(f'make_train_step: act_dims {tuple(act_dims)} exceed the'
                     f' model action size {model.action_size}')
  pad = model.action_size - act_masks_TxA.shape[1]
  act_masks_TxA = jnp.asarray(np.pad(act_masks_TxA, ((0, 0), (0, pad))))
  gaussian = model.head == 'tanh_gaussian'

  def loss_fn(params, log_alpha, batch, key):
    mean_BxKxA, log_std_BxKxA = model_lib.apply(model, params, batch,
                                                train=True, rng=key)
    act_mask_BxA = act_masks_TxA[batch.task]
    m = act_mask_BxA[:, None, :]
    action_mse = losses.masked_mean(
        losses.mse(jnp.tanh(mean_BxKxA), batch.actions, m), batch.mask)
    metrics = {'action_mse': action_mse}
    if not gaussian:
      metrics['mse'] = action_mse
      return action_mse, (metrics, jnp.zeros(()))
    nll = -losses.masked_mean(
        losses.tanh_gaussian_log_prob(
            mean_BxKxA, log_std_BxKxA, batch.actions, m), batch.mask)
    entropy = losses.masked_mean(
        losses.gaussian_entropy(log_std_BxKxA, m), batch.mask)
    loss = nll - jnp.exp(jax.lax.stop_gradient(log_alpha)) * entropy
    # Online DT's temperature loss: alpha grows while entropy < -act_dim.
    target_entropy = -jnp.mean(jnp.sum(act_mask_BxA, axis=-1))
    metrics.update(nll=nll, entropy=entropy)
    return loss, (metrics, jax.lax.stop_gradient(entropy - target_entropy))

  def train_step(state: TrainState, batch: segments.SegmentBatch):
    key = jax.random.fold_in(state.rng, state.step)
    (loss, (metrics, entropy_gap)), grads = jax.value_and_grad(
        loss_fn, has_aux=True)(state.params, state.log_alpha, batch,
                               jax.random.fold_in(key, 0))
    updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
    params = optax.apply_updates(state.params, updates)
    # d/d log_alpha of exp(log_alpha) * (entropy - target).
    alpha_grad = jnp.exp(state.log_alpha) * entropy_gap
    alpha_updates, alpha_opt_state = alpha_optimizer.update(
        alpha_grad, state.alpha_opt_state, state.log_alpha)
    log_alpha = optax.apply_updates(state.log_alpha, alpha_updates)
    metrics.update(loss=loss, alpha=jnp.exp(state.log_alpha),
                   grad_norm=optax.global_norm(grads))
    new_state = TrainState(step=state.step + 1, params=params,
                           opt_state=opt_state, rng=state.rng,
                           log_alpha=log_alpha,
                           alpha_opt_state=alpha_opt_state)
    return new_state, metrics

  return train_step


def make_update_fn(train_step: Callable, *, batch_size: int, num_steps: int,
                   placement: parallel.Placement | None = None):
  """Fuses `num_steps` updates, sampling each batch on the device.

  Args:
    train_step: from `make_train_step`.
    batch_size: B.
    num_steps: updates per call (`lax.scan`).
    placement: with a device mesh, every sampled batch is split over its
      'data' axis (`parallel.constrain_batch`); None on a plain `jax.jit`.

  Returns:
    `update(state, source, task) -> (state, metrics)`, metrics averaged over
    the fused steps; `task` (an int32 scalar, may be traced or vmapped) is
    the teacher's task index in `source`. The batch key of step t is
    `fold_in(fold_in(rng, t), 1)`, so results do not depend on `num_steps`.
  """
  if num_steps < 1:
    raise ValueError(f'make_update_fn: num_steps must be >= 1, got {num_steps}')

  def update(state: TrainState, source: segments.SegmentSource, task):
    def body(state, _):
      key = jax.random.fold_in(jax.random.fold_in(state.rng, state.step), 1)
      batch = parallel.constrain_batch(
          segments.sample_task_batch(source, key, task, batch_size),
          placement)
      return train_step(state, batch)

    state, metrics = jax.lax.scan(body, state, None, length=num_steps)
    return state, jax.tree.map(lambda x: jnp.mean(x, axis=0), metrics)

  return update


def train_teachers(
    config: ml_collections.ConfigDict,
    data_config: ml_collections.ConfigDict,
    *,
    tasks: Sequence[str],
    source: segments.SegmentSource,
    stats: Sequence[tuple[np.ndarray, np.ndarray]],
    directory: str | Sequence[str],
    seed: int | Sequence[int],
    writer: logs.MetricWriter | Sequence[logs.MetricWriter] | None = None,
    placement: parallel.Placement | None = None,
    members: str | None = None,
) -> dict[str, TrainState] | list[dict[str, TrainState]]:
  """Trains one teacher per task of `source`, resuming from checkpoints.

  Checkpoints go to `<directory>/<task>/` (one per task; the full
  `TrainState` plus `checkpointing.policy_meta`), every `config.ckpt_every`
  steps and at the end, and when a stop signal arrives. With `config.vmap`
  True all teachers train in one compiled step, vmapped over the teacher
  axis; with False one after another; 'auto' picks by backend
  (`parallel.teacher_vmap`: one by one on CPU). A run killed at any point
  resumes from the latest intact step (the same one for teachers trained
  together) and ends with the same parameters as a run that was never
  interrupted.

  A population (`seed` and `directory` sequences, one entry per member P)
  trains every member's teachers in the same compiled step, over a leading
  member axis that the mesh's 'population' axis splits (`members`); member
  p gets what a single run with `seed[p]` and `directory[p]` gets. A single
  seed is a population of one (`loop.over_members`).

  Args:
    config: `config.teacher` (model, optimizer, entropy, steps, batch_size,
      steps_per_dispatch, log_every, ckpt_every, keep, vmap).
    data_config: `config.data` (context_len, rtg_scale, max_timestep).
    tasks: task names, in the order of the source's tasks.
    source: from `segments.make_segment_source` (placed by the caller when
      `placement` is given, e.g. `placement.replicated(source)`).
    stats: per-task (mean, std) used to normalize the source's states.
    directory: root of the per-task checkpoint directories (one per member
      in a population).
    seed: teacher i is initialized from `fold_in(key(seed), i)` (one seed
      per member in a population).
    writer: metric writer (keys `teacher/<task>/<metric>`), one per member
      in a population.
    placement: the device mesh: batches split over 'data', states created
      and kept replicated (members split over 'population'); None: plain
      `jax.jit` on the default device.
    members: how a population's members share the step, 'vmap' or 'map'
      (`parallel.population_mode(config.mesh)`); None: the backend's
      default.

  Returns:
    The final `TrainState` of each task (a list of them, one per member, in
    a population).

  Raises:
    FloatingPointError: a loss, gradient norm or parameter became non-finite
      (names the task, the step and the metric); the checkpoints hold only
      finite states, checked before each save.
    guards.Stopped: SIGTERM/SIGINT arrived (see `guards`); the teachers were
      saved at the step reached.
  """
  pop = loop.members('train_teachers', seed, directory, writer)
  seeds, dirs, writers = pop.seeds, pop.directories, pop.writers
  obs_dims = [int(x) for x in np.asarray(source.obs_dims)]
  act_dims = [int(x) for x in np.asarray(source.act_dims)]
  if len(tasks) != len(obs_dims):
    raise ValueError(f'train_teachers: {len(tasks)} task names for a source'
                     f' of {len(obs_dims)} tasks')
  if config.steps_per_dispatch < 1 or config.steps < 0:
    raise ValueError('teacher: need steps_per_dispatch >= 1 and steps >= 0,'
                     f' got {config.steps_per_dispatch}, {config.steps}')
  model = model_lib.make_model(
      config.model, obs_dims=(source.states.shape[1],),
      act_dims=(source.actions.shape[1],),
      context_len=data_config.context_len,
      max_timestep=data_config.max_timestep)
  optimizer = optimizer_lib.make_optimizer(config.optimizer)
  alpha_optimizer = optimizer_lib.make_alpha_optimizer(config.entropy)
  train_step = make_train_step(model, optimizer, alpha_optimizer,
                               act_dims=act_dims)

  # Units: member p's teacher of task i is unit p * T + i.
  num_tasks, num_members = len(tasks), len(seeds)
  units = [(p, i) for p in range(num_members) for i in range(num_tasks)]
  names = [f'{pop.labels[p]}/{tasks[i]}'.lstrip('/') for p, i in units]
  init_fn = make_init_fn(model, optimizer, alpha_optimizer,
                         alpha=config.entropy.alpha)
  keys = jnp.stack([jax.random.fold_in(jax.random.key(seeds[p]), i)
                    for p, i in units])
  abstract = jax.eval_shape(init_fn, keys[0])
  managers = [checkpointing.make_manager(os.path.join(dirs[p], tasks[i]),
                                         keep=config.keep) for p, i in units]
  vmap = parallel.teacher_vmap(config.vmap)
  task_groups = [list(range(num_tasks))] if vmap else [
      [i] for i in range(num_tasks)]
  groups = [[p * num_tasks + i for p in range(num_members) for i in g]
            for g in task_groups]
  resume = {}
  for group in groups:
    step = loop.align([managers[u] for u in group],
                      [f'teacher {names[u]}' for u in group])
    resume.update(dict.fromkeys(group, step))
  rep = member_sh = None
  if placement is not None:
    rep, member_sh = placement.replicated_sharding, placement.member_sharding
  # One compiled init for all teachers (same values as one by one), created
  # already placed.
  fresh = [resume[u] is None for u in range(len(units))]
  if placement is not None:
    keys = placement.replicated(keys)
  initial = (loop.unstack(_run_once(jax.vmap(init_fn), keys,
                                    out_shardings=rep), len(units))
             if any(fresh) else [None] * len(units))

  def restored(u):
    state = checkpointing.restore(managers[u], abstract, step=resume[u])[0]
    return state if placement is None else placement.replicated(state)

  states = [initial[u] if fresh[u] else restored(u)
            for u in range(len(units))]
  metas = [checkpointing.policy_meta(
      model, kind='teacher', tasks=[t], obs_dims=[obs_dims[i]],
      act_dims=[act_dims[i]], stats=[stats[i]], data_config=data_config,
      task=t, task_index=i) for i, t in enumerate(tasks)]

  def save(u, state):
    step = int(state.step)
    checkpointing.save(managers[u], step, state,
                       {**metas[units[u][1]], 'step': step})
    guards.fault(f'teachers/{tasks[units[u][1]]}@{step}')

  # Leading axes of a group's state: [P] members, then [N] teachers trained
  # together (vmap).
  lead = (num_members,) + (len(task_groups[0]),) * vmap
  mode = members or parallel.population_mode(None)
  shards = 1 if placement is None else placement.mesh.shape['population']

  def make_update(num_steps):
    fn = make_update_fn(train_step, batch_size=config.batch_size,
                        num_steps=num_steps, placement=placement)
    if vmap:
      fn = jax.vmap(fn, in_axes=(0, None, 0))
    return loop.over_members(fn, (0, None, None), lambda f: (
        parallel.over_members(f, (0, None, None), mode, shards)))

  update = loop.fused(make_update, **({} if placement is None else dict(
      in_shardings=(member_sh, rep, rep), out_shardings=(member_sh, rep))))
  main = parallel.is_main_process()
  with guards.deferred():
    for group in groups:
      parts = lambda state: loop.unstack(
          state, len(group), len(lead), rep)

      def check(state, metrics, *, prev, step, checked):
        flat = {k: np.asarray(v).reshape(-1)
                for k, v in jax.device_get(metrics).items()}
        per_unit = [{k: v[j] for k, v in flat.items()}
                    for j in range(len(group))]
        bad_U = np.asarray(loop.count_nonfinite(state.params, len(lead),
                                                rep))
        for j, (u, m) in enumerate(zip(group, per_unit)):
          _check_finite(names[u], m, int(bad_U[j]), step=step, prev=prev,
                        checked=checked, last_good=managers[u].latest_step())
        return per_unit

      def log(state, per_unit, step):
        del state
        for p, w in enumerate(writers):
          if w is not None and main:
            w.write(step, {f'teacher/{tasks[units[u][1]]}/{k}': v
                           for u, m in zip(group, per_unit)
                           if units[u][0] == p for k, v in m.items()})
        return {'loss': ' '.join(f'{float(m["loss"]):.3f}'
                                 for m in per_unit)}

      def save_group(state, step):
        del step  # Each part carries its own.
        for u, part in zip(group, parts(state)):
          save(u, part)

      task_arg = np.asarray(task_groups[0] if vmap else
                            units[group[0]][1], np.int32)
      label = 'teachers ' + ','.join(names[u] for u in group)
      state = loop.run(
          update, loop.stack([states[u] for u in group], lead, member_sh),
          (source, jnp.asarray(task_arg) if placement is None
           else placement.replicated(task_arg)),
          step=int(states[group[0]].step), steps=config.steps,
          steps_per_dispatch=config.steps_per_dispatch,
          log_every=config.log_every, ckpt_every=config.ckpt_every,
          desc=label, what=label, fault='teachers', check=check, log=log,
          save=save_group)
      for u, part in zip(group, parts(state)):
        states[u] = part
        if managers[u].latest_step() != int(part.step):
          save(u, part)
  for manager in managers:
    manager.close()
  out = [{tasks[i]: states[p * num_tasks + i] for i in range(num_tasks)}
         for p in range(num_members)]
  return out[0] if pop.single else out


def _check_finite(task: str, metrics: dict[str, Any], bad_params: int, *,
                  step: int, prev: int, checked: int,
                  last_good: int | None) -> None:
  """Raises `FloatingPointError` naming the task, step and metric."""
  bad = [k for k in ('loss', 'grad_norm', *sorted(metrics))
         if k in metrics and not np.isfinite(metrics[k])]
  if not bad and not bad_params:
    return
  what = (f'{bad[0]} {float(metrics[bad[0]])}' if bad else
          f'parameters ({bad_params} values)')
  raise FloatingPointError(
      f'teachers: non-finite {what} for task {task!r} at step {step} (in'
      f' steps {prev + 1}..{step}, or after step {checked}, the last check);'
      f' stopped, the last good checkpoint is step {last_good}. Set'
      ' --config.debug_nans=True to stop at the operation that made it.')

"""Multi-task distillation of frozen teachers into one student.

The method (DESIGN.md section 3): each step the student's divergence from every
teacher, `KL_k = E_{x ~ D_k} KL(pi_k(.|x) || pi_theta(.|x, k))`, is measured on
small probe batches with forward passes only; a curriculum selector picks the
teacher to learn from; one student gradient is taken on a batch of that
teacher's dataset; gradient surgery keeps it aligned with the previous update.

Probe batches come from a fixed on-device pool of segments per task whose
teacher outputs are computed once (the teachers are frozen), so a probe costs
one student forward pass.

Letters in shape suffixes: B batch, P probe batch, N probe pool, K context,
S padded state size, A padded action size, T tasks.
"""

from collections.abc import Callable
import functools
from typing import Any, NamedTuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_collections
import optax

from distill import losses
from distill import optim
from distill.data import segments
from distill.models import decision_transformer as dt
from distill.train import teacher as teacher_lib

# Selectors that choose from probe divergences before the gradient is taken.
SINGLE_TEACHER_SELECTORS = ('max_kl', 'round_robin', 'uniform',
                            'learning_progress', 'rnd')
CURRICULA = SINGLE_TEACHER_SELECTORS + ('mixture', 'bi_objective')
SURGERIES = ('none', 'previous', 'pcgrad')
LOSSES = ('kl', 'mse')


class StudentState(NamedTuple):
  """Student training state: data only.

  Attributes:
    step: int32 scalar.
    params: student parameters.
    opt_state: state of the optimizer chain (surgery, clipping, AdamW).
    curriculum_state: state of the curriculum selector.
    rng: typed key; step keys are `fold_in(rng, step)`.
  """

  step: jax.Array
  params: Any
  opt_state: Any
  curriculum_state: Any
  rng: jax.Array


class ProbePool(NamedTuple):
  """Fixed probe segments per task with the frozen teacher's outputs on them.

  Attributes:
    batch: a `SegmentBatch` whose leaves have leading axes [T, N].
    teacher_mean: [T, N, K, A] pre-tanh teacher means.
    teacher_log_std: [T, N, K, A] teacher log-stds.
  """

  batch: segments.SegmentBatch
  teacher_mean: jax.Array
  teacher_log_std: jax.Array


def make_student(config: ml_collections.ConfigDict, obs_dims, act_dims, *,
                 context_len: int, max_timestep: int) -> dt.DecisionTransformer:
  """The multi-task student: one trunk, task embedding, per-task adapters.

  Args:
    config: `config.student.model` (num_layers, width, num_heads, dropout,
      head, log_std_min, log_std_max).
    obs_dims: state size per task.
    act_dims: action size per task.
    context_len: K.
    max_timestep: largest timestep embedded.

  Returns:
    A `DecisionTransformer` over all tasks.
  """
  return dt.DecisionTransformer(
      obs_dims=tuple(obs_dims), act_dims=tuple(act_dims),
      num_layers=config.num_layers, width=config.width,
      num_heads=config.num_heads, dropout=config.dropout,
      context_len=context_len, max_timestep=max_timestep, head=config.head,
      log_std_min=config.log_std_min, log_std_max=config.log_std_max)


def make_selector(config: ml_collections.ConfigDict, num_tasks: int,
                  obs_dim: int, key: jax.Array):
  """The curriculum selector named by `config.curriculum.name`.

  Args:
    config: `config.curriculum`.
    num_tasks: T.
    obs_dim: padded state size (for the RND novelty networks).
    key: key for the random selectors.

  Returns:
    An `optax.GradientTransformationExtraArgs` from `distill.optim`.
  """
  name = config.name
  if name == 'max_kl':
    return optim.max_kl(num_tasks, mode=config.mode,
                        temperature=config.temperature,
                        epsilon=config.epsilon, key=key)
  if name == 'round_robin':
    return optim.round_robin(num_tasks)
  if name == 'uniform':
    return optim.uniform(num_tasks, key)
  if name == 'mixture':
    return optim.mixture(num_tasks)
  if name == 'learning_progress':
    return optim.learning_progress(num_tasks, key,
                                   temperature=config.temperature,
                                   epsilon=config.epsilon)
  if name == 'rnd':
    return optim.rnd(num_tasks, key, obs_dim)
  if name == 'bi_objective':
    return optim.bi_objective(num_tasks, lam=config.lam)
  raise ValueError(f'--config.curriculum.name={name!r} is not one of'
                   f' {CURRICULA}')


def make_optimizer(config: ml_collections.ConfigDict, num_tasks: int,
                   key: jax.Array) -> optax.GradientTransformation:
  """Surgery, global-norm clipping and AdamW with linear warmup.

  Args:
    config: the whole config (reads `student.optimizer` and `surgery`).
    num_tasks: T (PCGrad's per-task updates carry a leading T axis).
    key: key for PCGrad's random task order.

  Returns:
    `optax.chain(surgery, clip_by_global_norm + adamw)` (the teachers'
    optimizer, `distill.train.teacher.make_optimizer`); the surgery is always
    the first element (`optax.identity()` for 'none').
  """
  del num_tasks
  opt = config.student.optimizer
  name = config.surgery.name
  if name == 'none':
    surgery = optax.identity()
  elif name == 'previous':
    surgery = optim.project_conflicting(decay=config.surgery.decay)
  elif name == 'pcgrad':
    surgery = optim.pcgrad(key, reduction=config.surgery.reduction)
  else:
    raise ValueError(f'--config.surgery.name={name!r} is not one of'
                     f' {SURGERIES}')
  return optax.chain(surgery, teacher_lib.make_optimizer(opt))


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses combinations of curriculum, surgery and loss that cannot run."""
  cur, sur = config.curriculum.name, config.surgery.name
  if cur not in CURRICULA:
    raise ValueError(f'--config.curriculum.name={cur!r} is not one of'
                     f' {CURRICULA}')
  if sur not in SURGERIES:
    raise ValueError(f'--config.surgery.name={sur!r} is not one of'
                     f' {SURGERIES}')
  if config.student.loss not in LOSSES:
    raise ValueError(f'--config.student.loss={config.student.loss!r} is not'
                     f' one of {LOSSES}')
  if sur == 'pcgrad' and cur != 'mixture':
    raise ValueError(
        '--config.surgery.name=pcgrad combines every teacher\'s gradient each'
        ' step, so it needs --config.curriculum.name=mixture (got'
        f' {cur!r})')
  needs_probes = cur in ('max_kl', 'learning_progress', 'rnd', 'bi_objective')
  if needs_probes and config.student.probe_size < 1:
    raise ValueError(
        f'--config.curriculum.name={cur!r} scores teachers on probe batches;'
        ' --config.student.probe_size must be >= 1')
  if config.student.batch_size % len(config.tasks) and cur in (
      'mixture', 'bi_objective'):
    raise ValueError(
        f'--config.student.batch_size={config.student.batch_size} must be a'
        f' multiple of the {len(config.tasks)} tasks for curriculum {cur!r}')


def _take(tree, index):
  return jax.tree.map(lambda x: x[index], tree)


def _apply(model: nn.Module, params, batch: segments.SegmentBatch, *,
           train: bool = False, rng: jax.Array | None = None):
  rngs = {'dropout': rng} if train else None
  return model.apply({'params': params}, batch.rtg, batch.states,
                     batch.actions, batch.timesteps, batch.mask, batch.task,
                     train=train, rngs=rngs)


def make_probe_pool(source: segments.SegmentSource,
                    teacher: dt.DecisionTransformer, teacher_params_T,
                    key: jax.Array, pool_size: int) -> ProbePool:
  """Samples `pool_size` segments per task and runs each teacher on its own.

  Args:
    source: on-device segments of all T tasks.
    teacher: the teachers' module (one task, padded S and A).
    teacher_params_T: teacher parameters stacked on a leading T axis.
    key: sampling key.
    pool_size: N, segments per task.

  Returns:
    The pool, on the device.
  """
  num_tasks = jax.tree.leaves(teacher_params_T)[0].shape[0]

  @jax.jit
  def build(key, source, teacher_params_T):
    keys = jax.random.split(key, num_tasks)
    batch = jax.vmap(
        lambda k, t: segments.sample_task_batch(source, k, t, pool_size))(
            keys, jnp.arange(num_tasks))
    # The teachers are single-task modules: they see task id 0.
    as_teacher = batch._replace(task=jnp.zeros_like(batch.task))
    mean, log_std = jax.vmap(lambda p, b: _apply(teacher, p, b))(
        teacher_params_T, as_teacher)
    return ProbePool(batch, mean, log_std)

  return build(key, source, teacher_params_T)


def _divergence_BxK(config, t_mean, t_log_std, s_mean, s_log_std, mask_BxA):
  if config.loss == 'kl':
    return losses.kl_diag_gaussian(t_mean, t_log_std, s_mean, s_log_std,
                                   mask_BxA[:, None, :],
                                   temperature=config.temperature)
  return losses.mse(s_mean, t_mean, mask_BxA[:, None, :])


def make_distill_step(
    config: ml_collections.ConfigDict,
    student: dt.DecisionTransformer,
    teacher: dt.DecisionTransformer,
    selector: optax.GradientTransformationExtraArgs,
    optimizer: optax.GradientTransformation,
) -> Callable[..., tuple[StudentState, dict[str, jax.Array]]]:
  """Builds the pure distillation step.

  Args:
    config: the whole config (reads `student`, `curriculum`, `surgery`).
    student: the multi-task student module.
    teacher: the teachers' (single-task, padded) module.
    selector: the curriculum selector.
    optimizer: from `make_optimizer`.

  Returns:
    `distill_step(state, teacher_params_T, source, pool) -> (state, metrics)`
    where `source` holds the training segments of all tasks and `pool` the
    probe pool (None when `student.probe_size == 0`). Both are arguments, not
    closure constants, so the datasets never get baked into the compiled
    program. Metrics are device scalars and the [T] vector `distill/kl`
    (probe divergences).
  """
  scfg = config.student
  cur_name = config.curriculum.name
  num_tasks = len(config.tasks)
  batch_size = scfg.batch_size
  probe_size = scfg.probe_size
  act_mask_TxA = dt.action_mask(student.act_dims)
  per_task = cur_name in ('mixture', 'bi_objective')

  def loss_fn(params, batch, t_mean, t_log_std, rng):
    s_mean, s_log_std = _apply(student, params, batch, train=True, rng=rng)
    div_BxK = _divergence_BxK(scfg, t_mean, t_log_std, s_mean, s_log_std,
                              act_mask_TxA[batch.task])
    return losses.masked_mean(div_BxK, batch.mask)

  def probe_divergences(params, pool, key):
    if pool is None:
      return jnp.zeros((num_tasks,), jnp.float32), None
    n = pool.teacher_mean.shape[1]
    idx_TxP = jax.random.randint(key, (num_tasks, probe_size), 0, n)
    take = jax.vmap(lambda x, i: x[i])
    probe = jax.tree.map(lambda x: take(x, idx_TxP), pool.batch)
    t_mean = take(pool.teacher_mean, idx_TxP)
    t_log_std = take(pool.teacher_log_std, idx_TxP)

    def one(b, tm, tl):
      s_mean, s_log_std = _apply(student, params, b)
      div = _divergence_BxK(scfg, tm, tl, s_mean, s_log_std,
                            act_mask_TxA[b.task])
      return losses.masked_mean(div, b.mask)

    kl_T = jax.vmap(one)(probe, t_mean, t_log_std)
    return kl_T, probe

  def teacher_outputs(teacher_params_T, batch, task):
    as_teacher = batch._replace(task=jnp.zeros_like(batch.task))
    return _apply(teacher, _take(teacher_params_T, task), as_teacher)

  def grouped_batch(source, key, teacher_params_T):
    """B/T segments of every task, [T, B/T, ...], with teacher outputs."""
    keys = jax.random.split(key, num_tasks)
    tasks_T = jnp.arange(num_tasks)
    batch = jax.vmap(lambda k, t: segments.sample_task_batch(
        source, k, t, batch_size // num_tasks))(keys, tasks_T)
    as_teacher = batch._replace(task=jnp.zeros_like(batch.task))
    t_mean, t_log_std = jax.vmap(lambda p, b: _apply(teacher, p, b))(
        teacher_params_T, as_teacher)
    return batch, t_mean, t_log_std

  def distill_step(state: StudentState, teacher_params_T,
                   source: segments.SegmentSource, pool: ProbePool | None):
    rng = jax.random.fold_in(state.rng, state.step)
    k_probe, k_batch, k_drop = jax.random.split(rng, 3)
    params = state.params
    kl_T, probe = probe_divergences(params, pool, k_probe)
    extra = {'task_divergences': kl_T}
    if cur_name == 'rnd':
      extra['task_states'] = probe.states.reshape(num_tasks, -1,
                                                  probe.states.shape[-1])
    metrics = {}

    if not per_task:
      # Choose first (forward passes only), then one gradient on that task.
      _, cur_state = selector.update(kl_T, state.curriculum_state, params,
                                     **extra)
      task = cur_state.choice
      batch = segments.sample_task_batch(source, k_batch, task, batch_size)
      t_mean, t_log_std = teacher_outputs(teacher_params_T, batch, task)
      loss, grads = jax.value_and_grad(loss_fn)(params, batch, t_mean,
                                                t_log_std, k_drop)
      metrics['train/task_loss'] = loss
    else:
      batch_T, t_mean_T, t_log_std_T = grouped_batch(source, k_batch,
                                                     teacher_params_T)
      if cur_name == 'mixture' and config.surgery.name != 'pcgrad':
        flat = lambda x: x.reshape((-1,) + x.shape[2:])
        loss, grads = jax.value_and_grad(loss_fn)(
            params, jax.tree.map(flat, batch_T), flat(t_mean_T),
            flat(t_log_std_T), k_drop)
        _, cur_state = selector.update(kl_T, state.curriculum_state, params,
                                       **extra)
      else:
        # Per-teacher gradients: one vectorised backward over the T groups.
        loss_T, grads_T = jax.vmap(
            jax.value_and_grad(loss_fn), in_axes=(None, 0, 0, 0, None))(
                params, batch_T, t_mean_T, t_log_std_T, k_drop)
        if cur_name == 'bi_objective':
          grads, cur_state = selector.update(grads_T, state.curriculum_state,
                                             params, **extra)
          loss = loss_T[cur_state.choice]
        else:  # PCGrad consumes the stacked gradients itself.
          grads = grads_T
          _, cur_state = selector.update(kl_T, state.curriculum_state, params,
                                         **extra)
          loss = jnp.mean(loss_T)
      metrics['train/task_loss'] = loss

    updates, opt_state = optimizer.update(grads, state.opt_state, params)
    params = optax.apply_updates(params, updates)
    surgery_state = opt_state[0]
    metrics.update({
        'train/loss': loss,
        'train/grad_norm': optax.global_norm(grads),
        'train/update_norm': optax.global_norm(updates),
        'curriculum/choice': cur_state.choice,
        'distill/kl': kl_T,
        'surgery/cos_prev': getattr(surgery_state, 'cos', jnp.float32(0)),
        'surgery/projected': jnp.asarray(
            getattr(surgery_state, 'projected', 0.0), jnp.float32),
    })
    new_state = StudentState(state.step + 1, params, opt_state, cur_state,
                             state.rng)
    return new_state, metrics

  return distill_step


def make_multi_step(step_fn, num_steps: int):
  """Fuses `num_steps` distillation steps into one dispatch with `lax.scan`.

  Args:
    step_fn: from `make_distill_step`.
    num_steps: steps per dispatch.

  Returns:
    `multi_step(state, teacher_params_T, source, pool) -> (state, metrics)`
    whose metrics carry a leading [num_steps] axis.
  """

  def multi_step(state, teacher_params_T, source, pool):
    def body(s, _):
      return step_fn(s, teacher_params_T, source, pool)
    return jax.lax.scan(body, state, None, length=num_steps)

  return multi_step


def init_state(config: ml_collections.ConfigDict,
               student: dt.DecisionTransformer,
               source: segments.SegmentSource, selector, optimizer,
               key: jax.Array) -> StudentState:
  """Initial student state (parameters from a sampled batch's shapes)."""
  k_init, k_batch, k_rng = jax.random.split(key, 3)
  batch = segments.sample_mixed_batch(source, k_batch, 2)
  params = student.init(k_init, batch.rtg, batch.states, batch.actions,
                        batch.timesteps, batch.mask, batch.task,
                        train=False)['params']
  return StudentState(jnp.int32(0), params, optimizer.init(params),
                      selector.init(params), k_rng)


def student_policy(student: dt.DecisionTransformer) -> Callable[..., Any]:
  """`policy(params, batch) -> (mean, log_std)` for evaluation."""
  return functools.partial(_apply, student)

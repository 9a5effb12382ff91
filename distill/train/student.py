"""Multi-task distillation of frozen teachers into one student: the step.

The method (docs/design.md, section 3): the student's divergence from
every teacher, `KL_k = E_{x ~ D_k} KL(pi_k(.|x) || pi_theta(.|x, k))`, is
measured on small probe batches with forward passes only; a curriculum
selector picks what to learn from; a student gradient is taken; gradient
surgery keeps it aligned with the previous update; AdamW applies it.

What one step runs, in order:

1. `k_probe, k_batch, k_drop` from `fold_in(rng, step)`.
2. Probe divergences `kl_T`: P segments per task drawn from the fixed probe
   pool, whose teacher outputs were computed once (the teachers are frozen),
   so a probe costs one student forward pass per task. Zeros without a pool.
3. The gradient path of the curriculum (chosen once, when the step is
   built, from the tables below; the traced step compares no strings):
   - `CHOSEN`: the selector picks task k from `kl_T` (or its own rule), then
     one gradient on a batch of D_k against teacher k's outputs;
   - `MIXED`: one gradient on a batch holding B/T segments of every task
     (against each task's teacher, or against the dataset actions for the
     from-scratch baseline); the selector only counts;
   - `PER_TEACHER`: one vectorised backward over the T groups of the mixed
     batch gives stacked gradients `grads_T`; a selector that consumes them
     (`bi_objective`) returns the chosen task's, or a stacked surgery
     (`pcgrad`) combines them.
4. `optimizer = chain(surgery, clip, AdamW)`; the surgery is first, so it
   sees the raw (or stacked) gradient and the previous update.

The tables `CURRICULA`, `SURGERIES` and `LOSSES` are plain dicts: one record
per name, no registration at import. To add a curriculum, add a record.

Letters in shape suffixes: B batch, P probe batch, N probe pool, K context,
S padded state size, A padded action size, T tasks.
"""

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from distill.data import segments
from distill import losses
from distill.models import model as model_lib
from distill import optim
from distill.train import optimizer as optimizer_lib
from distill.train import parallel

CHOSEN, MIXED, PER_TEACHER = 'chosen', 'mixed', 'per_teacher'


class Curriculum(NamedTuple):
  """How a curriculum is built and which gradient path it needs.

  Attributes:
    make: `(config.curriculum, num_tasks, obs_dim, key) -> selector`, an
      optax `GradientTransformationExtraArgs` from `distill.optim`.
    probes: scores teachers on probe batches (needs `student.probe_size`).
    path: CHOSEN, MIXED or PER_TEACHER (see the module docstring).
    extra_args: the keyword arguments its `update` takes, by name, from
      'task_divergences' ([T] probe KLs) and 'task_states' ([T, P*K, S]).
    stacked: its `update` consumes stacked per-task gradients.
    teachers: learns from the teachers; False learns the dataset actions
      (the from-scratch baseline: multi-task behavior cloning).
  """

  make: Callable[..., optax.GradientTransformationExtraArgs]
  probes: bool
  path: str
  extra_args: tuple[str, ...] = ()
  stacked: bool = False
  teachers: bool = True


class Surgery(NamedTuple):
  """How a gradient surgery is built.

  Attributes:
    make: `(config.surgery, key) -> GradientTransformation`.
    stacked: takes stacked per-task gradients (needs the PER_TEACHER path).
    metrics: `state -> {'surgery/cos_prev', 'surgery/projected'}`.
  """

  make: Callable[..., optax.GradientTransformation]
  stacked: bool
  metrics: Callable[[Any], dict[str, jax.Array]]


CURRICULA: dict[str, Curriculum] = {
    'max_kl': Curriculum(
        lambda c, t, s, k: optim.max_kl(t, mode=c.mode, key=k,
                                        temperature=c.temperature,
                                        epsilon=c.epsilon),
        probes=True, path=CHOSEN, extra_args=('task_divergences',)),
    'round_robin': Curriculum(lambda c, t, s, k: optim.round_robin(t),
                              probes=False, path=CHOSEN),
    'uniform': Curriculum(lambda c, t, s, k: optim.uniform(t, k),
                          probes=False, path=CHOSEN),
    'learning_progress': Curriculum(
        lambda c, t, s, k: optim.learning_progress(
            t, k, temperature=c.temperature, epsilon=c.epsilon),
        probes=True, path=CHOSEN, extra_args=('task_divergences',)),
    'rnd': Curriculum(lambda c, t, s, k: optim.rnd(t, k, s), probes=True,
                      path=CHOSEN, extra_args=('task_states',)),
    'mixture': Curriculum(lambda c, t, s, k: optim.mixture(t), probes=False,
                          path=MIXED),
    'bi_objective': Curriculum(
        lambda c, t, s, k: optim.bi_objective(t, lam=c.lam), probes=True,
        path=PER_TEACHER, extra_args=('task_divergences',), stacked=True),
    'scratch': Curriculum(lambda c, t, s, k: optim.mixture(t), probes=False,
                          path=MIXED, teachers=False),
}


def _no_surgery_metrics(state):
  del state
  return {'surgery/cos_prev': jnp.float32(0),
          'surgery/projected': jnp.float32(0)}


SURGERIES: dict[str, Surgery] = {
    'none': Surgery(lambda c, k: optax.identity(), stacked=False,
                    metrics=_no_surgery_metrics),
    'previous': Surgery(
        lambda c, k: optim.project_conflicting(decay=c.decay), stacked=False,
        metrics=lambda s: {'surgery/cos_prev': s.cos,
                           'surgery/projected': jnp.asarray(s.projected,
                                                            jnp.float32)}),
    'pcgrad': Surgery(
        lambda c, k: optim.pcgrad(k, reduction=c.reduction), stacked=True,
        metrics=lambda s: {'surgery/cos_prev': jnp.float32(0),
                           'surgery/projected': jnp.asarray(
                               s.projected_fraction, jnp.float32)}),
}

# (teacher_mean, teacher_log_std, student_mean, student_log_std, act_mask,
#  temperature) -> per-step divergence [B, K].
LOSSES: dict[str, Callable[..., jax.Array]] = {
    'kl': lambda tm, tl, sm, sl, m, temp: losses.kl_diag_gaussian(
        tm, tl, sm, sl, m, temperature=temp),
    'mse': lambda tm, tl, sm, sl, m, temp: losses.mse(sm, tm, m),
}


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


def check_config(config: ml_collections.ConfigDict) -> None:
  """Refuses combinations of curriculum, surgery and loss that cannot run.

  Raises:
    ValueError: naming the flag and what is wrong.
  """
  cur, sur = config.curriculum.name, config.surgery.name
  for flag, name, table in (('curriculum.name', cur, CURRICULA),
                            ('surgery.name', sur, SURGERIES),
                            ('student.loss', config.student.loss, LOSSES)):
    if name not in table:
      raise ValueError(f'--config.{flag}={name!r} is not one of'
                       f' {tuple(table)}')
  curriculum, surgery = CURRICULA[cur], SURGERIES[sur]
  fraction = config.student.get('bc_top_fraction', 1.0)
  if (isinstance(fraction, bool) or not isinstance(fraction, (int, float))
      or not 0.0 < fraction <= 1.0):
    raise ValueError(
        f'--config.student.bc_top_fraction={fraction!r} must be a number in'
        ' (0, 1]: the share of each task\'s transitions the from-scratch'
        ' student clones (1.0: all)')
  if fraction != 1.0 and curriculum.teachers:
    raise ValueError(
        f'--config.student.bc_top_fraction={fraction} filters the episodes'
        f' a student clones, but curriculum {cur!r} learns from the'
        ' teachers; use --config.curriculum.name=scratch (%BC) or leave it'
        ' at 1.0')
  if surgery.stacked and curriculum.path != MIXED:
    raise ValueError(
        f'--config.surgery.name={sur} combines every teacher\'s gradient each'
        ' step, so it needs a curriculum that learns from every teacher at'
        f' once (--config.curriculum.name=mixture); got {cur!r}')
  if curriculum.probes and config.student.probe_size < 1:
    raise ValueError(
        f'--config.curriculum.name={cur!r} scores teachers on probe batches;'
        ' --config.student.probe_size must be >= 1')
  if (curriculum.path != CHOSEN or surgery.stacked) and (
      config.student.batch_size % len(config.tasks)):
    raise ValueError(
        f'--config.student.batch_size={config.student.batch_size} must be a'
        f' multiple of the {len(config.tasks)} tasks for curriculum {cur!r}'
        f' with surgery {sur!r}')


def make_selector(config: ml_collections.ConfigDict, num_tasks: int,
                  obs_dim: int, key: jax.Array
                  ) -> optax.GradientTransformationExtraArgs:
  """The curriculum selector named by `config.name` (`CURRICULA`).

  Args:
    config: `config.curriculum`.
    num_tasks: T.
    obs_dim: padded state size (for the RND novelty networks).
    key: key of the random selectors.

  Returns:
    An `optax.GradientTransformationExtraArgs` from `distill.optim`.
  """
  return CURRICULA[config.name].make(config, num_tasks, obs_dim, key)


def make_optimizer(config: ml_collections.ConfigDict, key: jax.Array
                   ) -> optax.GradientTransformation:
  """Surgery, then global-norm clipping and AdamW with warmup.

  Args:
    config: the whole config (reads `surgery` and `student.optimizer`).
    key: key of PCGrad's random task order.

  Returns:
    `optax.chain(surgery, optimizer_lib.make_optimizer(...))`; the surgery
    is always element 0 (`optax.identity()` for 'none').
  """
  surgery = SURGERIES[config.surgery.name].make(config.surgery, key)
  return optax.chain(surgery,
                     optimizer_lib.make_optimizer(config.student.optimizer))


def _as_teacher(batch: segments.SegmentBatch) -> segments.SegmentBatch:
  # The teachers are single-task modules: they see task id 0.
  return batch._replace(task=jnp.zeros_like(batch.task))


def make_probe_pool(source: segments.SegmentSource,
                    teacher: model_lib.DecisionTransformer, teacher_params_T,
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
    mean, log_std = jax.vmap(lambda p, b: model_lib.apply(teacher, p, b))(
        teacher_params_T, _as_teacher(batch))
    return ProbePool(batch, mean, log_std)

  return build(key, source, teacher_params_T)


def make_distill_step(
    config: ml_collections.ConfigDict,
    student: model_lib.DecisionTransformer,
    teacher: model_lib.DecisionTransformer,
    selector: optax.GradientTransformationExtraArgs,
    optimizer: optax.GradientTransformation,
    *,
    placement: parallel.Placement | None = None,
) -> Callable[..., tuple[StudentState, dict[str, jax.Array]]]:
  """Builds the pure distillation step (see the module docstring).

  Args:
    config: the whole config (reads `tasks`, `student`, `curriculum`,
      `surgery`).
    student: the multi-task student module.
    teacher: the teachers' (single-task, padded) module.
    selector: from `make_selector`.
    optimizer: from `make_optimizer`.
    placement: with a device mesh, every sampled batch is split over its
      'data' axis (`parallel.constrain_batch`); None on one device.

  Returns:
    `distill_step(state, teacher_params_T, source, pool) -> (state, metrics)`
    where `source` holds the training segments of all tasks and `pool` the
    probe pool (None when `student.probe_size == 0`). Both are arguments, not
    closure constants, so the datasets never get baked into the compiled
    program. Metrics are device scalars, the [T] vectors `distill/kl` (probe
    divergences) and `curriculum/counts`. The config is taken as valid:
    the run's entry checks it once (`check_config`).
  """
  scfg = config.student
  curriculum = CURRICULA[config.curriculum.name]
  surgery = SURGERIES[config.surgery.name]
  divergence = LOSSES[scfg.loss]
  num_tasks, batch_size = len(config.tasks), scfg.batch_size
  act_mask_TxA = model_lib.action_mask(student.act_dims)
  gaussian = student.head == 'tanh_gaussian'

  def objective(params, batch, target, rng):
    """Mean over valid steps of the loss of one batch against its target."""
    s_mean, s_log_std = model_lib.apply(student, params, batch, train=rng
                                        is not None, rng=rng)
    m = act_mask_TxA[batch.task][:, None, :]
    if target is None:  # Behavior cloning on the dataset actions.
      per_step = (-losses.tanh_gaussian_log_prob(s_mean, s_log_std,
                                                 batch.actions, m)
                  if gaussian else
                  losses.mse(jnp.tanh(s_mean), batch.actions, m))
    else:
      per_step = divergence(*target, s_mean, s_log_std, m, scfg.temperature)
    return losses.masked_mean(per_step, batch.mask)

  def teacher_target(teacher_params, batch):
    if not curriculum.teachers:
      return None
    return model_lib.apply(teacher, teacher_params, _as_teacher(batch))

  def probe_divergences(params, pool, key):
    if pool is None:
      return jnp.zeros((num_tasks,), jnp.float32), None
    n = pool.teacher_mean.shape[1]
    idx_TxP = jax.random.randint(key, (num_tasks, scfg.probe_size), 0, n)
    take = jax.vmap(lambda x, i: x[i])
    probe = jax.tree.map(lambda x: take(x, idx_TxP), pool.batch)
    target = (take(pool.teacher_mean, idx_TxP),
              take(pool.teacher_log_std, idx_TxP))
    kl_T = jax.vmap(objective, in_axes=(None, 0, 0, None))(params, probe,
                                                          target, None)
    return kl_T, probe.states.reshape(num_tasks, -1, probe.states.shape[-1])

  def grouped_batch(source, key, teacher_params_T):
    """B/T segments of every task, [T, B/T, ...], with their targets."""
    batch_T = jax.vmap(lambda k, t: segments.sample_task_batch(
        source, k, t, batch_size // num_tasks))(
            jax.random.split(key, num_tasks), jnp.arange(num_tasks))
    batch_T = parallel.constrain_batch(batch_T, placement, axis=1)
    return batch_T, jax.vmap(teacher_target)(teacher_params_T, batch_T)

  def chosen(params, cur_state, extra, teacher_params_T, source, k_b, k_d):
    _, cur_state = selector.update(None, cur_state, params, **extra)
    task = cur_state.choice
    batch = parallel.constrain_batch(
        segments.sample_task_batch(source, k_b, task, batch_size), placement)
    target = teacher_target(jax.tree.map(lambda x: x[task], teacher_params_T),
                            batch)
    loss, grads = jax.value_and_grad(objective)(params, batch, target, k_d)
    return loss, grads, cur_state

  def mixed(params, cur_state, extra, teacher_params_T, source, k_b, k_d):
    batch_T, target_T = grouped_batch(source, k_b, teacher_params_T)
    flat = lambda x: x.reshape((-1,) + x.shape[2:])
    loss, grads = jax.value_and_grad(objective)(
        params, jax.tree.map(flat, batch_T), jax.tree.map(flat, target_T),
        k_d)
    _, cur_state = selector.update(None, cur_state, params, **extra)
    return loss, grads, cur_state

  def per_teacher(params, cur_state, extra, teacher_params_T, source, k_b,
                  k_d):
    batch_T, target_T = grouped_batch(source, k_b, teacher_params_T)
    loss_T, grads_T = jax.vmap(jax.value_and_grad(objective),
                               in_axes=(None, 0, 0, None))(
                                   params, batch_T, target_T, k_d)
    if curriculum.stacked:  # The selector returns the chosen task's gradient.
      grads, cur_state = selector.update(grads_T, cur_state, params, **extra)
      return loss_T[cur_state.choice], grads, cur_state
    _, cur_state = selector.update(None, cur_state, params, **extra)
    return jnp.mean(loss_T), grads_T, cur_state  # The surgery combines them.

  gradients = (per_teacher if curriculum.stacked or surgery.stacked
               else {CHOSEN: chosen, MIXED: mixed}[curriculum.path])

  def distill_step(state: StudentState, teacher_params_T,
                   source: segments.SegmentSource, pool: ProbePool | None):
    k_probe, k_batch, k_drop = jax.random.split(
        jax.random.fold_in(state.rng, state.step), 3)
    kl_T, probe_states = probe_divergences(state.params, pool, k_probe)
    inputs = {'task_divergences': kl_T, 'task_states': probe_states}
    extra = {name: inputs[name] for name in curriculum.extra_args}
    loss, grads, cur_state = gradients(state.params, state.curriculum_state,
                                       extra, teacher_params_T, source,
                                       k_batch, k_drop)
    updates, opt_state = optimizer.update(grads, state.opt_state,
                                          state.params)
    params = optax.apply_updates(state.params, updates)
    metrics = {
        'train/loss': loss,
        'train/grad_norm': optax.global_norm(grads),
        'train/update_norm': optax.global_norm(updates),
        'curriculum/choice': cur_state.choice,
        'curriculum/counts': cur_state.counts,
        'distill/kl': kl_T,
        **surgery.metrics(opt_state[0]),
    }
    return StudentState(state.step + 1, params, opt_state, cur_state,
                        state.rng), metrics

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


def make_population_step(step_fn, mode: str = 'vmap', groups: int = 1):
  """One step of every member of a population, in one program.

  Args:
    step_fn: from `make_distill_step` (or `make_multi_step`).
    mode: 'vmap' (every operation batched over the members) or 'map' (the
      members in turn, each the computation of a single run);
      `parallel.population_mode(config.mesh)` picks one for the backend.
    groups: the mesh's 'population' size (`parallel.over_members`).

  Returns:
    `step(states_P, teacher_params_PxT, source, pools_P)`: `step_fn` over a
    leading population axis of the state, the teachers and the probe pools
    (each member has its own); the datasets are shared. On a mesh the
    population axis maps to its 'population' axis.
  """
  return parallel.over_members(step_fn, (0, 0, None, 0), mode, groups)


def init_state(student: model_lib.DecisionTransformer, selector, optimizer,
               key: jax.Array) -> StudentState:
  """Initial student state.

  Args:
    student: the student module.
    selector: from `make_selector`.
    optimizer: from `make_optimizer`.
    key: a `jax.random.key`.

  Returns:
    The `StudentState` at step 0.
  """
  k_init, _, k_rng = jax.random.split(key, 3)
  params = model_lib.init_params(student, k_init)
  return StudentState(jnp.int32(0), params, optimizer.init(params),
                      selector.init(params), k_rng)

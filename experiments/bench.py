r"""Speed of the teacher code on this machine; figures with in-run baselines.

  python -m experiments.bench
  python -m experiments.bench --repeats=5 --eval_steps=300

(a) Train step of the paper-size teacher (3 layers x 128, 1 head, K=20,
    batch 64, obs 17, act 6): time and GFLOP/s (XLA's cost analysis of the
    compiled step) against this machine's dense f32 matmul GFLOP/s.
(b) Evaluation: env steps/s of a teacher over 16 vector environments against
    the same model driving one environment at a time (as the reference DT
    code evaluates).
(c) `steps_per_dispatch`: per-update time with updates fused in one
    `lax.scan` (batches sampled on the device) against one update per call.
(d) Four teachers in one vmapped step against four separate steps.
Every ratio is against a baseline measured in the same run.
"""

import time

from absl import app
from absl import flags
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np

from distill import evaluation
from distill.data import segments
from distill.models import model as model_lib
from distill.train import optimizer as optimizer_lib
from distill.train import teacher

_REPEATS = flags.DEFINE_integer('repeats', 3, 'Timed repeats (best is kept).')
_EVAL_STEPS = flags.DEFINE_integer(
    'eval_steps', 200, 'Steps per evaluation episode (b).')
_EVAL_ENVS = flags.DEFINE_integer('eval_envs', 16, 'Vector envs (b).')


def _config(layers, width):
  return ml_collections.ConfigDict(dict(
      model=dict(num_layers=layers, width=width, num_heads=1, dropout=0.1,
                 head='tanh_gaussian', log_std_min=-5.0, log_std_max=2.0),
      optimizer=dict(lr=1e-4, weight_decay=1e-4, warmup_steps=10_000,
                     grad_clip=0.25, b1=0.9, b2=0.999),
      entropy=dict(alpha=0.1, learn=True, lr=1e-4)))


def _source(num_tasks=1, n=20_000):
  r = np.random.default_rng(0)
  datasets = []
  for _ in range(num_tasks):
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    datasets.append(dict(
        observations=r.normal(size=(n, 17)).astype(np.float32),
        actions=np.tanh(r.normal(size=(n, 6))).astype(np.float32),
        rewards=r.normal(size=n).astype(np.float32),
        terminals=np.zeros(n, bool), timeouts=timeouts))
  return segments.make_segment_source(datasets, context_len=20,
                                      rtg_scale=1000.0, max_timestep=1000)


def _best(fn, repeats):
  fn()  # compile / warm up
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return min(times)


def _build(layers, width, source):
  config = _config(layers, width)
  model = model_lib.make_model(config.model, obs_dims=(17,), act_dims=(6,),
                               context_len=20, max_timestep=1000)
  opt = optimizer_lib.make_optimizer(config.optimizer)
  alpha_opt = optimizer_lib.make_alpha_optimizer(config.entropy)
  step = teacher.make_train_step(
      model, opt, alpha_opt,
      act_dims=[int(a) for a in np.asarray(source.act_dims)])
  state = teacher.init_state(model, opt, alpha_opt, jax.random.key(0),
                             alpha=0.1)
  return model, step, state


def bench_matmul(repeats):
  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n))
  b = jax.random.normal(jax.random.key(1), (n, n))
  mm = jax.jit(jnp.matmul)
  t = _best(lambda: mm(a, b).block_until_ready(), repeats)
  return 2 * n**3 / t / 1e9


def bench_train_step(repeats, matmul_gflops):
  source = _source()
  model, step, state = _build(3, 128, source)
  batch = segments.sample_task_batch(source, jax.random.key(0), 0, 64)
  jitted = jax.jit(step)
  compiled = jitted.lower(state, batch).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  flops = float(cost.get('flops', float('nan')))
  holder = [state]

  def run():
    for _ in range(5):
      holder[0], m = jitted(holder[0], batch)
    jax.block_until_ready(m)

  t = _best(run, repeats) / 5
  params = model_lib.count_params(state.params)
  gflops = flops / t / 1e9
  print(f'(a) paper-size teacher ({params:,} params), batch 64, K=20:'
        f' {t * 1e3:.1f} ms/step, {flops / 1e9:.2f} GFLOP/step (XLA cost'
        f' analysis), {gflops:.1f} GFLOP/s = {gflops / matmul_gflops:.0%} of'
        f' the dense matmul rate ({matmul_gflops:.1f} GFLOP/s)')


def bench_eval(repeats, steps, num_envs):
  del repeats  # one pass each: rollouts are long enough
  model = model_lib.make_model(_config(3, 128).model, obs_dims=(17,),
                               act_dims=(6,), context_len=20,
                               max_timestep=1000)
  k = 20
  params = model_lib.init_params(model, jax.random.key(0))
  policy = evaluation.make_policy(model, params)
  common = dict(target_return=6000.0, context_len=k, rtg_scale=1000.0,
                max_timestep=1000, state_mean=np.zeros(17),
                state_std=np.ones(17), state_size=17, action_size=6,
                max_episode_steps=steps)
  # Warm up both batch shapes (compilation is not part of the rate).
  evaluation.evaluate(policy, 'halfcheetah-forward', episodes=num_envs,
                      num_envs=num_envs, seed=0, **dict(
                          common, max_episode_steps=2))
  evaluation.evaluate(policy, 'halfcheetah-forward', episodes=1, num_envs=1,
                      seed=0, **dict(common, max_episode_steps=2))
  start = time.perf_counter()
  r = evaluation.evaluate(policy, 'halfcheetah-forward', episodes=num_envs,
                          num_envs=num_envs, seed=0, **common)
  vec = r['env_steps'] / (time.perf_counter() - start)
  start = time.perf_counter()
  n_single = max(2, num_envs // 4)
  total = 0
  for i in range(n_single):
    r = evaluation.evaluate(policy, 'halfcheetah-forward', episodes=1,
                            num_envs=1, seed=i, **common)
    total += r['env_steps']
  single = total / (time.perf_counter() - start)
  print(f'(b) evaluation, paper-size teacher, HalfCheetah: {num_envs} vector'
        f' envs {vec:,.0f} env-steps/s vs one env at a time {single:,.0f}'
        f' env-steps/s ({1e3 / single:.2f} ms/step): {vec / single:.1f}x')


def bench_fusion(repeats):
  source = _source()
  for layers, width in ((2, 64), (3, 128)):
    _, step, state = _build(layers, width, source)
    per_step = {}
    for n in (1, 10):
      update = jax.jit(teacher.make_update_fn(step, batch_size=64,
                                              num_steps=n), donate_argnums=0)
      holder = [state]
      calls = 20 // n

      def run(update=update, holder=holder, calls=calls):
        for _ in range(calls):
          holder[0], m = update(holder[0], source, jnp.int32(0))
        jax.block_until_ready(m)

      per_step[n] = _best(run, repeats) / (calls * n)
      state = holder[0]
    print(f'(c) {layers}x{width} teacher, batch 64: 1 update/dispatch'
          f' {per_step[1] * 1e3:.1f} ms/update, 10 fused'
          f' {per_step[10] * 1e3:.1f} ms/update:'
          f' {per_step[1] / per_step[10]:.2f}x')


def bench_vmap(repeats):
  source = _source(num_tasks=4, n=5000)
  _, step, state = _build(2, 64, source)
  update = teacher.make_update_fn(step, batch_size=64, num_steps=10)
  single = jax.jit(update)
  stacked = jax.tree.map(lambda x: jnp.stack([x] * 4), state)
  vmapped = jax.jit(jax.vmap(update, in_axes=(0, None, 0)))
  tasks = jnp.arange(4, dtype=jnp.int32)

  def run_single():
    for i in range(4):
      _, m = single(state, source, jnp.int32(i))
    jax.block_until_ready(m)

  def run_vmapped():
    jax.block_until_ready(vmapped(stacked, source, tasks))

  t1 = _best(run_single, repeats) / 10
  t4 = _best(run_vmapped, repeats) / 10
  print(f'(d) 4 teachers 2x64, batch 64: one by one {t1 * 1e3:.1f} ms per'
        f' update of all four, vmapped {t4 * 1e3:.1f} ms: {t1 / t4:.2f}x')


def main(argv):
  del argv
  print(f'devices: {jax.devices()}')
  gflops = bench_matmul(_REPEATS.value)
  print(f'dense f32 matmul 2048^3: {gflops:.1f} GFLOP/s')
  bench_train_step(_REPEATS.value, gflops)
  bench_fusion(_REPEATS.value)
  bench_vmap(_REPEATS.value)
  bench_eval(_REPEATS.value, _EVAL_STEPS.value, _EVAL_ENVS.value)
  print(f'dense f32 matmul again (load drift check):'
        f' {bench_matmul(_REPEATS.value):.1f} GFLOP/s')


if __name__ == '__main__':
  app.run(main)

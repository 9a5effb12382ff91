r"""Speed of the training and acting code on this machine, as JSON lines.

  python -m experiments.bench
  python -m experiments.bench --only=train,latency --repeats=7
  python -m experiments.bench --only=teacher --teacher_batch=64,4096 \
      --precision=default,highest
  python -m experiments.bench \
      --reference_cmd='OMP_WAIT_POLICY=PASSIVE /venv/bin/python ref_dt.py 3x128'

One JSON object per line, each naming its figure and the device; every
ratio is against a baseline measured in the same run, and timed variants
take turns (best of `--repeats`) so that load from other processes hits
them alike.

  matmul           dense f32 2048^3 matmul GFLOP/s (start and end: drift)
  teacher_step     paper-size teacher (3 x 128, 1 head, K=20, batch 64,
                   AdamW, dropout 0.1): ms/step, XLA's FLOP count, GFLOP/s;
                   with --reference_cmd, the same step of an external
                   reference implementation, interleaved, and the ratio;
                   one row per --teacher_sizes, --teacher_batch and
                   --precision, with the matmul FLOP count and the model
                   FLOP utilization (MFU) where the peak is known
  teacher_step     the default teacher (2 x 64) likewise
  student_step     the default distillation step (configs/mt_distill.py:
                   student 2 x 32, max_kl + project_conflicting, fused
                   dispatches of --student_steps)
  fusion / vmap    fused updates per dispatch; four teachers vmapped vs one
                   by one (`teacher.vmap`; `--only=vmap` runs this alone)
  eval_teacher     paper-size teacher, HalfCheetah: 16 vector envs vs the
                   same model driving one environment at a time (rounds
                   taking turns, best rate of each)
  eval_student     the default student in all four suite tasks, one policy
                   call per vector step (evaluation.evaluate_tasks) vs one
                   environment at a time, likewise
  latency          batch-1 action latency: default teacher, paper teacher,
                   student, the exported student (jax.export artifact), an
                   empty jitted function (the per-call floor), and the
                   policies' FLOP and kernel (fusion + dot) counts

The reference command speaks a line protocol: it prints 'ready' when warm;
for each line 'N' on its stdin it runs N steps and prints 'wall_s cpu_s'
per step.
"""

import json
import math
import os
import subprocess
import tempfile
import time

from absl import app
from absl import flags
import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import mt_distill
from distill import evaluation
from distill.data import segments
from distill.models import model as model_lib
from distill.train import optimizer as optimizer_lib
from distill.train import student as student_lib
from distill.train import teacher

_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats (best kept).')
_EVAL_STEPS = flags.DEFINE_integer(
    'eval_steps', 200, 'Steps per evaluation episode.')
_EVAL_ENVS = flags.DEFINE_integer('eval_envs', 16, 'Vector envs per task.')
_EVAL_ROUNDS = flags.DEFINE_integer(
    'eval_rounds', 3, 'Evaluation rounds, vector and one-env taking turns.')
_STUDENT_STEPS = flags.DEFINE_integer(
    'student_steps', 10, 'Distillation steps per timed dispatch.')
_ONLY = flags.DEFINE_list(
    'only', [], 'Sections to run (train, fusion, eval, latency; teacher: '
    'the teacher steps of train alone; vmap: the vmapped-vs-one-by-one '
    'teachers of fusion alone); all if empty.')
_TEACHER_SIZES = flags.DEFINE_list(
    'teacher_sizes', ['3x128', '2x64'], 'Teacher steps timed, as LAYERSxWIDTH.')
_TEACHER_BATCH = flags.DEFINE_list(
    'teacher_batch', ['64'], 'Batch sizes of the timed teacher steps.')
_PRECISION = flags.DEFINE_list(
    'precision', ['default'], "Matmul precisions of the teacher steps "
    "(jax.default_matmul_precision): 'default' (TF32 tensor cores on GPUs "
    "of compute capability >= 8), 'highest' (full FP32).")
_PEAK = flags.DEFINE_float(
    'peak_tflops', None, 'Dense peak TFLOP/s of the device for MFU; default: '
    '_PEAK_TFLOPS for known GPUs at the step\'s arithmetic, none on CPU.')
_REFERENCE = flags.DEFINE_string(
    'reference_cmd', None, 'Shell command of a reference train-step server'
    ' (paper size), timed interleaved with ours.')

# The suite's observation / action sizes (bench_distill.DIMS).
_SUITE_DIMS = ((17, 6), (17, 6), (11, 3), (17, 6))
_SUITE_TASKS = ('halfcheetah-forward', 'halfcheetah-backward', 'hopper',
                'walker2d')
# Dense peak TFLOP/s by the vendor's datasheets (SXM parts; the datasheets'
# tensor-core figures are with sparsity, so halved here).
_PEAK_TFLOPS = {'H100': {'tf32': 494.7, 'fp32': 66.9},
                'H200': {'tf32': 494.7, 'fp32': 66.9}}


def _emit(figure, **values):
  row = {'figure': figure, 'device': _device(), **values}
  print(json.dumps(row), flush=True)


def _device():
  d = jax.devices()[0]
  return f'{d.platform}:{d.device_kind} x{jax.device_count()}'


def _config(layers, width):
  return ml_collections.ConfigDict(dict(
      model=dict(num_layers=layers, width=width, num_heads=1, dropout=0.1,
                 head='tanh_gaussian', log_std_min=-5.0, log_std_max=2.0),
      optimizer=dict(lr=1e-4, weight_decay=1e-4, warmup_steps=10_000,
                     grad_clip=0.25, b1=0.9, b2=0.999),
      entropy=dict(alpha=0.1, learn=True, lr=1e-4)))


def _datasets(dims, n=20_000):
  r = np.random.default_rng(0)
  out = []
  for obs_dim, act_dim in dims:
    timeouts = np.zeros(n, bool)
    timeouts[999::1000] = True
    out.append(dict(
        observations=r.normal(size=(n, obs_dim)).astype(np.float32),
        actions=np.tanh(r.normal(size=(n, act_dim))).astype(np.float32),
        rewards=r.normal(size=n).astype(np.float32),
        terminals=np.zeros(n, bool), timeouts=timeouts))
  return out


def _source(num_tasks=1, n=20_000):
  return segments.make_segment_source(
      _datasets([(17, 6)] * num_tasks, n), context_len=20, rtg_scale=1000.0,
      max_timestep=1000)


def _interleaved(runs, repeats):
  """Best seconds of each `run()` over `repeats` rounds taking turns."""
  for run in runs.values():
    run()  # compile / warm up
  best = dict.fromkeys(runs, np.inf)
  for _ in range(repeats):
    for k, run in runs.items():
      start = time.perf_counter()
      run()
      best[k] = min(best[k], time.perf_counter() - start)
  return best


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
  t = _interleaved({'mm': lambda: mm(a, b).block_until_ready()}, repeats)
  return 2 * n**3 / t['mm'] / 1e9


class _Reference:
  """An external train-step server (see the module docstring)."""

  def __init__(self, cmd):
    self.proc = subprocess.Popen(cmd, shell=True, stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
    while True:
      line = self.proc.stdout.readline()
      if not line:
        raise RuntimeError(f'reference command ended: {cmd}')
      if line.startswith('ready'):
        break

  def steps(self, n):
    self.proc.stdin.write(f'{n}\n')
    self.proc.stdin.flush()
    wall, cpu = (float(x) for x in self.proc.stdout.readline().split())
    return wall, cpu

  def close(self):
    self.proc.stdin.close()
    self.proc.wait()


def _step_runner(step, state, batch, n=5):
  jitted = jax.jit(step, donate_argnums=0)
  box = [state]

  def run():
    for _ in range(n):
      box[0], m = jitted(box[0], batch)
    jax.block_until_ready(m)

  return jitted, run


def _arithmetic(precision):
  """The arithmetic f32 matmuls run in at `precision` on the device."""
  d = jax.devices()[0]
  capability = float(getattr(d, 'compute_capability', 0) or 0)
  if d.platform == 'gpu' and capability >= 8 and precision in (
      'default', 'tensorfloat32'):
    return 'tf32'
  return 'fp32'


def _peak_tflops(arithmetic):
  if _PEAK.value:
    return _PEAK.value
  kind = jax.devices()[0].device_kind
  return next((v[arithmetic] for k, v in _PEAK_TFLOPS.items() if k in kind),
              None)


def _flops(compiled):
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan')))


def _matmul_flops(jaxpr):
  """2 M N K over the dot_generals of a jaxpr and its sub-jaxprs.

  The step's model FLOPs as written (forward and backward), whatever the
  device: XLA's count of a compiled GPU program leaves out the matmuls it
  hands to cuBLAS. Scan bodies count `length` times, a cond its largest
  branch.
  """
  total = 0
  for eqn in jaxpr.eqns:
    if eqn.primitive.name == 'dot_general':
      (contract, _), _ = eqn.params['dimension_numbers']
      lhs = eqn.invars[0].aval.shape
      total += 2 * math.prod(eqn.outvars[0].aval.shape) * math.prod(
          lhs[i] for i in contract)
    subs = [x.jaxpr if isinstance(x, jax_core.ClosedJaxpr) else x
            for v in eqn.params.values()
            for x in (v if isinstance(v, (tuple, list)) else (v,))
            if isinstance(x, (jax_core.ClosedJaxpr, jax_core.Jaxpr))]
    if subs:
      counts = [_matmul_flops(sub) for sub in subs]
      name = eqn.primitive.name
      total += (max(counts) if name == 'cond' else sum(counts)) * (
          eqn.params['length'] if name == 'scan' else 1)
  return total


def bench_teacher_steps(repeats, matmul_gflops, reference_cmd, sizes,
                        batch_sizes, precisions):
  """Rows per model, batch size and matmul precision.

  The MFU counts the matmul FLOPs of the step (`_matmul_flops`) against
  the device's dense peak at the step's arithmetic (`_arithmetic`).
  """
  source = _source()
  for layers, width in sizes:
    for batch_size in batch_sizes:
      batch = segments.sample_task_batch(source, jax.random.key(0), 0,
                                         batch_size)
      for precision in precisions:
        with jax.default_matmul_precision(precision):
          row, t, flops = _teacher_row(
              layers, width, source, batch, repeats,
              reference_cmd if batch_size == 64 else None)
        arithmetic = _arithmetic(precision)
        peak = _peak_tflops(arithmetic)
        tflops = row['model_gflop_per_step'] / t / 1e3
        row.update(ms_per_step=round(t * 1e3, 2),
                   gflops=round(flops / t / 1e9, 1),
                   fraction_of_matmul_rate=round(
                       flops / t / 1e9 / matmul_gflops, 3),
                   precision=precision, arithmetic=arithmetic,
                   model_tflops=round(tflops, 3), peak_tflops=peak,
                   mfu=round(tflops / peak, 4) if peak else None)
        _emit('teacher_step', **row)


def _teacher_row(layers, width, source, batch, repeats, reference_cmd):
  """(row, seconds per step, XLA's FLOPs per compiled step)."""
  model, step, state = _build(layers, width, source)
  jitted, run = _step_runner(step, state, batch)
  lowered = jitted.lower(state, batch)
  flops = _flops(lowered.compile())  # Also the compile `run` uses.
  model_flops = _matmul_flops(jax.make_jaxpr(step)(state, batch).jaxpr)
  row = dict(layers=layers, width=width, batch=int(batch.states.shape[0]),
             context=20, params=model_lib.count_params(state.params),
             gflop_per_step=round(flops / 1e9, 2),
             model_gflop_per_step=round(model_flops / 1e9, 3))
  if reference_cmd and (layers, width) == (3, 128):
    ref = _Reference(reference_cmd)
    ours, theirs, ratios = [], [], []
    run()
    for _ in range(repeats):
      start = time.perf_counter()
      run()
      ours.append((time.perf_counter() - start) / 5)
      theirs.append(ref.steps(5)[0])
      ratios.append(ours[-1] / theirs[-1])
    ref.close()
    t = min(ours)
    row.update(reference_ms=round(min(theirs) * 1e3, 1),
               ratio_to_reference=round(t / min(theirs), 3),
               median_round_ratio=round(float(np.median(ratios)), 3))
  else:
    t = _interleaved({'step': run}, repeats)['step'] / 5
  return row, t, flops


def bench_student_step(repeats):
  config = mt_distill.get_config()
  config.tasks = tuple(f'task{i}' for i in range(len(_SUITE_DIMS)))
  source = segments.make_segment_source(
      _datasets(_SUITE_DIMS), context_len=config.data.context_len,
      rtg_scale=config.data.rtg_scale, max_timestep=config.data.max_timestep)
  teacher_model = model_lib.make_model(
      config.teacher.model, obs_dims=(source.states.shape[1],),
      act_dims=(source.actions.shape[1],),
      context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  keys = jax.random.split(jax.random.key(1), len(_SUITE_DIMS))
  teacher_params_T = jax.vmap(
      lambda k: model_lib.init_params(teacher_model, k))(keys)
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in _SUITE_DIMS],
      act_dims=[d[1] for d in _SUITE_DIMS],
      context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  key = jax.random.key(0)
  selector = student_lib.make_selector(config.curriculum, len(_SUITE_DIMS),
                                       source.states.shape[1], key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = student_lib.make_probe_pool(source, teacher_model, teacher_params_T,
                                     key, config.student.probe_pool)
  step = student_lib.make_distill_step(config, student, teacher_model,
                                       selector, optimizer)
  n = _STUDENT_STEPS.value
  multi = jax.jit(student_lib.make_multi_step(step, n), donate_argnums=0)
  box = [student_lib.init_state(student, selector, optimizer, key)]

  def run():
    box[0], metrics = multi(box[0], teacher_params_T, source, pool)
    jax.block_until_ready((box[0], metrics))

  t = _interleaved({'s': run}, repeats)['s'] / n
  _emit('student_step', ms_per_step=round(t * 1e3, 2),
        student_params=model_lib.count_params(box[0].params),
        layers=config.student.model.num_layers,
        width=config.student.model.width, batch=config.student.batch_size,
        probe=config.student.probe_size, curriculum=config.curriculum.name,
        surgery=config.surgery.name, steps_per_dispatch=n)


def bench_fusion(repeats):
  source = _source()
  for layers, width in ((2, 64), (3, 128)):
    _, step, state = _build(layers, width, source)
    runs = {}
    for n in (1, 10):
      update = jax.jit(teacher.make_update_fn(step, batch_size=64,
                                              num_steps=n), donate_argnums=0)
      holder = [jax.tree.map(jnp.copy, state)]

      def run(update=update, holder=holder, calls=20 // n):
        for _ in range(calls):
          holder[0], m = update(holder[0], source, jnp.int32(0))
        jax.block_until_ready(m)

      runs[n] = run
    best = _interleaved(runs, repeats)
    per1, per10 = best[1] / 20, best[10] / 20
    _emit('fusion', layers=layers, width=width,
          ms_per_update_1_per_dispatch=round(per1 * 1e3, 2),
          ms_per_update_10_fused=round(per10 * 1e3, 2),
          speedup=round(per1 / per10, 2))


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

  best = _interleaved({
      'single': run_single,
      'vmapped': lambda: jax.block_until_ready(
          vmapped(stacked, source, tasks))}, repeats)
  _emit('vmap', teachers=4, layers=2, width=64,
        ms_per_update_one_by_one=round(best['single'] / 10 * 1e3, 2),
        ms_per_update_vmapped=round(best['vmapped'] / 10 * 1e3, 2),
        speedup=round(best['single'] / best['vmapped'], 2))


def _eval_common(model, steps):
  return dict(context_len=model.context_len, rtg_scale=1000.0,
              max_timestep=1000, state_size=model.state_size,
              action_size=model.action_size, max_episode_steps=steps)


def _one_env_steps(policy, tasks, task_ids, model, steps, episodes):
  """Env-steps of `episodes` episodes, one environment at a time, tasks in
  turn."""
  total = 0
  for i in range(episodes):
    t = i % len(tasks)
    obs_dim = _SUITE_DIMS[_SUITE_TASKS.index(tasks[t])][0]
    r = evaluation.evaluate(
        lambda *a, t=t: policy(*a, task=np.full(1, task_ids[t])), tasks[t],
        episodes=1, num_envs=1, seed=i, target_return=3000.0,
        state_mean=np.zeros(obs_dim), state_std=np.ones(obs_dim),
        **_eval_common(model, steps))
    total += r['env_steps']
  return total


def _rates(vector, single, rounds):
  """Best env-steps/s of `vector()` and `single()` over rounds taking turns.

  Each returns the env-steps it took. Returns {'vector', 'single'} rates
  per wall second and per second of this process's CPU time (the steadier
  figure on a shared machine; it does not credit threads).
  """
  best = {f'{k}_{c}': 0.0 for k in ('vector', 'single') for c in ('wall',
                                                                 'cpu')}
  for _ in range(rounds):
    for k, run in (('vector', vector), ('single', single)):
      wall, cpu = time.perf_counter(), time.process_time()
      n = run()
      wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
      best[f'{k}_wall'] = max(best[f'{k}_wall'], n / wall)
      best[f'{k}_cpu'] = max(best[f'{k}_cpu'], n / cpu)
  return best


def _eval_row(best):
  return dict(
      vector_env_steps_per_s=round(best['vector_wall']),
      one_env_steps_per_s=round(best['single_wall']),
      speedup=round(best['vector_wall'] / best['single_wall'], 2),
      vector_env_steps_per_cpu_s=round(best['vector_cpu']),
      one_env_steps_per_cpu_s=round(best['single_cpu']),
      speedup_cpu=round(best['vector_cpu'] / best['single_cpu'], 2))


def bench_eval(steps, num_envs, rounds):
  # (1) The paper-size teacher in HalfCheetah.
  model = model_lib.make_model(_config(3, 128).model, obs_dims=(17,),
                               act_dims=(6,), context_len=20,
                               max_timestep=1000)
  params = model_lib.init_params(model, jax.random.key(0))
  policy = evaluation.make_policy(model, params)
  task = ['halfcheetah-forward']

  def vector(n_steps):
    return evaluation.evaluate(
        policy, task[0], episodes=num_envs, num_envs=num_envs, seed=0,
        target_return=6000.0, state_mean=np.zeros(17), state_std=np.ones(17),
        **_eval_common(model, n_steps))['env_steps']

  vector(2)  # Compile both batch shapes first.
  _one_env_steps(policy, task, [0], model, 2, 1)
  best = _rates(
      lambda: vector(steps),
      lambda: _one_env_steps(policy, task, [0], model, steps,
                             max(2, num_envs // 4)), rounds)
  _emit('eval_teacher', model='3x128', task=task[0], envs=num_envs,
        steps_per_episode=steps, env_threads=evaluation.default_env_threads(),
        rounds=rounds, **_eval_row(best))

  # (2) The default student in all four tasks at once.
  config = mt_distill.get_config()
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in _SUITE_DIMS],
      act_dims=[d[1] for d in _SUITE_DIMS],
      context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  params = model_lib.init_params(student, jax.random.key(0))
  policy = evaluation.make_policy(student, params)
  tasks = list(_SUITE_TASKS)

  def together(n_steps):
    out = evaluation.evaluate_tasks(
        policy, tasks, task_ids=list(range(4)), episodes=num_envs,
        num_envs=num_envs, seed=0, target_returns=[3000.0] * 4,
        state_means=[np.zeros(d[0]) for d in _SUITE_DIMS],
        state_stds=[np.ones(d[0]) for d in _SUITE_DIMS],
        **_eval_common(student, n_steps))
    return sum(r['env_steps'] for r in out.values())

  together(2)
  _one_env_steps(policy, tasks, list(range(4)), student, 2, 4)
  best = _rates(
      lambda: together(steps),
      lambda: _one_env_steps(policy, tasks, list(range(4)), student, steps,
                             max(4, num_envs // 2)), rounds)
  _emit('eval_student', model='2x32', tasks=len(tasks), envs_per_task=num_envs,
        steps_per_episode=steps, env_threads=evaluation.default_env_threads(),
        rounds=rounds, **_eval_row(best))


def _latency_ms(fn, repeats=300):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def bench_latency():
  config = mt_distill.get_config()
  teacher_model = model_lib.make_model(
      config.teacher.model, obs_dims=(17,), act_dims=(6,), context_len=20,
      max_timestep=1000)
  paper = model_lib.make_model(_config(3, 128).model, obs_dims=(17,),
                               act_dims=(6,), context_len=20,
                               max_timestep=1000)
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in _SUITE_DIMS],
      act_dims=[d[1] for d in _SUITE_DIMS], context_len=20,
      max_timestep=1000)
  params = {name: model_lib.init_params(m, jax.random.key(0))
            for name, m in (('teacher', teacher_model), ('paper', paper),
                            ('student', student))}
  # Interleaved rounds: median of each round, best round kept.
  rounds = {k: [] for k in ('teacher', 'paper', 'student', 'exported')}
  exported = _exported_student_call(student, params['student'])
  for _ in range(3):
    rounds['teacher'].append(evaluation.batch1_latency_ms(
        teacher_model, params['teacher']))
    rounds['paper'].append(evaluation.batch1_latency_ms(
        paper, params['paper']))
    rounds['student'].append(evaluation.batch1_latency_ms(
        student, params['student']))
    rounds['exported'].append(_latency_ms(exported))
  # The floor every call pays: an empty jitted function.
  empty = jax.jit(lambda x: x)
  zero = jnp.zeros(())
  empty_ms = min(_latency_ms(lambda: jax.block_until_ready(empty(zero)))
                 for _ in range(3))
  best = {k: min(v) for k, v in rounds.items()}
  cost = {k: _policy_cost(m, params[k]) for k, m in (
      ('teacher', teacher_model), ('student', student))}
  _emit('latency', batch=1,
        teacher_2x64_ms=round(best['teacher'], 3),
        teacher_3x128_ms=round(best['paper'], 3),
        student_2x32_ms=round(best['student'], 3),
        exported_student_ms=round(best['exported'], 3),
        empty_jit_ms=round(empty_ms, 4),
        student_over_teacher=round(best['student'] / best['teacher'], 3),
        teacher_2x64_mflop=round(cost['teacher'][0] / 1e6, 2),
        student_2x32_mflop=round(cost['student'][0] / 1e6, 2),
        flop_ratio=round(cost['student'][0] / cost['teacher'][0], 3),
        teacher_2x64_thunks=cost['teacher'][1],
        student_2x32_thunks=cost['student'][1])


def _policy_cost(model, params):
  """(XLA's FLOP count, kernels launched) of the batch-1 policy call."""
  fn = model_lib.make_policy_fn(model)
  key = jax.random.key(0)
  compiled = jax.jit(lambda *x: fn(params, *x, key)).lower(
      *model_lib.dummy_inputs(model)).compile()
  entry = compiled.as_text().split('ENTRY', 1)[1].split('\n}', 1)[0]
  thunks = sum(1 for line in entry.splitlines()
               if ' fusion(' in line or ' dot(' in line)
  return _flops(compiled), thunks


def _exported_student_call(student, params):
  """Batch-1 call of the student exported and loaded back (export_loader)."""
  # Imported here: serialization needs flatbuffers.
  from distill import export  # pylint: disable=g-import-not-at-top
  from distill import export_loader  # pylint: disable=g-import-not-at-top
  directory = tempfile.mkdtemp(prefix='bench_export_')
  with open(os.path.join(directory, export_loader.ARTIFACT), 'wb') as f:
    f.write(export.export_fn(student, params).serialize())
  with open(os.path.join(directory, export_loader.META), 'w',
            encoding='utf-8') as f:
    json.dump({'tasks': list(_SUITE_TASKS)}, f)
  policy = export_loader.load(directory)
  inputs = [np.asarray(x) for x in model_lib.dummy_inputs(student)]
  return lambda: policy(*inputs)


def main(argv):
  del argv
  only = set(_ONLY.value) or {'train', 'fusion', 'eval', 'latency'}
  repeats = _REPEATS.value
  gflops = bench_matmul(repeats)
  _emit('matmul', n=2048, gflops=round(gflops, 1))
  if only & {'train', 'teacher'}:
    bench_teacher_steps(
        repeats, gflops, _REFERENCE.value,
        [tuple(int(x) for x in s.split('x')) for s in _TEACHER_SIZES.value],
        [int(b) for b in _TEACHER_BATCH.value], _PRECISION.value)
  if 'train' in only:
    bench_student_step(repeats)
  if 'fusion' in only:
    bench_fusion(repeats)
  if only & {'fusion', 'vmap'}:
    bench_vmap(repeats)
  if 'latency' in only:
    bench_latency()
  if 'eval' in only:
    bench_eval(_EVAL_STEPS.value, _EVAL_ENVS.value, _EVAL_ROUNDS.value)
  _emit('matmul_end', n=2048, gflops=round(bench_matmul(repeats), 1))


if __name__ == '__main__':
  app.run(main)

"""Bench sections `train`, `teacher`, `fusion`, `vmap`: training steps.

  matmul        dense f32 2048^3 matmul GFLOP/s (every run: first and last,
                `matmul_end`, to show drift)
  teacher_step  one row per teacher size, batch size and matmul precision:
                ms/step, XLA's FLOP count, GFLOP/s, the matmul FLOP count and
                the model FLOP utilization (MFU) where the peak is known;
                with a reference command, the same step of an external
                implementation, interleaved, and the ratios (best-round
                wall, median per-round wall, and median process CPU time,
                the steadier one when other processes hold the cores)
  student_step  the default distillation step (configs/mt_distill.py)
  fusion        fused updates per dispatch (1 vs 10)
  vmap          four teachers vmapped vs one by one (`teacher.vmap`)

The reference command speaks a line protocol: it prints 'ready' when warm;
for each line 'N' on its stdin it runs N steps and prints 'wall_s cpu_s'
per step. Start it as it would run on its own: an OpenMP program started
with `OMP_WAIT_POLICY=PASSIVE` sleeps its threads between parallel regions
and lost about 25% of its speed here (docs/performance.md), which flatters
the ratio.
"""

import math
import subprocess
import time

import jax
from jax.extend import core as jax_core
import jax.numpy as jnp
import ml_collections
import numpy as np

from configs import mt_distill
from distill.data import segments
from distill.models import model as model_lib
from distill.train import optimizer as optimizer_lib
from distill.train import student as student_lib
from distill.train import teacher
from experiments.benches import common

# Dense peak TFLOP/s by the vendor's datasheets (SXM parts; the datasheets'
# tensor-core figures are with sparsity, so halved here).
_PEAK_TFLOPS = {'H100': {'tf32': 494.7, 'fp32': 66.9},
                'H200': {'tf32': 494.7, 'fp32': 66.9}}


def teacher_config(layers, width):
  """The paper's teacher recipe (dropout 0.1, AdamW) at another size."""
  return ml_collections.ConfigDict(dict(
      model=dict(num_layers=layers, width=width, num_heads=1, dropout=0.1,
                 head='tanh_gaussian', log_std_min=-5.0, log_std_max=2.0),
      optimizer=dict(lr=1e-4, weight_decay=1e-4, warmup_steps=10_000,
                     grad_clip=0.25, b1=0.9, b2=0.999),
      entropy=dict(alpha=0.1, learn=True, lr=1e-4)))


def _source(num_tasks=1, n=20_000):
  return segments.make_segment_source(
      common.synthetic_datasets([(17, 6)] * num_tasks, n), context_len=20,
      rtg_scale=1000.0, max_timestep=1000)


def _build(layers, width, source):
  config = teacher_config(layers, width)
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
  """GFLOP/s of a dense f32 2048^3 matmul."""
  n = 2048
  a = jax.random.normal(jax.random.key(0), (n, n))
  b = jax.random.normal(jax.random.key(1), (n, n))
  mm = jax.jit(jnp.matmul)
  t = common.interleaved({'mm': lambda: mm(a, b).block_until_ready()},
                         repeats)
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


def _peak_tflops(arithmetic, peak):
  if peak:
    return peak
  kind = jax.devices()[0].device_kind
  return next((v[arithmetic] for k, v in _PEAK_TFLOPS.items() if k in kind),
              None)


def flops(compiled):
  """XLA's FLOP count of a compiled program."""
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost.get('flops', float('nan')))


def matmul_flops(jaxpr):
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
      counts = [matmul_flops(sub) for sub in subs]
      name = eqn.primitive.name
      total += (max(counts) if name == 'cond' else sum(counts)) * (
          eqn.params['length'] if name == 'scan' else 1)
  return total


def bench_teacher_steps(repeats, matmul_gflops, reference_cmd, sizes,
                        batch_sizes, precisions, peak=None,
                        reference_size=(3, 128)):
  """Rows per model, batch size and matmul precision.

  `reference_cmd` runs the reference at one size, `reference_size`
  (layers, width): the row of that size at batch 64 is timed beside it.

  The MFU counts the matmul FLOPs of the step (`matmul_flops`) against
  the device's dense peak (`peak` TFLOP/s, else `_PEAK_TFLOPS` for known
  GPUs) at the step's arithmetic (`_arithmetic`).
  """
  source = _source()
  for layers, width in sizes:
    for batch_size in batch_sizes:
      batch = segments.sample_task_batch(source, jax.random.key(0), 0,
                                         batch_size)
      for precision in precisions:
        with jax.default_matmul_precision(precision):
          row, t, xla_flops = _teacher_row(
              layers, width, source, batch, repeats,
              reference_cmd if (batch_size == 64 and (layers, width)
                                == tuple(reference_size)) else None)
        arithmetic = _arithmetic(precision)
        peak_tflops = _peak_tflops(arithmetic, peak)
        tflops = row['model_gflop_per_step'] / t / 1e3
        row.update(ms_per_step=round(t * 1e3, 2),
                   gflops=round(xla_flops / t / 1e9, 1),
                   fraction_of_matmul_rate=round(
                       xla_flops / t / 1e9 / matmul_gflops, 3),
                   precision=precision, arithmetic=arithmetic,
                   model_tflops=round(tflops, 3), peak_tflops=peak_tflops,
                   mfu=round(tflops / peak_tflops, 4) if peak_tflops
                   else None)
        common.emit('teacher_step', **row)


def _teacher_row(layers, width, source, batch, repeats, reference_cmd):
  """(row, seconds per step, XLA's FLOPs per compiled step)."""
  _, step, state = _build(layers, width, source)
  jitted, run = _step_runner(step, state, batch)
  lowered = jitted.lower(state, batch)
  xla_flops = flops(lowered.compile())  # Also the compile `run` uses.
  model_flops = matmul_flops(jax.make_jaxpr(step)(state, batch).jaxpr)
  row = dict(layers=layers, width=width, batch=int(batch.states.shape[0]),
             context=20, params=model_lib.count_params(state.params),
             gflop_per_step=round(xla_flops / 1e9, 2),
             model_gflop_per_step=round(model_flops / 1e9, 3))
  if reference_cmd:
    ref = _Reference(reference_cmd)
    ours, theirs, ratios = [], [], []
    ours_cpu, theirs_cpu = [], []
    run()
    for _ in range(repeats):
      start, start_cpu = time.perf_counter(), time.process_time()
      run()
      ours.append((time.perf_counter() - start) / 5)
      ours_cpu.append((time.process_time() - start_cpu) / 5)
      wall, cpu = ref.steps(5)
      theirs.append(wall)
      theirs_cpu.append(cpu)
      ratios.append(ours[-1] / theirs[-1])
    ref.close()
    t = min(ours)
    cpu_ours, cpu_theirs = np.median(ours_cpu), np.median(theirs_cpu)
    row.update(reference_ms=round(min(theirs) * 1e3, 1),
               ratio_to_reference=round(t / min(theirs), 3),
               median_round_ratio=round(float(np.median(ratios)), 3),
               cpu_ms=round(float(cpu_ours) * 1e3, 1),
               reference_cpu_ms=round(float(cpu_theirs) * 1e3, 1),
               cpu_ratio_to_reference=round(float(cpu_ours / cpu_theirs), 3))
  else:
    t = common.interleaved({'step': run}, repeats)['step'] / 5
  return row, t, xla_flops


def bench_student_step(repeats, steps_per_dispatch):
  """The default distillation step on synthetic 4-task data."""
  config = common.suite_config(mt_distill.get_config())
  dims = common.SUITE_DIMS
  source = segments.make_segment_source(
      common.synthetic_datasets(dims, 20_000),
      context_len=config.data.context_len,
      rtg_scale=config.data.rtg_scale, max_timestep=config.data.max_timestep)
  teacher_model, teacher_params_T = common.random_teachers(
      config, source, jax.random.key(1))
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in dims],
      act_dims=[d[1] for d in dims], context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  key = jax.random.key(0)
  selector = student_lib.make_selector(config.curriculum, len(dims),
                                       source.states.shape[1], key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = student_lib.make_probe_pool(source, teacher_model, teacher_params_T,
                                     key, config.student.probe_pool)
  step = student_lib.make_distill_step(config, student, teacher_model,
                                       selector, optimizer)
  n = steps_per_dispatch
  multi = jax.jit(student_lib.make_multi_step(step, n), donate_argnums=0)
  box = [student_lib.init_state(student, selector, optimizer, key)]

  def run():
    box[0], metrics = multi(box[0], teacher_params_T, source, pool)
    jax.block_until_ready((box[0], metrics))

  t = common.interleaved({'s': run}, repeats)['s'] / n
  common.emit('student_step', ms_per_step=round(t * 1e3, 2),
              student_params=model_lib.count_params(box[0].params),
              layers=config.student.model.num_layers,
              width=config.student.model.width,
              batch=config.student.batch_size,
              probe=config.student.probe_size,
              curriculum=config.curriculum.name,
              surgery=config.surgery.name, steps_per_dispatch=n)


def bench_fusion(repeats):
  """1 vs 10 teacher updates per dispatch, at 2 x 64 and 3 x 128."""
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
    best = common.interleaved(runs, repeats)
    per1, per10 = best[1] / 20, best[10] / 20
    common.emit('fusion', layers=layers, width=width,
                ms_per_update_1_per_dispatch=round(per1 * 1e3, 2),
                ms_per_update_10_fused=round(per10 * 1e3, 2),
                speedup=round(per1 / per10, 2))


def bench_vmap(repeats, layers=2, width=64):
  """Four teachers' updates (`layers` x `width`) vmapped vs one by one."""
  source = _source(num_tasks=4, n=5000)
  _, step, state = _build(layers, width, source)
  update = teacher.make_update_fn(step, batch_size=64, num_steps=10)
  single = jax.jit(update)
  stacked = jax.tree.map(lambda x: jnp.stack([x] * 4), state)
  vmapped = jax.jit(jax.vmap(update, in_axes=(0, None, 0)))
  tasks = jnp.arange(4, dtype=jnp.int32)

  def run_single():
    for i in range(4):
      _, m = single(state, source, jnp.int32(i))
    jax.block_until_ready(m)

  best = common.interleaved({
      'single': run_single,
      'vmapped': lambda: jax.block_until_ready(
          vmapped(stacked, source, tasks))}, repeats)
  common.emit('vmap', teachers=4, layers=layers, width=width,
              ms_per_update_one_by_one=round(best['single'] / 10 * 1e3, 2),
              ms_per_update_vmapped=round(best['vmapped'] / 10 * 1e3, 2),
              speedup=round(best['single'] / best['vmapped'], 2))

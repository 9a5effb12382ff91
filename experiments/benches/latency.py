"""Bench section `latency`: batch-1 action latency, as deployed.

The default teacher (2 x 64), the paper teacher (3 x 128), the student, the
exported student (jax.export artifact), an empty jitted function (the
per-call floor), and the policies' FLOP and kernel (fusion + dot) counts.
"""

import json
import os
import tempfile
import time

import jax
import jax.numpy as jnp
import numpy as np

from configs import mt_distill
from distill.envs import evaluation
from distill.models import model as model_lib
from experiments.benches import common
from experiments.benches import train


def _latency_ms(fn, repeats=300):
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return float(np.median(times) * 1e3)


def bench_latency():
  """The `latency` line (see the module docstring)."""
  config = mt_distill.get_config()
  dims = common.SUITE_DIMS
  teacher_model = model_lib.make_model(
      config.teacher.model, obs_dims=(17,), act_dims=(6,), context_len=20,
      max_timestep=1000)
  paper = model_lib.make_model(train.teacher_config(3, 128).model,
                               obs_dims=(17,), act_dims=(6,), context_len=20,
                               max_timestep=1000)
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in dims],
      act_dims=[d[1] for d in dims], context_len=20, max_timestep=1000)
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
  common.emit(
      'latency', batch=1,
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
  return train.flops(compiled), thunks


def _exported_student_call(student, params):
  """Batch-1 call of the student exported and loaded back (export_loader)."""
  # Imported here: serialization needs flatbuffers.
  from distill.report import export  # pylint: disable=g-import-not-at-top
  from distill.report import export_loader  # pylint: disable=g-import-not-at-top
  directory = tempfile.mkdtemp(prefix='bench_export_')
  with open(os.path.join(directory, export_loader.ARTIFACT), 'wb') as f:
    f.write(export.export_fn(student, params).serialize())
  with open(os.path.join(directory, export_loader.META), 'w',
            encoding='utf-8') as f:
    json.dump({'tasks': list(common.SUITE_TASKS)}, f)
  policy = export_loader.load(directory)
  inputs = [np.asarray(x) for x in model_lib.dummy_inputs(student)]
  return lambda: policy(*inputs)

r"""Step time of the distillation variants against a plain single-teacher step.

  python -m experiments.bench_distill
  python -m experiments.bench_distill --config=configs/mt_distill.py:paper

The baseline is a plain distillation step: one teacher's batch, the KL loss,
AdamW; no probe batches, no surgery (`round_robin` with `probe_size=0`). Each
variant runs the same model sizes on the same synthetic 4-task data in the
same process; every step function is jitted once and timed over fused
dispatches of `--steps` steps (`lax.scan`); the variants take turns and each
keeps its best of `--repeats` dispatches.
"""

import time

from absl import app
from absl import flags
import jax
import ml_collections
from ml_collections import config_flags
import numpy as np

from distill.data import segments
from distill.models import model as model_lib
from distill.train import student as student_lib

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/mt_distill.py', 'Experiment config.', lock_config=False)
_STEPS = flags.DEFINE_integer('steps', 50, 'Steps per timed dispatch.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed dispatches (best kept).')
_TRANSITIONS = flags.DEFINE_integer('transitions', 20_000,
                                    'Synthetic transitions per task.')

# The suite's observation / action sizes.
DIMS = ((17, 6), (17, 6), (11, 3), (17, 6))

VARIANTS = (
    ('plain single-teacher (baseline)', 'round_robin', 'none', 0),
    ('default: max_kl + project_conflicting', 'max_kl', 'previous', None),
    ('max_kl, no surgery', 'max_kl', 'none', None),
    ('round_robin + project_conflicting', 'round_robin', 'previous', 0),
    ('mixture (all teachers per batch)', 'mixture', 'none', 0),
    ('mixture + pcgrad (per-teacher grads)', 'mixture', 'pcgrad', 0),
    ('bi_objective (per-teacher grads)', 'bi_objective', 'previous', None),
)


def synthetic_datasets(n: int, seed: int = 0):
  rng = np.random.default_rng(seed)
  out = []
  for obs_dim, act_dim in DIMS:
    terminals = np.zeros(n, bool)
    terminals[np.arange(999, n, 1000)] = True
    out.append({
        'observations': rng.normal(size=(n, obs_dim)).astype(np.float32),
        'actions': rng.uniform(-1, 1, (n, act_dim)).astype(np.float32),
        'rewards': rng.normal(size=n).astype(np.float32),
        'terminals': terminals, 'timeouts': np.zeros(n, bool)})
  return out


def build_variant(config: ml_collections.ConfigDict, source, teacher,
                  teacher_params_T):
  """A compiled `() -> None` that runs one fused dispatch of the variant."""
  num_tasks = len(config.tasks)
  key = jax.random.key(0)
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in DIMS],
      act_dims=[d[1] for d in DIMS], context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  selector = student_lib.make_selector(config.curriculum, num_tasks,
                                       source.states.shape[1], key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = (student_lib.make_probe_pool(source, teacher, teacher_params_T, key,
                                      config.student.probe_pool)
          if config.student.probe_size else None)
  step = student_lib.make_distill_step(config, student, teacher, selector,
                                       optimizer)
  multi = jax.jit(student_lib.make_multi_step(step, _STEPS.value),
                  donate_argnums=0)
  box = [student_lib.init_state(student, selector, optimizer, key)]

  def run_once():
    box[0], metrics = multi(box[0], teacher_params_T, source, pool)
    jax.block_until_ready((box[0], metrics))

  run_once()  # compile
  return run_once


def main(argv):
  del argv
  base = _CONFIG.value
  base.tasks = tuple(f'task{i}' for i in range(len(DIMS)))
  data = synthetic_datasets(_TRANSITIONS.value)
  source = segments.make_segment_source(
      data, context_len=base.data.context_len,
      rtg_scale=base.data.rtg_scale, max_timestep=base.data.max_timestep)
  teacher = model_lib.make_model(
      base.teacher.model, obs_dims=(source.states.shape[1],),
      act_dims=(source.actions.shape[1],),
      context_len=base.data.context_len, max_timestep=base.data.max_timestep)
  keys = jax.random.split(jax.random.key(1), len(DIMS))
  teacher_params_T = jax.vmap(lambda k: model_lib.init_params(teacher, k))(
      keys)
  student = model_lib.make_model(
      base.student.model, obs_dims=[d[0] for d in DIMS],
      act_dims=[d[1] for d in DIMS], context_len=base.data.context_len,
      max_timestep=base.data.max_timestep)
  sp = model_lib.init_params(student, jax.random.key(2))
  print(f'devices: {jax.devices()}')
  per_teacher = model_lib.count_params(teacher_params_T) // len(DIMS)
  print(f'teacher params: {per_teacher:,}'
        f'  student params: {model_lib.count_params(sp):,}  batch'
        f' {base.student.batch_size}, probe {base.student.probe_size} x'
        f' {len(DIMS)} teachers, K={base.data.context_len}')
  runs = []
  for label, cur, sur, probe in VARIANTS:
    config = ml_collections.ConfigDict(base.to_dict())
    config.curriculum.name = cur
    config.surgery.name = sur
    if probe is not None:
      config.student.probe_size = probe
    runs.append((label, build_variant(config, source, teacher,
                                      teacher_params_T)))
  # Variants take turns, so load from other processes hits them alike.
  best = np.full(len(runs), np.inf)
  for _ in range(_REPEATS.value):
    for i, (_, run_once) in enumerate(runs):
      start = time.perf_counter()
      run_once()
      best[i] = min(best[i], (time.perf_counter() - start) / _STEPS.value)
  for (label, _), seconds in zip(runs, best):
    print(f'{label:42s} {seconds * 1e3:8.2f} ms/step  ratio'
          f' {seconds / best[0]:5.2f}', flush=True)


if __name__ == '__main__':
  app.run(main)

"""Bench section `distill`: step time of the distillation variants.

The baseline is a plain distillation step: one teacher's batch, the KL loss,
AdamW; no probe batches, no surgery (`round_robin` with `probe_size=0`).
Each variant runs the same model sizes on the same synthetic 4-task data in
the same process; every step function is jitted once and timed over fused
dispatches of `steps` steps (`lax.scan`); the variants take turns and each
keeps its best of `repeats` dispatches. One `distill_step` line per
variant, with its ratio to the baseline.
"""

import jax
import ml_collections

from distill.data import segments
from distill.models import model as model_lib
from distill.train import student as student_lib
from experiments.benches import common

# (label, curriculum, surgery, probe_size: None keeps the config's).
VARIANTS = (
    ('plain single-teacher (baseline)', 'round_robin', 'none', 0),
    ('default: max_kl + project_conflicting', 'max_kl', 'previous', None),
    ('max_kl, no surgery', 'max_kl', 'none', None),
    ('round_robin + project_conflicting', 'round_robin', 'previous', 0),
    ('mixture (all teachers per batch)', 'mixture', 'none', 0),
    ('mixture + pcgrad (per-teacher grads)', 'mixture', 'pcgrad', 0),
    ('bi_objective (per-teacher grads)', 'bi_objective', 'previous', None),
)


def build_variant(config: ml_collections.ConfigDict, source, teacher,
                  teacher_params_T, steps):
  """A jitted `() -> None` that runs one fused dispatch of the variant."""
  dims = common.SUITE_DIMS
  key = jax.random.key(0)
  student = model_lib.make_model(
      config.student.model, obs_dims=[d[0] for d in dims],
      act_dims=[d[1] for d in dims], context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  selector = student_lib.make_selector(config.curriculum, len(config.tasks),
                                       source.states.shape[1], key)
  optimizer = student_lib.make_optimizer(config, key)
  pool = (student_lib.make_probe_pool(source, teacher, teacher_params_T, key,
                                      config.student.probe_pool)
          if config.student.probe_size else None)
  step = student_lib.make_distill_step(config, student, teacher, selector,
                                       optimizer)
  multi = jax.jit(student_lib.make_multi_step(step, steps), donate_argnums=0)
  box = [student_lib.init_state(student, selector, optimizer, key)]

  def run_once():
    box[0], metrics = multi(box[0], teacher_params_T, source, pool)
    jax.block_until_ready((box[0], metrics))

  return run_once


def bench_distill(config, steps, repeats, transitions, variants=VARIANTS):
  """The `distill_step` lines (see the module docstring)."""
  dims = common.SUITE_DIMS
  base = common.suite_config(config)
  source = segments.make_segment_source(
      common.synthetic_datasets(dims, transitions, end='terminals',
                                actions='uniform'),
      context_len=base.data.context_len, rtg_scale=base.data.rtg_scale,
      max_timestep=base.data.max_timestep)
  teacher, teacher_params_T = common.random_teachers(base, source,
                                                     jax.random.key(1))
  student = model_lib.make_model(
      base.student.model, obs_dims=[d[0] for d in dims],
      act_dims=[d[1] for d in dims], context_len=base.data.context_len,
      max_timestep=base.data.max_timestep)
  sizes = dict(
      teacher_params=model_lib.count_params(teacher_params_T) // len(dims),
      student_params=model_lib.count_params(
          model_lib.init_params(student, jax.random.key(2))),
      batch=base.student.batch_size, teachers=len(dims),
      context=base.data.context_len, steps_per_dispatch=steps)
  runs = []
  for label, cur, sur, probe in variants:
    variant = ml_collections.ConfigDict(base.to_dict())
    variant.curriculum.name = cur
    variant.surgery.name = sur
    if probe is not None:
      variant.student.probe_size = probe
    runs.append(((label, cur, sur, variant.student.probe_size),
                 build_variant(variant, source, teacher, teacher_params_T,
                               steps)))
  best = common.interleaved(dict(runs), repeats)
  baseline = best[runs[0][0]] / steps
  for (label, cur, sur, probe), _ in runs:
    t = best[(label, cur, sur, probe)] / steps
    common.emit('distill_step', variant=label, curriculum=cur, surgery=sur,
                probe=probe, ms_per_step=round(t * 1e3, 2),
                ratio=round(t / baseline, 3), baseline=runs[0][0][0],
                **sizes)

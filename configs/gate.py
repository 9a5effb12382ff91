r"""The gate: do the teachers have something to teach on this testbed?

  python -m experiments.sweep --config=configs/gate.py --workdir=runs/gate \
      --parallel=2
  python -m experiments.gate runs/gate --out=docs/gate

A testbed can answer the proposal's question only if its teachers beat the
best cloning of their data: otherwise distillation can at best tie a
student that never saw a teacher. The gate trains each seed's teachers
(`configs/mt_distill.py`'s 2 x 64 Decision Transformers) and, on the same
data, the cloning baselines: the student trained from scratch on every
episode (`curriculum.name=scratch`) and %BC (Chen et al. 2021: the best
episodes by return holding 25% or 10% of each task's transitions,
`student.bc_top_fraction`), each at the student's size (2 x 32) and at the
teachers' size (2 x 64). It passes when, over 3 seeds, the teachers beat
the best of these six baselines by at least 10 normalized points on at
least 2 of the 4 tasks (`experiments/gate.py` computes the table, with
stratified bootstrap intervals).

Setting (`--config.data.quality=mixed`, the default here): the `mixed`
suite data, every SAC snapshot (early, middle, final) in equal shares, so
the returns spread from near zero to the best snapshot's and a
return-conditioned teacher has something to choose; teachers trained to
`TEACHER_STEPS` (where their evaluated score stopped rising on seed 0, see
docs/gate.md's step table) and conditioned on `TARGET_RETURNS`; the cloning
baselines trained for as many updates as the teachers, at the same batch.

Variants (`:arg`): '' (the gate), 'n20k' (the same with 20,000 transitions
per task: the second setting tried, where %BC's best 10% is a few
episodes), 'smoke' (`configs/mt_distill.py:smoke` sizes, 2 seeds, for the
tests).
"""

import ml_collections

from configs import mt_distill
from distill import sweeps

SEEDS = (0, 1, 2)
TEACHER_STEPS = 6000
# Raw returns the teachers are conditioned on: the best episode return in
# each task's `mixed` dataset (mujoco 3.3.0), rounded up to the next 100.
TARGET_RETURNS = {
    'halfcheetah_forward': 5000.0,
    'halfcheetah_backward': 5000.0,
    'hopper': 3200.0,
    'walker2d': 2600.0,
}
# Sizes of the cloning students: the distilled student's and the teachers'.
SIZES = ((2, 32), (2, 64))
# Shares of each task's transitions kept by %BC; 1.0 is plain cloning.
FRACTIONS = (1.0, 0.25, 0.1)
_ARGS = (None, '', 'n20k', 'smoke')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns one gate member's config; `arg` is None/'' or 'smoke'."""
  if arg not in _ARGS:
    raise ValueError(f'configs/gate.py: unknown config arg {arg!r};'
                     " valid: '', 'n20k', 'smoke'")
  config = mt_distill.get_config('smoke' if arg == 'smoke' else None)
  config.data.quality = 'mixed'
  config.curriculum.name = 'scratch'
  config.surgery.name = 'none'
  if arg == 'smoke':
    return config
  config.teacher.steps = TEACHER_STEPS
  config.teacher.ckpt_every = 1000
  config.student.steps = TEACHER_STEPS
  config.student.ckpt_every = 1000
  config.eval.target_return = ml_collections.ConfigDict(TARGET_RETURNS)
  if arg == 'n20k':
    config.data.suite_transitions = 20_000
  return config


def baselines() -> list[dict[str, object]]:
  """The cloning baselines: every size x every %BC fraction."""
  out = []
  for layers, width in SIZES:
    for fraction in FRACTIONS:
      out.append({'student.model.num_layers': layers,
                  'student.model.width': width,
                  'student.bc_top_fraction': fraction})
  return out


def get_sweep(arg: str | None = None) -> sweeps.Sweep:
  """Returns the gate's members (seeds x baselines)."""
  if arg not in _ARGS:
    raise ValueError(f'configs/gate.py: unknown config arg {arg!r};'
                     " valid: '', 'n20k', 'smoke'")
  if arg == 'smoke':
    members = sweeps.product(
        sweeps.axis('seed', (0, 1)),
        sweeps.axis('student.bc_top_fraction', (1.0, 0.5)))
  else:
    members = sweeps.product(sweeps.axis('seed', SEEDS), baselines())
  return sweeps.Sweep(members=members)

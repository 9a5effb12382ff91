r"""The study: curricula x surgery x seeds, the baselines and a size curve.

  python -m experiments.sweep --config=configs/study.py --workdir=runs/study
  python -m experiments.sweep --config=configs/study.py:smoke \
      --workdir=runs/study_smoke
  python -m experiments.sweep --config=configs/study.py --workdir=runs/study \
      --print
  python -m experiments.aggregate runs/study

`get_config(arg)` is `configs/mt_distill.py` (one member runs as
`python -m experiments.run --config=configs/study.py --workdir=DIR
--config.<field>=<value> ...`); `get_sweep(arg)` lists the members (see
distill/sweeps.py). Teachers are trained once per seed under
`<workdir>/teachers/` and shared by every member of that seed.

Variants (`:arg`):
  '' (CPU default sizes, 3 seeds): curricula max_kl, round_robin, uniform,
    mixture, each with surgery none and previous; mixture with pcgrad;
    learning_progress; the baselines: `curriculum.name=scratch` (the same
    student trained on the datasets alone, no teachers), the teachers' size
    (2 layers x 64) and smaller students (2 x 16, 1 x 16) for the size
    curve (default 2 x 32). Baseline of the comparison: round_robin without
    surgery (Rusu et al. 2016's policy distillation).
  'smoke' (`configs/mt_distill.py:smoke` sizes): 2 seeds x 2 curricula
    (max_kl, round_robin); baseline round_robin.
"""

import ml_collections

from configs import mt_distill
from distill import sweeps


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns one member's base config; `arg` is None/'' or 'smoke'."""
  if arg not in (None, '', 'smoke'):
    raise ValueError(f'configs/study.py: unknown config arg {arg!r}; valid:'
                     " '', 'smoke'")
  return mt_distill.get_config(arg)


def get_sweep(arg: str | None = None) -> sweeps.Sweep:
  """Returns the members; `arg` is None/'' or 'smoke'."""
  if arg == 'smoke':
    return sweeps.Sweep(
        members=sweeps.product(
            sweeps.axis('seed', (0, 1)),
            sweeps.axis('curriculum.name', ('max_kl', 'round_robin'))),
        baseline='curriculum=round_robin')
  if arg not in (None, ''):
    raise ValueError(f'configs/study.py: unknown config arg {arg!r}; valid:'
                     " '', 'smoke'")
  seeds = sweeps.axis('seed', (0, 1, 2))
  methods = [(c, s) for c in ('max_kl', 'round_robin', 'uniform', 'mixture')
             for s in ('none', 'previous')]
  methods += [('mixture', 'pcgrad'), ('learning_progress', 'previous'),
              # Baseline: no teachers, the student on the datasets alone.
              ('scratch', 'none')]
  methods = [{'curriculum.name': c, 'surgery.name': s} for c, s in methods]
  # The size curve, with the default method (max_kl, previous surgery).
  sizes = [{'student.model.num_layers': 2, 'student.model.width': 64},
           {'student.model.num_layers': 2, 'student.model.width': 16},
           {'student.model.num_layers': 1, 'student.model.width': 16}]
  return sweeps.Sweep(
      members=sweeps.chain(sweeps.product(seeds, methods),
                           sweeps.product(seeds, sizes)),
      baseline='curriculum=round_robin,surgery=none')

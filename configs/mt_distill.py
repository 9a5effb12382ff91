r"""Multi-task distillation of Decision Transformer teachers into one student.

  python -m experiments.run --config=configs/mt_distill.py --workdir=runs/default
  python -m experiments.run --config=configs/mt_distill.py:smoke --workdir=runs/smoke
  python -m experiments.run --config=configs/mt_distill.py:paper --workdir=runs/paper

Stages: datasets (the embedded suite, generated on first use), teachers (one
Decision Transformer per task), teacher_eval, distill (the student),
student_eval (last and best checkpoints), report (`results.json`,
`report.md`, plots). A rerun skips the stages whose outputs are there for the
same config, so a second distillation run reuses the teachers:

  python -m experiments.run --config=configs/mt_distill.py --workdir=runs/default \
      --config.curriculum.name=round_robin --config.surgery.name=none

Variants (`:arg`): '' (CPU default; 5 min 11 s measured on 2 quiet cores),
'smoke' (tiny sizes, two tasks, small datasets: a first look; 1 min 20 s
measured on 2 quiet cores),
'paper' (Chen et al. 2021 teacher sizes and optimizer, for a GPU).

Curricula (`--config.curriculum.name`): max_kl (default; `curriculum.mode`
greedy | softmax | epsilon_greedy), round_robin, uniform, mixture,
learning_progress, rnd, bi_objective (`curriculum.lam`); the baselines
without teachers: scratch (cloning the datasets) and, with
`--config.student.bc_top_fraction=0.1`, %BC (cloning the best 10% of
each task's transitions by episode return). Surgery
(`--config.surgery.name`): previous (default; `surgery.decay` > 0 uses an
EMA of past updates), none, pcgrad (with curriculum mixture).
"""

import ml_collections

from configs import teachers


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; `arg` is None/'', 'smoke' or 'paper'."""
  if arg not in (None, '', 'smoke', 'paper'):
    raise ValueError(f'configs/mt_distill.py: unknown config arg {arg!r};'
                     " valid: '', 'smoke', 'paper'")
  config = teachers.get_config(arg)
  config.stages = ('datasets', 'teachers', 'teacher_eval', 'distill',
                   'student_eval', 'report')

  config.student = ml_collections.ConfigDict()
  config.student.model = ml_collections.ConfigDict(dict(
      num_layers=2, width=32, num_heads=1, dropout=0.0,
      head='tanh_gaussian', log_std_min=-5.0, log_std_max=2.0))
  steps = ml_collections.FieldReference(3000)
  # Cosine decay over all of `student.steps` (linked: overriding the steps
  # moves the decay with them).
  config.student.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, weight_decay=1e-4, warmup_steps=200, grad_clip=1.0,
      b1=0.9, b2=0.999, decay_steps=steps, end_lr_fraction=0.1))
  config.student.loss = 'kl'  # or 'mse' between the means
  config.student.temperature = 1.0  # scales the teacher's std in the KL
  config.student.steps = steps
  config.student.batch_size = 64
  config.student.probe_size = 16  # segments per teacher per step (forward only)
  config.student.probe_pool = 512  # fixed probe segments per teacher
  # The from-scratch student (`curriculum.name=scratch`) clones the best
  # episodes by return holding this share of each task's transitions
  # (Chen et al. 2021's %BC, `distill/data/filtering.py`); 1.0 clones
  # every episode. Teachers, probes and the other curricula see all data.
  config.student.bc_top_fraction = 1.0
  config.student.steps_per_dispatch = 50
  config.student.log_every = 100
  config.student.ckpt_every = 1000
  config.student.keep = 2

  config.curriculum = ml_collections.ConfigDict(dict(
      name='max_kl', mode='greedy', temperature=1.0, epsilon=0.1, lam=1.0))
  config.surgery = ml_collections.ConfigDict(dict(
      name='previous', decay=0.0, reduction='sum'))

  config.report = ml_collections.ConfigDict(dict(
      student_checkpoint='last',  # the one in the headline table; or 'best'
      reps=2000))  # bootstrap replications of the aggregate CIs

  if arg == 'smoke':
    config.student.model.width = 8
    config.student.steps = 40
    config.student.batch_size = 8
    config.student.probe_size = 2
    config.student.probe_pool = 8
    config.student.steps_per_dispatch = 10
    config.student.log_every = 10
    config.student.ckpt_every = 20
    config.student.optimizer.warmup_steps = 5
    config.report.reps = 200
  elif arg == 'paper':
    config.student.model.num_layers = 2
    config.student.model.width = 64
    config.student.optimizer.lr = 1e-4
    config.student.optimizer.warmup_steps = 10_000
    config.student.optimizer.grad_clip = 0.25
    config.student.steps = 100_000
    config.student.log_every = 1000
    config.student.ckpt_every = 10_000
    config.student.steps_per_dispatch = 100
  return config

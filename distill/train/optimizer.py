"""Optimizers of the teachers and the student: schedules and AdamW chains.

    optimizer = make_optimizer(config.teacher.optimizer)
    alpha_optimizer = make_alpha_optimizer(config.teacher.entropy)
"""

import ml_collections
import optax


def make_schedule(config: ml_collections.ConfigDict) -> optax.Schedule:
  """Learning rate: linear warmup from 0, then constant or a cosine decay.

  Args:
    config: `lr`, `warmup_steps`; optional `decay_steps` (total steps, warmup
      included, of a cosine decay from `lr` to `end_lr_fraction * lr` after
      the warmup; 0 or absent: constant) and `end_lr_fraction` (default 0.1).

  Returns:
    The optax schedule.
  """
  decay_steps = int(config.get('decay_steps', 0) or 0)
  end_fraction = float(config.get('end_lr_fraction', 0.1))
  if config.lr <= 0 or config.warmup_steps < 0:
    raise ValueError(
        'optimizer: need lr > 0 and warmup_steps >= 0, got'
        f' lr={config.lr}, warmup_steps={config.warmup_steps}')
  if decay_steps and (decay_steps <= config.warmup_steps
                      or not 0.0 <= end_fraction <= 1.0):
    raise ValueError(
        'optimizer: need decay_steps > warmup_steps and end_lr_fraction in'
        f' [0, 1], got decay_steps={decay_steps}, warmup_steps='
        f'{config.warmup_steps}, end_lr_fraction={end_fraction}')
  if decay_steps:
    after = optax.cosine_decay_schedule(
        config.lr, decay_steps - config.warmup_steps, alpha=end_fraction)
  else:
    after = optax.constant_schedule(config.lr)
  return optax.join_schedules(
      [optax.linear_schedule(0.0, config.lr, max(config.warmup_steps, 1)),
       after],
      [config.warmup_steps])


def make_optimizer(config: ml_collections.ConfigDict
                   ) -> optax.GradientTransformation:
  """AdamW on `make_schedule(config)`, with global-norm clipping.

  Args:
    config: the schedule's fields (`make_schedule`), `weight_decay`,
      `grad_clip` (<= 0: none), `b1`, `b2`.

  Returns:
    The optax transformation (the DT paper: lr 1e-4, wd 1e-4, 10k warmup
    steps from 0, then constant; clip 0.25).
  """
  adamw = optax.adamw(make_schedule(config), b1=config.b1, b2=config.b2,
                      weight_decay=config.weight_decay)
  if config.grad_clip > 0:
    return optax.chain(optax.clip_by_global_norm(config.grad_clip), adamw)
  return adamw


def make_alpha_optimizer(config: ml_collections.ConfigDict
                         ) -> optax.GradientTransformation:
  """Optimizer of log-alpha: Adam when `config.learn`, else no updates.

  Args:
    config: `config.teacher.entropy` with `learn` and `lr`.

  Returns:
    The optax transformation.
  """
  return optax.adam(config.lr) if config.learn else optax.set_to_zero()

r"""Distillation on Meta-World MT10: ten teachers, one student, success rates.

  python -m experiments.run --config=configs/mt10.py --workdir=runs/mt10
  python -m experiments.run --config=configs/mt10.py:smoke --workdir=/tmp/mt10

`configs/mt_distill.py` (which builds on `configs/teachers.py`) on the ten
MT10 tasks (`distill/envs/mt10.py`: 39 observation / 4 action dims each,
500-step episodes) with their generated datasets
`suite:mt10/<task>-<quality>` (`distill/envs/mt10_suite.py`; `mixed` by
default, `--config.data.quality=medium` for the one-noise-level data,
`switch` for the noise std switched every 50 steps within episodes). The
student gets the task index as for the locomotion suite. Evaluations report
Meta-World's success rate next to the normalized return (random policy 0,
the scripted policy without noise 100; `distill/data/scores.py`).

Per-task values are keyed by the task name with '-' replaced by '_':

  --config.eval.target_return.pick_place_v3=4500
  "--config.tasks=('reach-v3','push-v3')"

Variants (`:arg`): '' (sized for a 2-core CPU: 20,000 transitions per
dataset, 1000 teacher steps, 3000 student steps, 10 evaluation episodes per
task), 'smoke' (all ten tasks at tiny sizes: 2,000 transitions per dataset,
evaluation episodes cut at 50 steps; a check that everything runs).
"""

import ml_collections

from configs import mt_distill
from distill.envs import mt10

TASKS = mt10.TASK_NAMES

# Conditioning returns: about the scripted policy's mean return without
# noise (`REF_RETURNS` maxima in distill/data/scores.py, rounded up).
TARGET_RETURNS = {
    'reach_v3': 4900.0,
    'push_v3': 3900.0,
    'pick_place_v3': 4500.0,
    'door_open_v3': 4500.0,
    'drawer_open_v3': 4100.0,
    'drawer_close_v3': 4300.0,
    'button_press_topdown_v3': 3700.0,
    'peg_insert_side_v3': 3900.0,
    'window_open_v3': 2400.0,
    'window_close_v3': 3700.0,
}


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the MT10 config; `arg` is None/'' or 'smoke'."""
  if arg not in (None, '', 'smoke'):
    raise ValueError(f'configs/mt10.py: unknown config arg {arg!r};'
                     " valid: '', 'smoke'")
  config = mt_distill.get_config(arg)
  config.tasks = TASKS
  config.data.spec = 'suite:mt10/{task}-{quality}'
  config.data.quality = 'mixed'
  # Episodes are 500 steps: timesteps 0..499.
  config.data.max_timestep = mt10.EPISODE_STEPS
  config.data.suite_transitions = 20_000
  if arg != 'smoke':  # the smoke keeps its tiny teacher steps
    config.teacher.steps = 1000
  config.eval.episodes = 10
  config.eval.num_envs = 10
  config.eval.max_episode_steps = mt10.EPISODE_STEPS
  config.eval.target_return = ml_collections.ConfigDict(TARGET_RETURNS)
  if arg == 'smoke':  # all ten tasks: the smoke steps every environment
    config.data.quality = 'medium'
    config.data.suite_transitions = 2000
    config.eval.episodes = 1
    config.eval.num_envs = 1
    config.eval.max_episode_steps = 50
  return config

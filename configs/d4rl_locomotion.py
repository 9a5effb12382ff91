r"""The same pipeline on real D4RL files at the paper sizes (for a GPU).

  python -m experiments.run --config=configs/d4rl_locomotion.py --workdir=runs/d4rl

Reads D4RL's medium datasets for halfcheetah, hopper and walker2d from
`~/.d4rl/datasets/` (where `d4rl` downloads them; nothing is downloaded here).
Point a task at another file with
`--config.data.specs.hopper=/data/hopper_medium_replay-v2.hdf5`, or at a
Minari dataset with `--config.data.specs.hopper=minari:mujoco/hopper/medium-v0`.
Evaluation runs the Gymnasium v5 environments (same observation and action
spaces as D4RL's) and reports D4RL-normalized scores.

Teachers: 3 layers, 128 wide, 1 head, dropout 0.1, K=20, batch 64, AdamW 1e-4,
warmup 10k, grad clip 0.25, 100k steps (Chen et al. 2021). Student: 2 layers,
64 wide.
"""

import ml_collections

from configs import mt_distill


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the config; `arg` is None/'' or a D4RL quality ('medium',
  'medium-replay', 'medium-expert')."""
  quality = arg or 'medium'
  if quality not in ('medium', 'medium-replay', 'medium-expert'):
    raise ValueError(f'configs/d4rl_locomotion.py: unknown quality {arg!r};'
                     " valid: 'medium', 'medium-replay', 'medium-expert'")
  config = mt_distill.get_config('paper')
  config.tasks = ('halfcheetah-forward', 'hopper', 'walker2d')
  suffix = quality.replace('-', '_')
  config.data.specs = ml_collections.ConfigDict(dict(
      halfcheetah_forward=f'~/.d4rl/datasets/halfcheetah_{suffix}-v2.hdf5',
      hopper=f'~/.d4rl/datasets/hopper_{suffix}-v2.hdf5',
      walker2d=f'~/.d4rl/datasets/walker2d_{suffix}-v2.hdf5'))
  config.eval.episodes = 32
  config.eval.num_envs = 16
  return config

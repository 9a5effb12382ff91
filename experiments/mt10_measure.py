r"""Measures MT10's noisy scripted policies: return and success per task.

  python -m experiments.mt10_measure --episodes=4 \
      --noise=0,0.3,0.5,1.0,1.5 --random

For each task and noise std (AR(1) noise with `--corr`, see
`distill.envs.mt10`), rolls out `--episodes` episodes (one
sub-environment each, reset with seeds `--seed + i`, the noise streams of
`distill.envs.mt10.behavior_policy`) and prints one JSON line per (task,
policy) with the mean and std of the return, the success rate (an episode
succeeds when any step reports success) and the seconds taken. `--random`
adds the uniform-random policy. The qualities' noise levels in
`distill/envs/mt10_suite.py` and the reference returns in
`distill/data/scores.py` were chosen and measured with it.
"""

import json
import time

from absl import app
from absl import flags
import gymnasium
import numpy as np

from distill.envs import mt10
from distill.envs import rollout

_EPISODES = flags.DEFINE_integer('episodes', 4, 'Episodes per policy.')
_NOISE = flags.DEFINE_list('noise', ['0', '0.3', '0.5', '1.0'],
                           'Noise stds of the scripted policy.')
_RANDOM = flags.DEFINE_bool('random', False, 'Also the random policy.')
_TASKS = flags.DEFINE_list('tasks', list(mt10.TASK_NAMES), 'MT10 tasks.')
_SEED = flags.DEFINE_integer('seed', 20_000, 'Environment and noise seed.')
_CORR = flags.DEFINE_float('corr', mt10.NOISE_CORR,
                           'Correlation of consecutive noise steps.')


def measure(task: str, noise_std: float | None, episodes: int,
            seed: int, corr: float = mt10.NOISE_CORR) -> dict:
  """Returns the return and success statistics of one policy in one task."""
  envs = gymnasium.vector.SyncVectorEnv(
      [lambda: mt10.make_env(task) for _ in range(episodes)],
      autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
  start = time.perf_counter()
  try:
    out = rollout.run(envs, mt10.behavior_policy(
        task, noise_std, seed, list(range(episodes)), noise_corr=corr),
                      episodes=episodes, seed=seed)
  finally:
    envs.close()
  return dict(task=task, noise=noise_std, corr=corr, episodes=episodes,
              return_mean=round(float(out.returns.mean()), 1),
              return_std=round(float(out.returns.std()), 1),
              success_rate=float(np.mean(out.successes)),
              seconds=round(time.perf_counter() - start, 1))


def main(argv: list[str]) -> None:
  del argv
  levels = [float(x) for x in _NOISE.value] + ([None] if _RANDOM.value
                                               else [])
  for task in _TASKS.value:
    for noise in levels:
      print(json.dumps(measure(task, noise, _EPISODES.value, _SEED.value,
                               _CORR.value)), flush=True)


if __name__ == '__main__':
  app.run(main)

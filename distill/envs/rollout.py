"""The episode loop: a policy steps a Gymnasium vector environment.

    result = rollout.run(envs, policy, episodes=10, seed=0)
    result.returns, result.lengths  # per finished episode

One loop serves evaluation (`distill.evaluation`), the behavior policies'
evaluations (`experiments/collect.py`) and the suite generator
(`distill.envs.suite`, which records every transition). The policy is a host
callback called once per vector step for all sub-environments:

    policy(step, obs_ExS, reward_E, first_E) -> actions_ExA

`step` counts vector steps from 0 (for per-step keys); `reward_E` is the
reward of the step that led to `obs_ExS` (0 at an episode's first
observation); `first_E` marks sub-environments whose `obs_ExS` starts an
episode, so a policy that keeps a per-episode state (a Decision Transformer's
context) resets it there.

The vector environment must use Gymnasium's SAME_STEP autoreset (as
`tasks.make_vector_env` does): when an episode ends, the observation returned
is already the first of the next episode and the last one is in
`info['final_obs']`.

Shape letters: E sub-environments, S observation size, A action size,
T vector steps.
"""

from collections.abc import Callable
from typing import NamedTuple

import gymnasium
import numpy as np

Policy = Callable[[int, np.ndarray, np.ndarray, np.ndarray], np.ndarray]

# Keys of `Rollout.transitions`.
TRANSITION_KEYS = ('observations', 'actions', 'rewards', 'next_observations',
                   'terminals', 'truncations')


class Rollout(NamedTuple):
  """What `run` returns.

  Attributes:
    returns: [episodes] float64 undiscounted returns, in order of completion.
    lengths: [episodes] int64 steps per episode.
    env_index: [episodes] the sub-environment of each episode.
    steps: vector steps taken (each steps every sub-environment).
    transitions: with `record=True`, arrays [E, T, ...] under
      `TRANSITION_KEYS`: the observation the policy saw, its action, the
      reward, the true next observation (the episode's last one where it
      ended, not the reset), terminated, and truncated (by the environment's
      time limit or `max_episode_steps`); else None.
  """

  returns: np.ndarray
  lengths: np.ndarray
  env_index: np.ndarray
  steps: int
  transitions: dict[str, np.ndarray] | None


def run(envs: gymnasium.vector.VectorEnv, policy: Policy, *,
        episodes: int | None = None, num_steps: int | None = None,
        seed: int | list[int] | None = None,
        max_episode_steps: int | None = None,
        record: bool = False) -> Rollout:
  """Steps `envs` with `policy` until the episode quota or step budget.

  With `episodes`, sub-environment i runs its share (`episodes // E`, one
  more for the first `episodes % E`); episodes past a share are not counted,
  and the loop stops when every share is done. With `num_steps`, the
  loop runs exactly that many vector steps and counts every episode that
  ends in them.

  Args:
    envs: a vector environment with SAME_STEP autoreset; not closed here.
    policy: see the module docstring; returns actions_ExA.
    episodes: total number of episodes.
    num_steps: vector steps to take instead of an episode quota.
    seed: passed to `envs.reset` (an int gives sub-env i `seed + i`; None
      continues the environments' own random streams).
    max_episode_steps: also end an episode after this many steps (it is
      reset and counted as truncated).
    record: keep every transition (see `Rollout.transitions`).

  Returns:
    A `Rollout`.

  Raises:
    ValueError: not exactly one of `episodes` and `num_steps`, or a vector
      environment whose autoreset mode is not SAME_STEP.
  """
  e = envs.num_envs
  if (episodes is None) == (num_steps is None):
    raise ValueError('rollout.run: pass exactly one of episodes and num_steps,'
                     f' got {episodes} and {num_steps}')
  mode = envs.metadata.get('autoreset_mode')
  if mode is not None and mode != gymnasium.vector.AutoresetMode.SAME_STEP:
    raise ValueError(f'rollout.run: the vector env uses autoreset mode {mode};'
                     ' SAME_STEP is required (see tasks.make_vector_env)')
  quota_E = None
  if episodes is not None:
    quota_E = np.full(e, episodes // e) + (np.arange(e) < episodes % e)
  done_E = np.zeros(e, np.int64)
  t_E = np.zeros(e, np.int64)
  ret_E = np.zeros(e, np.float64)
  returns, lengths, env_index = [], [], []
  cols = {k: [] for k in TRANSITION_KEYS}
  step = 0

  def unfinished() -> bool:
    if quota_E is None:
      return step < num_steps
    return bool(np.any(done_E < quota_E))

  obs_ExS, _ = envs.reset(seed=seed)
  reward_E = np.zeros(e, np.float64)
  first_E = np.ones(e, bool)
  while unfinished():
    act_ExA = policy(step, obs_ExS, np.where(first_E, 0.0, reward_E), first_E)
    next_ExS, reward_E, term_E, trunc_E, info = envs.step(act_ExA)
    step += 1
    ret_E += reward_E
    t_E += 1
    ended_E = term_E | trunc_E
    cut_E = np.zeros(e, bool)
    if max_episode_steps is not None:
      cut_E = ~ended_E & (t_E >= max_episode_steps)
    if record:
      true_next_ExS = next_ExS
      if 'final_obs' in info:
        # next_ExS already starts the new episode where one ended.
        true_next_ExS = next_ExS.copy()
        for i in np.flatnonzero(ended_E):
          true_next_ExS[i] = info['final_obs'][i]
      for k, x in zip(TRANSITION_KEYS, (obs_ExS, act_ExA, reward_E,
                                        true_next_ExS, term_E,
                                        trunc_E | cut_E)):
        cols[k].append(x)
    first_E = ended_E | cut_E
    for i in np.flatnonzero(first_E):
      if quota_E is None or done_E[i] < quota_E[i]:
        returns.append(ret_E[i])
        lengths.append(t_E[i])
        env_index.append(i)
        done_E[i] += 1
      t_E[i], ret_E[i] = 0, 0.0
    if np.any(cut_E) and unfinished():
      reset_ExS, _ = envs.reset(options={'reset_mask': cut_E})
      next_ExS = np.where(cut_E[:, None], reset_ExS, next_ExS)
    obs_ExS = next_ExS
  transitions = None
  if record:
    transitions = {k: np.stack(x, axis=1) for k, x in cols.items()}
  return Rollout(returns=np.asarray(returns, np.float64),
                 lengths=np.asarray(lengths, np.int64),
                 env_index=np.asarray(env_index, np.int64), steps=step,
                 transitions=transitions)

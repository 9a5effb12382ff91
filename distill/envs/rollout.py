"""The episode loop: a policy steps a Gymnasium vector environment.

    result = rollout.run(envs, policy, episodes=10, seed=0)
    result.returns, result.lengths  # per finished episode

One loop serves evaluation (`distill.envs.evaluation`), the behavior policies'
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

Environments that report `info['success']` (Meta-World) get it recorded: an
episode succeeds when any of its steps reports success. Meta-World's own
evaluation ends an episode at its first success and counts the last step's
`success`, which is the same number, while the episodes here keep their
full length (so their returns stay comparable).

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
                   'terminals', 'truncations', 'successes')


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
      ended, not the reset), terminated, truncated (by the environment's
      time limit or `max_episode_steps`), and the step's `info['success']`
      (float64, NaN where the environment reports none); else None.
    successes: [episodes] float64, 1.0 for an episode in which some step
      reported success, 0.0 for one in which none did, NaN where the
      environment reports no success.
  """

  returns: np.ndarray
  lengths: np.ndarray
  env_index: np.ndarray
  steps: int
  transitions: dict[str, np.ndarray] | None
  successes: np.ndarray | None = None


def step_successes(info: dict, ended_E: np.ndarray) -> np.ndarray:
  """Each sub-environment's `success` of one vector step, NaN if absent.

  With SAME_STEP autoreset an ended episode's own info is in
  `info['final_info']` (the top level then holds the reset's).

  Args:
    info: the vector step's info dict (Gymnasium's '_key' masks honored).
    ended_E: sub-environments whose episode ended at this step.

  Returns:
    [E] float64.
  """
  e = len(ended_E)
  final = info.get('final_info')
  out_E = np.full(e, np.nan)
  # An env without final_info (not a Gymnasium vector) reports the ended
  # episode's success at the top level.
  for src, rows_E in ((info, ~ended_E if final else np.ones(e, bool)),
                      (final or {}, ended_E)):
    if 'success' in src:
      take_E = np.asarray(src.get('_success', np.ones(e, bool))) & rows_E
      out_E[take_E] = np.asarray(src['success'], np.float64)[take_E]
  return out_E


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
  # Any step's success so far (NaN until the environment reports one).
  won_E = np.full(e, np.nan)
  returns, lengths, env_index, successes = [], [], [], []
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
    success_E = step_successes(info, ended_E)
    won_E = np.fmax(won_E, success_E)
    if record:
      true_next_ExS = next_ExS
      if 'final_obs' in info:
        # next_ExS already starts the new episode where one ended.
        true_next_ExS = next_ExS.copy()
        for i in np.flatnonzero(ended_E):
          true_next_ExS[i] = info['final_obs'][i]
      for k, x in zip(TRANSITION_KEYS, (obs_ExS, act_ExA, reward_E,
                                        true_next_ExS, term_E,
                                        trunc_E | cut_E, success_E)):
        cols[k].append(x)
    first_E = ended_E | cut_E
    for i in np.flatnonzero(first_E):
      if quota_E is None or done_E[i] < quota_E[i]:
        returns.append(ret_E[i])
        lengths.append(t_E[i])
        env_index.append(i)
        successes.append(won_E[i])
        done_E[i] += 1
      t_E[i], ret_E[i], won_E[i] = 0, 0.0, np.nan
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
                 transitions=transitions,
                 successes=np.asarray(successes, np.float64))

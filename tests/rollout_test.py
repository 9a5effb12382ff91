"""Tests of distill/envs/rollout.py: quotas, budgets, cuts, recording."""

import gymnasium
import numpy as np
import pytest

from distill.envs import rollout
from distill.envs import tasks


class CountingEnv(gymnasium.Env):
  """Observation [t, length]; reward t + 1 at step t; ends after `length`."""

  def __init__(self, length, truncate=False):
    self.length, self.truncate = length, truncate
    self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (2,))
    self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (1,))
    self.t = 0

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    self.t = 0
    return np.array([self.t, self.length], np.float32), {}

  def step(self, action):
    self.t += 1
    obs = np.array([self.t, self.length], np.float32)
    end = self.t >= self.length
    term, trunc = end and not self.truncate, end and self.truncate
    return obs, float(self.t), term, trunc, {}


def _envs(lengths, truncate=False,
          mode=gymnasium.vector.AutoresetMode.SAME_STEP):
  return gymnasium.vector.SyncVectorEnv(
      [lambda n=n: CountingEnv(n, truncate) for n in lengths],
      autoreset_mode=mode)


def _zeros(step, obs, reward, first):
  del step, reward, first
  return np.zeros((len(obs), 1), np.float32)


def test_episode_quotas_are_counted_once():
  out = rollout.run(_envs([2, 3]), _zeros, episodes=5)
  # env 0 runs 3 episodes of 2 steps (6 steps), env 1 two of 3 steps.
  # In order of completion: steps 2, 3, 4, 6 (env 0, then env 1).
  np.testing.assert_array_equal(out.env_index, [0, 1, 0, 0, 1])
  np.testing.assert_array_equal(out.lengths, [2, 3, 2, 2, 3])
  np.testing.assert_array_equal(out.returns, [3, 6, 3, 3, 6])
  assert out.steps == 6 and out.transitions is None


def test_policy_sees_step_previous_reward_and_episode_starts():
  calls = []

  def policy(step, obs, reward, first):
    calls.append((step, obs[:, 0].copy(), reward.copy(), first.copy()))
    return _zeros(step, obs, reward, first)

  rollout.run(_envs([2, 3]), policy, num_steps=4)
  steps, obs_t, rewards, firsts = map(np.array, zip(*calls))
  np.testing.assert_array_equal(steps, [0, 1, 2, 3])
  np.testing.assert_array_equal(obs_t, [[0, 0], [1, 1], [0, 2], [1, 0]])
  # The reward of the step that led to obs; 0 at an episode's start.
  np.testing.assert_array_equal(rewards, [[0, 0], [1, 1], [0, 2], [1, 0]])
  np.testing.assert_array_equal(firsts, [[1, 1], [0, 0], [1, 0], [0, 1]])


def test_recorded_transitions_hold_the_true_last_observation():
  out = rollout.run(_envs([2, 3], truncate=True), _zeros, num_steps=4,
                    record=True)
  tr = out.transitions
  assert set(tr) == set(rollout.TRANSITION_KEYS)
  assert tr['observations'].shape == (2, 4, 2)
  np.testing.assert_array_equal(tr['observations'][0, :, 0], [0, 1, 0, 1])
  # At an episode end the next observation is the last one, not the reset.
  np.testing.assert_array_equal(tr['next_observations'][0, :, 0], [1, 2, 1, 2])
  np.testing.assert_array_equal(tr['next_observations'][1, :, 0], [1, 2, 3, 1])
  np.testing.assert_array_equal(tr['truncations'][1], [0, 0, 1, 0])
  assert not tr['terminals'].any()
  np.testing.assert_array_equal(tr['rewards'][1], [1, 2, 3, 1])
  # Episodes that ended within the budget; unfinished ones are not counted.
  np.testing.assert_array_equal(out.env_index, [0, 1, 0])
  np.testing.assert_array_equal(out.returns, [3, 6, 3])


def test_max_episode_steps_cuts_and_resets():
  out = rollout.run(_envs([5, 5]), _zeros, episodes=4, max_episode_steps=2,
                    record=True)
  np.testing.assert_array_equal(out.lengths, [2, 2, 2, 2])
  np.testing.assert_array_equal(out.returns, [3, 3, 3, 3])
  tr = out.transitions
  # The cut sub-environment was reset: it restarts at t = 0.
  np.testing.assert_array_equal(tr['observations'][0, :, 0], [0, 1, 0, 1])
  np.testing.assert_array_equal(tr['truncations'][0], [0, 1, 0, 1])
  np.testing.assert_array_equal(tr['next_observations'][0, :, 0], [1, 2, 1, 2])


def test_seed_reaches_the_environments():
  def run(seed):
    env = tasks.make_vector_env('hopper', 2, seed=0)
    out = rollout.run(env, lambda *a: np.zeros((2, 3)), num_steps=3,
                      seed=seed, record=True)
    env.close()
    return out.transitions['observations']

  np.testing.assert_array_equal(run(7), run(7))
  assert not np.array_equal(run(7), run(8))
  first = run([7, 8])[:, 0]
  np.testing.assert_array_equal(first, run(7)[:, 0])


def test_bad_arguments_and_next_step_autoreset_are_refused():
  with pytest.raises(ValueError, match='exactly one of episodes'):
    rollout.run(_envs([2]), _zeros, episodes=1, num_steps=3)
  with pytest.raises(ValueError, match='exactly one of episodes'):
    rollout.run(_envs([2]), _zeros)
  with pytest.raises(ValueError, match='SAME_STEP'):
    rollout.run(_envs([2], mode=gymnasium.vector.AutoresetMode.NEXT_STEP),
                _zeros, episodes=1)

"""Tests of distill/evaluation.py."""

import gymnasium
import jax
import numpy as np
import pytest

from distill import checkpointing
from distill import evaluation
from distill.models import decision_transformer as dt_lib
from distill.models import model as model_lib


class CountingEnv(gymnasium.Env):
  """Reward 1 per step; terminates after `length` steps."""

  def __init__(self, length):
    self.length = length
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
    return obs, 1.0, self.t >= self.length, False, {}


def counting_envs(lengths):
  def make(task, num_envs, seed):
    del task, seed
    return gymnasium.vector.SyncVectorEnv(
        [lambda n=n: CountingEnv(n) for n in lengths[:num_envs]],
        autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
  return make


def test_episodes_counted_once_and_context_resets():
  calls = []

  def policy(rtg, states, actions, timesteps, mask, key):
    del actions, key
    calls.append((rtg[:, -1, 0].copy(), states[:, -1].copy(),
                  timesteps[:, -1].copy(), mask.sum(1).copy()))
    return np.full((rtg.shape[0], 3), 0.5, np.float32)  # padded A = 3

  result = evaluation.evaluate(
      policy, 'hopper', episodes=5, num_envs=2, target_return=10.0, seed=0,
      context_len=4, rtg_scale=2.0, max_timestep=100,
      state_mean=np.zeros(2), state_std=np.ones(2), state_size=3,
      action_size=3, make_envs=counting_envs([3, 4]))
  # env 0 runs 3 episodes of length 3, env 1 two of length 4.
  assert sorted(result['lengths']) == [3, 3, 3, 4, 4]
  assert sorted(result['returns']) == [3, 3, 3, 4, 4]
  assert result['episodes'] == 5 and len(result['normalized']) == 5
  # env 0: obs t counts 0,1,2,0,1,2,...; timesteps and rtg follow it.
  ts = np.array([c[2][0] for c in calls])
  obs_t = np.array([c[1][0][0] for c in calls])
  np.testing.assert_array_equal(ts[:9], [0, 1, 2] * 3)
  np.testing.assert_array_equal(obs_t[:9], ts[:9])
  rtg0 = np.array([c[0][0] for c in calls])
  np.testing.assert_allclose(rtg0[:3], [5.0, 4.5, 4.0])
  # The context fills up to K = 4 and restarts at each episode.
  np.testing.assert_array_equal([c[3][1] for c in calls[:5]], [1, 2, 3, 4, 1])
  # Padded state feature stays zero.
  assert all(c[1][:, 2].max() == 0 for c in calls)
  assert len(calls) == 9  # stops when every env finished its share


def test_max_episode_steps_cuts():
  def policy(rtg, *args):
    del args
    return np.zeros((rtg.shape[0], 1), np.float32)

  result = evaluation.evaluate(
      policy, 'no-refs-task', episodes=4, num_envs=2, target_return=1.0,
      seed=0, context_len=2, rtg_scale=1.0, max_timestep=10,
      state_mean=np.zeros(2), state_std=np.ones(2), state_size=2,
      action_size=1, max_episode_steps=2, make_envs=counting_envs([5, 5]))
  assert result['lengths'] == [2, 2, 2, 2]
  assert np.isnan(result['normalized_mean'])


def test_next_step_autoreset_refused():
  def make(task, num_envs, seed):
    return gymnasium.vector.SyncVectorEnv([lambda: CountingEnv(3)])
  with pytest.raises(ValueError, match='SAME_STEP'):
    evaluation.evaluate(
        lambda *a: None, 'hopper', episodes=1, num_envs=1, target_return=1.0,
        seed=0, context_len=2, rtg_scale=1.0, max_timestep=10,
        state_mean=np.zeros(2), state_std=np.ones(2), state_size=2,
        action_size=1, make_envs=make)


@pytest.mark.slow
@pytest.mark.parametrize('deterministic', [True, False])
def test_mujoco_rollout_from_checkpoint(tmp_path, deterministic):
  # A random hopper teacher padded to 17/6 like a vmapped one.
  model = dt_lib.DecisionTransformer(
      obs_dims=(17,), act_dims=(6,), num_layers=1, width=16, num_heads=1,
      dropout=0.1, context_len=5, max_timestep=1000)
  k = 5
  params = model.init(
      jax.random.key(0), np.zeros((1, k, 1)), np.zeros((1, k, 17)),
      np.zeros((1, k, 6)), np.zeros((1, k), np.int32), np.ones((1, k)),
      np.zeros((1,), np.int32), train=False)['params']
  meta = {'task': 'hopper', 'model': model_lib.model_meta(model),
          'obs_dims': [11], 'act_dims': [3], 'context_len': k,
          'rtg_scale': 1000.0, 'max_timestep': 1000,
          'state_mean': [[0.0] * 11], 'state_std': [[1.0] * 11]}
  manager = checkpointing.make_manager(str(tmp_path / 'hopper'))
  checkpointing.save(manager, 7, {'params': params}, meta)
  manager.close()
  result = evaluation.evaluate_checkpoint(
      str(tmp_path / 'hopper'), episodes=3, num_envs=2, target_return=3600.0,
      seed=0, deterministic=deterministic, max_episode_steps=8)
  assert result['step'] == 7 and len(result['returns']) == 3
  assert all(1 <= n <= 8 for n in result['lengths'])
  assert np.isfinite(result['normalized_mean'])
  assert result['normalized'][0] == pytest.approx(
      100 * (result['returns'][0] + 20.272305) / (3234.3 + 20.272305))

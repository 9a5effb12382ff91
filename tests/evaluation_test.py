"""Tests of distill/envs/evaluation.py."""

import chex
import gymnasium
import jax
import numpy as np
import pytest

from distill.envs import evaluation
from distill.models import decision_transformer as dt_lib
from distill.models import model as model_lib
from distill.train import checkpointing


class CountingEnv(gymnasium.Env):
  """Reward 1 (+ action_scale * first action) per step; terminates after
  `length` steps. Observations [t, length, seed, 0, ...]."""

  def __init__(self, length, obs_dim=2, act_dim=1, action_scale=0.0):
    self.length = length
    self.obs_dim = obs_dim
    self.action_scale = action_scale
    self.observation_space = gymnasium.spaces.Box(-np.inf, np.inf, (obs_dim,))
    self.action_space = gymnasium.spaces.Box(-1.0, 1.0, (act_dim,))
    self.t = 0
    self.seed = 0

  def _obs(self):
    obs = np.zeros(self.obs_dim, np.float32)
    obs[:3] = [self.t, self.length, self.seed][:self.obs_dim]
    return obs

  def reset(self, *, seed=None, options=None):
    super().reset(seed=seed)
    if seed is not None:
      self.seed = seed
    self.t = 0
    return self._obs(), {}

  def step(self, action):
    assert action.shape == self.action_space.shape
    self.t += 1
    reward = 1.0 + self.action_scale * float(action[0])
    return self._obs(), reward, self.t >= self.length, False, {}


def counting_envs(lengths, obs_dim=2, act_dim=1, action_scale=0.0):
  def make(task, num_envs, seed):
    del task, seed
    return gymnasium.vector.SyncVectorEnv(
        [lambda n=n: CountingEnv(n, obs_dim, act_dim, action_scale)
         for n in lengths[:num_envs]],
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


def _task_policy(rtg, states, actions, timesteps, mask, key, task=None):
  """Acts from the context, so a mixed-up row or task changes the returns."""
  del key
  task = np.zeros(rtg.shape[0], np.int32) if task is None else task
  a = np.tanh(0.3 * rtg[:, -1, 0] + 0.05 * states[:, -1, 0]
              + 0.07 * states[:, -1, 2] - 0.2 * actions[:, -2, 0]
              + 0.01 * timesteps[:, -1] + 0.02 * mask.sum(1) + 0.4 * task)
  return np.stack([a, -a, 0.5 * a], axis=1).astype(np.float32)  # A = 3


@pytest.mark.parametrize('episodes,num_envs', [(4, 2), (5, 2), (3, 4)])
def test_evaluate_tasks_equals_each_task_alone(episodes, num_envs):
  spec = {'hopper': ([3, 5, 4, 6], 2, 1), 'walker2d': ([4, 2, 7, 3], 3, 3)}
  make = {t: counting_envs(n, o, a, action_scale=0.5)
          for t, (n, o, a) in spec.items()}
  common = dict(episodes=episodes, num_envs=num_envs, seed=7,
                context_len=3, rtg_scale=2.0, max_timestep=100,
                state_size=3, action_size=3, max_episode_steps=5)
  means = {'hopper': np.array([0.5, 1.0]), 'walker2d': np.array([1., 2., 3.])}
  stds = {'hopper': np.array([2.0, 1.0]), 'walker2d': np.array([1., 1., 2.])}
  targets = {'hopper': 10.0, 'walker2d': 6.0}
  alone = {}
  for i, t in enumerate(spec):
    policy = lambda *a, i=i: _task_policy(*a, task=np.full(a[0].shape[0], i))
    alone[t] = evaluation.evaluate(
        policy, t, target_return=targets[t], state_mean=means[t],
        state_std=stds[t], make_envs=make[t], **common)
  together = evaluation.evaluate_tasks(
      _task_policy, list(spec), task_ids=[0, 1],
      target_returns=[targets[t] for t in spec],
      state_means=[means[t] for t in spec],
      state_stds=[stds[t] for t in spec],
      make_envs=lambda task, n, seed: make[task](task, n, seed), **common)
  for t in spec:
    for field in ('returns', 'lengths', 'normalized', 'episodes'):
      assert together[t][field] == alone[t][field], (t, field)


def test_policy_compiles_once_per_model(monkeypatch):
  model = dt_lib.DecisionTransformer(
      obs_dims=(3, 2), act_dims=(2, 1), num_layers=1, width=8, num_heads=1,
      dropout=0.0, context_len=3, max_timestep=10)
  params = model_lib.init_params(model, jax.random.key(0))
  inputs = [np.asarray(x) for x in model_lib.dummy_inputs(model, 4)][:5]
  ref = jax.jit(model_lib.make_policy_fn(model))
  make = model_lib.make_policy_fn
  monkeypatch.setattr(model_lib, 'make_policy_fn', lambda m, **kw: (
      chex.assert_max_traces(make(m, **kw), n=1)))
  evaluation.policy_fn.cache_clear()
  try:
    for task_id in (0, 1):  # Two tasks / checkpoints of one model.
      # An equal module (e.g. loaded again from its checkpoint) shares it.
      same = model_lib.from_meta(model_lib.model_meta(model))
      policy = evaluation.make_policy(same, params, task_id=task_id)
      np.testing.assert_array_equal(
          policy(*inputs, jax.random.key(0)),
          ref(params, *inputs, np.full(4, task_id), jax.random.key(0)))
  finally:
    evaluation.policy_fn.cache_clear()


@pytest.mark.slow
def test_mujoco_checkpoint_tasks_equal_one_by_one(tmp_path):
  # A random two-task student: hopper (11/3) and walker2d (17/6).
  model = dt_lib.DecisionTransformer(
      obs_dims=(11, 17), act_dims=(3, 6), num_layers=1, width=16,
      num_heads=1, dropout=0.0, context_len=4, max_timestep=1000)
  params = model_lib.init_params(model, jax.random.key(1))
  meta = {'tasks': ['hopper', 'walker2d'], 'model': model_lib.model_meta(model),
          'obs_dims': [11, 17], 'act_dims': [3, 6], 'context_len': 4,
          'rtg_scale': 1000.0, 'max_timestep': 1000,
          'state_mean': [[0.1] * 11, [0.0] * 17],
          'state_std': [[1.0] * 11, [2.0] * 17]}
  manager = checkpointing.make_manager(str(tmp_path / 'student'))
  checkpointing.save(manager, 3, {'params': params}, meta)
  manager.close()
  common = dict(episodes=3, num_envs=2, seed=5, max_episode_steps=12)
  targets = {'hopper': 3600.0, 'walker2d': 5000.0}
  together = evaluation.evaluate_checkpoint_tasks(
      str(tmp_path / 'student'), target_returns=targets, **common)
  for i, task in enumerate(targets):
    alone = evaluation.evaluate_checkpoint(
        str(tmp_path / 'student'), task_index=i, target_return=targets[task],
        **common)
    assert together[task]['step'] == alone['step'] == 3
    assert together[task]['lengths'] == alone['lengths']
    np.testing.assert_allclose(together[task]['returns'], alone['returns'],
                               rtol=1e-6)


def _plain(make_envs):
  """`make_envs` whose vector env `_SideBySide` can only call `step` on:
  the plain loop over each `SyncVectorEnv`, one sub-environment after
  another."""
  return lambda task, n, seed: gymnasium.vector.VectorWrapper(
      make_envs(task, n, seed))


@pytest.mark.parametrize('env_threads', [1, 2, 3])
def test_threaded_stepping_equals_the_plain_loop_counting(env_threads):
  spec = {'hopper': ([3, 5, 4, 6], 2, 1), 'walker2d': ([4, 2, 7, 3], 3, 3)}
  make = {t: counting_envs(n, o, a, action_scale=0.5)
          for t, (n, o, a) in spec.items()}
  common = dict(episodes=5, num_envs=3, seed=7, context_len=3,
                rtg_scale=2.0, max_timestep=100, target_returns=[10.0, 6.0],
                state_means=[np.zeros(2), np.zeros(3)],
                state_stds=[np.ones(2), np.ones(3)], state_size=3,
                action_size=3, max_episode_steps=5, task_ids=[0, 1])
  plain = evaluation.evaluate_tasks(
      _task_policy, list(spec),
      make_envs=_plain(lambda task, n, seed: make[task](task, n, seed)),
      **common)
  threaded = evaluation.evaluate_tasks(
      _task_policy, list(spec), env_threads=env_threads,
      make_envs=lambda task, n, seed: make[task](task, n, seed), **common)
  assert threaded == plain


@pytest.mark.parametrize('env_threads', [1, 2, 3])
def test_threaded_stepping_equals_the_plain_loop_mujoco(env_threads):
  # A random two-task student, large weights so that episodes terminate
  # early and environments reset mid-rollout.
  model = dt_lib.DecisionTransformer(
      obs_dims=(11, 17), act_dims=(3, 6), num_layers=1, width=16,
      num_heads=1, dropout=0.0, context_len=4, max_timestep=1000)
  params = jax.tree.map(lambda x: 20.0 * x,
                        model_lib.init_params(model, jax.random.key(1)))
  policy = evaluation.make_policy(model, params)
  common = dict(episodes=5, num_envs=3, seed=5, max_episode_steps=40,
                context_len=4, rtg_scale=1000.0, max_timestep=1000,
                state_size=17, action_size=6)
  tasks = ['hopper', 'walker2d']
  stats = dict(target_returns=[3600.0, 5000.0], task_ids=[0, 1],
               state_means=[np.zeros(11), np.zeros(17)],
               state_stds=[np.ones(11), np.ones(17)])
  plain = evaluation.evaluate_tasks(
      policy, tasks, make_envs=_plain(evaluation.default_make_envs),
      **stats, **common)
  threaded = evaluation.evaluate_tasks(policy, tasks, env_threads=env_threads,
                                       **stats, **common)
  assert threaded == plain
  # Episodes terminated (not cut at 40) and environments reset mid-run.
  assert max(plain['hopper']['lengths'] + plain['walker2d']['lengths']) < 40
  alone = evaluation.evaluate(
      policy, 'walker2d', env_threads=env_threads, target_return=5000.0,
      state_mean=np.zeros(17), state_std=np.ones(17), **common)
  alone_plain = evaluation.evaluate(
      policy, 'walker2d', make_envs=_plain(evaluation.default_make_envs),
      target_return=5000.0, state_mean=np.zeros(17), state_std=np.ones(17),
      **common)
  assert alone == alone_plain

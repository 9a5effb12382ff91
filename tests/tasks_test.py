"""Tests of distill/envs/tasks.py: sizes, time limits, reward signs."""

import gymnasium
import numpy as np
import pytest

from distill.data import scores
from distill.envs import tasks

D4RL_SIZES = {
    "halfcheetah-forward": (17, 6),
    "halfcheetah-backward": (17, 6),
    "hopper": (11, 3),
    "walker2d": (17, 6),
}


def test_table_matches_d4rl_sizes():
  assert set(tasks.TASKS) == set(D4RL_SIZES)
  for name, (obs_dim, act_dim) in D4RL_SIZES.items():
    task = tasks.TASKS[name]
    assert task.name == name
    assert (task.obs_dim, task.act_dim) == (obs_dim, act_dim)
    assert task.max_episode_steps == 1000


@pytest.mark.parametrize("name", list(D4RL_SIZES))
def test_env_steps_with_right_sizes(name):
  task = tasks.TASKS[name]
  env = tasks.make_env(name)
  assert env.spec.max_episode_steps == 1000
  assert env.observation_space.shape == (task.obs_dim,)
  assert env.action_space.shape == (task.act_dim,)
  np.testing.assert_array_equal(env.action_space.low, -1.0)
  np.testing.assert_array_equal(env.action_space.high, 1.0)
  obs, _ = env.reset(seed=0)
  assert obs.shape == (task.obs_dim,)
  obs, reward, term, trunc, _ = env.step(env.action_space.sample())
  assert obs.shape == (task.obs_dim,)
  assert np.isfinite(reward) and not trunc
  del term
  env.close()


def _reward_when_moving(name, x_velocity):
  env = tasks.make_env(name)
  env.reset(seed=0)
  base = env.unwrapped
  qvel = base.data.qvel.copy()
  qvel[0] = x_velocity
  base.set_state(base.data.qpos.copy(), qvel)
  _, reward, _, _, info = env.step(np.zeros(6, np.float32))
  env.close()
  return reward, info


def test_backward_task_rewards_running_backward():
  fwd_r, fwd_info = _reward_when_moving("halfcheetah-forward", -3.0)
  bwd_r, bwd_info = _reward_when_moving("halfcheetah-backward", -3.0)
  assert fwd_info["x_velocity"] < -1.0
  assert bwd_info["x_velocity"] == pytest.approx(fwd_info["x_velocity"])
  assert fwd_r < -1.0 < 1.0 < bwd_r
  assert bwd_info["reward_forward"] == pytest.approx(
      -fwd_info["reward_forward"])
  # Running forward is rewarded only by the forward task.
  fwd_r, _ = _reward_when_moving("halfcheetah-forward", 3.0)
  bwd_r, _ = _reward_when_moving("halfcheetah-backward", 3.0)
  assert bwd_r < -1.0 < 1.0 < fwd_r


def test_both_cheetah_tasks_share_observations():
  a = tasks.make_env("halfcheetah-forward")
  b = tasks.make_env("halfcheetah-backward")
  obs_a, _ = a.reset(seed=3)
  obs_b, _ = b.reset(seed=3)
  np.testing.assert_array_equal(obs_a, obs_b)
  act = np.full(6, 0.5, np.float32)
  np.testing.assert_array_equal(a.step(act)[0], b.step(act)[0])


def test_vector_env_same_step_autoreset():
  env = tasks.make_vector_env("hopper", 3, seed=0)
  assert env.metadata["autoreset_mode"] == (
      gymnasium.vector.AutoresetMode.SAME_STEP)
  obs, _ = env.reset()
  assert obs.shape == (3, 11)
  rng = np.random.default_rng(0)
  for _ in range(1000):
    obs, _, term, trunc, info = env.step(rng.uniform(-1, 1, (3, 3)))
    done = term | trunc
    if done.any():
      i = int(np.flatnonzero(done)[0])
      # The returned observation already starts a new episode: a fresh reset
      # state is near the initial pose (height ~1.25), unlike the last one.
      assert info["final_obs"][i].shape == (11,)
      assert not np.allclose(info["final_obs"][i], obs[i])
      assert abs(obs[i][0] - 1.25) < 0.01
      break
  else:
    pytest.fail("no hopper episode ended in 1000 random steps")
  env.close()


def test_vector_env_is_deterministic():
  def run():
    env = tasks.make_vector_env("walker2d", 2, seed=5)
    obs, _ = env.reset()
    out = [obs]
    for _ in range(5):
      out.append(env.step(np.full((2, 6), 0.3))[0])
    env.close()
    return np.stack(out)

  np.testing.assert_array_equal(run(), run())


def test_unknown_task_names_valid_ones():
  with pytest.raises(KeyError, match="halfcheetah-backward.*walker2d"):
    tasks.make_env("cheetah")


def test_reference_returns_come_from_scores():
  for task in tasks.TASKS.values():
    assert (task.ref_min, task.ref_max) == scores.reference_returns(
        f"suite:{task.name}-medium")
  assert tasks.TASKS["hopper"].ref_max == 3234.3
  assert tasks.TASKS["halfcheetah-forward"].ref_min == -280.178953

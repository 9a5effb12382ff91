"""Tests of distill/envs/sac.py: updates, fused chunks, the actor, snapshots."""

import chex
import jax
import numpy as np

from distill import losses
from distill.envs import sac

CFG = sac.SACConfig(obs_dim=5, act_dim=2, hidden=(16, 16), batch_size=8)


def _chunk(n, seed=0):
  rng = np.random.default_rng(seed)
  return sac.Chunk(
      obs_CxS=rng.normal(size=(n, 5)).astype(np.float32),
      actions_CxA=rng.uniform(-1, 1, (n, 2)).astype(np.float32),
      rewards_C=rng.normal(size=n).astype(np.float32),
      next_obs_CxS=rng.normal(size=(n, 5)).astype(np.float32),
      dones_C=(rng.uniform(size=n) < 0.1).astype(np.float32))


def test_one_update_is_finite_and_changes_params():
  state = sac.init_state(CFG, jax.random.key(0))
  update = jax.jit(sac.make_update(CFG))
  new_state, metrics = update(state, _chunk(8))
  chex.assert_tree_all_finite(metrics)
  chex.assert_tree_all_finite(new_state._replace(key=None))
  for name in ("actor_params", "critic_params", "target_critic_params"):
    old = jax.tree.leaves(getattr(state, name))
    new = jax.tree.leaves(getattr(new_state, name))
    assert any(not np.allclose(a, b) for a, b in zip(old, new)), name
  assert new_state.log_alpha != state.log_alpha
  assert int(new_state.step) == 1
  chex.assert_trees_all_equal_shapes_and_dtypes(state, new_state)
  # Polyak: the target moved by tau of the way to the new critic.

  def leaf(t):
    return jax.tree.leaves(t)[0]

  np.testing.assert_allclose(
      leaf(new_state.target_critic_params),
      (1 - CFG.tau) * leaf(state.target_critic_params)
      + CFG.tau * leaf(new_state.critic_params), rtol=1e-5, atol=1e-7)


def test_train_chunk_inserts_and_compiles_once():
  train_chunk = chex.assert_max_traces(sac.make_train_chunk(CFG, 3), n=1)
  train_chunk = jax.jit(train_chunk, donate_argnums=(0, 1))
  state = sac.init_state(CFG, jax.random.key(1))
  replay = sac.make_replay(20, 5, 2)
  for i in range(3):
    chunk = _chunk(10, seed=i)
    state, replay, metrics = train_chunk(state, replay, chunk)
  chex.assert_tree_all_finite(metrics)
  assert int(state.step) == 9
  assert int(replay.size) == 20 and int(replay.ptr) == 10
  # The third chunk wrapped around to the start of the buffer.
  np.testing.assert_array_equal(replay.obs_NxS[:10], chunk.obs_CxS)


def test_actor_and_policy_use_the_shared_tanh_gaussian():
  state = sac.init_state(CFG, jax.random.key(2))
  actor, _ = sac.make_modules(CFG)
  obs = 10.0 * np.random.default_rng(0).normal(size=(6, 5)).astype(
      np.float32)
  mean, log_std = actor.apply({"params": state.actor_params}, obs)
  assert np.all(log_std >= sac.LOG_STD_MIN) and np.all(
      log_std <= sac.LOG_STD_MAX)
  policy = jax.jit(sac.make_policy(2, (16, 16)),
                   static_argnames="deterministic")
  key = jax.random.key(3)
  want, _ = losses.sample_tanh_gaussian(key, mean, log_std)
  np.testing.assert_allclose(policy(state.actor_params, obs, key, False),
                             want, rtol=1e-6)
  np.testing.assert_allclose(policy(state.actor_params, obs, key, True),
                             np.tanh(mean), rtol=1e-6)


def test_snapshot_round_trip(tmp_path):
  state = sac.init_state(CFG, jax.random.key(4))
  prefix = str(tmp_path / "task-final")
  sac.save_snapshot(prefix, state.actor_params,
                    dict(obs_dim=5, act_dim=2, hidden=[16, 16]))
  params, info = sac.load_snapshot(prefix)
  assert info["hidden"] == [16, 16]
  chex.assert_trees_all_close(params, jax.tree.map(np.asarray,
                                                   state.actor_params))
  policy = jax.jit(sac.make_policy(2, (16, 16)),
                   static_argnames="deterministic")
  obs = np.ones((3, 5), np.float32)
  np.testing.assert_allclose(
      policy(params, obs, jax.random.key(0), True),
      policy(state.actor_params, obs, jax.random.key(0), True), rtol=1e-6)

"""Soft Actor-Critic in JAX: trains the suite's behavior policies.

Standard SAC (Haarnoja et al. 2018, "Soft Actor-Critic Algorithms and
Applications"): two Q networks with target copies (Polyak tau), a
tanh-squashed diagonal Gaussian actor, and an automatically tuned temperature
with target entropy -act_dim. The replay buffer lives on the device; one
dispatch inserts a chunk of fresh transitions and runs several updates fused
with `lax.scan`, so the host only steps the environment. The actor's
distribution is the Decision Transformer's: its log-std is bounded by
`heads.squash_log_std`, and actions and their log-likelihoods come from
`losses.sample_tanh_gaussian`.

Shape letters: B batch, N buffer capacity, C chunk (transitions per dispatch),
S observation size, A action size, E critic ensemble (2).

References:
  Haarnoja et al. 2018, https://arxiv.org/abs/1812.05905
"""

import json
from collections.abc import Sequence
from typing import Any, NamedTuple

import flax.linen as nn
import flax.serialization
import jax
import jax.numpy as jnp
import numpy as np
import optax

from distill.io import fileio
from distill import losses
from distill.models import heads

LOG_STD_MIN = -5.0
LOG_STD_MAX = 2.0


class Actor(nn.Module):
  """Tanh-Gaussian policy: returns pre-tanh mean and log-std."""

  act_dim: int
  hidden: Sequence[int] = (256, 256)

  @nn.compact
  def __call__(self, obs_BxS: jax.Array) -> tuple[jax.Array, jax.Array]:
    x = obs_BxS
    for width in self.hidden:
      x = nn.relu(nn.Dense(width)(x))
    mean_BxA = nn.Dense(self.act_dim)(x)
    log_std_BxA = heads.squash_log_std(
        nn.Dense(self.act_dim)(x), LOG_STD_MIN, LOG_STD_MAX)
    return mean_BxA, log_std_BxA


class Critic(nn.Module):
  """An ensemble of E Q networks evaluated with one vmapped module."""

  hidden: Sequence[int] = (256, 256)
  num_qs: int = 2

  @nn.compact
  def __call__(self, obs_BxS: jax.Array, act_BxA: jax.Array) -> jax.Array:
    """Returns Q values [E, B]."""

    class _Q(nn.Module):
      hidden: Sequence[int]

      @nn.compact
      def __call__(self, obs, act):
        x = jnp.concatenate([obs, act], axis=-1)
        for width in self.hidden:
          x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(1)(x)[..., 0]

    ensemble = nn.vmap(
        _Q,
        variable_axes={"params": 0},
        split_rngs={"params": True},
        in_axes=None,
        out_axes=0,
        axis_size=self.num_qs,
    )
    return ensemble(self.hidden)(obs_BxS, act_BxA)


class Replay(NamedTuple):
  """Device replay buffer; `dones` marks true terminals only (not timeouts)."""

  obs_NxS: jax.Array
  actions_NxA: jax.Array
  rewards_N: jax.Array
  next_obs_NxS: jax.Array
  dones_N: jax.Array
  size: jax.Array  # int32 scalar
  ptr: jax.Array  # int32 scalar


class Chunk(NamedTuple):
  """C fresh transitions from the host."""

  obs_CxS: jax.Array
  actions_CxA: jax.Array
  rewards_C: jax.Array
  next_obs_CxS: jax.Array
  dones_C: jax.Array


class SACState(NamedTuple):
  actor_params: Any
  critic_params: Any
  target_critic_params: Any
  log_alpha: jax.Array
  actor_opt: Any
  critic_opt: Any
  alpha_opt: Any
  key: jax.Array
  step: jax.Array


class SACConfig(NamedTuple):
  """SAC hyperparameters (plain values)."""

  obs_dim: int
  act_dim: int
  hidden: tuple[int, ...] = (256, 256)
  lr: float = 3e-4
  gamma: float = 0.99
  tau: float = 0.005
  batch_size: int = 256
  init_alpha: float = 1.0


def make_replay(capacity: int, obs_dim: int, act_dim: int) -> Replay:
  """Returns an empty replay buffer of `capacity` transitions."""
  f32 = jnp.float32
  return Replay(
      obs_NxS=jnp.zeros((capacity, obs_dim), f32),
      actions_NxA=jnp.zeros((capacity, act_dim), f32),
      rewards_N=jnp.zeros((capacity,), f32),
      next_obs_NxS=jnp.zeros((capacity, obs_dim), f32),
      dones_N=jnp.zeros((capacity,), f32),
      size=jnp.zeros((), jnp.int32),
      ptr=jnp.zeros((), jnp.int32),
  )


def insert(replay: Replay, chunk: Chunk) -> Replay:
  """Writes a chunk at the pointer (capacity must be a multiple of C)."""
  c = chunk.rewards_C.shape[0]
  capacity = replay.rewards_N.shape[0]
  p = replay.ptr

  def put(buf, x):
    start = (p,) + (0,) * (buf.ndim - 1)
    return jax.lax.dynamic_update_slice(buf, x.astype(buf.dtype), start)

  return Replay(
      obs_NxS=put(replay.obs_NxS, chunk.obs_CxS),
      actions_NxA=put(replay.actions_NxA, chunk.actions_CxA),
      rewards_N=put(replay.rewards_N, chunk.rewards_C),
      next_obs_NxS=put(replay.next_obs_NxS, chunk.next_obs_CxS),
      dones_N=put(replay.dones_N, chunk.dones_C),
      size=jnp.minimum(replay.size + c, capacity),
      ptr=(p + c) % capacity,
  )


def make_modules(config: SACConfig) -> tuple[Actor, Critic]:
  """Returns the (actor, critic) modules of a config."""
  return (
      Actor(act_dim=config.act_dim, hidden=tuple(config.hidden)),
      Critic(hidden=tuple(config.hidden)),
  )


def make_optimizer(config: SACConfig) -> optax.GradientTransformation:
  return optax.adam(config.lr)


def init_state(config: SACConfig, key: jax.Array) -> SACState:
  """Initializes networks, optimizers and temperature.

  Args:
    config: hyperparameters.
    key: typed PRNG key.

  Returns:
    The initial `SACState`.
  """
  actor, critic = make_modules(config)
  k_actor, k_critic, key = jax.random.split(key, 3)
  obs = jnp.zeros((1, config.obs_dim), jnp.float32)
  act = jnp.zeros((1, config.act_dim), jnp.float32)
  actor_params = actor.init(k_actor, obs)["params"]
  critic_params = critic.init(k_critic, obs, act)["params"]
  log_alpha = jnp.log(jnp.asarray(config.init_alpha, jnp.float32))
  tx = make_optimizer(config)
  return SACState(
      actor_params=actor_params,
      critic_params=critic_params,
      # A separate copy: the state is donated leaf by leaf.
      target_critic_params=jax.tree.map(jnp.copy, critic_params),
      log_alpha=log_alpha,
      actor_opt=tx.init(actor_params),
      critic_opt=tx.init(critic_params),
      alpha_opt=tx.init(log_alpha),
      key=key,
      step=jnp.zeros((), jnp.int32),
  )


def make_update(config: SACConfig):
  """Returns a pure `update(state, batch) -> (state, metrics)` (one SAC step).

  Args:
    config: hyperparameters.

  Returns:
    The update function; `batch` is a `Chunk` of B transitions.
  """
  actor, critic = make_modules(config)
  tx = make_optimizer(config)
  target_entropy = -float(config.act_dim)

  def update(state: SACState, batch: Chunk) -> tuple[SACState, dict]:
    key = jax.random.fold_in(state.key, state.step)
    k_next, k_pi = jax.random.split(key)
    alpha = jnp.exp(state.log_alpha)

    # Critic: soft Bellman target with the min of the two target Qs.
    mean, log_std = actor.apply({"params": state.actor_params},
                                batch.next_obs_CxS)
    next_act_BxA, next_logp_B = losses.sample_tanh_gaussian(
        k_next, mean, log_std)
    next_q_ExB = critic.apply({"params": state.target_critic_params},
                              batch.next_obs_CxS, next_act_BxA)
    next_v_B = jnp.min(next_q_ExB, axis=0) - alpha * next_logp_B
    target_B = batch.rewards_C + config.gamma * (1.0 - batch.dones_C) * next_v_B
    target_B = jax.lax.stop_gradient(target_B)

    def critic_loss_fn(params):
      q_ExB = critic.apply({"params": params}, batch.obs_CxS,
                           batch.actions_CxA)
      return jnp.mean(jnp.sum(jnp.square(q_ExB - target_B[None]), axis=0)), (
          jnp.mean(q_ExB))

    (critic_loss, q_mean), critic_grads = jax.value_and_grad(
        critic_loss_fn, has_aux=True)(state.critic_params)
    updates, critic_opt = tx.update(critic_grads, state.critic_opt)
    critic_params = optax.apply_updates(state.critic_params, updates)
    target_critic_params = optax.incremental_update(
        critic_params, state.target_critic_params, config.tau)

    # Actor against the freshly updated critic.
    def actor_loss_fn(params):
      mean, log_std = actor.apply({"params": params}, batch.obs_CxS)
      act_BxA, logp_B = losses.sample_tanh_gaussian(k_pi, mean, log_std)
      q_ExB = critic.apply({"params": critic_params}, batch.obs_CxS, act_BxA)
      return jnp.mean(alpha * logp_B - jnp.min(q_ExB, axis=0)), logp_B

    (actor_loss, logp_B), actor_grads = jax.value_and_grad(
        actor_loss_fn, has_aux=True)(state.actor_params)
    updates, actor_opt = tx.update(actor_grads, state.actor_opt)
    actor_params = optax.apply_updates(state.actor_params, updates)

    # Temperature towards the target entropy.
    entropy = -jnp.mean(jax.lax.stop_gradient(logp_B))

    def alpha_loss_fn(log_alpha):
      return log_alpha * (entropy - target_entropy)

    alpha_loss, alpha_grad = jax.value_and_grad(alpha_loss_fn)(state.log_alpha)
    updates, alpha_opt = tx.update(alpha_grad, state.alpha_opt)
    log_alpha = optax.apply_updates(state.log_alpha, updates)

    new_state = SACState(
        actor_params=actor_params,
        critic_params=critic_params,
        target_critic_params=target_critic_params,
        log_alpha=log_alpha,
        actor_opt=actor_opt,
        critic_opt=critic_opt,
        alpha_opt=alpha_opt,
        key=state.key,
        step=state.step + 1,
    )
    metrics = {
        "sac/critic_loss": critic_loss,
        "sac/actor_loss": actor_loss,
        "sac/alpha_loss": alpha_loss,
        "sac/alpha": alpha,
        "sac/entropy": entropy,
        "sac/q_mean": q_mean,
    }
    return new_state, metrics

  return update


def sample_batch(replay: Replay, key: jax.Array, batch_size: int) -> Chunk:
  """Samples B transitions uniformly from the filled part of the buffer."""
  idx_B = jax.random.randint(key, (batch_size,), 0, replay.size)
  return Chunk(
      obs_CxS=replay.obs_NxS[idx_B],
      actions_CxA=replay.actions_NxA[idx_B],
      rewards_C=replay.rewards_N[idx_B],
      next_obs_CxS=replay.next_obs_NxS[idx_B],
      dones_C=replay.dones_N[idx_B],
  )


def make_train_chunk(config: SACConfig, num_updates: int):
  """Returns `train_chunk(state, replay, chunk) -> (state, replay, metrics)`.

  Inserts the chunk, then runs `num_updates` SAC updates fused with
  `lax.scan`; metrics are the last update's. Jit it with donation of state
  and replay so the buffer is updated in place.

  Args:
    config: hyperparameters.
    num_updates: updates per dispatch (0 only inserts).

  Returns:
    The pure function.
  """
  update = make_update(config)

  def train_chunk(state: SACState, replay: Replay, chunk: Chunk):
    replay = insert(replay, chunk)

    def body(state, _):
      key = jax.random.fold_in(
          jax.random.fold_in(state.key, state.step), 1_000_003)
      batch = sample_batch(replay, key, config.batch_size)
      return update(state, batch)

    if num_updates == 0:
      return state, replay, {}
    state, metrics = jax.lax.scan(body, state, None, length=num_updates)
    return state, replay, jax.tree.map(lambda x: x[-1], metrics)

  return train_chunk


def make_policy(act_dim: int, hidden: Sequence[int]):
  """Returns `policy(params, obs_BxS, key, deterministic) -> act_BxA`.

  Args:
    act_dim: action size.
    hidden: hidden layer widths of the actor.

  Returns:
    A pure function (jit it with `deterministic` static); stochastic actions
    sample the actor's own tanh-Gaussian, deterministic ones are tanh(mean).
  """
  actor = Actor(act_dim=act_dim, hidden=tuple(hidden))

  def policy(params, obs_BxS, key, deterministic: bool):
    mean, log_std = actor.apply({"params": params},
                                obs_BxS.astype(jnp.float32))
    if deterministic:
      return jnp.tanh(mean)
    act, _ = losses.sample_tanh_gaussian(key, mean, log_std)
    return act

  return policy


# Snapshots: actor parameters (msgpack) plus a JSON card.


def save_snapshot(path_prefix: str, actor_params: Any, info: dict) -> None:
  """Writes `<prefix>.msgpack` (actor params) and `<prefix>.json` atomically.

  Args:
    path_prefix: path without extension.
    actor_params: the actor's parameter tree.
    info: JSON-serializable card; must hold 'obs_dim', 'act_dim', 'hidden'.
  """
  for k in ("obs_dim", "act_dim", "hidden"):
    if k not in info:
      raise ValueError(f"save_snapshot({path_prefix}): info lacks {k!r}")
  params = jax.tree.map(np.asarray, actor_params)
  fileio.write_atomic(path_prefix + ".msgpack",
                      flax.serialization.to_bytes(params))
  fileio.write_json(path_prefix + ".json", info)


def load_snapshot(path_prefix: str) -> tuple[Any, dict]:
  """Reads a snapshot written by `save_snapshot` (no JAX computation).

  Args:
    path_prefix: path without extension.

  Returns:
    (actor params as nested dicts of numpy arrays, info dict).

  Raises:
    ValueError: the parameters do not match the architecture in the JSON.
  """
  with open(path_prefix + ".json") as f:
    info = json.load(f)
  with open(path_prefix + ".msgpack", "rb") as f:
    params = flax.serialization.msgpack_restore(f.read())
  hidden = [int(h) for h in info["hidden"]]
  sizes = [int(info["obs_dim"])] + hidden
  expected = {f"Dense_{i}": (sizes[i], sizes[i + 1])
              for i in range(len(hidden))}
  expected[f"Dense_{len(hidden)}"] = (hidden[-1], int(info["act_dim"]))
  expected[f"Dense_{len(hidden) + 1}"] = (hidden[-1], int(info["act_dim"]))
  got = {k: tuple(v["kernel"].shape) for k, v in params.items()}
  if got != expected:
    raise ValueError(
        f"{path_prefix}.msgpack: kernel shapes {got} do not match the"
        f" architecture in {path_prefix}.json ({expected})")
  return params, info

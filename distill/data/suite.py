"""The embedded suite's datasets, generated on first use.

`load(task, quality)` returns a D4RL-format dict for 'suite:<task>-<quality>'.
The first call rolls out the shipped SAC behavior snapshots
(`distill/envs/snapshots/`) in Gymnasium vector environments and caches the
result as a D4RL HDF5 file plus a JSON dataset card in
`$DISTILL_DATA_DIR/suite/` (default `~/.cache/distill/suite/`); later calls
read the file. Both files are written atomically.

Qualities (as D4RL made its data):
  medium: the final snapshot, sampling from its own tanh-Gaussian noise.
  mixed:  every snapshot (early, middle, final), an equal share of the
          transitions each, in that order (like D4RL's medium-replay).

Same task, quality, size and seed give the same bytes. The file name holds
a hash of the snapshots and of the generator version, so new snapshots never
reuse an old cache.

Episode ends: a fall sets terminals=1; an episode cut by the 1000-step limit,
or by the end of a sub-environment's share of the budget, sets timeouts=1.

Shape letters: E sub-environments, S observation size, A action size.
"""

import functools
import hashlib
import json
import os
import tempfile
from typing import Any

import gymnasium
import jax
import jax.numpy as jnp
import numpy as np

from distill import sac
from distill.data import d4rl
from distill.data import scores
from distill.envs import tasks as tasks_lib

QUALITIES = ("medium", "mixed")
STAGES = ("early", "middle", "final")
# Bumped whenever generation changes what a (task, quality, size, seed) holds.
GENERATOR_VERSION = 1

# Default sizes (transitions per dataset) and rollout settings.
DEFAULTS = {
    "num_transitions": 100_000,
    "seed": 0,
    "num_envs": 10,
}


def data_dir() -> str:
  """Returns the cache root: `$DISTILL_DATA_DIR` or `~/.cache/distill`."""
  return os.path.expanduser(
      os.environ.get("DISTILL_DATA_DIR") or "~/.cache/distill")


def snapshot_dir() -> str:
  """Returns the package directory of the shipped behavior snapshots."""
  return os.path.join(os.path.dirname(tasks_lib.__file__), "snapshots")


def parse_name(name: str) -> tuple[str, str]:
  """Splits '<task>-<quality>' on the last '-' and checks both parts.

  Args:
    name: e.g. 'halfcheetah-backward-medium'.

  Returns:
    (task, quality).

  Raises:
    d4rl.DatasetError: unknown task or quality (the message lists valid ones).
  """
  task, _, quality = name.rpartition("-")
  _check(task, quality)
  return task, quality


def _check(task: str, quality: str) -> None:
  problems = []
  if task not in tasks_lib.TASKS:
    problems.append(f"unknown task {task!r} (valid: {', '.join(tasks_lib.TASKS)})")
  if quality not in QUALITIES:
    problems.append(
        f"unknown quality {quality!r} (valid: {', '.join(QUALITIES)})")
  if problems:
    raise d4rl.DatasetError(
        f"suite:{task}-{quality}: " + "; ".join(problems)
        + f"; e.g. suite:hopper-medium")


def _stages(quality: str) -> tuple[str, ...]:
  return ("final",) if quality == "medium" else STAGES


def _snapshot_files(task: str, quality: str, snap_dir: str) -> list[str]:
  prefixes = [os.path.join(snap_dir, f"{task}-{s}") for s in _stages(quality)]
  for p in prefixes:
    for ext in (".msgpack", ".json"):
      if not os.path.isfile(p + ext):
        raise d4rl.DatasetError(
            f"suite:{task}-{quality}: behavior snapshot {p + ext} is missing"
            " (train them with `python -m experiments.collect"
            " --config=configs/collect.py`)")
  return prefixes


def _fingerprint(prefixes: list[str]) -> str:
  h = hashlib.sha256(f"v{GENERATOR_VERSION}".encode())
  for p in prefixes:
    for ext in (".msgpack", ".json"):
      with open(p + ext, "rb") as f:
        h.update(f.read())
  return h.hexdigest()[:10]


def dataset_path(task: str, quality: str, *, num_transitions: int, seed: int,
                 num_envs: int, snap_dir: str | None = None) -> str:
  """Returns the cache path of a dataset's HDF5 file (it may not exist).

  Args:
    task: suite task.
    quality: 'medium' or 'mixed'.
    num_transitions: dataset size.
    seed: generation seed.
    num_envs: vector environment size.
    snap_dir: snapshot directory (default: the shipped ones).

  Returns:
    `<data_dir>/suite/<task>-<quality>-n<N>-s<seed>-e<E>-<hash>.hdf5`; the
    card is the same path with '.json'.
  """
  _check(task, quality)
  prefixes = _snapshot_files(task, quality, snap_dir or snapshot_dir())
  name = (f"{task}-{quality}-n{num_transitions}-s{seed}-e{num_envs}-"
          f"{_fingerprint(prefixes)}.hdf5")
  return os.path.join(data_dir(), "suite", name)


@functools.cache
def _act_fn(act_dim: int, hidden: tuple[int, ...]):
  """One jitted stochastic policy per architecture (compiled once)."""
  policy = sac.make_policy(act_dim, hidden)

  @jax.jit
  def act(params, obs_ExS, key, t):
    return policy(params, obs_ExS, jax.random.fold_in(key, t), False)

  return act


def rollout(task: str, params: Any, hidden: tuple[int, ...], *,
            num_transitions: int, num_envs: int, seed: int) -> dict:
  """Collects exactly `num_transitions` transitions with a stochastic policy.

  Each of the E sub-environments contributes a contiguous stream of about
  N / E steps (whole and partial episodes); streams are concatenated in
  sub-environment order. One jitted policy call per vector step.

  Args:
    task: suite task.
    params: actor parameters.
    hidden: actor hidden widths.
    num_transitions: N.
    num_envs: E.
    seed: seeds environments and policy noise.

  Returns:
    Dict of numpy arrays: observations, actions, rewards, next_observations,
    terminals, timeouts (D4RL keys).
  """
  spec = tasks_lib.get_task(task)
  num_envs = max(1, min(num_envs, num_transitions))
  # Sub-env i keeps the first quota_E[i] of its steps.
  quota_E = np.full(num_envs, num_transitions // num_envs)
  quota_E[: num_transitions % num_envs] += 1
  num_steps = int(quota_E.max())
  act = _act_fn(spec.act_dim, tuple(hidden))
  key = jax.random.key(seed)

  env = tasks_lib.make_vector_env(
      task, num_envs, seed,
      autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
  obs_ExS, _ = env.reset(seed=seed)
  cols = {k: [] for k in ("observations", "actions", "rewards",
                          "next_observations", "terminals", "timeouts")}
  for t in range(num_steps):
    act_ExA = np.asarray(act(params, jnp.asarray(obs_ExS, jnp.float32), key, t))
    next_ExS, rew_E, term_E, trunc_E, info = env.step(act_ExA)
    done_E = term_E | trunc_E
    true_next_ExS = next_ExS.copy()
    if done_E.any():
      # SAME_STEP autoreset: next_ExS already holds the new episode's first
      # observation for finished sub-envs; the real last one is final_obs.
      for i in np.flatnonzero(done_E):
        true_next_ExS[i] = info["final_obs"][i]
    cols["observations"].append(obs_ExS)
    cols["actions"].append(act_ExA)
    cols["rewards"].append(rew_E)
    cols["next_observations"].append(true_next_ExS)
    cols["terminals"].append(term_E)
    cols["timeouts"].append(trunc_E & ~term_E)
    obs_ExS = next_ExS
  env.close()
  # [T, E, ...] -> per-env streams, each cut to its quota.
  stacked = {k: np.stack(v, axis=1) for k, v in cols.items()}  # [E, T, ...]
  last_E = quota_E - 1
  cut_E = ~(stacked["terminals"][np.arange(num_envs), last_E]
            | stacked["timeouts"][np.arange(num_envs), last_E])
  stacked["timeouts"][np.arange(num_envs), last_E] |= cut_E
  out = {}
  for k, x in stacked.items():
    out[k] = np.concatenate([x[i, : quota_E[i]] for i in range(num_envs)])
  out["observations"] = out["observations"].astype(np.float32)
  out["next_observations"] = out["next_observations"].astype(np.float32)
  out["actions"] = out["actions"].astype(np.float32)
  out["rewards"] = out["rewards"].astype(np.float32)
  out["terminals"] = out["terminals"].astype(bool)
  out["timeouts"] = out["timeouts"].astype(bool)
  return out


def episode_returns(data: dict) -> tuple[np.ndarray, np.ndarray]:
  """Returns per-episode (returns, complete) of a D4RL dict.

  `complete` is False for an episode cut by the budget before its natural
  end (neither a fall nor the task's step limit).
  """
  bounds = d4rl.episode_bounds(data["terminals"], data["timeouts"])
  rewards = np.asarray(data["rewards"], np.float64)
  returns = np.array([rewards[s:e].sum() for s, e in bounds])
  lengths = bounds[:, 1] - bounds[:, 0]
  term = np.asarray(data["terminals"], bool)
  complete = np.array([term[e - 1] for _, e in bounds]) | (lengths >= 1000)
  return returns, complete


def generate(task: str, quality: str, *, num_transitions: int, seed: int,
             num_envs: int, snap_dir: str | None = None) -> tuple[dict, dict]:
  """Rolls out a dataset (no caching).

  Args:
    task: suite task.
    quality: 'medium' or 'mixed'.
    num_transitions: dataset size.
    seed: generation seed.
    num_envs: vector environment size.
    snap_dir: snapshot directory (default: the shipped ones).

  Returns:
    (data dict in D4RL format, dataset card dict).
  """
  _check(task, quality)
  prefixes = _snapshot_files(task, quality, snap_dir or snapshot_dir())
  n = len(prefixes)
  shares = [num_transitions // n + (i < num_transitions % n) for i in range(n)]
  parts, used = [], []
  for i, (prefix, share) in enumerate(zip(prefixes, shares)):
    if share == 0:
      continue
    params, info = sac.load_snapshot(prefix)
    parts.append(rollout(task, params, tuple(info["hidden"]),
                         num_transitions=share, num_envs=num_envs,
                         seed=seed * 1000 + i))
    used.append(dict(file=os.path.basename(prefix), transitions=share,
                     **{k: info[k] for k in ("stage", "env_steps",
                                             "eval_return") if k in info}))
  data = {k: np.concatenate([p[k] for p in parts]) for k in parts[0]}
  returns, complete = episode_returns(data)
  full = returns[complete]
  refs = tasks_lib.get_task(task)
  stats = {}
  if len(full):
    stats = dict(mean=float(full.mean()), std=float(full.std()),
                 min=float(full.min()), max=float(full.max()))
    try:
      stats["normalized_mean"] = float(scores.normalized_score(
          full.mean(), (refs.ref_min, refs.ref_max)))
    except KeyError:
      pass
  card = dict(
      name=f"suite:{task}-{quality}",
      task=task,
      quality=quality,
      env_id=refs.env_id,
      env_kwargs=dict(refs.env_kwargs),
      snapshots=used,
      policy="stochastic (samples the actor's tanh-Gaussian)",
      seed=seed,
      num_envs=num_envs,
      transitions=int(len(data["rewards"])),
      episodes=int(len(returns)),
      complete_episodes=int(complete.sum()),
      terminals=int(data["terminals"].sum()),
      timeouts=int(data["timeouts"].sum()),
      returns_complete_episodes=stats,
      generator_version=GENERATOR_VERSION,
      versions=_versions(),
  )
  return data, card


def _versions() -> dict:
  import importlib.metadata as md  # pylint: disable=g-import-not-at-top
  out = {}
  for pkg in ("distill", "gymnasium", "mujoco", "jax", "flax", "numpy",
              "h5py"):
    try:
      out[pkg] = md.version(pkg)
    except md.PackageNotFoundError:
      out[pkg] = None
  return out


def _write_json(path: str, obj: dict) -> None:
  directory = os.path.dirname(os.path.abspath(path))
  os.makedirs(directory, exist_ok=True)
  fd, tmp = tempfile.mkstemp(dir=directory,
                             prefix=f".{os.path.basename(path)}.",
                             suffix=".tmp")
  try:
    with os.fdopen(fd, "w") as f:
      json.dump(obj, f, indent=2, sort_keys=True)
      f.write("\n")
    os.chmod(tmp, 0o644)  # mkstemp makes it owner-only
    os.replace(tmp, path)
  except BaseException:
    if os.path.exists(tmp):
      os.remove(tmp)
    raise


def _resolve(task, quality, num_transitions, seed, num_envs, snap_dir):
  _check(task, quality)
  n = DEFAULTS["num_transitions"] if num_transitions is None else num_transitions
  seed = DEFAULTS["seed"] if seed is None else seed
  num_envs = DEFAULTS["num_envs"] if num_envs is None else num_envs
  if n < 1:
    raise ValueError(f"suite.load: num_transitions must be >= 1, got {n}")
  path = dataset_path(task, quality, num_transitions=n, seed=seed,
                      num_envs=num_envs, snap_dir=snap_dir)
  return n, seed, num_envs, path, path[: -len(".hdf5")] + ".json"


def load(task: str, quality: str, *, num_transitions: int | None = None,
         seed: int | None = None, num_envs: int | None = None,
         snap_dir: str | None = None) -> dict:
  """Returns suite dataset 'suite:<task>-<quality>', generating it if missing.

  Args:
    task: one of `distill.envs.tasks.TASKS`.
    quality: 'medium' or 'mixed'.
    num_transitions: dataset size (default `DEFAULTS['num_transitions']`).
    seed: generation seed (default `DEFAULTS['seed']`).
    num_envs: vector environment size (default `DEFAULTS['num_envs']`).
    snap_dir: snapshot directory (default: the shipped ones).

  Returns:
    The D4RL-format dict of `distill.data.d4rl.load_hdf5` (validated), with
    'next_observations' and 'metadata/card' (the JSON card) extras.

  Raises:
    d4rl.DatasetError: unknown task or quality, or missing snapshots.
  """
  n, seed, num_envs, path, card_path = _resolve(
      task, quality, num_transitions, seed, num_envs, snap_dir)
  if not (os.path.isfile(path) and os.path.isfile(card_path)):
    data, card = generate(task, quality, num_transitions=n, seed=seed,
                          num_envs=num_envs, snap_dir=snap_dir)
    data["metadata/card"] = json.dumps(card, sort_keys=True)
    d4rl.write_hdf5(path, data, attrs=dict(name=card["name"]))
    _write_json(card_path, card)
  return d4rl.load_hdf5(path)


def read_card(task: str, quality: str, *, num_transitions: int | None = None,
              seed: int | None = None, num_envs: int | None = None,
              snap_dir: str | None = None) -> dict:
  """Returns the JSON dataset card of a dataset, generating it if missing.

  Args:
    task, quality, num_transitions, seed, num_envs, snap_dir: as `load`.

  Returns:
    The card dict.
  """
  load(task, quality, num_transitions=num_transitions, seed=seed,
       num_envs=num_envs, snap_dir=snap_dir)
  card_path = _resolve(task, quality, num_transitions, seed, num_envs,
                       snap_dir)[-1]
  with open(card_path) as f:
    return json.load(f)

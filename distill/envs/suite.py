"""The embedded suite's datasets, generated on first use.

`load(task, quality)` returns a D4RL-format dict for 'suite:<task>-<quality>'
(`load_spec` takes the spec string itself). 'suite:mt10/<task>-<quality>'
names Meta-World MT10's datasets (`distill.envs.mt10_suite`); `load_spec`,
`parse_name`, `dataset_path`, `load` and `read_card` hand MT10 names and
tasks to it. The first call rolls out the
shipped SAC behavior snapshots (`distill/envs/snapshots/`) in Gymnasium vector
environments (`distill.envs.rollout`) and caches the result as a D4RL HDF5
file plus a JSON dataset card in `$DISTILL_DATA_DIR/suite/` (default
`~/.cache/distill/suite/`); later calls read the file. Both files are written
atomically; the card records the file's SHA-256 (`file_sha256`), checked on
every load (a damaged file is moved aside with a warning and generated
again), and the SHA-256 of the data arrays (`data_sha256`, independent of
the HDF5 library's layout).

Qualities (as D4RL made its data):
  medium: the final snapshot, sampling from its own tanh-Gaussian noise.
  mixed:  every snapshot (early, middle, final), an equal share of the
          transitions each, in that order (like D4RL's medium-replay).

Same task, quality, size and seed give the same data on any x86-64 machine
(the same package versions): the behavior policy runs in float64 NumPy with
machine-independent sums and its actions are rounded to multiples of 2**-16
(`behavior_actions`), and its noise comes from NumPy's PCG64 streams, one per
sub-environment. The file name holds
a hash of the snapshots, of the generator version and of the installed MuJoCo
version (MuJoCo's releases step the same policy into different bytes), so new
snapshots or another MuJoCo never reuse an old cache.

Episode ends: a fall sets terminals=1; an episode cut by the 1000-step limit,
or by the end of a sub-environment's share of the budget, sets timeouts=1.

Shape letters: E sub-environments, S observation size, A action size.
"""

import hashlib
import math
import os
from typing import Any

import gymnasium
import numpy as np

from distill.data import d4rl
from distill.data import scores
from distill.envs import generated
from distill.envs import mt10_suite
from distill.envs import rollout
from distill.envs import sac
from distill.envs import tasks as tasks_lib
from distill.io import fileio

PREFIX = "suite:"
QUALITIES = ("medium", "mixed")
STAGES = ("early", "middle", "final")
# Bumped whenever generation changes what a (task, quality, size, seed) holds.
GENERATOR_VERSION = 3

# Default sizes (transitions per dataset) and rollout settings.
DEFAULTS = {
    "num_transitions": 100_000,
    "seed": 0,
    "num_envs": 10,
    # Processes stepping environments (capped at the CPU count); the data do
    # not depend on it.
    "num_workers": 2,
}


data_dir = generated.data_dir


def snapshot_dir() -> str:
  """Returns the package directory of the shipped behavior snapshots."""
  return os.path.join(os.path.dirname(__file__), "snapshots")


def _is_mt10(task: str) -> bool:
  return task in mt10_suite.mt10.TASK_NAMES


def parse_name(name: str) -> tuple[str, str]:
  """Splits '<task>-<quality>' on the last '-' and checks both parts.

  Args:
    name: e.g. 'halfcheetah-backward-medium', or 'mt10/push-v3-medium'
      (then the task is 'push-v3').

  Returns:
    (task, quality).

  Raises:
    d4rl.DatasetError: unknown task or quality (the message lists valid ones).
  """
  if name.startswith(mt10_suite.NAME_PREFIX):
    return mt10_suite.parse_name(name)
  task, _, quality = name.rpartition("-")
  _check(task, quality)
  return task, quality


def _check(task: str, quality: str) -> None:
  problems = []
  if task not in tasks_lib.TASKS:
    problems.append(
        f"unknown task {task!r} (valid: {', '.join(tasks_lib.TASKS)})")
  if quality not in QUALITIES:
    problems.append(
        f"unknown quality {quality!r} (valid: {', '.join(QUALITIES)})")
  if task in mt10_suite.mt10.TASK_NAMES:
    problems.append(f"MT10 datasets are suite:mt10/{task}-<quality>")
  if problems:
    raise d4rl.DatasetError(
        f"suite:{task}-{quality}: " + "; ".join(problems)
        + "; e.g. suite:hopper-medium")


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
  h.update(f"mujoco-{_versions()['mujoco']}".encode())
  for p in prefixes:
    for ext in (".msgpack", ".json"):
      with open(p + ext, "rb") as f:
        h.update(f.read())
  return h.hexdigest()[:10]


def dataset_path(task: str, quality: str, *, num_transitions: int | None,
                 seed: int, num_envs: int, snap_dir: str | None = None) -> str:
  """Returns the cache path of a dataset's HDF5 file (it may not exist).

  Args:
    task: suite task (an MT10 task: `mt10_suite.dataset_path`).
    quality: 'medium' or 'mixed'.
    num_transitions: dataset size (None: the suite's default).
    seed: generation seed.
    num_envs: vector environment size.
    snap_dir: snapshot directory (default: the shipped ones).

  Returns:
    `<data_dir>/suite/<task>-<quality>-n<N>-s<seed>-e<E>-<hash>.hdf5`; the
    card is the same path with '.json'.
  """
  if _is_mt10(task):
    return mt10_suite.dataset_path(task, quality,
                                   num_transitions=num_transitions,
                                   seed=seed, num_envs=num_envs)
  if num_transitions is None:
    num_transitions = DEFAULTS["num_transitions"]
  _check(task, quality)
  prefixes = _snapshot_files(task, quality, snap_dir or snapshot_dir())
  name = (f"{task}-{quality}-n{num_transitions}-s{seed}-e{num_envs}-"
          f"{_fingerprint(prefixes)}.hdf5")
  return os.path.join(data_dir(), "suite", name)


# Actions are multiples of 2**-16: a last-bit difference in a transcendental
# function between two CPUs' math libraries (far below this step) then leaves
# the action, and so the whole episode, unchanged.
ACTION_QUANTUM = 2.0**-16


def _dense(x_ExI: np.ndarray, layer: dict) -> np.ndarray:
  """`x @ kernel + bias` in float64, in the same order on every CPU.

  `np.einsum` without `optimize` runs NumPy's own loops (no BLAS, whose
  kernels and summation order depend on the CPU), compiled for the wheel's
  baseline instruction set, so the sums do not depend on the machine.
  """
  kernel = np.asarray(layer["kernel"], np.float64)
  bias = np.asarray(layer["bias"], np.float64)
  return np.einsum("ei,ij->ej", x_ExI, kernel, optimize=False) + bias


def behavior_actions(params: dict, obs_ExS: np.ndarray,
                     eps_ExA: np.ndarray) -> np.ndarray:
  """The behavior policy's stochastic actions, reproducible on any x86-64.

  The SAC actor (`sac.Actor`: ReLU layers, a mean head and a log-std head
  squashed by `heads.squash_log_std`) evaluated in float64 NumPy: fixed-order
  sums (see `_dense`), scalar `math` transcendentals (not NumPy's SIMD ones,
  which differ between CPUs), and actions rounded to multiples of
  `ACTION_QUANTUM`. XLA's CPU kernels, used before (generator version 2),
  changed the actions in the last bits between machines and MuJoCo amplified
  the difference into other episodes.

  Args:
    params: actor parameters (`sac.load_snapshot`), Dense_0..Dense_{h-1}
      hidden, Dense_h the mean, Dense_{h+1} the raw log-std.
    obs_ExS: observations (float64 as the environments return them).
    eps_ExA: standard normal noise, float64.

  Returns:
    float64 actions tanh(mean + std * eps), rounded to the quantum.
  """
  hidden = len(params) - 2
  x = np.asarray(obs_ExS, np.float64)
  for i in range(hidden):
    x = np.maximum(_dense(x, params[f"Dense_{i}"]), 0.0)
  mean = _dense(x, params[f"Dense_{hidden}"])
  raw = _dense(x, params[f"Dense_{hidden + 1}"])
  lo, hi = sac.LOG_STD_MIN, sac.LOG_STD_MAX
  out = [math.tanh(m + math.exp(lo + 0.5 * (hi - lo) * (math.tanh(r) + 1.0))
                   * e)
         for m, r, e in zip(mean.ravel().tolist(), raw.ravel().tolist(),
                            np.asarray(eps_ExA, np.float64).ravel().tolist())]
  out = np.asarray(out, np.float64).reshape(mean.shape)
  return np.round(out / ACTION_QUANTUM) * ACTION_QUANTUM


_noise = generated.noise_stream


def _rollout_streams(task: str, params: Any, hidden: tuple[int, ...],
                     env_ids: list[int], quotas: list[int],
                     seed: int) -> list[dict]:
  """Steps the given sub-environments; returns one stream dict per env.

  Sub-env i is reset with seed `seed + i` and keeps its first `quotas` steps.
  Top-level so that a worker process can run it (`generated.run_groups`).
  """
  spec = tasks_lib.get_task(task)
  del hidden  # The layers are in `params`.
  noise_E = [_noise(seed, i) for i in env_ids]
  env = gymnasium.vector.SyncVectorEnv(
      [lambda: tasks_lib.make_env(task) for _ in env_ids],
      autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)

  def policy(step, obs_ExS, reward_E, first_E):
    del step, reward_E, first_E  # Memoryless; the noise streams advance.
    eps_ExA = np.stack([g.standard_normal(spec.act_dim) for g in noise_E])
    return behavior_actions(params, obs_ExS, eps_ExA)

  try:
    tr = rollout.run(env, policy, num_steps=int(max(quotas)),
                     seed=[seed + int(i) for i in env_ids],
                     record=True).transitions  # [E, T, ...]
  finally:
    env.close()
  stacked = {
      "observations": tr["observations"].astype(np.float32),
      "actions": tr["actions"],
      "rewards": tr["rewards"],
      "next_observations": tr["next_observations"],
      "terminals": tr["terminals"],
      "timeouts": tr["truncations"] & ~tr["terminals"],
  }
  streams = []
  for j, quota in enumerate(quotas):
    stream = {k: x[j, :quota] for k, x in stacked.items()}
    # The budget cut an unfinished episode: bootstrap-able, so a timeout.
    stream["timeouts"][-1] |= not stream["terminals"][-1]
    streams.append(stream)
  return streams


def roll_out_policies(
    task: str, policies: list[tuple[Any, tuple[int, ...], int, int]], *,
    num_envs: int, num_workers: int = 1) -> list[dict]:
  """Collects transitions of several stochastic policies.

  For each policy, each of the E sub-environments contributes a contiguous
  stream of about N / E steps (whole episodes and a last one cut by the
  budget, marked as a timeout); streams are concatenated in sub-environment
  order. One jitted policy call per vector step. With W workers the
  sub-environments are split into W groups, one stepped here and the others
  in fresh processes; the data do not depend on W.

  Args:
    task: suite task.
    policies: (actor params, hidden widths, N transitions, seed) per policy.
    num_envs: E.
    num_workers: W, processes stepping environments (1 = this one only).

  Returns:
    Per policy, a dict of numpy arrays: observations, actions, rewards,
    next_observations, terminals, timeouts (D4RL keys).
  """
  tasks_lib.get_task(task)
  num_groups = max(1, min(num_workers, num_envs))
  groups = [[] for _ in range(num_groups)]
  for params, hidden, n, seed in policies:
    e = max(1, min(num_envs, n))
    quota_E = np.full(e, n // e)
    quota_E[: n % e] += 1
    params = {k: {kk: np.asarray(vv) for kk, vv in v.items()}
              for k, v in params.items()}
    split = np.array_split(np.arange(e), num_groups)
    for g, ids in enumerate(split):
      groups[g].append((task, params, tuple(hidden), ids.tolist(),
                        [int(quota_E[i]) for i in ids], seed))
  results = generated.run_groups(_rollout_streams, groups)
  outs = []
  for j in range(len(policies)):
    streams = [st for g in range(num_groups) for st in results[g][j]]
    out = {k: np.concatenate([st[k] for st in streams]) for k in streams[0]}
    for k in ("observations", "next_observations", "actions", "rewards"):
      out[k] = out[k].astype(np.float32)
    out["terminals"] = out["terminals"].astype(bool)
    out["timeouts"] = out["timeouts"].astype(bool)
    outs.append(out)
  return outs


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
             num_envs: int, num_workers: int = 1,
             snap_dir: str | None = None) -> tuple[dict, dict]:
  """Rolls out a dataset (no caching).

  Args:
    task: suite task.
    quality: 'medium' or 'mixed'.
    num_transitions: dataset size.
    seed: generation seed.
    num_envs: vector environment size.
    num_workers: processes stepping environments (see `roll_out_policies`).
    snap_dir: snapshot directory (default: the shipped ones).

  Returns:
    (data dict in D4RL format, dataset card dict).
  """
  _check(task, quality)
  prefixes = _snapshot_files(task, quality, snap_dir or snapshot_dir())
  n = len(prefixes)
  shares = [num_transitions // n + (i < num_transitions % n) for i in range(n)]
  policies, used = [], []
  for i, (prefix, share) in enumerate(zip(prefixes, shares)):
    if share == 0:
      continue
    params, info = sac.load_snapshot(prefix)
    policies.append((params, tuple(info["hidden"]), share, seed * 1000 + i))
    used.append(dict(file=os.path.basename(prefix), transitions=share,
                     **{k: info[k] for k in ("stage", "env_steps",
                                             "eval_return") if k in info}))
  parts = roll_out_policies(task, policies, num_envs=num_envs,
                            num_workers=num_workers)
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
      policy=("stochastic (samples the actor's tanh-Gaussian; float64 NumPy,"
              f" actions rounded to multiples of {ACTION_QUANTUM!r})"),
      seed=seed,
      num_envs=num_envs,
      transitions=len(data["rewards"]),
      episodes=len(returns),
      complete_episodes=int(complete.sum()),
      terminals=int(data["terminals"].sum()),
      timeouts=int(data["timeouts"].sum()),
      returns_complete_episodes=stats,
      generator_version=GENERATOR_VERSION,
      data_sha256=d4rl.data_sha256(data),
      versions=_versions(),
  )
  return data, card


def _versions() -> dict:
  return generated.versions()


def _resolve(task, quality, num_transitions, seed, num_envs, snap_dir):
  _check(task, quality)
  n = (DEFAULTS["num_transitions"] if num_transitions is None
       else num_transitions)
  seed = DEFAULTS["seed"] if seed is None else seed
  num_envs = DEFAULTS["num_envs"] if num_envs is None else num_envs
  if n < 1:
    raise ValueError(f"suite.load: num_transitions must be >= 1, got {n}")
  path = dataset_path(task, quality, num_transitions=n, seed=seed,
                      num_envs=num_envs, snap_dir=snap_dir)
  return n, seed, num_envs, path, path[: -len(".hdf5")] + ".json"


def load(task: str, quality: str, *, num_transitions: int | None = None,
         seed: int | None = None, num_envs: int | None = None,
         num_workers: int | None = None, snap_dir: str | None = None) -> dict:
  """Returns suite dataset 'suite:<task>-<quality>', generating it if missing.

  Args:
    task: one of `distill.envs.tasks.TASKS`.
    quality: 'medium' or 'mixed'.
    num_transitions: dataset size (default `DEFAULTS['num_transitions']`).
    seed: generation seed (default `DEFAULTS['seed']`).
    num_envs: vector environment size (default `DEFAULTS['num_envs']`).
    num_workers: processes stepping environments when generating (default
      `DEFAULTS['num_workers']`, at most the CPU count); no effect on the data.
    snap_dir: snapshot directory (default: the shipped ones).

  Returns:
    The D4RL-format dict of `distill.data.d4rl.load_hdf5` (validated), with
    'next_observations' and 'metadata/card' (the JSON card) extras.

  Raises:
    d4rl.DatasetError: unknown task or quality, or missing snapshots.
  """
  if _is_mt10(task):
    return mt10_suite.load(task, quality, num_transitions=num_transitions,
                           seed=seed, num_envs=num_envs,
                           num_workers=num_workers)
  n, seed, num_envs, path, _ = _resolve(
      task, quality, num_transitions, seed, num_envs, snap_dir)
  if num_workers is None:
    num_workers = min(DEFAULTS["num_workers"], os.cpu_count() or 1)
  return generated.load_or_generate(path, lambda: generate(
      task, quality, num_transitions=n, seed=seed, num_envs=num_envs,
      num_workers=num_workers, snap_dir=snap_dir))


def read_card(task: str, quality: str, *, num_transitions: int | None = None,
              seed: int | None = None, num_envs: int | None = None,
              snap_dir: str | None = None) -> dict:
  """Returns the JSON dataset card of a dataset, generating it if missing.

  Args:
    task, quality, num_transitions, seed, num_envs, snap_dir: as `load`.

  Returns:
    The card dict.
  """
  if _is_mt10(task):
    return mt10_suite.read_card(task, quality,
                                num_transitions=num_transitions, seed=seed,
                                num_envs=num_envs)
  load(task, quality, num_transitions=num_transitions, seed=seed,
       num_envs=num_envs, snap_dir=snap_dir)
  card_path = _resolve(task, quality, num_transitions, seed, num_envs,
                       snap_dir)[-1]
  return fileio.read_json(card_path)


def load_spec(spec: str, *, clip_actions: bool = False,
              num_transitions: int | None = None) -> dict:
  """Loads the dataset a 'suite:<task>-<quality>' spec names.

  Args:
    spec: e.g. 'suite:halfcheetah-backward-medium'.
    clip_actions: clip actions outside [-1, 1] with a warning instead of
      refusing them (see `distill.data.d4rl.validate`).
    num_transitions: dataset size (default `DEFAULTS['num_transitions']`).

  Returns:
    The dict of `load`, validated again with `spec` as the source that
    errors name.

  Raises:
    d4rl.DatasetError: a malformed spec, unknown task or quality, missing
      snapshots, or bad data.
  """
  name = spec.removeprefix(PREFIX)
  task, sep, quality = name.rpartition("-")
  if not spec.startswith(PREFIX) or not sep or not task or not quality:
    raise d4rl.DatasetError(
        f"{spec}: expected suite:<task>-<quality>, e.g."
        " suite:halfcheetah-backward-medium or suite:mt10/push-v3-medium")
  if name.startswith(mt10_suite.NAME_PREFIX):
    task, quality = mt10_suite.parse_name(name)
  elif _is_mt10(task):
    _check(task, quality)  # Says the MT10 spec form.
  data = load(task, quality, num_transitions=num_transitions)
  return d4rl.validate(data, source=spec, clip_actions=clip_actions)

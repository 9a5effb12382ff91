"""Meta-World MT10 datasets, generated on first use: `suite:mt10/<task>-<q>`.

    data = mt10_suite.load('push-v3', 'medium')
    data = mt10_suite.load_spec('suite:mt10/push-v3-mixed')

The first call rolls out Meta-World's scripted policy of the task with
Gaussian action noise (`distill.envs.mt10`) in Gymnasium vector
environments and caches a D4RL HDF5 file (observations, actions, rewards,
next_observations, terminals, timeouts, and `infos/success`: the step's
`info['success']`) with a JSON dataset card beside it in
`$DISTILL_DATA_DIR/mt10/`, through the locomotion suite's cache
(`distill.envs.generated`: atomic writes, `file_sha256` checked at every
load, `data_sha256` of the arrays in the card).

Qualities (noise stds measured with `experiments/mt10_measure.py`, table in
README.md):
  medium: one noise std, `NOISE_STDS['medium']`.
  mixed:  several noise stds from nearly the scripted policy to nearly
          random, an equal share of the transitions each, in that order.
  switch: the same stds, switched within every episode: each segment of
          `SWITCH_STEPS` steps (from the episode's first step) has a std
          drawn uniformly from them, so no episode is wholly clean and
          filtering whole episodes by return cannot isolate the good
          behaviour; the step's std is in `infos/noise_std`.

Episodes last 500 steps and never terminate (terminals are all 0); an
episode cut at 500 steps, or by the end of a sub-environment's share of the
budget, sets timeouts=1. Goals follow from the seed: sub-environment i of a
policy with seed s is reset with seed s + i and draws a new goal per episode
from its own generator (see `distill.envs.mt10`). Same task, quality, size
and seed give the same bytes with the same package versions (the actions
are rounded to multiples of 2**-16 and the noise comes from per-sub-env
PCG64 streams); the file name holds a hash of the generator version, the
noise stds and correlation (and `SWITCH_STEPS` for `switch`) and the MuJoCo
and Meta-World versions.

Shape letters: E sub-environments, T steps.
"""

import hashlib
import os
from typing import Any

import gymnasium
import numpy as np

from distill.data import d4rl
from distill.data import scores
from distill.envs import generated
from distill.envs import mt10
from distill.envs import rollout
from distill.io import fileio

NAME_PREFIX = 'mt10/'
# Noise stds per quality (see the module docstring).
NOISE_STDS = {
    'medium': (1.0,),
    'mixed': (0.1, 0.5, 1.0, 2.0),
    'switch': (0.1, 0.5, 1.0, 2.0),
}
QUALITIES = tuple(NOISE_STDS)
# Qualities whose std changes within episodes, every SWITCH_STEPS steps
# (ten segments per 500-step episode).
SWITCHING = ('switch',)
SWITCH_STEPS = 50
# Bumped whenever generation changes what a (task, quality, size, seed) holds.
GENERATOR_VERSION = 1
SUCCESS_KEY = 'infos/success'
# The step's noise std (switching qualities only).
NOISE_KEY = 'infos/noise_std'
# A missing key is skipped by `d4rl.data_sha256`: the other qualities'
# digests do not depend on NOISE_KEY.
DATA_KEYS = d4rl.DIGEST_KEYS
assert DATA_KEYS[-2:] == (SUCCESS_KEY, NOISE_KEY)
PACKAGES = generated.PACKAGES + ('metaworld',)

DEFAULTS = {
    # 40 episodes of 500 steps per dataset.
    'num_transitions': 20_000,
    'seed': 0,
    'num_envs': 10,
    # Processes stepping environments (capped at the CPU count); the data do
    # not depend on it.
    'num_workers': 2,
}


def check(task: str, quality: str) -> None:
  """Raises `d4rl.DatasetError` for an unknown MT10 task or quality."""
  problems = []
  if task not in mt10.TASK_NAMES:
    problems.append(f'unknown MT10 task {task!r} (valid:'
                    f' {", ".join(mt10.TASK_NAMES)})')
  if quality not in QUALITIES:
    problems.append(f'unknown quality {quality!r} (valid:'
                    f' {", ".join(QUALITIES)})')
  if problems:
    raise d4rl.DatasetError(
        f'suite:{NAME_PREFIX}{task}-{quality}: ' + '; '.join(problems)
        + '; e.g. suite:mt10/push-v3-medium')


def parse_name(name: str) -> tuple[str, str]:
  """Splits 'mt10/<task>-<quality>' and checks both parts.

  Args:
    name: e.g. 'mt10/pick-place-v3-mixed'.

  Returns:
    (task, quality), e.g. ('pick-place-v3', 'mixed').

  Raises:
    d4rl.DatasetError: a malformed name, unknown task or quality.
  """
  task, sep, quality = name.removeprefix(NAME_PREFIX).rpartition('-')
  if not name.startswith(NAME_PREFIX) or not sep:
    raise d4rl.DatasetError(f'suite:{name}: expected'
                            ' suite:mt10/<task>-<quality>, e.g.'
                            ' suite:mt10/push-v3-medium')
  check(task, quality)
  return task, quality


def switch_steps(quality: str) -> int | None:
  """Steps per noise segment of a switching quality, else None."""
  return SWITCH_STEPS if quality in SWITCHING else None


def _fingerprint(quality: str) -> str:
  h = hashlib.sha256(f'mt10-v{GENERATOR_VERSION}'.encode())
  ver = generated.versions(('mujoco', 'metaworld'))
  h.update(f'mujoco-{ver["mujoco"]}-metaworld-{ver["metaworld"]}'.encode())
  h.update(repr((NOISE_STDS[quality], mt10.NOISE_CORR)).encode())
  if quality in SWITCHING:
    h.update(f'switch-every-{SWITCH_STEPS}'.encode())
  return h.hexdigest()[:10]


def dataset_path(task: str, quality: str, *, num_transitions: int | None,
                 seed: int | None = None, num_envs: int | None = None) -> str:
  """Returns the cache path of a dataset's HDF5 file (it may not exist).

  Args:
    task: an MT10 task.
    quality: one of `QUALITIES`.
    num_transitions: dataset size (None: the default).
    seed: generation seed (None: the default).
    num_envs: vector environment size (None: the default).

  Returns:
    `<data_dir>/mt10/<task>-<quality>-n<N>-s<seed>-e<E>-<hash>.hdf5`; the
    card is the same path with '.json'.
  """
  check(task, quality)
  n = DEFAULTS['num_transitions'] if num_transitions is None else int(
      num_transitions)
  seed = DEFAULTS['seed'] if seed is None else seed
  num_envs = DEFAULTS['num_envs'] if num_envs is None else num_envs
  name = (f'{task}-{quality}-n{n}-s{seed}-e{num_envs}-'
          f'{_fingerprint(quality)}.hdf5')
  return os.path.join(generated.data_dir(), 'mt10', name)


def _rollout_streams(task: str, noise_std: float | tuple[float, ...],
                     env_ids: list[int], quotas: list[int], seed: int,
                     switch_every: int | None = None) -> list[dict]:
  """Steps the given sub-environments; returns one stream dict per env.

  Sub-env i is reset with seed `seed + i`, draws its noise from stream
  (seed, i) and keeps its first `quotas` steps. With `switch_every`, the
  std switches among the `noise_std` tuple (`mt10.behavior_policy`) and
  the streams hold NOISE_KEY. Top-level so that a worker process can run
  it (`generated.run_groups`).
  """
  env = gymnasium.vector.SyncVectorEnv(
      [lambda: mt10.make_env(task) for _ in env_ids],
      autoreset_mode=gymnasium.vector.AutoresetMode.SAME_STEP)
  std_log = []
  try:
    tr = rollout.run(
        env, mt10.behavior_policy(task, noise_std, seed, env_ids,
                                  switch_steps=switch_every,
                                  std_log=std_log),
        num_steps=int(max(quotas)), seed=[seed + int(i) for i in env_ids],
        record=True).transitions  # [E, T, ...]
  finally:
    env.close()
  stacked = {
      'observations': tr['observations'].astype(np.float32),
      'actions': tr['actions'].astype(np.float32),
      'rewards': tr['rewards'].astype(np.float32),
      'next_observations': tr['next_observations'].astype(np.float32),
      'terminals': tr['terminals'].astype(bool),
      'timeouts': (tr['truncations'] & ~tr['terminals']).astype(bool),
      SUCCESS_KEY: tr['successes'].astype(np.float32),
  }
  if switch_every is not None:
    stacked[NOISE_KEY] = np.stack(std_log, axis=1).astype(np.float32)
  streams = []
  for j, quota in enumerate(quotas):
    stream = {k: x[j, :quota] for k, x in stacked.items()}
    # The budget cut an unfinished episode: bootstrap-able, so a timeout.
    stream['timeouts'][-1] = True
    streams.append(stream)
  return streams


def episode_stats(data: dict) -> dict[str, np.ndarray]:
  """Per-episode returns, success and completeness of an MT10 dataset.

  An episode succeeds when any of its steps has `infos/success` 1 (what
  Meta-World's evaluation counts, see `distill.envs.rollout`).

  Args:
    data: D4RL-format arrays with `infos/success`.

  Returns:
    {'returns', 'successes' (0/1 float), 'complete' (500 steps long)}.
  """
  bounds = d4rl.episode_bounds(data['terminals'], data['timeouts'])
  rewards = np.asarray(data['rewards'], np.float64)
  success = np.asarray(data[SUCCESS_KEY], np.float64)
  return {
      'returns': np.array([rewards[s:e].sum() for s, e in bounds]),
      'successes': np.array([success[s:e].max() for s, e in bounds]),
      'complete': (bounds[:, 1] - bounds[:, 0]) >= mt10.EPISODE_STEPS,
  }


def _summary(task: str, data: dict) -> dict[str, Any]:
  """Returns, normalized return and success rate of the complete episodes."""
  ep = episode_stats(data)
  full, won = ep['returns'][ep['complete']], ep['successes'][ep['complete']]
  if not len(full):
    return dict(episodes=0)
  return dict(
      episodes=int(len(full)), mean=float(full.mean()),
      std=float(full.std()), min=float(full.min()), max=float(full.max()),
      normalized_mean=float(scores.normalized_score(full.mean(), task)),
      success_rate=float(won.mean()))


def switch_levels(data: dict, stds: tuple[float, ...]
                  ) -> list[dict[str, Any]]:
  """The steps at each std of a switching dataset: count, share, reward.

  Args:
    data: D4RL-format arrays with NOISE_KEY.
    stds: the quality's stds.

  Returns:
    `[{'noise_std', 'transitions', 'share', 'reward_per_step'}]`, one per
    std, in order (`reward_per_step` None for a std no step has).

  Raises:
    ValueError: a step whose std is none of `stds`.
  """
  noise_N = np.asarray(data[NOISE_KEY])
  rewards_N = np.asarray(data['rewards'], np.float64)
  at = [noise_N == np.float32(std) for std in stds]
  stray = len(noise_N) - sum(int(m.sum()) for m in at)
  if stray:
    raise ValueError(f'{NOISE_KEY}: {stray} steps have a std outside'
                     f' {list(stds)}')
  return [dict(noise_std=std, transitions=int(m.sum()),
               share=float(m.mean()),
               reward_per_step=float(rewards_N[m].mean()) if m.any()
               else None)
          for std, m in zip(stds, at)]


def generate(task: str, quality: str, *, num_transitions: int, seed: int,
             num_envs: int, num_workers: int = 1) -> tuple[dict, dict]:
  """Rolls out a dataset (no caching).

  Args:
    task: an MT10 task.
    quality: one of `QUALITIES`.
    num_transitions: dataset size.
    seed: generation seed (noise level i uses seed `1000 * seed + i`; a
      switching quality is one level).
    num_envs: vector environment size.
    num_workers: processes stepping environments; no effect on the data.

  Returns:
    (data dict in D4RL format with `infos/success` (and NOISE_KEY for a
    switching quality), dataset card dict).
  """
  check(task, quality)
  stds = NOISE_STDS[quality]
  every = switch_steps(quality)
  if every:  # One level: every sub-environment switches among the stds.
    plan = [(tuple(float(std) for std in stds), num_transitions)]
  else:
    k = len(stds)
    plan = [(float(std), num_transitions // k + (i < num_transitions % k))
            for i, std in enumerate(stds)]
  num_groups = max(1, min(num_workers, num_envs))
  groups = [[] for _ in range(num_groups)]
  job_levels = [[] for _ in range(num_groups)]  # the level of each job
  used = []
  for i, (std, n) in enumerate(plan):
    if n == 0:
      continue
    e = max(1, min(num_envs, n))
    quota_E = np.full(e, n // e)
    quota_E[: n % e] += 1
    for g, ids in enumerate(np.array_split(np.arange(e), num_groups)):
      if len(ids):
        groups[g].append((task, std, ids.tolist(),
                          [int(quota_E[j]) for j in ids], seed * 1000 + i,
                          every))
        job_levels[g].append(len(used))
    used.append((std, n))
  results = generated.run_groups(_rollout_streams, groups)
  parts, levels = [], []
  for j, (std, n) in enumerate(used):
    # Sub-environment order: group 0's, then group 1's, ...
    streams = [st for g in range(num_groups)
               for level, res in zip(job_levels[g], results[g])
               if level == j for st in res]
    part = {key: np.concatenate([st[key] for st in streams])
            for key in streams[0]}
    parts.append(part)
    if not every:
      levels.append(dict(noise_std=std, transitions=n,
                         **_summary(task, part)))
  data = {key: np.concatenate([p[key] for p in parts]) for key in parts[0]}
  ep = episode_stats(data)
  if every:
    levels = switch_levels(data, stds)
    noise = (f'whose std is drawn uniformly from {list(stds)} for every'
             f' {every}-step segment of an episode (from its first step;'
             ' the noise state carries over)')
    goals = 'sub-env i seeded 1000 * seed + i'
  else:
    noise = f'of std {list(stds)} (equal shares, in order)'
    goals = 'sub-env i of noise level l seeded 1000 * seed + l + i'
  card = dict(
      name=f'suite:{NAME_PREFIX}{task}-{quality}',
      task=task,
      quality=quality,
      env_id=f'metaworld:{task}',
      policy=('metaworld.policies scripted policy + AR(1) Gaussian noise'
              f' (rho {mt10.NOISE_CORR}) {noise}, clipped to [-1, 1],'
              f' rounded to multiples of {mt10.ACTION_QUANTUM!r}'),
      goals=('a new goal per episode from the task\'s random-reset space,'
             f' {goals}'),
      noise_stds=list(stds),
      noise_corr=mt10.NOISE_CORR,
      levels=levels,
      seed=seed,
      num_envs=num_envs,
      transitions=len(data['rewards']),
      episodes=len(ep['returns']),
      complete_episodes=int(ep['complete'].sum()),
      terminals=int(data['terminals'].sum()),
      timeouts=int(data['timeouts'].sum()),
      returns_complete_episodes=_summary(task, data),
      success_rate=_summary(task, data).get('success_rate'),
      generator_version=GENERATOR_VERSION,
      data_sha256=d4rl.data_sha256(data, DATA_KEYS),
      versions=generated.versions(PACKAGES),
  )
  if every:
    card['switch_steps'] = every
  return data, card


def load(task: str, quality: str, *, num_transitions: int | None = None,
         seed: int | None = None, num_envs: int | None = None,
         num_workers: int | None = None) -> dict[str, Any]:
  """Returns 'suite:mt10/<task>-<quality>', generating it if missing.

  Args:
    task: an MT10 task (`distill.envs.mt10.TASK_NAMES`).
    quality: one of `QUALITIES`.
    num_transitions: dataset size (default `DEFAULTS['num_transitions']`).
    seed: generation seed (default `DEFAULTS['seed']`).
    num_envs: vector environment size (default `DEFAULTS['num_envs']`).
    num_workers: processes stepping environments when generating (default
      `DEFAULTS['num_workers']`, at most the CPU count).

  Returns:
    The dict of `distill.data.d4rl.load_hdf5`, with `infos/success`,
    'next_observations' and 'metadata/card'.
  """
  n = DEFAULTS['num_transitions'] if num_transitions is None else int(
      num_transitions)
  if n < 1:
    raise ValueError(f'mt10_suite.load: num_transitions must be >= 1, got'
                     f' {n}')
  seed = DEFAULTS['seed'] if seed is None else seed
  num_envs = DEFAULTS['num_envs'] if num_envs is None else num_envs
  if num_workers is None:
    num_workers = min(DEFAULTS['num_workers'], os.cpu_count() or 1)
  path = dataset_path(task, quality, num_transitions=n, seed=seed,
                      num_envs=num_envs)
  return generated.load_or_generate(path, lambda: generate(
      task, quality, num_transitions=n, seed=seed, num_envs=num_envs,
      num_workers=num_workers), who='mt10')


def read_card(task: str, quality: str, **kwargs) -> dict[str, Any]:
  """The dataset card of a dataset (generated if missing); args of `load`."""
  load(task, quality, **kwargs)
  path = dataset_path(task, quality, num_transitions=kwargs.get(
      'num_transitions'), seed=kwargs.get('seed'),
                      num_envs=kwargs.get('num_envs'))
  return fileio.read_json(generated.card_path(path))

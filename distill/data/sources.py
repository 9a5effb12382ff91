"""Loads an offline dataset that exists: a file, d4rl or Minari.

Specs:
  /path/to/file.hdf5       a D4RL HDF5 file (e.g. from ~/.d4rl/datasets)
  d4rl:<name>              through the `d4rl` package (where it imports), e.g.
                           'd4rl:hopper-medium-v2'
  minari:<dataset_id>      a Minari dataset already on disk (never downloaded),
                           e.g. 'minari:mujoco/hopper/medium-v0'

Every source returns the same validated D4RL-style dict (see `d4rl.validate`).
The fourth kind of spec, 'suite:<task>-<quality>', names a dataset that the
project generates by rolling out behavior policies in environments; that
needs `distill.envs`, which sits above this package, so
`distill.envs.datasets.load_dataset` reads all four kinds and this module
refuses it.
"""

import os
from typing import Any

import numpy as np

from distill.data import d4rl

_SPEC_HELP = ("specs are a D4RL HDF5 path, 'd4rl:<name>', 'minari:<id>' or "
              "'suite:<task>-<quality>'")


def load_dataset(spec: str, *, clip_actions: bool = False) -> dict[str, Any]:
  """Loads and validates the dataset that `spec` names.

  Args:
    spec: see the module docstring.
    clip_actions: clip actions outside [-1, 1] with a warning instead of
      refusing them.

  Returns:
    The validated dict of `d4rl.validate`.

  Raises:
    DatasetError: unknown or 'suite:' spec, missing dataset, missing optional
      package, or bad data.
  """
  if spec.startswith('d4rl:'):
    return _load_d4rl(spec[len('d4rl:'):], spec, clip_actions)
  if spec.startswith('minari:'):
    return _load_minari(spec[len('minari:'):], spec, clip_actions)
  if spec.startswith('suite:'):
    raise d4rl.DatasetError(
        f'{spec}: generated suite datasets are loaded by'
        ' distill.envs.datasets.load_dataset, not distill.data.sources')
  path = os.path.expanduser(spec)
  if not os.path.isfile(path):
    raise d4rl.DatasetError(f'{spec}: no such file ({_SPEC_HELP})')
  return d4rl.load_hdf5(path, clip_actions=clip_actions)


def _load_d4rl(name: str, spec: str, clip_actions: bool) -> dict[str, Any]:
  os.environ.setdefault('D4RL_SUPPRESS_IMPORT_ERROR', '1')
  try:
    # pylint: disable=g-import-not-at-top,import-outside-toplevel,unused-import
    import gym
    import d4rl as d4rl_package  # noqa: F401  (registers the environments)
  # mujoco-py raises a plain Exception without MuJoCo 2.1 binaries.
  except Exception as e:  # pylint: disable=broad-except
    raise d4rl.DatasetError(
        f'{spec}: the d4rl package does not import ({type(e).__name__}: '
        f'{e}). Install the extra (pip install -e ".[d4rl]", which needs '
        'MuJoCo 2.1 for its environments), or pass the HDF5 file directly, '
        f'e.g. ~/.d4rl/datasets/{name.replace("-", "_", 1)}.hdf5') from e
  try:
    data = gym.make(name).get_dataset()
  except Exception as e:  # pylint: disable=broad-except
    raise d4rl.DatasetError(
        f'{spec}: d4rl could not load {name!r} ({type(e).__name__}: {e}); '
        'pass the HDF5 path from ~/.d4rl/datasets instead') from e
  return d4rl.validate(data, source=spec, clip_actions=clip_actions)


def minari_root() -> str:
  """The directory Minari reads datasets from (`MINARI_DATASETS_PATH`)."""
  return os.environ.get('MINARI_DATASETS_PATH') or os.path.join(
      os.path.expanduser('~'), '.minari', 'datasets')


def _load_minari(dataset_id: str, spec: str,
                 clip_actions: bool) -> dict[str, Any]:
  directory = os.path.join(minari_root(), dataset_id)
  # Checked here, before minari, which would create directories or offer a
  # download.
  if not dataset_id or not os.path.isdir(os.path.join(directory, 'data')):
    raise d4rl.DatasetError(
        f'{spec}: Minari dataset {dataset_id!r} not found in {directory} '
        '(searched MINARI_DATASETS_PATH or ~/.minari/datasets; this project '
        'never downloads: run `minari download <id>` yourself)')
  try:
    import minari  # pylint: disable=g-import-not-at-top,import-outside-toplevel
  except Exception as e:  # pylint: disable=broad-except
    raise d4rl.DatasetError(
        f'{spec}: minari does not import ({type(e).__name__}: {e}); '
        'install the extra: pip install -e ".[minari]"') from e
  try:
    dataset = minari.load_dataset(dataset_id)
    episodes = list(dataset.iterate_episodes())
  except Exception as e:  # pylint: disable=broad-except
    raise d4rl.DatasetError(
        f'{spec}: minari could not read {directory} ({type(e).__name__}: '
        f'{e})') from e
  if not episodes:
    raise d4rl.DatasetError(f'{spec}: key \'observations\': zero transitions '
                            '(the dataset has no episodes)')
  return d4rl.validate(_minari_to_d4rl(episodes, spec), source=spec,
                       clip_actions=clip_actions)


def _minari_to_d4rl(episodes, spec: str) -> dict[str, Any]:
  """Concatenates Minari episodes into D4RL flat arrays.

  A Minari episode of T steps stores T + 1 observations (the last is the state
  after the final action); D4RL stores the state before each action, so the
  last observation is dropped. terminations -> terminals, truncations ->
  timeouts. Minari ends every stored episode with one of the two; should an
  episode other than the last end with neither, it is marked as a timeout so
  that it does not merge with the next one (the last is left unfinished).
  """
  parts: dict[str, list[np.ndarray]] = {
      k: [] for k in ('observations', 'actions', 'rewards', 'terminals',
                      'timeouts')}
  infos: dict[str, list[np.ndarray]] = {}
  for i, ep in enumerate(episodes):
    if not isinstance(ep.observations, np.ndarray):
      raise d4rl.DatasetError(
          f'{spec}: key \'observations\': episode {ep.id} holds '
          f'{type(ep.observations).__name__} observations; only Box (array) '
          'observation spaces are supported')
    steps = len(ep.rewards)
    timeouts = np.asarray(ep.truncations, dtype=bool).copy()
    terminals = np.asarray(ep.terminations, dtype=bool)
    if (i < len(episodes) - 1 and steps and not terminals[-1]
        and not timeouts[-1]):
      timeouts[-1] = True
    parts['observations'].append(np.asarray(ep.observations)[:steps])
    parts['actions'].append(np.asarray(ep.actions))
    parts['rewards'].append(np.asarray(ep.rewards))
    parts['terminals'].append(terminals)
    parts['timeouts'].append(timeouts)
    for key, value in (ep.infos or {}).items():
      value = np.asarray(value) if not isinstance(value, dict) else None
      # Per-step infos carry one entry per observation, like observations.
      if value is not None and value.ndim and len(value) == steps + 1:
        infos.setdefault(key, []).append(value[:steps])
  data = {k: np.concatenate(v) for k, v in parts.items()}
  for key, values in infos.items():
    if len(values) == len(episodes):
      data[f'infos/{key}'] = np.concatenate(values)
  return data


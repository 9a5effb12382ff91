r"""Prints a JSON summary of one or more offline datasets.

  python -m experiments.dataset_info ~/.d4rl/datasets/hopper_medium-v2.hdf5
  python -m experiments.dataset_info minari:mujoco/hopper/medium-v0
  python -m experiments.dataset_info suite:hopper-medium --clip_actions
  python -m experiments.dataset_info suite:hopper-medium suite:hopper-mixed

SPEC is a D4RL HDF5 path, 'd4rl:<name>', 'minari:<id>' or
'suite:<task>-<quality>' (generated on first use). One SPEC prints one JSON
object, several print a JSON list; `seconds` is the time to load the dataset
(to generate it, for a suite dataset not yet in the cache), and the total goes
to stderr. Bad data exits with status 1 and a one-line message on stderr
naming the SPEC; nothing is written.
"""

import json
import sys
import time
from typing import Any

from absl import app
from absl import flags
import numpy as np

from distill.data import d4rl
from distill.data import scores
from distill.data import sources

_CLIP_ACTIONS = flags.DEFINE_bool(
    'clip_actions', False,
    'Clip actions outside [-1, 1] (with a warning) instead of refusing them.')


def summarize(data: dict[str, Any], name: str) -> dict[str, Any]:
  """Episode and return statistics of a validated dataset.

  Args:
    data: a validated dataset (see `d4rl.validate`).
    name: spec or path; also used to look up reference returns.

  Returns:
    A JSON-serializable dict.
  """
  bounds_Ex2 = d4rl.episode_bounds(data['terminals'], data['timeouts'])
  lengths_E = bounds_Ex2[:, 1] - bounds_Ex2[:, 0]
  rewards = np.asarray(data['rewards'], np.float64)
  returns_E = np.add.reduceat(rewards, bounds_Ex2[:, 0])
  info = {
      'name': name,
      'episodes': len(bounds_Ex2),
      'transitions': len(rewards),
      'obs_dim': int(data['observations'].shape[1]),
      'act_dim': int(data['actions'].shape[1]),
      'return_mean': float(returns_E.mean()),
      'return_std': float(returns_E.std()),
      'return_min': float(returns_E.min()),
      'return_max': float(returns_E.max()),
      'length_min': int(lengths_E.min()),
      'length_max': int(lengths_E.max()),
      'terminals': int(data['terminals'].sum()),
      'timeouts': int(data['timeouts'].sum()),
      'last_episode_unfinished': bool(
          not (data['terminals'][-1] or data['timeouts'][-1])),
      'action_min': float(data['actions'].min()),
      'action_max': float(data['actions'].max()),
  }
  refs = scores.reference_returns(name)
  if refs is not None:
    info['normalized_return_mean'] = float(
        scores.normalized_score(returns_E, refs).mean())
  return info


def main(argv: list[str]) -> int:
  specs = argv[1:]
  if not specs:
    raise app.UsageError('expected one or more SPECs (a D4RL HDF5 path, '
                         'd4rl:<name>, minari:<id> or suite:<task>-<quality>)')
  infos = []
  start = time.perf_counter()
  for spec in specs:
    t0 = time.perf_counter()
    try:
      data = sources.load_dataset(spec, clip_actions=_CLIP_ACTIONS.value)
    except d4rl.DatasetError as e:
      print(f'dataset_info: error: {e}', file=sys.stderr)
      return 1
    seconds = time.perf_counter() - t0
    infos.append({**summarize(data, spec), 'seconds': round(seconds, 2)})
  print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
  print(f'dataset_info: {len(specs)} dataset(s) in'
        f' {time.perf_counter() - start:.1f} s', file=sys.stderr)
  return 0


if __name__ == '__main__':
  app.run(main)

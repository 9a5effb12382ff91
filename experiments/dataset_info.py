r"""Prints a JSON summary of one or more offline datasets.

  python -m experiments.dataset_info ~/.d4rl/datasets/hopper_medium-v2.hdf5
  python -m experiments.dataset_info minari:mujoco/hopper/medium-v0
  python -m experiments.dataset_info suite:hopper-medium --clip_actions
  python -m experiments.dataset_info suite:hopper-medium suite:hopper-mixed

SPEC is a D4RL HDF5 path, 'd4rl:<name>', 'minari:<id>' or
'suite:<task>-<quality>' (generated on first use). One SPEC prints one JSON
object, several print a JSON list; `seconds` is the time to load the dataset
(to generate it, for a suite dataset not yet in the cache), and the total goes
to stderr. `data_sha256` is the SHA-256 of the arrays (names, dtypes, shapes,
bytes): compare it with README's table for the suite's datasets. Bad data
exits with status 1 and a one-line message on stderr naming the SPEC; nothing
is written.
"""

import json
import sys
import time

from absl import app
from absl import flags

from distill.data import d4rl
from distill.data import summary
from distill.envs import datasets

_CLIP_ACTIONS = flags.DEFINE_bool(
    'clip_actions', False,
    'Clip actions outside [-1, 1] (with a warning) instead of refusing them.')


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
      data = datasets.load_dataset(spec, clip_actions=_CLIP_ACTIONS.value)
    except d4rl.DatasetError as e:
      print(f'dataset_info: error: {e}', file=sys.stderr)
      return 1
    seconds = time.perf_counter() - t0
    infos.append({**summary.summarize(data, spec),
                  'data_sha256': d4rl.data_sha256(data),
                  'seconds': round(seconds, 2)})
  print(json.dumps(infos[0] if len(infos) == 1 else infos, indent=2))
  print(f'dataset_info: {len(specs)} dataset(s) in'
        f' {time.perf_counter() - start:.1f} s', file=sys.stderr)
  return 0


if __name__ == '__main__':
  app.run(main)

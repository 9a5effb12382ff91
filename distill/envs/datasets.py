"""Loads an offline dataset from any spec, the generated suite included.

    data = datasets.load_dataset('suite:hopper-medium')
    data = datasets.load_dataset('suite:mt10/push-v3-medium')
    data = datasets.load_dataset('~/.d4rl/datasets/hopper_medium-v2.hdf5')

Specs are those of `distill.data.sources` (a D4RL HDF5 path, 'd4rl:<name>',
'minari:<id>') plus 'suite:<task>-<quality>' and 'suite:mt10/<task>-<quality>'
(Meta-World MT10), which `distill.envs.suite` generates on first use.
Generating needs the environments and the behavior policies, so this
dispatch lives in `distill.envs`, above `distill.data` and the suite
generator; the data package never imports the environments.
"""

import hashlib
import json
import os
from typing import Any

from distill.data import sources
from distill.envs import suite
from distill.io import fileio


def load_dataset(spec: str, *, clip_actions: bool = False,
                 suite_transitions: int | None = None) -> dict[str, Any]:
  """Loads and validates the dataset that `spec` names.

  Args:
    spec: see the module docstring.
    clip_actions: clip actions outside [-1, 1] with a warning instead of
      refusing them.
    suite_transitions: size of a generated `suite:` dataset (default: the
      suite's default size); ignored by the other sources.

  Returns:
    The validated dict of `distill.data.d4rl.validate`.

  Raises:
    distill.data.d4rl.DatasetError: unknown spec, missing dataset, missing
      optional package, or bad data; the message names the spec.
  """
  if spec.startswith(suite.PREFIX):
    return suite.load_spec(spec, clip_actions=clip_actions,
                           num_transitions=suite_transitions)
  return sources.load_dataset(spec, clip_actions=clip_actions)


def fingerprint(spec: str, *, suite_transitions: int | None = None
                ) -> dict[str, Any]:
  """What identifies the contents of the dataset `spec` names, cheaply.

  Stages record it, so that teachers and students are trained again when a
  dataset changes under an unchanged spec.

  Args:
    spec: see the module docstring.
    suite_transitions: as for `load_dataset`.

  Returns:
    For a 'suite:' spec, the cache file's name (it holds the size, seed and
    a hash of the behavior snapshots and the generator version, which fix
    the contents); for a file, its SHA-256; for a Minari dataset, the
    SHA-256 of its files; for 'd4rl:', the spec (the package owns the file).
  """
  if spec.startswith(suite.PREFIX):
    task, quality = suite.parse_name(spec.removeprefix(suite.PREFIX))
    path = suite.dataset_path(task, quality,
                              num_transitions=suite_transitions,
                              seed=suite.DEFAULTS['seed'],
                              num_envs=suite.DEFAULTS['num_envs'])
    return {'spec': spec, 'suite_file': os.path.basename(path)}
  if spec.startswith('d4rl:'):
    return {'spec': spec}
  if spec.startswith('minari:'):
    directory = os.path.join(sources.minari_root(), spec[len('minari:'):])
    return {'spec': spec, 'sha256': hashlib.sha256(json.dumps(
        fileio.sha256_tree(directory)).encode()).hexdigest()}
  return {'spec': spec,
          'sha256': fileio.sha256_file(os.path.expanduser(spec))}

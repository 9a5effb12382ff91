"""Loads an offline dataset from any spec, the generated suite included.

    data = datasets.load_dataset('suite:hopper-medium')
    data = datasets.load_dataset('~/.d4rl/datasets/hopper_medium-v2.hdf5')

Specs are those of `distill.data.sources` (a D4RL HDF5 path, 'd4rl:<name>',
'minari:<id>') plus 'suite:<task>-<quality>', which `distill.envs.suite`
generates on first use. Generating needs the environments and the behavior
policies, so this dispatch lives here, above both `distill.data` and
`distill.envs`; the data package never imports the environments.
"""

from typing import Any

from distill.data import sources
from distill.envs import suite


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

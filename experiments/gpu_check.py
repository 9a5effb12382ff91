r"""The Python parts of experiments/gpu_check.sh, as JSON lines.

  python -m experiments.gpu_check env
  python -m experiments.gpu_check summary --workdir=DIR --stage_s=S

`env`: the device, backend, jax version, and whether the modules the run
needs import (the script stops early when they do not, instead of failing
minutes later). `summary`: a population run's per-stage wall times and the
members' scores from `DIR/results.json` and `DIR/wall_s.json`, with the
whole stage's wall time `S` as the script measured it.
"""

import importlib
import json
import os
import sys
from typing import Any

from absl import app
from absl import flags

_WORKDIR = flags.DEFINE_string('workdir', None, 'summary: the run workdir.')
_STAGE_S = flags.DEFINE_float('stage_s', float('nan'),
                              'summary: the stage wall time (seconds).')

# What a run imports beyond jax; the GPU image may lack some (docs/gpu.md).
NEEDED = ('flax', 'optax', 'orbax.checkpoint', 'ml_collections', 'mujoco',
          'gymnasium', 'rliable', 'h5py', 'submitit', 'tensorboardX')


def _emit(figure: str, **fields: Any) -> None:
  print(json.dumps({'figure': figure, **fields}), flush=True)


def env_info() -> dict[str, Any]:
  """The backend, devices, versions and missing modules.

  Returns:
    `{'backend', 'devices', 'jax', 'missing', 'ok'}`; `ok` is False when
    a needed module does not import.
  """
  import jax  # pylint: disable=g-import-not-at-top
  missing = []
  for name in NEEDED:
    try:
      importlib.import_module(name)
    except ImportError as e:
      missing.append(f'{name}: {e}')
  return {'backend': jax.default_backend(),
          'devices': [str(d.device_kind) for d in jax.devices()],
          'jax': jax.__version__, 'python': sys.version.split()[0],
          'missing': missing, 'ok': not missing}


def summary(workdir: str, stage_s: float) -> dict[str, Any]:
  """A population run's stage times and scores.

  Args:
    workdir: the run's workdir (a population: `results.json` lists the
      members).
    stage_s: the command's wall time as measured outside it.

  Returns:
    `{'stage_s', 'wall_s' (per stage, seconds), 'members', 'seeds',
    'student_mean' (per member: mean normalized score over tasks)}`.
  """
  with open(os.path.join(workdir, 'results.json'), encoding='utf-8') as f:
    results = json.load(f)
  wall = {}
  path = os.path.join(workdir, 'wall_s.json')
  if os.path.exists(path):
    with open(path, encoding='utf-8') as f:
      wall = {k: round(v, 1) for k, v in json.load(f).items()}
  members = results.get('members', [results])
  means = []
  for m in members:
    scores = [t['student_score'] for t in m['tasks'].values()
              if isinstance(t, dict) and 'student_score' in t]
    means.append(round(sum(scores) / len(scores), 2) if scores else None)
  return {'stage_s': round(stage_s, 1), 'wall_s': wall,
          'members': len(members), 'seeds': [m.get('seed') for m in members],
          'student_mean': means}


def main(argv):
  if len(argv) != 2 or argv[1] not in ('env', 'summary'):
    raise app.UsageError('usage: python -m experiments.gpu_check'
                         ' env|summary [--workdir=DIR --stage_s=S]')
  if argv[1] == 'env':
    info = env_info()
    _emit('gpu_check_env', **info)
    sys.exit(0 if info['ok'] else 2)
  if not _WORKDIR.value:
    raise app.UsageError('summary needs --workdir')
  _emit('gpu_check_population', **summary(_WORKDIR.value, _STAGE_S.value))


if __name__ == '__main__':
  app.run(main)

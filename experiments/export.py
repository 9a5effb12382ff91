r"""Exports a run's student as a deployable jax.export artifact.

  python -m experiments.export --workdir=runs/default
  python -m experiments.export --workdir=runs/default --out=/tmp/student

Reads `<workdir>/student/last` (or `--checkpoint`) and writes `policy.jaxexport`
(StableHLO, parameters inside, symbolic batch size), `policy.json` (tasks,
normalization statistics, context) and `export_loader.py` (jax + numpy only)
into `--out` (default `<workdir>/export`); see `distill/report/export.py`.
"""

import os

from absl import app
from absl import flags
from absl import logging

from distill.report import export

_WORKDIR = flags.DEFINE_string('workdir', None, 'Run directory.',
                               required=True)
_CHECKPOINT = flags.DEFINE_string(
    'checkpoint', None,
    'Checkpoint directory (default <workdir>/student/last).')
_OUT = flags.DEFINE_string('out', None,
                           'Output directory (default <workdir>/export).')


def main(argv):
  del argv
  checkpoint = _CHECKPOINT.value or os.path.join(_WORKDIR.value, 'student',
                                                 'last')
  out = _OUT.value or os.path.join(_WORKDIR.value, 'export')
  meta = export.export_policy(checkpoint, out)
  logging.info('exported %s (step %s, tasks %s) to %s', checkpoint,
               meta['step'], meta['tasks'], out)
  print(f'exported {checkpoint} (step {meta["step"]}) -> {out}')


if __name__ == '__main__':
  app.run(main)

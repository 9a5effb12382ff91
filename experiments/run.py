r"""Runs the pipeline stages listed in `config.stages` in a workdir.

  python -m experiments.run --config=configs/mt_distill.py \
      --workdir=runs/default
  python -m experiments.run --config=configs/mt_distill.py:smoke \
      --workdir=/tmp/smoke
  python -m experiments.run --config=configs/teachers.py --workdir=runs/t

A stage is skipped when its outputs are in the workdir for the same config, so
a rerun resumes and a second distillation run reuses the teachers; see
`distill/run/stages.py` for the stage table (and `distill/run/engine.py` for
how a stage is skipped or rerun).

One launch per workdir: a second `run` on a workdir in use exits at once
with status 1, naming the running one's pid (`distill.io.lock`).

A population of seeds trains in one program, member s in `<workdir>/seed_<s>/`:

  python -m experiments.run --config=configs/mt_distill.py:smoke \
      --workdir=/tmp/pop "--config.seeds=(0,1,2)"

Many hosts: every process runs the same command; `jax.distributed` is
initialized from `--coordinator/--num_processes/--process_id`, or from the
environment on a SLURM allocation or a TPU pod (`distill.train.parallel`).
"""

import signal
import sys

# A stop signal (SIGTERM, SIGINT) during the imports below is only recorded
# (an import may swallow an exception raised in it); `main` honours it
# before any work, and from then until `stages.run` installs the handlers
# that checkpoint, a signal stops at once. Either way the command exits
# with a message and status 128 + signal, as it does later.
_PENDING = []


def _record(signum, frame):
  del frame
  _PENDING.append(signum)


def _stop(signum, frame=None):
  del frame
  sys.stderr.write(f'stopped by {signal.Signals(signum).name} while starting,'
                   ' before any stage ran; run the same command again\n')
  raise SystemExit(128 + signum)


for _signum in (signal.SIGTERM, signal.SIGINT):
  signal.signal(_signum, _record)

# pylint: disable=g-import-not-at-top,wrong-import-position
import logging as std_logging  # noqa: E402
import os  # noqa: E402

from absl import app  # noqa: E402
from absl import flags  # noqa: E402
from absl import logging  # noqa: E402
import jax  # noqa: E402
from ml_collections import config_flags  # noqa: E402

from distill.io import lock  # noqa: E402
from distill.run import stages  # noqa: E402
from distill.train import parallel  # noqa: E402

_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/mt_distill.py', 'Experiment config.', lock_config=True)
_WORKDIR = flags.DEFINE_string('workdir', None, 'Output directory.',
                               required=True)
_COORDINATOR = flags.DEFINE_string(
    'coordinator', None, "Many hosts: process 0's 'host:port'.")
_NUM_PROCESSES = flags.DEFINE_integer('num_processes', None,
                                      'Many hosts: number of processes.')
_PROCESS_ID = flags.DEFINE_integer('process_id', None,
                                   "Many hosts: this process's index.")


class _QuietOrbax(std_logging.Filter):
  """Drops orbax's INFO chatter (several lines per save and restore)."""

  def filter(self, record):
    return record.levelno >= std_logging.WARNING or (
        f'{os.sep}orbax{os.sep}' not in record.pathname)


def main(argv):
  for signum in (signal.SIGTERM, signal.SIGINT):
    signal.signal(signum, _stop)
  if _PENDING:
    _stop(_PENDING[0])
  if len(argv) > 1:
    raise app.UsageError(f'experiments/run.py: unexpected arguments {argv[1:]}')
  logging.get_absl_handler().addFilter(_QuietOrbax())
  parallel.initialize_distributed(_COORDINATOR.value, _NUM_PROCESSES.value,
                                  _PROCESS_ID.value)
  logging.info('JAX devices: %s (process %d of %d)', jax.devices(),
               jax.process_index(), jax.process_count())
  try:
    stages.run(_CONFIG.value, _WORKDIR.value)
  except lock.LockedError as e:
    # Refused before any work: the message, no traceback, status 1.
    raise SystemExit(f'experiments/run.py: {e}') from None


if __name__ == '__main__':
  app.run(main)

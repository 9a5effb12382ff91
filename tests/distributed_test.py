"""Two processes on localhost: `jax.distributed` with CPU (gloo) collectives.

Each process has one CPU device; together they form a global mesh of two on
'data'. They must train in lockstep on one global batch, end with the same
parameters as a single-process run, and only process 0 writes files.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(n, outdir):
  coordinator = f'localhost:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu', XLA_FLAGS='')
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(HERE, 'distributed_worker.py'),
       coordinator, str(n), str(i), str(outdir / f'p{i}')],
      env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(n)]
  results = []
  for proc in procs:
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, err[-4000:]
    results.append(json.loads(out.strip().splitlines()[-1]))
  return results


@pytest.mark.slow
def test_two_processes_train_in_lockstep_and_one_writes(tmp_path):
  single = _launch(1, tmp_path / 'single')[0]
  pair = _launch(2, tmp_path / 'pair')
  assert [r['process'] for r in pair] == [0, 1]
  assert all(r['devices'] == 2 and r['step'] == 5 for r in pair)
  # Lockstep: both hold the same parameters, equal to one process's run.
  assert pair[0]['checksum'] == pair[1]['checksum']
  np.testing.assert_allclose(pair[0]['checksum'], single['checksum'],
                             rtol=1e-5)
  assert (tmp_path / 'pair' / 'p0' / 'params.npz').exists()
  assert not (tmp_path / 'pair' / 'p1').exists()

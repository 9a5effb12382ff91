"""Two processes on localhost: `jax.distributed` with CPU (gloo) collectives.

Each process has one CPU device; together they form a global mesh of two on
'data'. They must train in lockstep on one global batch, end with the same
parameters as a single-process run, and only process 0 writes files; run
through the teacher stages of the pipeline in one shared workdir, only
process 0 writes stamps, evaluations, checksums and metrics.
"""

import json
import os
import socket
import subprocess
import sys

import numpy as np
import pytest

from distill.train import checkpointing

HERE = os.path.dirname(os.path.abspath(__file__))


def _free_port():
  with socket.socket() as s:
    s.bind(('localhost', 0))
    return s.getsockname()[1]


def _launch(n, outdir, *more, shared=False):
  coordinator = f'localhost:{_free_port()}'
  env = dict(os.environ, JAX_PLATFORMS='cpu',
             DISTILL_DATA_DIR=str(outdir / 'data'))
  procs = [subprocess.Popen(
      [sys.executable, os.path.join(HERE, 'distributed_worker.py'),
       coordinator, str(n), str(i),
       str(outdir if shared else outdir / f'p{i}'), *more],
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


@pytest.mark.slow
def test_two_processes_run_the_teacher_stages_and_only_one_writes(
    tmp_path, d4rl_dir):
  workdir = tmp_path / 'work'
  pair = _launch(2, workdir, d4rl_dir, shared=True)
  assert [r['process'] for r in pair] == [0, 1]
  assert all(r['devices'] == 2 for r in pair)
  # Process 0 wrote the stamps, the evaluations, the checksums and the
  # metrics; process 1 nothing (orbax writes its shards of checkpoints).
  assert pair[1]['written'] == []
  written = pair[0]['written']
  for stage in ('datasets', 'teachers', 'teacher_eval'):
    assert f'stamps/{stage}.json' in written
  assert 'teachers/eval.json' in written and '.' in written
  assert 'teachers/hopper/10/sha256.json' in written
  # The evaluations were split between the processes and gathered.
  assert set(pair[0]['eval']) == {'hopper', 'walker2d'}
  for stage in ('datasets', 'teachers', 'teacher_eval'):
    with open(workdir / 'stamps' / f'{stage}.json') as f:
      assert json.load(f)['done']
  # A checkpoint saved by two processes loads in one (this one).
  _, params, meta = checkpointing.load_policy(
      str(workdir / 'teachers' / 'walker2d'))
  assert meta['step'] == 10 and params

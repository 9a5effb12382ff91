"""Tests of distill/io/lock.py: one launch per workdir."""

import os
import signal
import subprocess
import sys

import pytest

from distill.io import lock

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

# Holds the workdir's lock the way `stages.run` does, until killed.
_HOLD = ('import sys, time\n'
         'from distill.io import lock\n'
         'with lock.hold(sys.argv[1]):\n'
         "  print('held', flush=True)\n"
         '  time.sleep(600)\n')


def _start_holder(workdir):
  proc = subprocess.Popen([sys.executable, '-c', _HOLD, str(workdir)],
                          cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert proc.stdout.readline().strip() == 'held'
  return proc


def _snapshot(directory):
  out = {}
  for dirpath, _, files in os.walk(directory):
    for name in files:
      path = os.path.join(dirpath, name)
      with open(path, 'rb') as f:
        out[os.path.relpath(path, directory)] = (f.read(),
                                                  os.stat(path).st_mtime_ns)
  return out


def test_second_launch_is_refused_and_the_lock_frees_when_its_holder_dies(
    tmp_path, d4rl_dir):
  workdir = tmp_path / 'w'
  holder = _start_holder(workdir)
  try:
    (workdir / 'results.json').write_text('{"from": "the first run"}')
    before = _snapshot(workdir)
    cmd = [sys.executable, '-m', 'experiments.run',
           '--config=configs/mt_distill.py:smoke', f'--workdir={workdir}',
           f'--config.data.spec={d4rl_dir}/{{task}}-{{quality}}.hdf5']
    proc = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True,
                          timeout=600, check=False)
    assert proc.returncode == 1, proc.stderr[-3000:]
    assert f'pid {holder.pid} on host' in proc.stderr, proc.stderr[-3000:]
    assert f'{workdir}: another run is using this workdir' in proc.stderr
    assert 'Traceback' not in proc.stderr
    assert _snapshot(workdir) == before
    # In-process too, as the refusal `stages.run` raises.
    with pytest.raises(lock.LockedError, match=f'pid {holder.pid} '):
      with lock.hold(str(workdir)):
        pass
  finally:
    holder.send_signal(signal.SIGKILL)
    holder.wait()
  # A killed holder leaves no lock that blocks (the file stays).
  with lock.hold(str(workdir)) as path:
    assert os.path.exists(path)
  with lock.hold(str(workdir)):  # Released at the end of the block.
    pass

"""experiments/gpu_check.sh and its Python parts, on CPU (no GPU here)."""

import json
import os
import subprocess
import sys

import pytest

from experiments import gpu_check

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SCRIPT = os.path.join(ROOT, 'experiments', 'gpu_check.sh')


def test_the_script_parses():
  subprocess.run(['bash', '-n', SCRIPT], check=True)
  out = subprocess.run(['bash', SCRIPT, '--nope'], capture_output=True,
                       text=True, check=False)
  assert out.returncode == 64 and 'usage' in out.stderr


def test_env_and_summary(tmp_path):
  info = gpu_check.env_info()
  assert info['backend'] == 'cpu' and info['ok'], info['missing']
  task = {'student_score': 40.0, 'teacher_score': 41.0}
  results = {'members': [
      {'seed': s, 'tasks': {'hopper': task, 'walker2d': {
          **task, 'student_score': 40.0 + 2 * s}}} for s in (0, 1)]}
  (tmp_path / 'results.json').write_text(json.dumps(results))
  (tmp_path / 'wall_s.json').write_text(json.dumps({'teachers': 12.34}))
  assert gpu_check.summary(str(tmp_path), 99.94) == {
      'stage_s': 99.9, 'wall_s': {'teachers': 12.3}, 'members': 2,
      'seeds': [0, 1], 'student_mean': [40.0, 41.0]}


@pytest.mark.slow
def test_cpu_dry_run_end_to_end(tmp_path):
  # Every stage with tiny sizes: the flags and commands the GPU run uses
  # are the same but for the sizes, so a defect shows here first.
  env = {**os.environ, 'OUT': str(tmp_path / 'out'), 'PYTHON': sys.executable}
  out = subprocess.run(['bash', SCRIPT, '--cpu_dry_run'], cwd=ROOT, env=env,
                       capture_output=True, text=True, check=False,
                       timeout=900)
  assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-3000:]
  lines = [json.loads(x) for x in out.stdout.splitlines()
           if x.startswith('{')]
  stages = {x['stage']: x for x in lines
            if x['figure'] == 'gpu_check_stage'}
  assert list(stages) == ['env', 'bench', 'population']
  assert all(s['rc'] == 0 and not s['timed_out'] for s in stages.values())
  figures = [x['figure'] for x in lines]
  assert figures.count('teacher_step') == 2 and 'vmap' in figures
  vmap = next(x for x in lines if x['figure'] == 'vmap')
  assert (vmap['layers'], vmap['width']) == (1, 16)  # the dry run's size
  population = next(x for x in lines
                    if x['figure'] == 'gpu_check_population')
  assert population['members'] == 2 and population['seeds'] == [0, 1]
  assert {'teachers', 'distill', 'student_eval'} <= set(population['wall_s'])
  assert lines[-1]['figure'] == 'gpu_check_done'

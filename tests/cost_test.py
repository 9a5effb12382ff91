"""distill/run/cost.py: the sweep's estimate scales as its docstring says."""

import copy
import os
import subprocess
import sys

import pytest

from configs import study
from distill.run import cost
from distill.run import sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, 'configs', 'study.py')


def _config(**overrides):
  config = sweeps.config_json(study.get_config())
  for dotted, value in overrides.items():
    node = config
    *path, last = dotted.split('.')
    for part in path:
      node = node[part]
    node[last] = value
  return config


def test_the_default_member_and_teacher_job_are_the_measured_run():
  # The reference shapes reproduce the measured stages (README's default
  # run): teachers 161 s + evaluation 15 s, distill 73 s + evaluation 19 s,
  # plus each job's overhead.
  config = _config()
  overhead = cost.UNITS['job_overhead_s']
  assert cost.teacher_job_s(config) == pytest.approx(overhead + 161 + 15)
  assert cost.member_s(config) == pytest.approx(overhead + 73 + 19)


def test_estimate_scales_with_steps_episodes_tasks_and_size():
  base = _config()
  over = cost.UNITS['job_overhead_s']
  compile_s = cost.UNITS['member_compile_s']
  train = cost.member_s(base) - over - compile_s - 19
  # Steps: the training part is linear in them.
  assert cost.member_s(_config(**{'student.steps': 6000})) == pytest.approx(
      over + compile_s + 2 * train + 19)
  # Episodes: the evaluation part is linear in them.
  assert cost.member_s(_config(**{'eval.episodes': 32})) == pytest.approx(
      over + compile_s + train + 38)
  assert cost.teacher_job_s(_config(**{'teacher.steps': 3000})) == (
      pytest.approx(over + 2 * 161 + 15))
  # Tasks: teachers and evaluation per task.
  two = _config(tasks=['hopper', 'walker2d'])
  assert cost.teacher_job_s(two) == pytest.approx(over + (161 + 15) / 2)
  assert cost.member_s(two) < cost.member_s(base)
  # Size: FLOPs ** exponent, so a wider model costs more but less than its
  # FLOPs; a student trained from scratch skips the teachers' part.
  wide = _config(**{'teacher.model.width': 128})
  flops = cost.train_flops(2, 128, 64, 20) / cost.train_flops(2, 64, 64, 20)
  ratio = (cost.teacher_job_s(wide) - over - 15) / 161
  assert 1 < ratio < flops
  assert ratio == pytest.approx(flops ** cost.UNITS['flop_exponent'])
  assert cost.member_s(_config(**{'curriculum.name': 'scratch'})) < (
      cost.member_s(base))
  # A population of 3 seeds: three members' work in one job.
  pop = _config(seeds=[0, 1, 2])
  assert cost.member_s(pop) - over - compile_s == pytest.approx(
      3 * (train + 19))


def test_teachers_are_counted_once_per_teacher_job_and_parallel_shares():
  teachers, members = sweeps.plan(STUDY, study.get_sweep(), '/s')
  one = cost.sweep_estimate(teachers, members, 1)
  two = cost.sweep_estimate(teachers, members, 2)
  assert len(teachers) == 5 and len(members) == 130
  assert [j['kind'] for j in one['jobs']].count('teacher') == 5
  assert one['teachers_s'] == pytest.approx(
      5 * cost.teacher_job_s(teachers[0].config))
  assert two['total_s'] == pytest.approx(
      cost.UNITS['parallel_share'][2] * one['total_s'])
  job = two['jobs'][-1]
  assert job['wall_s'] == pytest.approx(2 * job['machine_s'])
  # More slots than the measured 2 keep the 2-job share (2 cores).
  assert cost.parallel_share(8) == cost.parallel_share(2)
  members_only = copy.deepcopy(members)
  assert cost.sweep_estimate([], members_only, 1)['teachers_s'] == 0


def test_print_shows_each_jobs_and_the_total_estimate():
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sweep',
       '--config=configs/study.py:smoke', '--workdir=/s', '--print',
       '--parallel=2'], cwd=ROOT, capture_output=True, text=True,
      check=False, timeout=300)
  assert proc.returncode == 0, proc.stderr[-3000:]
  lines = proc.stdout.splitlines()
  estimate = lines[lines.index(next(
      x for x in lines if x.startswith('# estimated machine time'))):]
  assert '--parallel=2' in estimate[0]
  assert [x.split(':')[0] for x in estimate[1:-1]] == [
      '#   teacher seed=0', '#   teacher seed=1',
      *[f'#   member curriculum={c},seed={s}'
        for s in (0, 1) for c in ('max_kl', 'round_robin')]]
  assert estimate[-1].startswith('# total: teachers ')
  assert 'sweep ' in estimate[-1]

"""Tests of experiments/bench.py, the one entry point of the benchmarks.

Each section runs at tiny sizes; the figures are not checked, only that
every line keeps the one convention (`figure`, `device`, values) and that
the ratios are against the baseline the line names.
"""

import json
import os
import subprocess
import sys

import pytest

from configs import mt_distill
from experiments import bench
from experiments.benches import distill_variants
from experiments.benches import rollouts
from experiments.benches import scale
from experiments.benches import train

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _lines(text):
  rows = [json.loads(x) for x in text.splitlines() if x.startswith('{')]
  for row in rows:
    assert isinstance(row['figure'], str) and row['device'].startswith(
        ('cpu:', 'gpu:', 'tpu:')), row
  return rows


def _bench(*args, timeout=600):
  return subprocess.run([sys.executable, '-m', 'experiments.bench', *args],
                        cwd=ROOT, capture_output=True, text=True,
                        check=False, timeout=timeout)


def test_the_sections_and_their_defaults():
  assert set(bench.DEFAULT_SECTIONS) <= set(bench.SECTIONS)
  assert {'scale', 'distill', 'data', 'checksums', 'mt10_eval'} <= set(
      bench.SECTIONS)


def test_an_unknown_section_is_refused():
  out = _bench('--only=data,nope')
  assert out.returncode != 0
  assert "unknown sections ['nope']" in out.stderr
  assert not _lines(out.stdout)  # Refused before any figure.


def test_data_section_from_the_command_line():
  out = _bench('--only=data', '--data_transitions=8000', '--data_seconds=0.1',
               '--repeats=1')
  assert out.returncode == 0, out.stderr[-3000:]
  rows = _lines(out.stdout)
  assert [r['figure'] for r in rows] == ['matmul'] + ['sampler'] * 3 + [
      'matmul_end']
  samplers = rows[1:4]
  assert [(r['tasks'], r['sampler']) for r in samplers] == [
      (1, 'sample_task_batch'), (4, 'sample_task_batch'),
      (4, 'sample_mixed_batch')]
  for r in samplers:
    assert r['segments_per_s'] > 0 and r['train_step_segments_per_s'] == 320
    assert r['ratio'] == pytest.approx(r['segments_per_s'] / 320, abs=0.06)


@pytest.mark.slow  # ~40 s: two variants compiled
def test_distill_section(capsys):
  config = mt_distill.get_config('smoke')
  distill_variants.bench_distill(config, steps=2, repeats=1,
                                 transitions=3000,
                                 variants=distill_variants.VARIANTS[:2])
  rows = _lines(capsys.readouterr().out)
  assert [r['figure'] for r in rows] == ['distill_step'] * 2
  base, default = rows
  assert base['baseline'] == base['variant'] == (
      'plain single-teacher (baseline)')
  assert base['ratio'] == 1.0 and base['probe'] == 0
  assert (default['curriculum'], default['surgery']) == ('max_kl',
                                                          'previous')
  assert default['ratio'] == pytest.approx(
      default['ms_per_step'] / base['ms_per_step'], rel=0.02, abs=0.01)
  assert config.tasks == mt_distill.get_config('smoke').tasks  # Untouched.


@pytest.mark.slow
def test_mt10_eval_section(capsys):
  rollouts.bench_mt10_eval(steps=3, num_envs=1, rounds=1)
  (row,) = _lines(capsys.readouterr().out)
  assert row['figure'] == 'mt10_eval'
  assert row['tasks'] == 10 and row['envs_per_task'] == 1
  assert row['vector_env_steps_per_s'] > 0 and row['one_env_steps_per_s'] > 0
  assert row['speedup'] == pytest.approx(
      row['vector_env_steps_per_s'] / row['one_env_steps_per_s'], rel=0.02)


@pytest.mark.slow
def test_scale_section_with_a_child(capsys):
  config = mt_distill.get_config('smoke')
  scale.bench_scale(config, steps=2, members=2, devices=[2],
                    population_devices=1,
                    config_args=['--config=configs/mt_distill.py:smoke'])
  rows = _lines(capsys.readouterr().out)
  assert [r['figure'] for r in rows] == ['population'] * 2 + ['devices']
  assert [r['members_mode'] for r in rows[:2]] == ['map', 'vmap']
  assert sum(r['default_mode'] for r in rows[:2]) == 1
  assert rows[2]['devices'] == 2 and rows[2]['device'].endswith(' x2')


@pytest.mark.slow
def test_checksums_section(tmp_path):
  # The smoke's first two stages: dataset cards and cache checks, teacher
  # checkpoints with their manifests, stage digests, per-dispatch guards.
  out = _bench('--only=checksums', f'--checksums_workdir={tmp_path / "run"}',
               '--config=configs/teachers.py:smoke',
               "--config.stages=('datasets','teachers')", '--repeats=1',
               timeout=900)
  assert out.returncode == 0, out.stderr[-3000:]
  rows = _lines(out.stdout)
  assert [r['figure'] for r in rows] == ['matmul', 'checksums', 'matmul_end']
  row = rows[1]
  # The child ran the config of the command line, not the default one.
  assert '--config=configs/teachers.py:smoke' in row['argv']
  assert "--config.stages=('datasets','teachers')" in row['argv']
  assert not (tmp_path / 'run' / 'student').exists()
  assert row['exit'] == 0 and row['sha256_mb'] > 0 and row['guard_calls'] > 0
  assert 0 < row['overhead_fraction'] < 1
  assert (tmp_path / 'run' / 'datasets.json').exists()
  assert (tmp_path / 'run' / 'teachers').is_dir()


_FAKE_REFERENCE = '''
import sys
print('ready', flush=True)
for line in sys.stdin:
  n = int(line)
  print(f'{0.5} {0.25}', flush=True)
'''


@pytest.mark.slow
def test_teacher_row_against_a_reference_command(tmp_path, capsys):
  # A reference server that reports 0.5 s wall and 0.25 s CPU per step.
  # The protocol is the same at any model size: here a 1 x 16 teacher at
  # batch 64 (the paper size, 3 x 128, took a minute to compile), and a
  # 1 x 8 row that is not the reference's size, timed alone.
  script = tmp_path / 'ref.py'
  script.write_text(_FAKE_REFERENCE)
  train.bench_teacher_steps(2, 100.0, f'{sys.executable} {script}',
                            [(1, 16), (1, 8)], [64], ['default'],
                            reference_size=(1, 16))
  row, alone = _lines(capsys.readouterr().out)
  assert (alone['layers'], alone['width']) == (1, 8)
  assert 'reference_ms' not in alone and alone['ms_per_step'] > 0
  assert row['figure'] == 'teacher_step' and row['reference_ms'] == 500.0
  assert row['reference_cpu_ms'] == 250.0
  assert row['ratio_to_reference'] == pytest.approx(
      row['ms_per_step'] / 500.0, abs=2e-3)
  assert row['cpu_ratio_to_reference'] == pytest.approx(
      row['cpu_ms'] / 250.0, abs=2e-3)
  assert row['cpu_ms'] > 0

"""experiments/study_report.py and the published study in docs/study."""

import json
import os
import shutil

import numpy as np
import pytest

from configs import study
from distill import aggregate
from distill import sweeps
from experiments import study_report

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, 'docs', 'study')


def _summary():
  with open(os.path.join(STUDY, 'sweep.json'), encoding='utf-8') as f:
    return json.load(f)


def _matrix(summary, name):
  return np.array([[r['student_scores'][t] for t in summary['tasks']]
                   for r in summary['configurations'][name]['runs']])


def test_found_after_data_rows_vary_one_planned_row():
  found = study_report.found_after_data()
  planned = {sweeps.configuration_name(m) for m in study.methods()
             if m not in study.found_after_data()}
  assert set(found) == set(study.found_after_data_names())
  assert len(found) == 3
  for name, parent in found.items():
    assert name not in planned and parent in planned
    assert name.startswith(parent + ',')  # the parent plus one field


def test_published_intervals_recompute_from_sweep_json():
  summary = _summary()
  boot, configs = summary['bootstrap'], summary['configurations']
  method, base = study_report.METHOD, summary['baseline']
  assert base == study.get_sweep().baseline
  for name in (method, base):
    assert configs[name]['n'] == len(configs[name]['runs']) >= 2
    got = aggregate.interval_estimates(_matrix(summary, name),
                                       reps=boot['reps'], seed=boot['seed'])
    assert got['iqm'] == pytest.approx(configs[name]['student']['iqm'],
                                       rel=1e-9)
    assert got['mean'] == pytest.approx(configs[name]['student']['mean'],
                                         rel=1e-9)
  p = aggregate.probability_of_improvement(
      _matrix(summary, method), _matrix(summary, base), reps=boot['reps'],
      seed=boot['seed'])
  assert p == pytest.approx(configs[method]['probability_of_improvement'],
                            rel=1e-9)


def test_report_lists_every_configuration_with_its_numbers(tmp_path):
  study_dir = tmp_path / 'study'
  shutil.copytree(STUDY, study_dir,
                  ignore=shutil.ignore_patterns('*.png'))
  out = tmp_path / 'results.md'
  text = study_report.render(str(study_dir), str(out), reps=50)
  summary = _summary()
  lines = text.splitlines()
  start = lines.index('## Students per configuration')
  end = lines.index('', start + 2)  # the table ends at a blank line
  rows = {line.split('|')[1].strip(): line.split('|')
          for line in lines[start:end] if line.startswith('| `')}
  assert len(rows) == len(summary['configurations'])
  found = study_report.found_after_data()
  for name, c in summary['configurations'].items():
    label = f'`{name}`' + (study_report.FOUND_MARK if name in found else '')
    cells = rows[label.strip()]
    assert cells[2].strip() == str(c['n'])
    assert cells[3].strip() == aggregate.format_estimate(
        c['student']['iqm'], c['n'])
    if name == summary['baseline']:
      assert cells[5].strip() == '(baseline)'
    else:
      assert cells[5].strip() == aggregate.format_estimate(
          c['probability_of_improvement'], c['n'], 2)
    assert cells[8].strip() == f'{c["student_params"]:,}'
  for png in ('results_improvement.png', 'results_profiles.png'):
    assert (study_dir / png).read_bytes()[:4] == b'\x89PNG'
  if any(n in summary['configurations'] for n in found):
    assert '### Rows found after seeing the data' in text
  # The surgery's own effect: each configuration against its twin without.
  surgery_rows = [line for line in text.splitlines()
                  if line.startswith('| `curriculum=round_robin,surgery='
                                     'previous` | `curriculum=round_robin,'
                                     'surgery=none` |')]
  assert len(surgery_rows) == 1
  sized = [n for n in summary['configurations'] if 'student.model' in n]
  if sized:  # distilled against from scratch at each size
    assert '| P(distilled > from scratch) |' in text
    assert (study_dir / 'results_sizes.png').read_bytes()[:4] == b'\x89PNG'


def test_found_table_compares_each_row_with_its_parent():
  rng = np.random.default_rng(0)
  tasks = ['a', 'b']

  def config(offset):
    runs = [{'student_scores': {t: float(offset + rng.normal())
                                for t in tasks}} for _ in range(4)]
    est = aggregate.interval_estimates(
        [[r['student_scores'][t] for t in tasks] for r in runs], reps=50)
    return {'n': 4, 'runs': runs, 'student': est}

  summary = {'tasks': tasks, 'configurations': {
      'curriculum=x': config(0.0), 'curriculum=x,surgery.decay=0.9':
      config(10.0)}}
  lines = study_report.found_table(
      summary, {'curriculum=x,surgery.decay=0.9': 'curriculum=x',
                'curriculum=y,surgery.decay=0.9': 'curriculum=y'}, reps=50)
  rows = [line for line in lines if line.startswith('| `')]
  assert len(rows) == 1  # a row without results (or parent) is left out
  assert rows[0].startswith('| `curriculum=x,surgery.decay=0.9` |'
                            ' `curriculum=x` |')
  cells = [c.strip() for c in rows[0].split('|')]
  assert cells[5] == '1.00 [1.00, 1.00]'  # P(row > parent)
  assert cells[6] == '-'  # no twin without surgery in this summary
  assert study_report.found_table(summary, {}, reps=50) == []

"""experiments/study_report.py and the published study in docs/study."""

import json
import os
import shutil

import numpy as np
import pytest

from configs import study
from distill.report import aggregate
from distill.run import sweeps
from experiments import study_curves
from experiments import study_report
from experiments import verdicts

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
STUDY = os.path.join(ROOT, 'docs', 'study')


def _summary():
  with open(os.path.join(STUDY, 'sweep.json'), encoding='utf-8') as f:
    return json.load(f)


def _members():
  return sweeps.published_members(STUDY)


def _matrix(summary, name):
  return np.array([[r['student_scores'][t] for t in summary['tasks']]
                   for r in summary['configurations'][name]['runs']])


def _members_matrix(summary, name):
  """[runs, tasks] scores of one configuration from members.jsonl alone."""
  members = [m for m in _members().values() if m['configuration'] == name]
  members.sort(key=lambda m: m['results']['seed'])
  return np.array([[m['results']['tasks'][t]['student_score']
                    for t in summary['tasks']] for m in members])


def test_the_study_is_one_members_file_with_every_members_record():
  state = json.load(open(os.path.join(STUDY, sweeps.STATE)))
  jobs = [j for j in state['jobs'] if j['kind'] == 'member']
  members = _members()
  assert not os.path.exists(os.path.join(STUDY, 'members'))
  assert list(members) == [j['name'] for j in jobs] and len(members) == 130
  for j in jobs:
    m = members[j['name']]
    assert m['configuration'] == j['configuration']
    assert m['overrides'] == j['overrides']
    assert m['record']['command'] == j['command']
    assert m['record']['status'] == 'done' and m['record']['wall_s'] > 0
    assert m['results']['seed'] == j['seed']
    assert set(m['results']['tasks']) == set(_summary()['tasks'])
    # 30 windows of 100 steps; one column per teacher.
    assert len(m['curves']['step_end']) == 30
    assert {len(row) for row in m['curves']['kl_mean']} == {4}
  # The runs of sweep.json are the members' own scores.
  summary = _summary()
  for name in summary['configurations']:
    np.testing.assert_array_equal(_members_matrix(summary, name),
                                  _matrix(summary, name))


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
    np.testing.assert_array_equal(_members_matrix(summary, name),
                                  _matrix(summary, name))
    got = aggregate.interval_estimates(_members_matrix(summary, name),
                                       reps=boot['reps'], seed=boot['seed'])
    assert got['iqm'] == pytest.approx(configs[name]['student']['iqm'],
                                       rel=1e-9)
    assert got['mean'] == pytest.approx(configs[name]['student']['mean'],
                                         rel=1e-9)
    per_task = aggregate.per_task_means(_members_matrix(summary, name),
                                        reps=boot['reps'], seed=boot['seed'])
    assert per_task == [pytest.approx(
        configs[name]['per_task'][t]['student_mean_estimate'], rel=1e-9)
                        for t in summary['tasks']]
    kept = aggregate.iqm_kept(_members_matrix(summary, name))
    assert kept == [configs[name]['iqm_kept'][t] for t in summary['tasks']]
  p = aggregate.probability_of_improvement(
      _members_matrix(summary, method),
      _members_matrix(summary, base), reps=boot['reps'],
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
  tasks = summary['tasks']
  k = 4 + len(tasks)  # the cells after the per-task means
  for name, c in summary['configurations'].items():
    label = f'`{name}`' + (study_report.FOUND_MARK if name in found else '')
    cells = rows[label.strip()]
    assert cells[2].strip() == str(c['n'])
    # The mean over tasks first, then each task's mean with its interval.
    assert cells[3].strip() == aggregate.format_estimate(
        c['student']['mean'], c['n'])
    for i, t in enumerate(tasks):
      assert cells[4 + i].strip() == aggregate.format_estimate(
          c['per_task'][t]['student_mean_estimate'], c['n'])
    if name == summary['baseline']:
      assert cells[k].strip() == '(baseline)'
    else:
      assert cells[k].strip() == aggregate.format_estimate(
          c['probability_of_improvement'], c['n'], 2)
    assert cells[k + 1].strip() == aggregate.format_estimate(
        c['student']['iqm'], c['n'])
    kept = [c['iqm_kept'][t] for t in tasks]
    assert cells[k + 2].strip() == aggregate.format_iqm_kept(tasks, kept)
    assert cells[k + 5].strip() == f'{c["student_params"]:,}'
  # Each task's dataset score and best behaviour policy.
  dataset = next(line for line in lines[start:end]
                 if line.startswith('| dataset'))
  assert [x.strip() for x in dataset.split('|')[4:4 + len(tasks)]] == [
      f'{summary["datasets"][t]["dataset_mean"]:.1f}' for t in tasks]
  assert ('| best behaviour policy (deterministic) | | | 41.4 | 42.9 | 69.9'
          ' | 46.7 |') in text
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
  assert cells[5].startswith('+')  # row - parent, about +10
  assert 8.0 < float(cells[5].split()[0]) < 12.0
  assert cells[6] == '1.00 [1.00, 1.00]'  # P(row > parent)
  assert cells[7] == cells[8] == '-'  # no twin without surgery here
  assert study_report.found_table(summary, {}, reps=50) == []


def _member(order, choices_WxT, counts):
  return {'curves': {'choices': choices_WxT, 'kl_mean': choices_WxT,
                     'step_end': list(range(len(choices_WxT)))},
          'results': {'curriculum': {'counts': counts}}}


def test_curve_columns_are_labelled_from_each_members_own_task_order():
  # The curves' columns follow the member's config.tasks (forward first);
  # results.json and sweep.json list tasks sorted (backward first).
  config_order = ['halfcheetah-forward', 'halfcheetah-backward', 'hopper']
  report_order = sorted(config_order)
  member = _member(config_order, [[3, 1, 0], [4, 1, 1]],
                   {'halfcheetah-backward': 2, 'halfcheetah-forward': 7,
                    'hopper': 1})
  assert study_curves.member_tasks(member) == config_order
  share, _, _ = study_curves.choice_shares([member], report_order)
  assert share.tolist() == [0.2, 0.7, 0.1]  # backward 2, forward 7, hopper 1
  kl, _ = study_curves.mean_kl([member], report_order)
  assert kl[:, 1].tolist() == [3.0, 4.0]  # forward's column
  # A member whose counts do not tell its order (round-robin's equal counts)
  # takes the order of one that does; the curves' own tasks win.
  tied = _member(config_order, [[1, 1, 1]], dict.fromkeys(config_order, 1))
  with pytest.raises(ValueError, match='cannot tell'):
    study_curves.member_tasks(tied)
  assert study_curves.curriculum_order([tied, member]) == config_order
  tied['curves']['tasks'] = config_order
  assert study_curves.member_tasks(tied) == config_order


def test_published_choice_shares_match_the_members_own_counts(tmp_path):
  # The first study's report labelled the columns with the sorted names and
  # so swapped the two halfcheetah tasks (forward 0.23, backward 0.17 by the
  # members' own counts).
  study_dir = tmp_path / 'study'
  shutil.copytree(STUDY, study_dir, ignore=shutil.ignore_patterns('*.png'))
  text = study_report.render(str(study_dir), str(tmp_path / 'r.md'), reps=20)
  members = [m['results'] for name, m in _members().items()
             if name.startswith(study_report.METHOD + ',seed=')]
  assert len(members) == 5
  counts = {t: sum(m['curriculum']['counts'][t] for m in members)
            for t in members[0]['curriculum']['counts']}
  total = sum(counts.values())
  line = next(x for x in text.splitlines()
              if x.startswith('`max_kl + previous`, all seeds: share'))
  for t, c in counts.items():
    assert f'{t} {c / total:.2f}' in line
  assert 'halfcheetah-forward 0.23' in line
  assert 'halfcheetah-backward 0.17' in line


STUDY2 = os.path.join(ROOT, 'docs', 'study2')


def test_second_study_page_heads_with_the_preregistered_verdicts(tmp_path):
  study_dir = tmp_path / 'study2'
  shutil.copytree(STUDY2, study_dir, ignore=shutil.ignore_patterns('*.png'))
  design = study_report.DESIGNS['study2']
  with pytest.raises(ValueError, match='gate'):
    study_report.render(str(study_dir), str(tmp_path / 'r.md'), reps=20,
                        design=design)
  text = study_report.render(str(study_dir), str(tmp_path / 'r.md'),
                             reps=20, design=design, gate='not_passed')
  lines = text.splitlines()
  assert lines[0] == '# The second study (pre-registered): results'
  # The verdicts come before any other table, under the gate's label.
  assert (lines.index('## The pre-registered verdicts')
          < lines.index('## Students per configuration'))
  assert verdicts.GATE_LABELS['not_passed'] in text
  _, runs, _ = sweeps.collect_runs(str(study_dir))
  result = verdicts.verdicts(runs, 'score')
  assert verdicts.render_markdown(result, 'not_passed').strip() in text
  for hypothesis, verdict in result['hypotheses'].items():
    assert f'| {hypothesis} | {verdict} |' in text
  # The gate's own table, as published, and the %BC baseline's row.
  with open(os.path.join(ROOT, design.gate_table), encoding='utf-8') as f:
    assert f.readline().strip() in text
  assert f'| `{study_report.PCT_BC}` |' in text
  # No row of this study was added after the data.
  assert study_report.FOUND_MARK not in text


STUDY2_MT10 = os.path.join(ROOT, 'docs', 'study2_mt10')


def _mt10_copy(tmp_path):
  study_dir = tmp_path / 'study2_mt10'
  shutil.copytree(STUDY2_MT10, study_dir,
                  ignore=shutil.ignore_patterns('*.png'))
  return study_dir


def test_mt10_page_reads_the_success_rate_in_points(tmp_path):
  study_dir = _mt10_copy(tmp_path)
  design = study_report.DESIGNS['study2_mt10']
  text = study_report.render(str(study_dir), str(tmp_path / 'r.md'),
                             reps=20, design=design, gate='not_passed')
  lines = text.splitlines()
  # Each configuration's mean is of its members' success rates x 100, not
  # of the normalized scores the published sweep.json holds.
  _, runs, _ = sweeps.collect_runs(str(study_dir))
  tasks = list(runs[0]['tasks'])
  name = study_report.METHOD
  rates = np.array([[100.0 * r['tasks'][t]['student_success_rate']
                     for t in tasks] for r in runs
                    if r['configuration'] == name])
  est = aggregate.interval_estimates(rates, 20, 0)['mean']
  start = lines.index('## Students per configuration')
  row = next(line for line in lines[start:] if line.startswith(f'| `{name}`'))
  assert row.split('|')[3].strip() == aggregate.format_estimate(
      est, len(rates))
  assert '*mean*: mean success rate (points) over tasks x seeds' in text
  assert '| dataset (success rate of its episodes) |' in text
  assert 'best behaviour policy' not in text
  # The verdicts on the success rate; the rows the budget rule cut are
  # said not run, and the command that recomputes them names the metric.
  result = verdicts.verdicts(runs, 'success_rate')
  assert verdicts.render_markdown(result, 'not_passed').strip() in text
  assert '--metric=success_rate --gate=not_passed' in text
  assert result['hypotheses']['H3 1x8'] == 'not run'
  assert 'This testbed reads 7 of them' in text
  with open(os.path.join(ROOT, design.gate_table), encoding='utf-8') as f:
    assert f.readline().strip() in text
  assert '--config=configs/study2.py:mt10' in text
  assert '--design=study2_mt10' in text
  # One student size (rows 8-11 cut): parameters against the teachers, and
  # no size curve.
  assert 'Parameters: one teacher 135,816, the 10 teachers 1,358,160' in text
  assert '## Size curve' not in text
  assert (study_dir / 'results_profiles.png').read_bytes()[:4] == b'\x89PNG'


def test_a_page_of_two_testbeds_has_a_part_each(tmp_path):
  loco = tmp_path / 'study2'
  shutil.copytree(STUDY2, loco, ignore=shutil.ignore_patterns('*.png'))
  mt10 = _mt10_copy(tmp_path)
  designs = study_report.DESIGNS
  text = study_report.render_page(
      [(str(loco), designs['study2'], 'not_passed'),
       (str(mt10), designs['study2_mt10'], 'not_passed')],
      str(tmp_path / 'r.md'), reps=20)
  lines = text.splitlines()
  assert [line for line in lines if line.startswith('# ')] == [
      '# The second study (pre-registered): results']
  parts = [lines.index(f'## {designs[k].testbed}')
           for k in ('study2', 'study2_mt10')]
  conclusion = lines.index('## Conclusion')
  assert conclusion < parts[0] < parts[1]
  # The first study's conclusion, once; each part's verdicts, one level down.
  with open(loco / 'conclusion.md', encoding='utf-8') as f:
    first = f.readline().strip()
  assert text.count(first) == 1
  assert lines.count('### The pre-registered verdicts') == 2
  assert lines.count('### Students per configuration') == 2
  assert parts[0] < lines.index('### The pre-registered verdicts') < parts[1]


def test_noise_section_is_the_evaluations_share_of_the_seed_spread():
  def member(rate, score, std):
    return {'results': {'tasks': {'t': {
        'student_success_rate': rate, 'student_score': score,
        'student_score_std': std}}}}
  by_config = {'a': [member(0.5, 10.0, 4.0), member(0.25, 20.0, 4.0),
                     member(0.75, 30.0, 8.0)],
               'b': [member(0.5, 0.0, 4.0)]}  # under 3 seeds: no variance
  lines = study_report.noise_section(by_config, ['t'], 'score', 16)
  row = next(line for line in lines if line.startswith('| t |'))
  # Episode stds 4, 4, 8, 4: median 4, RMS sqrt(28); seed-to-seed variance
  # 100 (10, 20, 30; b has one seed).
  rms = np.sqrt(28.0)
  assert row == (f'| t | 4.0 | {rms:.1f} | {rms / 4:.1f} | 10.0 |'
                 f' {28 / 16 / 100:.2f} |')
  lines = study_report.noise_section(by_config, ['t'], 'success_rate', 16)
  row = next(line for line in lines if line.startswith('| t |'))
  # The four members' Bernoulli stds, 100 sqrt(p (1 - p)).
  stds = [100 * np.sqrt(p * (1 - p)) for p in (0.5, 0.25, 0.75, 0.5)]
  rms = np.sqrt(np.mean(np.square(stds)))
  var = np.var([50.0, 25.0, 75.0], ddof=1)
  assert row == (f'| t | {np.median(stds):.1f} | {rms:.1f} | {rms / 4:.1f} |'
                 f' {np.sqrt(var):.1f} | {rms ** 2 / 16 / var:.2f} |')

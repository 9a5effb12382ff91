"""Tests of distill/train/logs.py: runs in one metrics.jsonl, cut lines."""

import json

import pytest

from distill.train import logs


def test_runs_are_told_apart_and_a_cut_line_is_survived(tmp_path):
  with logs.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    assert writer.start_run({'config_hash': 'aaa'}) == 1
    writer.write(10, {'train/loss': 1.0})
  with open(tmp_path / 'metrics.jsonl', 'a') as f:
    f.write('{"step": 20, "train/lo')  # Killed mid-line.
  with logs.MetricWriter(str(tmp_path), tensorboard=False) as writer:
    assert writer.start_run({'config_hash': 'bbb'}) == 2
    writer.write(10, {'train/loss': float('nan')})
  with pytest.warns(UserWarning, match='line 3 is not JSON'):
    rows = logs.read_metrics(str(tmp_path))
  assert [(r['run'], r['step']) for r in rows] == [(1, 10), (2, 10)]
  assert rows[1]['train/loss'] == 'nan'
  with pytest.warns(UserWarning):
    assert [r['run'] for r in logs.read_metrics(str(tmp_path), run=-1)] == [2]
    runs = logs.read_runs(str(tmp_path))
  assert [(r['run'], r['config_hash']) for r in runs] == [(1, 'aaa'),
                                                          (2, 'bbb')]
  lines = (tmp_path / 'metrics.jsonl').read_text().splitlines()
  assert json.loads(lines[3])['event'] == 'start'  # On a line of its own.


def test_no_file_no_rows(tmp_path):
  assert logs.read_metrics(str(tmp_path)) == []
  assert logs.read_runs(str(tmp_path)) == []

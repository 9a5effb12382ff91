"""experiments/publish.py: a published study is one members.jsonl."""

import json
import os

import numpy as np
import pytest

from distill.io import fileio
from distill.run import sweeps
from experiments import publish

SMOKE = 'configs/study.py:smoke'


def _finish(job, offset):
  """Writes what a finished member leaves: results, record, history."""
  os.makedirs(os.path.join(job.workdir, 'student'))
  results = {'seed': job.seed, 'student_params': 100,
             'teacher_params': {'hopper': 5, 'walker2d': 5},
             'tasks': {t: {'student_score': offset + job.seed + 0.1 * i,
                           'teacher_score': 50.0}
                       for i, t in enumerate(('hopper', 'walker2d'))}}
  fileio.write_json(job.output, results)
  fileio.write_json(os.path.join(job.workdir, sweeps.RECORD), {
      'name': job.name, 'status': 'done', 'wall_s': 1.5, 'started': 1.0,
      'finished': 2.5, 'host': 'h', 'config': job.config,
      'code': {'commit': 'c' * 40, 'dirty': False, 'dirty_files': []},
      'config_sha256': 'a' * 64})
  steps = 60
  np.savez(os.path.join(job.workdir, 'student', 'history.npz'),
           step=np.arange(1, steps + 1),
           **{'distill|kl': np.full((steps, 2), offset, np.float32),
              'curriculum|choice': np.arange(steps) % 2,
              'surgery|projected': np.zeros(steps, np.float32)})
  return results


def _state(root, members, done):
  jobs = [{'kind': 'member', 'name': m.name, 'configuration':
           m.configuration, 'status': 'done' if m.name in done else
           'pending', 'log': m.log, 'wall_s': 1.5} for m in members]
  fileio.write_json(os.path.join(root, sweeps.STATE), {'jobs': jobs})


def test_publishing_a_sweep_writes_one_file_that_reads_back(tmp_path):
  root, dest = str(tmp_path / 'sweep'), str(tmp_path / 'pub')
  sweep = sweeps.Sweep(sweeps.product(
      sweeps.axis('curriculum.name', ['max_kl', 'round_robin']),
      sweeps.axis('seed', [0, 1])))
  _, members = sweeps.plan(SMOKE, sweep, root)
  assert len(members) == 4
  results, done = {}, []
  # Members finish one by one; each publishing rewrites the one file.
  for i, job in enumerate(reversed(members)):
    results[job.name] = _finish(job, 10.0 * i)
    done.append(job.name)
    _state(root, members, done)
    publish.publish_member(job, root, dest)
    publish.publish_state(root, dest)
    assert sorted(os.listdir(dest)) == [sweeps.MEMBERS, sweeps.STATE]
    published = sweeps.published_members(dest)
    assert list(published) == done  # in the order they finished
    state = fileio.read_json(os.path.join(dest, sweeps.STATE))
    assert [j['status'] for j in state['jobs']] == [
        'done' if m.name in done else 'pending' for m in members]

  for job in members:
    m = published[job.name]
    assert m['name'] == job.name
    assert m['configuration'] == job.configuration
    assert m['overrides'] == job.overrides
    assert m['results'] == results[job.name]
    # This interpreter is `python`; the sweep, outside the working
    # directory, keeps its whole path.
    assert m['record']['command'] == ['python'] + job.command[1:]
    assert m['record']['code']['commit'] == 'c' * 40
    assert m['record']['config_sha256'] == 'a' * 64
    assert m['record']['wall_s'] == 1.5 and m['record']['status'] == 'done'
    assert 'config' not in m['record']  # its hash stands for it
    assert m['curves'] == {
        **publish.curves(os.path.join(job.workdir, 'student',
                                      'history.npz')),
        'tasks': list(job.config['tasks'])}
    assert len(m['curves']['step_end']) == 30
  # The published study gives the aggregate the sweep's own runs.
  _, runs, missing = sweeps.collect_runs(root)
  _, published_runs, published_missing = sweeps.collect_runs(dest)
  assert not missing and not published_missing
  assert published_runs == runs and len(runs) == 4

  # Publishing a member again replaces its line in place.
  job = members[-1]
  results[job.name]['tasks']['hopper']['student_score'] = 99.0
  fileio.write_json(job.output, results[job.name])
  publish.publish_member(job, root, dest)
  again = sweeps.published_members(dest)
  assert list(again) == done
  assert again[job.name]['results']['tasks']['hopper']['student_score'] == 99
  with open(os.path.join(dest, sweeps.MEMBERS), encoding='utf-8') as f:
    lines = f.read().splitlines()
  assert len(lines) == 4
  assert [json.loads(line)['name'] for line in lines] == done


def test_a_damaged_members_file_names_its_line(tmp_path):
  path = tmp_path / sweeps.MEMBERS
  path.write_text('{"name": "a"}\n{"name": \n')
  with pytest.raises(fileio.DamagedFileError, match='line 2'):
    sweeps.published_members(str(tmp_path))

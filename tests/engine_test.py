"""Tests of distill/run/engine.py on toy stages (no JAX work, one process)."""

import hashlib
import json
import os

import pytest

from distill.io import fileio
from distill.run import engine


class Toy:
  """A toy run: stage `a` writes `a.txt` from `value`, `b` copies it."""

  def __init__(self, workdir):
    self.workdir = str(workdir)
    self.value = 'one'
    self.calls = []
    self.complete = True

  def write_a(self, state):
    assert state is self
    self.calls.append('a')
    with open(os.path.join(self.workdir, 'a.txt'), 'w') as f:
      f.write(self.value)

  def write_b(self, state):
    del state
    self.calls.append('b')
    with open(os.path.join(self.workdir, 'a.txt')) as f:
      text = f.read()
    with open(os.path.join(self.workdir, 'b.txt'), 'w') as f:
      f.write(text.upper())

  def stages(self):
    return {
        'a': engine.Stage(self.write_a, ('x',), ('a.txt',),
                          files=('a.txt',),
                          complete=lambda state: state.complete),
        'b': engine.Stage(
            self.write_b, ('x', 'y'), ('b.txt',), files=('b.txt',),
            inputs=lambda state: {'a.txt': fileio.sha256_file(
                os.path.join(state.workdir, 'a.txt'))}),
    }

  def run(self, config, names=('a', 'b'), **kwargs):
    self.calls = []
    engine.run_stages(self.stages(), names, self, workdir=self.workdir,
                      config=lambda name: {k: config[k] for k in
                                           self.stages()[name].keys},
                      **kwargs)
    return self.calls


def _read(path):
  with open(path) as f:
    return f.read()


def test_a_second_run_skips_every_stage_that_is_up_to_date(tmp_path):
  toy = Toy(tmp_path)
  assert toy.run({'x': 1, 'y': 2}) == ['a', 'b']
  assert _read(tmp_path / 'b.txt') == 'ONE'
  assert toy.run({'x': 1, 'y': 2}) == []
  stamp = json.loads(_read(tmp_path / 'stamps' / 'a.json'))
  assert stamp['done'] and stamp['config'] == {'x': 1}
  assert stamp['files'] == {'a.txt': fileio.sha256_file(tmp_path / 'a.txt')}
  assert set(json.loads(_read(tmp_path / 'wall_s.json'))) == {'a', 'b'}


def test_the_stamp_hash_is_the_sha256_of_the_config_and_inputs():
  # The format every stamp so far holds: a changed format would rerun
  # (never reuse) the stages of existing workdirs.
  blob = json.dumps([{'x': 1}, {'f': 'd'}], sort_keys=True)
  assert engine.stage_hash({'x': 1}, {'f': 'd'}) == hashlib.sha256(
      blob.encode()).hexdigest()[:16]
  assert engine.stage_hash({'x': 1}, with_inputs=False) == hashlib.sha256(
      b'[{"x": 1}]').hexdigest()[:16]


def test_a_changed_config_moves_outputs_aside_never_deleting_them(tmp_path):
  toy = Toy(tmp_path)
  toy.run({'x': 1, 'y': 2})
  old = engine.stage_hash({'x': 1, 'y': 2}, {'a.txt': fileio.sha256_file(
      tmp_path / 'a.txt')})
  # `y` is only `b`'s: `a` is skipped, `b` reruns.
  assert toy.run({'x': 1, 'y': 3}) == ['b']
  assert (tmp_path / f'b.txt.stale-{old[:8]}').exists()
  assert (tmp_path / 'stamps' / f'b.json.stale-{old[:8]}').exists()
  # `x` is both's; `b` reruns because its input (a.txt) changed too.
  toy.value = 'two'
  assert toy.run({'x': 2, 'y': 3}) == ['a', 'b']
  assert _read(tmp_path / 'b.txt') == 'TWO'
  stale = sorted(p.name for p in tmp_path.iterdir() if '.stale-' in p.name)
  assert len(stale) == 3 and sum(p.startswith('a.txt') for p in stale) == 1


def test_moving_aside_again_numbers_the_copies(tmp_path):
  path = tmp_path / 'teachers'
  for i in range(3):
    path.mkdir()
    (path / 'x').write_text(str(i))
    fileio.move_aside(str(path), 'stale-abc')
  kept = sorted(p.name for p in tmp_path.iterdir())
  assert kept == ['teachers.stale-abc', 'teachers.stale-abc-2',
                  'teachers.stale-abc-3']


def test_a_damaged_output_is_moved_aside_and_the_stage_reruns(tmp_path):
  toy = Toy(tmp_path)
  toy.run({'x': 1, 'y': 2})
  (tmp_path / 'b.txt').write_text('OOPS')
  assert toy.run({'x': 1, 'y': 2}) == ['b']
  assert _read(tmp_path / 'b.txt.damaged') == 'OOPS'
  assert _read(tmp_path / 'b.txt') == 'ONE'


def test_a_missing_output_reruns_the_stage(tmp_path):
  toy = Toy(tmp_path)
  toy.run({'x': 1, 'y': 2})
  os.remove(tmp_path / 'b.txt')
  assert toy.run({'x': 1, 'y': 2}) == ['b']
  assert _read(tmp_path / 'b.txt') == 'ONE'


def test_a_stage_that_died_reruns_over_its_own_outputs(tmp_path):
  toy = Toy(tmp_path)

  def fault(point):
    if point == 'stage/b/end':
      raise RuntimeError('killed')

  with pytest.raises(RuntimeError, match='killed'):
    toy.run({'x': 1, 'y': 2}, fault=fault)
  assert not json.loads(_read(tmp_path / 'stamps' / 'b.json'))['done']
  assert toy.run({'x': 1, 'y': 2}) == ['b']
  # Not stale: the stage continues in place (a training stage resumes).
  assert not [p for p in tmp_path.iterdir() if '.stale-' in p.name]


def test_a_damaged_stamp_is_moved_aside_and_its_outputs_rerun(tmp_path):
  toy = Toy(tmp_path)
  toy.run({'x': 1, 'y': 2})
  (tmp_path / 'stamps' / 'a.json').write_text('{"hash": ')
  assert toy.run({'x': 1, 'y': 2}, names=('a',)) == ['a']
  assert (tmp_path / 'stamps' / 'a.json.damaged').exists()
  assert (tmp_path / 'a.txt.stale-unknown').exists()


def test_outputs_without_a_stamp_are_not_trusted(tmp_path):
  toy = Toy(tmp_path)
  (tmp_path / 'a.txt').write_text('from elsewhere')
  assert toy.run({'x': 1, 'y': 2}, names=('a',)) == ['a']
  assert _read(tmp_path / 'a.txt.stale-unknown') == 'from elsewhere'


def test_an_incomplete_stage_reruns(tmp_path):
  toy = Toy(tmp_path)
  toy.run({'x': 1, 'y': 2})
  toy.complete = False
  assert toy.run({'x': 1, 'y': 2}) == ['a']


def test_shared_stages_live_in_the_shared_directory(tmp_path):
  shared = tmp_path / 'shared'
  shared.mkdir()
  calls = []

  def make(state):
    calls.append(state)
    (shared / 'x.txt').write_text('x')

  table = {'s': engine.Stage(make, ('k',), ('x.txt',), files=('x.txt',),
                             shared=True)}
  for workdir in ('w1', 'w2'):
    (tmp_path / workdir).mkdir()
    engine.run_stages(table, ['s'], workdir, workdir=str(tmp_path / workdir),
                      shared_dir=str(shared), config=lambda name: {'k': 0})
  assert calls == ['w1']  # The second run reuses the first's output.
  assert (shared / 'stamps' / 's.json').exists()
  assert not (tmp_path / 'w1' / 'stamps').exists()


def test_paths_expand_outputs_and_files(tmp_path):
  def make(state):
    del state
    for m in ('m0', 'm1'):
      (tmp_path / m).mkdir(exist_ok=True)
      (tmp_path / m / 'out.txt').write_text(m)

  def paths(rels):
    return [rel.format(member=m) for rel in rels for m in ('m0/', 'm1/')]

  table = {'s': engine.Stage(make, (), ('{member}out.txt',),
                             files=('{member}out.txt',))}
  engine.run_stages(table, ['s'], None, workdir=str(tmp_path),
                    config=lambda name: {}, paths=paths)
  stamp = json.loads(_read(tmp_path / 'stamps' / 's.json'))
  assert sorted(stamp['files']) == ['m0/out.txt', 'm1/out.txt']
  (tmp_path / 'm1' / 'out.txt').write_text('bad')
  engine.run_stages(table, ['s'], None, workdir=str(tmp_path),
                    config=lambda name: {}, paths=paths)
  assert _read(tmp_path / 'm1' / 'out.txt.damaged') == 'bad'


def test_a_stop_during_the_run_is_told_its_stage(tmp_path):
  class Stopped(SystemExit):
    where = 'the run'

  def stop(state):
    del state
    raise Stopped(143)

  table = {'s': engine.Stage(stop, (), ())}
  with pytest.raises(Stopped) as info:
    engine.run_stages(table, ['s'], None, workdir=str(tmp_path),
                      config=lambda name: {})
  assert info.value.where == 'stage s'


def test_a_damaged_wall_time_file_is_moved_aside(tmp_path):
  (tmp_path / 'wall_s.json').write_text('{"a": ')
  assert engine.read_wall_times(str(tmp_path)) == {}
  assert (tmp_path / 'wall_s.json.damaged').exists()

"""distill/run/provenance.py: what a sweep job records; publishing's refusal."""

import json
import os
import subprocess
import sys

import pytest

from distill.run import provenance
from distill.run import sweeps
from experiments import publish

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _repo(path):
  path.mkdir(parents=True, exist_ok=True)
  git = ['git', '-C', str(path)]
  subprocess.run(git + ['init', '-q'], check=True)
  for key, value in (('user.email', 'ci@distill'), ('user.name', 'ci')):
    subprocess.run(git + ['config', key, value], check=True)
  (path / 'code.py').write_text('x = 1\n')
  subprocess.run(git + ['add', 'code.py'], check=True)
  subprocess.run(git + ['commit', '-q', '-m', 'code'], check=True)
  head = subprocess.run(git + ['rev-parse', 'HEAD'], capture_output=True,
                        text=True, check=True).stdout.strip()
  return head


def test_code_state_names_the_commit_and_the_changed_files(tmp_path):
  repo = tmp_path / 'repo'
  head = _repo(repo)
  assert provenance.code_state(str(repo)) == {
      'commit': head, 'dirty': False, 'dirty_files': []}
  (repo / 'code.py').write_text('x = 2\n')
  (repo / 'new.py').write_text('')
  (repo / 'pub').mkdir()
  (repo / 'pub' / 'results.json').write_text('{}')
  state = provenance.code_state(str(repo))
  assert state == {'commit': head, 'dirty': True,
                   'dirty_files': ['code.py', 'new.py', 'pub/']}
  # Results written under an ignored directory are not code.
  assert provenance.code_state(str(repo), ['pub'])['dirty_files'] == [
      'code.py', 'new.py']
  outside = tmp_path / 'plain'
  outside.mkdir()
  assert provenance.code_state(str(outside)) == {
      'commit': None, 'dirty': None, 'dirty_files': []}


def test_config_hash_is_stable_and_order_free():
  a = provenance.config_hash({'a': 1, 'b': [1, 2]})
  assert a == provenance.config_hash({'b': [1, 2], 'a': 1})
  assert a != provenance.config_hash({'a': 2, 'b': [1, 2]})
  assert len(a) == 64


def _job(tmp_path, name='m'):
  out = tmp_path / 'sweep' / 'members' / name
  return sweeps.Job(kind='member', name=name, workdir=str(out),
                    command=[sys.executable, '-c',
                             f'open({str(out / "results.json")!r}, "w")'
                             '.write("{}")'],
                    config={'tasks': ['b', 'a'], 'seed': 0}, overrides={},
                    output=str(out / 'results.json'))


def test_a_job_records_its_code_and_config_hash(tmp_path):
  repo = tmp_path / 'repo'
  head = _repo(repo)
  (repo / 'code.py').write_text('x = 3\n')
  job = _job(tmp_path)
  record = sweeps.run_job(job, cwd=str(repo))
  assert record['status'] == 'done'
  assert record['code'] == {'commit': head, 'dirty': True,
                            'dirty_files': ['code.py']}
  assert record['config_sha256'] == provenance.config_hash(job.config)
  assert sweeps.read_record(job) == record


def test_publishing_refuses_a_dirty_tree_unless_allowed(tmp_path):
  repo = tmp_path / 'repo'
  _repo(repo)
  publish.check_clean(str(repo))  # clean: no error
  (repo / 'code.py').write_text('x = 4\n')
  with pytest.raises(publish.DirtyTreeError,
                     match=r'uncommitted changes: code\.py.*--allow_dirty'):
    publish.check_clean(str(repo))
  # A member that ran in the dirty tree is not published without the flag.
  job = _job(tmp_path)
  sweeps.run_job(job, cwd=str(repo))
  dest = tmp_path / 'pub'
  with pytest.raises(publish.DirtyTreeError, match='code.py'):
    publish.publish_member(job, str(tmp_path / 'sweep'), str(dest))
  assert not (dest / sweeps.MEMBERS).exists()
  publish.publish_member(job, str(tmp_path / 'sweep'), str(dest),
                         allow_dirty=True)
  record = sweeps.published_members(str(dest))['m']['record']
  assert record['code']['dirty_files'] == ['code.py']
  assert record['config_sha256'] == provenance.config_hash(job.config)


def test_sweep_publish_refuses_a_dirty_tree_before_work(tmp_path):
  repo = tmp_path / 'repo'
  _repo(repo)
  (repo / 'stray.py').write_text('')
  config = os.path.join(ROOT, 'configs', 'study.py') + ':smoke'
  proc = subprocess.run(
      [sys.executable, '-m', 'experiments.sweep', f'--config={config}',
       f'--workdir={repo / "runs"}', f'--publish={repo / "pub"}'],
      cwd=str(repo), capture_output=True, text=True, timeout=600,
      check=False)
  assert proc.returncode != 0
  assert 'uncommitted changes: stray.py' in proc.stderr
  assert '--allow_dirty' in proc.stderr
  assert not (repo / 'runs').exists()


def test_published_state_names_no_path_of_this_machine(tmp_path,
                                                        monkeypatch):
  root, dest = tmp_path / 'runs', tmp_path / 'pub'
  root.mkdir()
  dest.mkdir()
  monkeypatch.chdir(tmp_path)
  with open(root / sweeps.STATE, 'w') as f:
    json.dump({'cwd': str(tmp_path), 'workdir': str(root), 'jobs': []}, f)
  publish.publish_state(str(root), str(dest))
  state = json.load(open(dest / sweeps.STATE))
  assert state['cwd'] == '.' and state['workdir'] == 'runs'

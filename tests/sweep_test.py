"""distill/run/sweeps.py and `experiments.sweep` / `experiments.aggregate`."""

import json
import os
import shlex
import shutil
import subprocess
import sys

import numpy as np
import pytest
from rliable import library as rly
from rliable import metrics
import scipy.stats

from configs import study
from distill.run import provenance
from distill.run import sweeps

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SMOKE = 'configs/study.py:smoke'
STAGES = "--config.stages=('datasets','teachers','teacher_eval')"


def _cli(module, *args, env=None, timeout=900):
  return subprocess.run([sys.executable, '-m', module, *args], cwd=ROOT,
                        env=env or dict(os.environ), capture_output=True,
                        text=True, timeout=timeout, check=False)


def test_axis_product_chain_and_names():
  members = sweeps.chain(
      sweeps.product(sweeps.axis('seed', (0, 1)),
                     [{'curriculum.name': 'mixture', 'surgery.name': 'pcgrad'},
                      {'curriculum.name': 'uniform'}]),
      [{'student.model.width': 16, 'tasks': ('hopper', 'walker2d')}])
  assert members == [
      {'seed': 0, 'curriculum.name': 'mixture', 'surgery.name': 'pcgrad'},
      {'seed': 0, 'curriculum.name': 'uniform'},
      {'seed': 1, 'curriculum.name': 'mixture', 'surgery.name': 'pcgrad'},
      {'seed': 1, 'curriculum.name': 'uniform'},
      {'student.model.width': 16, 'tasks': ('hopper', 'walker2d')}]
  names = [sweeps.member_name(m) for m in members]
  assert names == ['curriculum=mixture,surgery=pcgrad,seed=0',
                   'curriculum=uniform,seed=0',
                   'curriculum=mixture,surgery=pcgrad,seed=1',
                   'curriculum=uniform,seed=1',
                   'student.model.width=16,tasks=hopper+walker2d']
  assert [sweeps.configuration_name(m) for m in members[:2]] == [
      'curriculum=mixture,surgery=pcgrad', 'curriculum=uniform']
  assert sweeps.member_name({}) == 'base'
  assert sweeps.member_name({'data.spec': '/d/{task}.h5'}) == (
      'data.spec=_d__task_.h5')
  with pytest.raises(ValueError, match='two axes'):
    sweeps.product(sweeps.axis('seed', (0,)), sweeps.axis('seed', (1,)))
  with pytest.raises(ValueError, match='no values'):
    sweeps.axis('seed', ())


def test_override_flags_parse_back_to_the_same_values():
  overrides = {'seed': 3, 'curriculum.name': 'round_robin',
               'student.optimizer.lr': 3e-4, 'teacher.vmap': False,
               'tasks': ('hopper',), 'stages': ('datasets', 'teachers')}
  flags_ = sweeps.override_flags(overrides)
  assert flags_[4:] == ["--config.tasks=('hopper',)",
                        "--config.stages=('datasets','teachers')"]
  config = sweeps.resolve_config(SMOKE, flags_)  # config_flags, as run does
  assert config.seed == 3 and config.curriculum.name == 'round_robin'
  assert config.student.optimizer.lr == 3e-4 and config.teacher.vmap is False
  assert config.tasks == ('hopper',)
  assert config.stages == ('datasets', 'teachers')
  with pytest.raises(ValueError, match='None'):
    sweeps.format_value(None)


def test_plan_of_the_smoke_study():
  sweep = study.get_sweep('smoke')
  teachers, members = sweeps.plan(SMOKE, sweep, '/s', python='python')
  assert sweep.baseline == 'curriculum=round_robin'
  assert [t.name for t in teachers] == ['seed=0', 'seed=1']
  assert teachers[0].command == [
      'python', '-m', 'experiments.run', f'--config={SMOKE}',
      '--workdir=/s/teachers/seed=0', '--config.seed=0', STAGES]
  assert teachers[1].output == '/s/teachers/seed=1/teachers/eval.json'
  assert [m.name for m in members] == [
      'curriculum=max_kl,seed=0', 'curriculum=round_robin,seed=0',
      'curriculum=max_kl,seed=1', 'curriculum=round_robin,seed=1']
  assert members[3].command == [
      'python', '-m', 'experiments.run', f'--config={SMOKE}',
      '--workdir=/s/members/curriculum=round_robin,seed=1',
      '--config.seed=1', '--config.curriculum.name=round_robin',
      '--config.teacher_workdir=/s/teachers/seed=1']
  assert [m.teacher for m in members] == ['seed=0', 'seed=0', 'seed=1',
                                          'seed=1']
  assert [m.configuration for m in members] == [
      'curriculum=max_kl', 'curriculum=round_robin'] * 2
  assert members[2].config['teacher_workdir'] == '/s/teachers/seed=1'
  assert members[2].config['student']['model']['width'] == 8  # smoke size
  assert teachers[0].config['stages'] == list(sweeps.TEACHER_STAGES)


def test_plan_of_the_full_study_shares_teachers_per_seed():
  sweep = study.get_sweep(None)
  teachers, members = sweeps.plan('configs/study.py', sweep, '/s')
  assert [t.name for t in teachers] == [f'seed={s}' for s in range(5)]
  configurations = {m.configuration for m in members}
  assert sweep.baseline in configurations
  methods = {(m.config['curriculum']['name'], m.config['curriculum']['mode'],
              m.config['surgery']['name']) for m in members
             if m.config['student']['model']['width'] == 32}
  for c in ('max_kl', 'round_robin', 'uniform', 'mixture',
            'learning_progress', 'rnd'):
    for s in ('none', 'previous'):
      assert (c, 'greedy', s) in methods
  for s in ('none', 'previous'):
    assert ('max_kl', 'softmax', s) in methods
  for extra in (('mixture', 'greedy', 'pcgrad'),
                ('bi_objective', 'greedy', 'previous'),
                ('scratch', 'greedy', 'none')):
    assert extra in methods
  sizes = {(m.config['student']['model']['num_layers'],
            m.config['student']['model']['width'],
            m.config['curriculum']['name']) for m in members}
  for size in ((2, 64), (2, 32), (2, 16), (1, 16)):  # distilled and scratch
    assert size + ('max_kl',) in sizes and size + ('scratch',) in sizes
  for m in members:  # pcgrad only with the mixture
    if m.config['surgery']['name'] == 'pcgrad':
      assert m.config['curriculum']['name'] == 'mixture'
  # 23 planned configurations and 3 added after seeing the data.
  assert len(members) == len({m.name for m in members}) == 26 * 5
  found = set(study.found_after_data_names())
  assert found <= configurations
  assert [m.configuration for m in members[-15:]] == [
      n for n in study.found_after_data_names() for _ in range(5)]
  # Configuration by configuration, the main comparison first.
  assert [m.configuration for m in members[:10]] == (
      ['curriculum=max_kl,surgery=previous'] * 5
      + ['curriculum=round_robin,surgery=none'] * 5)
  assert [m.seed for m in members[:5]] == list(range(5))


def test_plan_refuses_bad_members_before_any_work(tmp_path):
  bad_field = sweeps.Sweep([{'seed': 0, 'curriculum.nme': 'max_kl'}])
  with pytest.raises(ValueError, match=r'--config.curriculum.nme.*no field'):
    sweeps.plan(SMOKE, bad_field, str(tmp_path))
  bad_value = sweeps.Sweep([{'student.model.width': 'wide'}])
  with pytest.raises(ValueError, match='student.model.width'):
    sweeps.plan(SMOKE, bad_value, str(tmp_path))
  twice = sweeps.Sweep([{'seed': 0}, {'seed': 0}])
  with pytest.raises(ValueError, match='same name'):
    sweeps.plan(SMOKE, twice, str(tmp_path))
  assert not os.listdir(tmp_path)


def test_run_job_records_success_failure_and_is_finished(tmp_path):
  out = tmp_path / 'ok' / 'results.json'
  job = sweeps.Job(kind='member', name='ok', workdir=str(tmp_path / 'ok'),
                   command=[sys.executable, '-c',
                            f'open({str(out)!r}, "w").write("{{}}");'
                            ' print("hello")'],
                   config={'a': 1}, overrides={}, output=str(out))
  assert not sweeps.is_finished(job)
  record = sweeps.run_job(job, cwd=str(tmp_path))
  assert record['status'] == 'done' and record['returncode'] == 0
  assert record['wall_s'] > 0 and sweeps.read_record(job) == record
  assert 'hello' in open(job.log).read()
  assert sweeps.is_finished(job)
  job.config = {'a': 2}  # another config: not finished
  assert not sweeps.is_finished(job)
  # How the teachers train (vmapped or one by one) is not what the job
  # computes: a job done under another `teacher.vmap` stays done.
  job.config = {'a': 1, 'teacher': {'vmap': 'auto'}}
  record['config'] = {'a': 1, 'teacher': {'vmap': True}}
  sweeps.fileio.write_json(os.path.join(job.workdir, sweeps.RECORD), record)
  assert sweeps.is_finished(job)
  record['config'] = {'a': 1, 'teacher': {'vmap': True, 'steps': 2}}
  sweeps.fileio.write_json(os.path.join(job.workdir, sweeps.RECORD), record)
  assert not sweeps.is_finished(job)

  bad = sweeps.Job(kind='member', name='bad', workdir=str(tmp_path / 'bad'),
                   command=[sys.executable, '-c', 'import sys;'
                            ' sys.stderr.write("boom"); sys.exit(3)'],
                   config={}, overrides={},
                   output=str(tmp_path / 'bad' / 'results.json'))
  record = sweeps.run_job(bad, cwd=str(tmp_path))
  assert record['status'] == 'failed' and record['error'] == 'exit code 3'
  assert 'boom' in open(bad.log).read()
  assert not sweeps.is_finished(bad)


def test_mark_published_skips_what_another_machine_published(tmp_path):
  from experiments import sweep as sweep_cli  # pylint: disable=g-import-not-at-top
  plan = sweeps.plan(SMOKE, study.get_sweep('smoke'), str(tmp_path / 'a'))
  teachers, members = plan
  # Published by a sweep in another directory: the same recipes, other
  # paths (so other config hashes).
  _, elsewhere = sweeps.plan(SMOKE, study.get_sweep('smoke'),
                             str(tmp_path / 'b'))
  def entry(job, status='done'):
    return {'name': job.name, 'record': {
        'status': status, 'config_sha256': provenance.config_hash(job.config),
        'recipe_sha256': provenance.recipe_hash(job.config)}}
  assert (provenance.config_hash(members[0].config)
          != provenance.config_hash(elsewhere[0].config))
  other = dict(elsewhere[2].config, seed=7)  # a recipe this sweep lacks
  # A record from before recipe hashes: its config hash, with its own
  # teacher_workdir in its command.
  older = {'status': 'done',
           'config_sha256': provenance.config_hash(elsewhere[1].config),
           'command': elsewhere[1].command}
  assert f'--config.teacher_workdir={tmp_path}/b/teachers/seed=0' in (
      older['command'])
  published = {
      members[0].name: entry(elsewhere[0]),
      members[1].name: {'name': members[1].name, 'record': older},
      members[2].name: {'name': members[2].name, 'record': {
          'status': 'done', 'recipe_sha256': provenance.recipe_hash(other)}},
      members[3].name: entry(elsewhere[3], status='failed'),
  }
  state = sweep_cli.Sweep(str(tmp_path / 'a'), teachers, members, {})
  assert sweep_cli.mark_published(state, published) == (2, 1)
  status = {name: state.status[('member', name)]
            for name in (m.name for m in members)}
  assert list(status.values()) == ['published', 'published', 'pending',
                                   'pending']
  # seed=0's members are all published: its teachers need no training;
  # seed=1's members still run, so its teacher job does.
  assert [state.status[('teacher', t.name)] for t in teachers] == [
      'published', 'pending']
  assert 'members 2/4 done' in state.progress(1)


def test_members_of_trained_teachers_go_before_waiting_teacher_jobs(
    tmp_path):
  from experiments import sweep as sweep_cli  # pylint: disable=g-import-not-at-top
  teachers, members = sweeps.plan(SMOKE, study.get_sweep('smoke'),
                                  str(tmp_path))
  state = sweep_cli.Sweep(str(tmp_path), teachers, members, {})

  class Recorder:
    def __init__(self):
      self.jobs = []

    def submit(self, fn, job, **kwargs):
      del fn, kwargs
      self.jobs.append((job.kind, job.name))
      return job

  executor = Recorder()
  # Nothing trained yet: the two teacher jobs, in the sweep's order.
  assert sweep_cli._launch(state, {}, executor, 2, {})
  assert executor.jobs == [('teacher', 'seed=0'), ('teacher', 'seed=1')]
  # seed=0's teachers are done, seed=1's wait: its members go first.
  state = sweep_cli.Sweep(str(tmp_path), teachers, members, {})
  state.status[('teacher', 'seed=0')] = 'done'
  executor.jobs = []
  assert sweep_cli._launch(state, {}, executor, 3, {})
  assert executor.jobs == [('member', 'curriculum=max_kl,seed=0'),
                           ('member', 'curriculum=round_robin,seed=0'),
                           ('teacher', 'seed=1')]


def test_print_lists_the_commands():
  proc = _cli('experiments.sweep', f'--config={SMOKE}', '--workdir=/s',
              '--print')
  assert proc.returncode == 0, proc.stderr[-3000:]
  # The commands, then their estimate (tests/cost_test.py).
  lines = proc.stdout.splitlines()[:8]
  py = sys.executable
  run = f'{py} -m experiments.run --config={SMOKE}'
  assert lines == [
      '# 2 teacher jobs: run these first',
      f'{run} --workdir=/s/teachers/seed=0 --config.seed=0 "{STAGES}"',
      f'{run} --workdir=/s/teachers/seed=1 --config.seed=1 "{STAGES}"',
      '# 4 members',
      *[f'{run} --workdir=/s/members/curriculum={c},seed={s}'
        f' --config.seed={s} --config.curriculum.name={c}'
        f' --config.teacher_workdir=/s/teachers/seed={s}'
        for s in (0, 1) for c in ('max_kl', 'round_robin')]]
  # A shell splits each line back into the argv that the sweep runs.
  assert shlex.split(lines[1])[-1] == STAGES
  assert not os.path.exists('/s')


@pytest.mark.parametrize('args, message', [
    (['--parallel=0'], '--parallel=0'),
    (['--executor=pbs'], 'executor'),
    (['--baseline=curriculum=nope'], '--baseline'),
    (['--config=configs/mt_distill.py'], 'get_sweep'),
    (['--publish_aggregate_s=-1'], '--publish_aggregate_s=-1'),
])
def test_bad_flags_are_refused_before_work(tmp_path, args, message):
  proc = _cli('experiments.sweep', f'--config={SMOKE}',
              f'--workdir={tmp_path / "w"}', *args)
  assert proc.returncode != 0
  assert message in proc.stderr
  assert not os.path.exists(tmp_path / 'w')


@pytest.mark.skipif(bool(shutil.which('sbatch') and shutil.which('srun')),
                    reason='SLURM is installed on this machine')
def test_slurm_without_slurm_is_refused_before_work(tmp_path):
  proc = _cli('experiments.sweep', f'--config={SMOKE}',
              f'--workdir={tmp_path / "w"}', '--executor=slurm')
  assert proc.returncode != 0
  assert '--executor=slurm' in proc.stderr and 'not on PATH' in proc.stderr
  assert not os.path.exists(tmp_path / 'w')


def test_failed_teachers_are_reported_and_their_members_not_run(tmp_path):
  # The teachers' datasets do not exist: both teacher jobs run and fail; the
  # members wait for them, so none runs; the sweep exits 1 naming the logs.
  config = tmp_path / 'broken.py'
  config.write_text(
      'from configs import study\n'
      'def get_config(arg=None):\n'
      '  c = study.get_config(arg)\n'
      "  c.data.spec = '/nonexistent/{task}-{quality}.hdf5'\n"
      '  return c\n'
      'get_sweep = study.get_sweep\n')
  workdir = tmp_path / 'sweep'
  env = dict(os.environ, PYTHONPATH=ROOT)
  proc = _cli('experiments.sweep', f'--config={config}:smoke',
              f'--workdir={workdir}', '--executor=debug', env=env)
  assert proc.returncode == 1, proc.stderr[-3000:]
  state = json.load(open(workdir / 'sweep_state.json'))
  status = {(j['kind'], j['name']): j['status'] for j in state['jobs']}
  assert set(status.values()) == {'failed'}
  for seed in (0, 1):
    log = workdir / 'teachers' / f'seed={seed}' / 'sweep_job.log'
    assert 'nonexistent' in log.read_text()  # it ran and said why
    assert f'log: {log}' in proc.stderr
  assert not (workdir / 'members').exists()  # no member ran
  errors = [j['error'] for j in state['jobs'] if j['kind'] == 'member']
  assert all('teacher job seed=' in e for e in errors)


def _teacher_trainings(root):
  """Workdirs whose metrics.jsonl logged teacher training steps."""
  found = []
  for dirpath, _, files in os.walk(root):
    if 'metrics.jsonl' in files:
      with open(os.path.join(dirpath, 'metrics.jsonl')) as f:
        if any('teacher/hopper/loss' in json.loads(line) for line in f):
          found.append(os.path.relpath(dirpath, root))
  return sorted(found)


def test_jobs_get_the_sweeps_compilation_cache_unless_one_is_set(tmp_path):
  code = ('import json, sys; from experiments import sweep;'
          ' print(json.dumps([sweep.job_env("local", 2, "/s/jax_cache"),'
          ' sweep.job_env("slurm", 1, "/s/jax_cache"),'
          ' sweep.job_env("slurm", 1, None)]))')
  env = dict(os.environ)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  env.pop('XLA_PYTHON_CLIENT_PREALLOCATE', None)
  run = lambda e: json.loads(subprocess.run(
      [sys.executable, '-c', code], cwd=ROOT, env=e, capture_output=True,
      text=True, check=True).stdout)
  local, slurm, none = run(env)
  assert local['JAX_COMPILATION_CACHE_DIR'] == '/s/jax_cache'
  assert local['XLA_PYTHON_CLIENT_PREALLOCATE'] == 'false'
  assert slurm == {'JAX_COMPILATION_CACHE_DIR': '/s/jax_cache'}
  assert none == {}
  # A cache the user set is inherited, not replaced.
  local, slurm, _ = run(dict(env, JAX_COMPILATION_CACHE_DIR=str(tmp_path)))
  assert 'JAX_COMPILATION_CACHE_DIR' not in local
  assert slurm == {}


def test_publisher_aggregates_at_most_once_per_interval(tmp_path):
  # Publishing copies every member at once; the aggregate of the published
  # directory (about a minute of CPU for the study) waits for its interval,
  # and `finish_publishing` always makes it.
  code = '''
import json, sys, time, types
from experiments import publish, sweep
calls = []
sweep.aggregate_sweep = lambda dest, *a, **k: calls.append(('aggregate',
                                                             dest))
publish.publish_member = lambda job, root, dest, allow_dirty: calls.append(
    ('member', job.name))
publish.publish_state = lambda root, dest: None
publish.commit = lambda dest, message: calls.append(('commit', message))
state = types.SimpleNamespace(root='/r', write_state=lambda: None)
job = lambda n: types.SimpleNamespace(kind='member', name=n)
every = float(sys.argv[1])
on_done = sweep.make_publisher(state, sys.argv[2], 'b', 10, True, every)
for name in ('m0', 'm1', 'm2'):
  on_done(job(name))
on_done(types.SimpleNamespace(kind='teacher', name='t'))
sweep.finish_publishing(sys.argv[2], 'b', 10, True)
print(json.dumps(calls))
'''
  run = lambda every: json.loads(subprocess.run(
      [sys.executable, '-c', code, str(every), str(tmp_path / 'pub')],
      cwd=ROOT, capture_output=True, text=True, check=True).stdout)
  pub = str(tmp_path / 'pub')
  agg = ['aggregate', pub]
  commits = lambda calls: [c[1] for c in calls if c[0] == 'commit']
  calls = run(3600)
  assert [c for c in calls if c[0] != 'commit'] == [
      ['member', 'm0'], agg, ['member', 'm1'], ['member', 'm2'], agg]
  assert commits(calls) == [f'study: {m} finished (pub)'
                            for m in ('m0', 'm1', 'm2')] + [
                                'study: aggregate (pub)']
  calls = run(0)  # after every member (the default)
  assert [c for c in calls if c[0] != 'commit'] == [
      ['member', 'm0'], agg, ['member', 'm1'], agg, ['member', 'm2'], agg,
      agg]


@pytest.mark.slow
# arch deprecates the RandomState that rliable passes; the recomputation
# below uses it on purpose (distill.report.aggregate does the same).
@pytest.mark.filterwarnings('ignore:random_state is deprecated:FutureWarning')
def test_smoke_sweep_end_to_end(tmp_path):
  root = tmp_path / 'sweep'
  # The session's XLA flags (conftest.TEST_XLA_FLAGS) and generated
  # datasets (DISTILL_DATA_DIR, shared by the tests); the sweep's own
  # compilation cache, not the session's.
  env = dict(os.environ)
  env.pop('JAX_COMPILATION_CACHE_DIR', None)
  # Every compilation cached, however fast this machine compiles it (the
  # session's 0.2 s floor left exactly 10 entries on a fast VM).
  env['JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS'] = '0'
  args = (f'--config={SMOKE}', f'--workdir={root}', '--executor=debug')
  proc = _cli('experiments.sweep', *args, env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'ETA' in proc.stderr
  # The jobs shared one compilation cache in the sweep directory.
  assert len(os.listdir(root / 'jax_cache')) > 10

  # Teachers trained once per seed, in the sweep's teachers/ directory.
  assert _teacher_trainings(root) == ['teachers/seed=0', 'teachers/seed=1']
  state = json.load(open(root / 'sweep_state.json'))
  assert [(j['kind'], j['status']) for j in state['jobs']] == (
      [('teacher', 'done')] * 2 + [('member', 'done')] * 4)
  for job in state['jobs']:
    assert job['wall_s'] > 0 and os.path.exists(job['log'])
    assert shlex.split(job['shell']) == job['command']

  # sweep.json: per-run scores from results.json, aggregates recomputed.
  summary = json.load(open(root / 'sweep.json'))
  boot = summary['bootstrap']
  assert summary['baseline'] == 'curriculum=round_robin'
  assert summary['tasks'] == ['hopper', 'walker2d']
  configs = summary['configurations']
  assert set(configs) == {'curriculum=max_kl', 'curriculum=round_robin'}
  scores = {}
  for name, c in configs.items():
    assert c['n'] == 2 and [r['seed'] for r in c['runs']] == [0, 1]
    for r in c['runs']:
      results = json.load(open(root / 'members' / r['member'] /
                               'results.json'))
      assert r['student_scores'] == {
          t: results['tasks'][t]['student_score'] for t in summary['tasks']}
    x = np.array([[r['student_scores'][t] for t in summary['tasks']]
                  for r in c['runs']])
    scores[name] = x
    assert c['student']['iqm']['value'] == pytest.approx(
        scipy.stats.trim_mean(x, 0.25, axis=None))
    # rliable draws from NumPy's global generator; distill.report.aggregate
    # seeds it with the recorded bootstrap seed.
    np.random.seed(boot['seed'])
    point, interval = rly.get_interval_estimates(
        {'x': x}, lambda s: np.array([metrics.aggregate_iqm(s),
                                      metrics.aggregate_mean(s)]),
        reps=boot['reps'], random_state=np.random.RandomState(boot['seed']))
    assert [c['student']['iqm']['ci_low'], c['student']['iqm']['ci_high'],
            c['student']['mean']['ci_low'], c['student']['mean']['ci_high']
            ] == pytest.approx([interval['x'][0, 0], interval['x'][1, 0],
                                interval['x'][0, 1], interval['x'][1, 1]])
    assert c['student']['mean']['value'] == pytest.approx(point['x'][1])
    assert c['student_params'] > 0
  p = configs['curriculum=max_kl']['probability_of_improvement']
  assert p['value'] == pytest.approx(metrics.probability_of_improvement(
      scores['curriculum=max_kl'], scores['curriculum=round_robin']))
  text = (root / 'sweep.md').read_text()
  assert '| `curriculum=max_kl` | 2 |' in text
  assert (root / 'sweep_profiles.png').read_bytes()[:4] == b'\x89PNG'

  # A rerun skips every finished job: no command runs again.
  logs = {j['log']: open(j['log']).read() for j in state['jobs']}
  proc = _cli('experiments.sweep', *args, env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  state = json.load(open(root / 'sweep_state.json'))
  assert {j['status'] for j in state['jobs']} == {'skipped'}
  assert {j['log']: open(j['log']).read() for j in state['jobs']} == logs
  assert 'started' not in proc.stderr

  # Publishing into a git repository: every finished member is copied with
  # its command and curves, aggregated there and committed.
  repo = tmp_path / 'repo'
  subprocess.run(['git', 'init', '-q', str(repo)], check=True)
  for key, value in (('user.email', 'ci@distill'), ('user.name', 'ci')):
    subprocess.run(['git', '-C', str(repo), 'config', key, value],
                   check=True)
  pub = repo / 'study'
  # --allow_dirty: the members ran in this checkout, whose tree may hold
  # uncommitted changes while the test runs (provenance_test checks the
  # refusal); each record says what it ran either way.
  proc = _cli('experiments.sweep', *args, f'--publish={pub}',
              '--publish_commit', '--allow_dirty', env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  # One file holds the study's members (in the order they finished).
  assert not (pub / 'members').exists()
  entries = sweeps.published_members(str(pub))
  assert sorted(entries) == sorted(j['name'] for j in state['jobs'][2:])
  for job in state['jobs'][2:]:
    out = entries[job['name']]
    assert out['configuration'] == job['configuration']
    assert (out['results']
            == json.load(open(root / 'members' / job['name'] /
                              'results.json')))
    record = out['record']
    assert record['command'][:3] == ['python', '-m', 'experiments.run']
    # What the member ran: this checkout's commit, its tree, its config.
    full = json.load(open(root / 'members' / job['name'] / 'sweep_job.json'))
    assert record['code'] == full['code']
    assert len(record['code']['commit']) == 40
    assert record['config_sha256'] == provenance.config_hash(full['config'])
    # The sweep lies outside the working directory: its path stays whole.
    assert f'--workdir={root}/members/{job["name"]}' in record['command']
    curves = out['curves']
    assert curves['tasks'] == full['config']['tasks']  # its columns' order
    assert curves['step_end'][-1] == 40  # smoke: 40 steps
    assert len(curves['kl_mean'][0]) == 2 and len(curves['choices']) == len(
        curves['step_end'])
    assert sum(map(sum, curves['choices'])) == len(curves['step_end']) * (
        curves['window'])
  published = json.load(open(pub / 'sweep.json'))
  for name, c in configs.items():
    assert published['configurations'][name]['student'] == c['student']
  log = subprocess.run(['git', '-C', str(repo), 'log', '--format=%s'],
                       capture_output=True, text=True, check=True).stdout
  assert log.count('study: ') == 4
  status = subprocess.run(['git', '-C', str(repo), 'status', '--porcelain'],
                          capture_output=True, text=True, check=True).stdout
  assert not status  # everything published is committed
  # Relaunched, it publishes (and commits) nothing again: every member is
  # already in members.jsonl.
  proc = _cli('experiments.sweep', *args, f'--publish={pub}',
              '--publish_commit', '--allow_dirty', env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'published and committed' not in proc.stderr
  again = subprocess.run(['git', '-C', str(repo), 'log', '--format=%s'],
                         capture_output=True, text=True, check=True).stdout
  assert again == log
  # A fresh machine: an empty sweep directory elsewhere, the same --publish.
  # The published study is resumed: no job runs, no teacher is trained.
  fresh = tmp_path / 'elsewhere' / 'sweep'
  proc = _cli('experiments.sweep', f'--config={SMOKE}', f'--workdir={fresh}',
              '--executor=debug', f'--publish={pub}', '--publish_commit',
              '--allow_dirty', env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  assert 'started' not in proc.stderr
  assert '4 members and 2 teacher jobs already in' in proc.stderr
  state = json.load(open(fresh / 'sweep_state.json'))
  assert {j['status'] for j in state['jobs']} == {'published'}
  assert not (fresh / 'teachers').exists()
  assert subprocess.run(['git', '-C', str(repo), 'log', '--format=%s'],
                        capture_output=True, text=True,
                        check=True).stdout == log
  assert sorted(sweeps.published_members(str(pub))) == sorted(entries)

  # The aggregate entry point on its own, with another baseline.
  proc = _cli('experiments.aggregate', str(root),
              '--baseline=curriculum=max_kl', env=env)
  assert proc.returncode == 0, proc.stderr[-4000:]
  summary = json.load(open(root / 'sweep.json'))
  assert summary['baseline'] == 'curriculum=max_kl'
  assert summary['configurations']['curriculum=round_robin'][
      'probability_of_improvement']['value'] == pytest.approx(1 - p['value'])


def test_a_population_member_is_one_run_per_seed(tmp_path):
  sweep = sweeps.Sweep([{'seeds': (0, 1), 'curriculum.name': c}
                        for c in ('max_kl', 'round_robin')])
  teachers, members = sweeps.plan(SMOKE, sweep, str(tmp_path))
  assert [t.name for t in teachers] == ['seeds=0+1']
  assert teachers[0].output == str(
      tmp_path / 'teachers' / 'seeds=0+1' / 'seed_1' / 'teachers' /
      'eval.json')
  assert [m.configuration for m in members] == ['curriculum=max_kl',
                                                'curriculum=round_robin']
  assert members[0].output == str(tmp_path / 'members' / members[0].name /
                                  'results.json')
  # The population's results.json holds each seed's single-seed record.
  jobs = []
  for m, offset in zip(members, (0.0, 10.0)):
    record = lambda seed, o=offset: {
        'seed': seed, 'student_params': 100, 'teacher_params': {'h': 5},
        'tasks': {'hopper': {'student_score': seed + o,
                             'teacher_score': 50.0}}}
    os.makedirs(m.workdir)
    with open(m.output, 'w') as f:
      json.dump({'seeds': [0, 1], 'members': [record(0), record(1)]}, f)
    jobs.append({'kind': 'member', 'name': m.name, 'status': 'done',
                 'configuration': m.configuration, 'log': m.log,
                 'wall_s': 1.0})
  with open(tmp_path / sweeps.STATE, 'w') as f:
    json.dump({'jobs': jobs}, f)
  _, runs, missing = sweeps.collect_runs(str(tmp_path))
  assert not missing
  assert [(r['configuration'], r['seed'],
           r['tasks']['hopper']['student_score']) for r in runs] == [
               ('curriculum=max_kl', 0, 0.0), ('curriculum=max_kl', 1, 1.0),
               ('curriculum=round_robin', 0, 10.0),
               ('curriculum=round_robin', 1, 11.0)]


def test_a_relaunch_waits_for_and_adopts_the_earlier_launchs_jobs(tmp_path):
  # An earlier launch still runs job `a` (its record names a live pid): the
  # new launch must not start `a` again, but wait for it, take its result,
  # and run `b` meanwhile.
  code = r'''
import json, os, subprocess, sys, time
import submitit
from distill.run import sweeps
from experiments import relaunch, sweep
root = sys.argv[1]
def job(name, sleep_s):
  out = os.path.join(root, name, 'results.json')
  return sweeps.Job(kind='member', name=name,
                    workdir=os.path.join(root, name),
                    command=[sys.executable, '-c',
                             f'import time; time.sleep({sleep_s});'
                             f' open({out!r}, "w").write("{{}}")'],
                    config={}, overrides={}, output=out, teacher='t')
t_out = os.path.join(root, 't', 'o')
t = sweeps.Job(kind='teacher', name='t', workdir=os.path.join(root, 't'),
               command=[sys.executable, '-c', f'open({t_out!r}, "w")'],
               config={}, overrides={}, output=t_out)
a, b = job('a', 3.0), job('b', 0.0)
earlier = subprocess.Popen([sys.executable, '-c',
    'import pickle, sys; from distill.run import sweeps;'
    ' sweeps.run_job(pickle.loads(bytes.fromhex(sys.argv[1])), cwd=".")',
    __import__('pickle').dumps(a).hex()])
while (sweeps.read_record(a) or {}).get('status') != 'running':
  time.sleep(0.05)
assert relaunch.still_running([a, b]) == [f'member a (pid {earlier.pid})']
state = sweep.Sweep(root, [t], [a, b], {})
sweep.run_jobs(state, submitit.DebugExecutor(os.path.join(root, 's')), 2,
               {})
print(json.dumps({'status': {k[1]: v for k, v in state.status.items()},
                  'earlier_rc': earlier.wait(),
                  'a_runs': open(a.log).read().count('=== ') // 2}))
'''
  out = subprocess.run([sys.executable, '-c', code, str(tmp_path)], cwd=ROOT,
                       capture_output=True, text=True, check=False,
                       timeout=120)
  assert out.returncode == 0, out.stderr[-3000:]
  result = json.loads(out.stdout.strip().splitlines()[-1])
  assert result['status'] == {'t': 'done', 'a': 'done', 'b': 'done'}
  assert result['earlier_rc'] == 0 and result['a_runs'] == 1

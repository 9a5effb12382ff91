r"""Sweeps: a config's members, their names, command lines and job records.

  python -m experiments.sweep --config=configs/study.py --workdir=runs/study

A config module that defines a sweep has, beside `get_config(arg)`, a
`get_sweep(arg) -> Sweep`: a list of members, each a dict of overrides of
config fields (`{'seed': 0, 'curriculum.name': 'max_kl'}`), built as in
flax's `hparam_sweep` and big_vision's `get_hyper` from `axis` (one field's
values), `product` (every combination) and `chain` (concatenation, for
explicit extra members):

  def get_sweep(arg=None):
    members = sweeps.chain(
        sweeps.product(sweeps.axis('seed', (0, 1)),
                       sweeps.axis('curriculum.name', ('max_kl', 'uniform'))),
        [{'seed': 0, 'curriculum.name': 'scratch'}])
    return sweeps.Sweep(members, baseline='curriculum=uniform')

A member is named from its overrides (`curriculum=max_kl,seed=0`); members
that differ only by seed form one configuration (`curriculum=max_kl`), the
unit `distill.report.aggregate` compares. Each member runs as the command line

  python -m experiments.run --config=<config>:<arg> \
      --workdir=<sweep>/members/<name> --config.<field>=<value> ... \
      --config.teacher_workdir=<sweep>/teachers/<teacher name>

after one teacher job per distinct teacher configuration (the fields in
`TEACHER_FIELDS`) has trained the teachers in `<sweep>/teachers/<name>`.
Overrides are parsed by `ml_collections.config_flags` exactly as
`experiments.run` parses them, so a member's config here is the one it runs.

Every job writes `<workdir>/sweep_job.json` (its command, resolved config,
status, exit code, wall time, log path); a job is finished when that record
says `done` for the same command and config and its output is there.
"""

from collections.abc import Mapping, Sequence
import dataclasses
import hashlib
import importlib.util
import itertools
import json
import os
import re
import subprocess
import sys
import time
from typing import Any, NamedTuple

from absl import flags
import ml_collections
from ml_collections import config_flags

from distill.io import fileio
from distill.run import provenance
from distill.run import stages

# What a teacher job runs (the stages up to the last shared one, in table
# order) and the config fields those stages read: members that agree on
# these share one teacher job. Both derive from `distill.run.stages.STAGES`.
TEACHER_STAGES = stages.TEACHER_STAGES
TEACHER_FIELDS = stages.TEACHER_FIELDS
# Overrides that name a member's seeds: members differing only in these are
# one configuration.
SEED_FIELDS = ('seed', 'seeds')
RECORD = 'sweep_job.json'
LOG = 'sweep_job.log'
STATE = 'sweep_state.json'

Overrides = dict[str, Any]


class Sweep(NamedTuple):
  """A config's sweep.

  Attributes:
    members: one dict of config overrides per member.
    baseline: the configuration name (`configuration_name`) the others are
      compared with, or '' for none.
  """
  members: list[Overrides]
  baseline: str = ''


def axis(field: str, values: Sequence[Any]) -> list[Overrides]:
  """One field swept over `values`: `[{field: v} for v in values]`.

  Args:
    field: dotted config path without the `config.` prefix (`'seed'`,
      `'curriculum.name'`).
    values: the values, in order.

  Returns:
    One override dict per value.
  """
  if not values:
    raise ValueError(f'sweeps.axis({field!r}): no values')
  return [{field: v} for v in values]


def product(*axes: Sequence[Overrides]) -> list[Overrides]:
  """Every combination of the axes (the first varies slowest).

  Args:
    *axes: lists of override dicts (from `axis`, or written out, e.g.
      `[{'curriculum.name': 'mixture', 'surgery.name': 'pcgrad'}]`).

  Returns:
    The merged override dicts; a field set by two axes is an error.
  """
  out = []
  for combo in itertools.product(*axes):
    merged = {}
    for part in combo:
      twice = set(merged) & set(part)
      if twice:
        raise ValueError(f'sweeps.product: field(s) {sorted(twice)} set by'
                         ' two axes')
      merged.update(part)
    out.append(merged)
  return out


def chain(*parts: Sequence[Overrides]) -> list[Overrides]:
  """Concatenates lists of members (a product plus explicit extra members).

  Args:
    *parts: lists of override dicts.

  Returns:
    One list with every member, in order.
  """
  return [dict(m) for part in parts for m in part]


def _short(field: str) -> str:
  return field[:-len('.name')] if field.endswith('.name') else field


def _name_value(value: Any) -> str:
  if isinstance(value, (tuple, list)):
    return '+'.join(_name_value(v) for v in value)
  return str(value)


def _join(parts: list[str]) -> str:
  name = re.sub(r'[^A-Za-z0-9._+=,-]', '_', ','.join(parts))
  if len(name) > 120:  # Keep paths usable; the hash keeps names distinct.
    digest = hashlib.sha256(name.encode()).hexdigest()[:8]
    name = f'{name[:110]}-{digest}'
  return name


def member_name(overrides: Mapping[str, Any]) -> str:
  """`field=value` parts joined by ',' (seed last); 'base' when empty.

  Args:
    overrides: a member's overrides.

  Returns:
    A name that is also a directory name (characters outside
    `[A-Za-z0-9._+=,-]` become '_').
  """
  keys = [k for k in overrides if k != 'seed']
  if 'seed' in overrides:
    keys.append('seed')
  if not keys:
    return 'base'
  return _join([f'{_short(k)}={_name_value(overrides[k])}' for k in keys])


def configuration_name(overrides: Mapping[str, Any]) -> str:
  """The member's name without its seed (shared by its seeds).

  Args:
    overrides: a member's overrides.

  Returns:
    `member_name` of the overrides other than `seed` and `seeds` (a
    population's seeds).
  """
  return member_name({k: v for k, v in overrides.items()
                      if k not in SEED_FIELDS})


def format_value(value: Any) -> str:
  """A value as `ml_collections.config_flags` parses it for the field.

  Args:
    value: a str, bool, int, float or tuple of those.

  Returns:
    The text after `--config.<field>=`.
  """
  if value is None:
    raise ValueError('a sweep cannot set a field to None on the command'
                     ' line')
  if isinstance(value, (tuple, list)):
    items = [repr(v) if isinstance(v, str) else format_value(v)
             for v in value]
    return '(' + ','.join(items) + (',)' if len(items) == 1 else ')')
  if isinstance(value, (bool, int, float, str)):
    return str(value) if not isinstance(value, float) else repr(value)
  raise ValueError(f'a sweep value must be a str, bool, int, float or tuple,'
                   f' got {value!r}')


def override_flags(overrides: Mapping[str, Any]) -> list[str]:
  """`['--config.<field>=<value>', ...]` in the overrides' order.

  Args:
    overrides: dotted field -> value.

  Returns:
    The command-line arguments.
  """
  return [f'--config.{k}={format_value(v)}' for k, v in overrides.items()]


def _check_fields(config: ml_collections.ConfigDict, config_arg: str,
                  overrides: Mapping[str, Any]) -> None:
  for field in overrides:
    node, path = config, []
    for part in field.split('.'):
      if not isinstance(node, ml_collections.ConfigDict) or part not in node:
        where = '.'.join(path) or 'the config'
        keys = sorted(node.keys()) if isinstance(
            node, ml_collections.ConfigDict) else []
        raise ValueError(f'--config.{field}: {where} has no field {part!r} in'
                         f' {config_arg} (fields: {keys})')
      node = node[part]
      path.append(part)


def resolve_config(config_arg: str, flags_: Sequence[str]
                   ) -> ml_collections.ConfigDict:
  """The config that `experiments.run --config=<config_arg> <flags_>` sees.

  Args:
    config_arg: `path/to/config.py[:arg]`.
    flags_: `--config.<field>=<value>` arguments.

  Returns:
    The parsed, locked config.
  """
  fv = flags.FlagValues()
  argv = ['sweep', f'--config={config_arg}', *flags_]
  config_flags.DEFINE_config_file('config', None, 'config', flag_values=fv,
                                  lock_config=True, sys_argv=argv)
  fv(argv)
  return fv.config


def config_json(config: ml_collections.ConfigDict) -> dict[str, Any]:
  """The config as plain JSON values.

  Args:
    config: a config.

  Returns:
    A dict of JSON values (FieldReferences resolved, tuples as lists).
  """
  return json.loads(config.to_json_best_effort())


def load_sweep(config_arg: str) -> Sweep:
  """Calls `get_sweep(arg)` of the config module `path[:arg]`.

  Args:
    config_arg: `path/to/config.py[:arg]`.

  Returns:
    The module's sweep; a module without `get_sweep` is an error naming it.
  """
  path, _, arg = config_arg.partition(':')
  if not os.path.isfile(path):
    raise ValueError(f'--config={config_arg}: no such file {path!r}')
  spec = importlib.util.spec_from_file_location('_sweep_config', path)
  module = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(module)
  if not hasattr(module, 'get_sweep'):
    raise ValueError(f'--config={config_arg}: {path} defines no get_sweep();'
                     ' see distill/run/sweeps.py')
  sweep = module.get_sweep(arg or None)
  if not isinstance(sweep, Sweep) or not sweep.members:
    raise ValueError(f'--config={config_arg}: get_sweep() must return a'
                     f' non-empty sweeps.Sweep, got {sweep!r}')
  return sweep


@dataclasses.dataclass
class Job:
  """One command of a sweep: a teacher job or a member.

  Attributes:
    kind: 'teacher' or 'member'.
    name: directory name under `<sweep>/teachers` or `<sweep>/members`.
    workdir: its `--workdir`.
    command: the full command line (argv).
    config: the config it runs, as JSON values.
    overrides: the sweep's overrides (for a teacher: the teacher fields).
    configuration: the configuration name (members; '' for teachers).
    seed: `config.seed`.
    teacher: the teacher job a member waits for ('' for teachers).
    output: the file whose presence means the job produced its results.
  """
  kind: str
  name: str
  workdir: str
  command: list[str]
  config: dict[str, Any]
  overrides: Overrides
  configuration: str = ''
  seed: int = 0
  teacher: str = ''
  output: str = ''

  @property
  def log(self) -> str:
    return os.path.join(self.workdir, LOG)


def _teacher_hash(config_dict: Mapping[str, Any]) -> str:
  sub = {k: config_dict.get(k) for k in TEACHER_FIELDS}
  return hashlib.sha256(json.dumps(sub, sort_keys=True).encode()).hexdigest()


def _output(workdir: str, config_dict: Mapping[str, Any], rel: str) -> str:
  """Where a job's last output lands: a population (`config.seeds`, as
  `distill.run.pipeline.member_seeds` reads it) writes member s in
  `seed_<s>/`."""
  seeds = list(config_dict.get('seeds') or [config_dict['seed']])
  if len(seeds) == 1:
    return os.path.join(workdir, rel)
  return os.path.join(workdir, f'seed_{seeds[-1]}', rel)


def plan(config_arg: str, sweep: Sweep, root: str, *,
         python: str = sys.executable) -> tuple[list[Job], list[Job]]:
  """The teacher jobs and the member jobs of a sweep.

  Validates every member's overrides (unknown fields, bad values, duplicate
  names) before anything runs.

  Args:
    config_arg: `path/to/config.py[:arg]`, as passed to every command.
    sweep: the sweep.
    root: the sweep directory.
    python: the interpreter in the command lines.

  Returns:
    `(teachers, members)`: one teacher job per distinct teacher config
    (named from the members' overrides of `TEACHER_FIELDS`), then the
    members, each with `--config.teacher_workdir` pointing at its teacher.
  """
  base = resolve_config(config_arg, [])
  if 'teacher_workdir' not in base:
    raise ValueError(f'--config={config_arg}: the config has no'
                     ' teacher_workdir field, so members cannot share'
                     ' teachers')
  run = [python, '-m', 'experiments.run', f'--config={config_arg}']
  stages = f'--config.stages={format_value(TEACHER_STAGES)}'
  teachers: dict[str, Job] = {}  # by teacher-config hash
  members, names = [], {}
  for i, overrides in enumerate(sweep.members):
    name = member_name(overrides)
    if name in names:
      raise ValueError(f'sweep members {names[name]} and {i} have the same'
                       f' name {name!r} ({overrides})')
    names[name] = i
    _check_fields(base, config_arg, overrides)
    flags_ = override_flags(overrides)
    try:
      config = config_json(resolve_config(config_arg, flags_))
    except (flags.Error, ValueError, TypeError, AttributeError) as e:
      raise ValueError(f'sweep member {name}: {e}') from e
    key = _teacher_hash(config)
    if key not in teachers:
      t_over = {k: v for k, v in overrides.items()
                if k.split('.')[0] in TEACHER_FIELDS}
      t_name = member_name(t_over)
      t_dir = os.path.join(root, 'teachers', t_name)
      t_flags = override_flags(t_over) + [stages]
      teachers[key] = Job(
          kind='teacher', name=t_name, workdir=t_dir,
          command=run + [f'--workdir={t_dir}', *t_flags],
          config=config_json(resolve_config(config_arg, t_flags)),
          overrides=t_over, seed=config['seed'],
          output=_output(t_dir, config, os.path.join('teachers',
                                                     'eval.json')))
    teacher = teachers[key]
    workdir = os.path.join(root, 'members', name)
    m_flags = flags_ + [f'--config.teacher_workdir={teacher.workdir}']
    members.append(Job(
        kind='member', name=name, workdir=workdir,
        command=run + [f'--workdir={workdir}', *m_flags],
        config=config_json(resolve_config(config_arg, m_flags)),
        overrides=dict(overrides), configuration=configuration_name(overrides),
        seed=config['seed'], teacher=teacher.name,
        output=os.path.join(workdir, 'results.json')))
  t_names = [t.name for t in teachers.values()]
  if len(set(t_names)) != len(t_names):
    raise ValueError(f'teacher jobs with the same name: {t_names}')
  return list(teachers.values()), members


def read_record(job: Job) -> dict[str, Any] | None:
  """The job's record.

  Args:
    job: the job.

  Returns:
    Its `sweep_job.json`, or None when there is none.
  """
  path = os.path.join(job.workdir, RECORD)
  if not os.path.exists(path):
    return None
  with open(path, encoding='utf-8') as f:
    return json.load(f)


def is_finished(job: Job) -> bool:
  """Whether the job's record says done for the same command and config.

  Args:
    job: the job.

  Returns:
    True when a rerun can skip it.
  """
  record = read_record(job)
  return bool(record and record.get('status') == 'done'
              and record.get('command') == job.command
              and _results_config(record.get('config'))
              == _results_config(job.config)
              and os.path.exists(job.output))


# Config fields that choose how a job runs, not what it computes (beyond
# float tolerance): a job done under another value is still done. The
# default of `teacher.vmap` became 'auto' after jobs recorded True.
HOW_FIELDS = (('teacher', 'vmap'),)


def _results_config(config: Any) -> Any:
  if not isinstance(config, dict):
    return config
  out = json.loads(json.dumps(config))
  for path in HOW_FIELDS:
    node = out
    for part in path[:-1]:
      node = node.get(part) if isinstance(node, dict) else None
    if isinstance(node, dict):
      node.pop(path[-1], None)
  return out


def run_job(job: Job, *, cwd: str,
            env_updates: Mapping[str, str | None] | None = None,
            ignore_dirty: Sequence[str] = ()) -> dict[str, Any]:
  """Runs a job's command; the function a sweep submits to its executor.

  Appends the command's stdout and stderr to `job.log`, and writes the
  job's record before (status 'running') and after ('done' or 'failed').
  Never raises for a failed command: the record says what happened.

  Args:
    job: the job.
    cwd: directory the command runs in (the config path is relative to it).
    env_updates: environment variables to set (None: unset) for the command.
    ignore_dirty: paths whose uncommitted changes are not code (the
      directory a sweep publishes into), for `provenance.code_state`.

  Returns:
    The final record: name, kind, command, config, status, returncode,
    error, log, wall_s, started, finished, host, and what ran: `code`
    (`provenance.code_state` of `cwd` when the job started: commit, dirty,
    dirty_files), `config_sha256` (`provenance.config_hash`) and
    `recipe_sha256` (`provenance.recipe_hash`: the same less this machine's
    paths).
  """
  os.makedirs(job.workdir, exist_ok=True)
  env = dict(os.environ)
  for k, v in (env_updates or {}).items():
    if v is None:
      env.pop(k, None)
    else:
      env[k] = v
  record = {'name': job.name, 'kind': job.kind, 'command': job.command,
            'config': job.config, 'status': 'running', 'returncode': None,
            'error': '', 'log': job.log, 'wall_s': None,
            'started': time.time(), 'finished': None,
            'host': os.uname().nodename, 'pid': os.getpid(),
            'code': provenance.code_state(cwd, ignore_dirty),
            'config_sha256': provenance.config_hash(job.config),
            'recipe_sha256': provenance.recipe_hash(job.config)}
  fileio.write_json(os.path.join(job.workdir, RECORD), record)
  start = time.time()
  with open(job.log, 'a', encoding='utf-8') as log:
    log.write(f'=== {time.strftime("%Y-%m-%d %H:%M:%S")}'
              f' {subprocess.list2cmdline(job.command)}\n')
    log.flush()
    try:
      rc = subprocess.run(job.command, cwd=cwd, env=env, stdout=log,
                          stderr=subprocess.STDOUT, check=False).returncode
      error = '' if rc == 0 else f'exit code {rc}'
    except OSError as e:
      rc, error = -1, f'could not start: {e}'
    if rc == 0 and not os.path.exists(job.output):
      error = f'exit code 0 but no {job.output}'
    log.write(f'=== {error or "exit code 0"}\n')
  record.update(status='failed' if error else 'done', returncode=rc,
                error=error, wall_s=time.time() - start,
                finished=time.time())
  fileio.write_json(os.path.join(job.workdir, RECORD), record)
  return record


# A published study's members, one JSON object a line (experiments/publish.py
# writes it): `name`, `configuration`, `overrides`, `record` (the job's
# command, its code's commit and state, its config's hash, status, wall
# time), `results` (its results.json) and `curves` (its distillation history
# in windows, when it has one).
MEMBERS = 'members.jsonl'


def published_members(root: str) -> dict[str, dict[str, Any]] | None:
  """A published study's members by name, or None where `root` has none.

  Args:
    root: a directory that `experiments.sweep --publish` wrote.

  Returns:
    `{name: member}` from `root/members.jsonl` in its order (see `MEMBERS`),
    or None when the file does not exist (a sweep's own directory, whose
    members have their own workdirs).
  """
  path = os.path.join(root, MEMBERS)
  if not os.path.exists(path):
    return None
  return {m['name']: m for m in fileio.read_jsonl(path)}


def collect_runs(root: str) -> tuple[dict[str, Any], list[dict[str, Any]],
                                     list[dict[str, Any]]]:
  """The finished members of a sweep directory, for `distill.report.aggregate`.

  Args:
    root: the sweep directory (with `sweep_state.json`), or a published
      study (with `members.jsonl`, whose members' results it reads).

  Returns:
    `(state, runs, missing)`: the sweep state; one run per member (per seed
    of a population member, `config.seeds`) whose status is done or skipped
    and whose `results.json` exists (`member`,
    `configuration`, `seed`, `tasks`, `student_params`, `teacher_params`,
    `wall_s`); the other members (`name`, `status`, `log`).
  """
  path = os.path.join(root, STATE)
  if not os.path.exists(path):
    raise FileNotFoundError(f'{path}: no sweep state; is {root} a sweep'
                            ' directory (python -m experiments.sweep)?')
  with open(path, encoding='utf-8') as f:
    state = json.load(f)
  published = published_members(root)
  runs, missing = [], []
  for job in state['jobs']:
    if job['kind'] != 'member':
      continue
    results = os.path.join(root, 'members', job['name'], 'results.json')
    if published is not None:
      r = published.get(job['name'], {}).get('results')
    else:
      r = fileio.read_json(results) if os.path.exists(results) else None
    # 'published': already in a --publish directory when the sweep began
    # (`experiments.sweep.mark_published`), with no results.json here.
    if job['status'] not in ('done', 'skipped', 'published') or r is None:
      missing.append({'name': job['name'], 'status': job['status'],
                      'log': job['log']})
      continue
    # A population (`config.seeds`) holds one single-seed record per seed.
    for m in r.get('members', [r]):
      runs.append({'member': job['name'],
                   'configuration': job['configuration'], 'seed': m['seed'],
                   'tasks': m['tasks'], 'student_params': m['student_params'],
                   'teacher_params': m.get('teacher_params'),
                   'wall_s': job.get('wall_s')})
  return state, runs, missing

r"""What a sweep costs: machine time per job from measured unit costs.

  python -m experiments.sweep --config=configs/study.py --workdir=DIR --print

prints each job's estimate and the sweep's. The unit costs below are data,
each measured on this project's 2-core CPU (Intel Xeon, AVX-512, no GPU)
with nothing else running, and scaled from the measured configuration to
another by its steps, model FLOPs, episodes and tasks:

  teacher update   161 s for 4 teachers x 1500 updates of 2 x 64, batch 64,
                   K=20 (the default run's `teachers` stage, 2026-11-30,
                   README "Default run"; compilation included)
  student update   73 s for 3000 updates of the 2 x 32 student, batch 64,
                   max_kl + previous (its `distill` stage, same run), less
                   8.6 s compilation (docs/scale.md: one member 8.4-8.8 s),
                   which a member pays once (`member_compile_s`)
  teacher env-step 15 s for 16 episodes x 4 tasks of at most 1000 steps
                   (its `teacher_eval` stage)
  student env-step 19 s for 16 episodes x 4 tasks x 2 checkpoints (last
                   and best; its `student_eval` stage)
  per job          7 s report + 2.5 s reading the cached datasets + 1 s
                   process start (the run's 311 s less its stages' 310 s;
                   the study's records: `datasets` 2.5 s)
  --parallel=2     a member took 2 min 18 s - 2 min 50 s beside another with
                   the sweep's compilation cache (configs/study.py), about
                   77 s of the machine against 102 s alone: 0.75 of it

An evaluation env-step is counted as if every episode ran to
`eval.max_episode_steps` (hopper and walker2d episodes end earlier; the
measured stages hold that). Another model size scales an update by its
FLOPs to the power 0.76, the exponent that joins the 2 x 64 and 3 x 128
teacher steps measured side by side (31.8 and 115.8 ms for 2.44 and 13.35
GFLOP by XLA's count, docs/performance.md, third pass): small models on
this CPU pay per-operation costs that FLOPs do not count. A distillation
update is the student's own part (scaled so) plus the teachers' part (per
teacher; none from scratch, `student_teacher_share`). Otherwise a
curriculum or surgery costs the same per update (their differences, under
20%, were within the noise, README "Benchmarks").

Machine time: the seconds of this whole machine a job takes, so a sweep's
total is its wall time when its slots are kept full; a job's own wall time
with `--parallel=p` is about p times its machine time.
"""

from collections.abc import Mapping
import math
from typing import Any

# Unit costs, measured 2026-11-30 on the 2-core CPU (see the docstring).
UNITS = {
    # Seconds per update of one teacher of the reference shape.
    'teacher_update_s': 161.0 / (4 * 1500),
    'teacher_ref': dict(num_layers=2, width=64, batch_size=64,
                        context_len=20),
    # Seconds per update of the reference student (all tasks).
    'student_update_s': (73.0 - 8.6) / 3000,
    'member_compile_s': 8.6,
    'student_ref': dict(num_layers=2, width=32, batch_size=64,
                        context_len=20, teachers=4),
    # Share of the reference student update spent on the teachers: fitted
    # so that a from-scratch member costs 0.67 of a distilled one, the
    # ratio of the study's recorded member times (medians per
    # configuration: 2 x 32 184 / 280 s, 2 x 16 136 / 204 s, 1 x 16
    # 88 / 127 s; the records in docs/study/members.jsonl).
    'student_teacher_share': 0.52,
    # Seconds per evaluation env-step (episodes counted at full length).
    'teacher_env_step_s': 15.0 / (16 * 4 * 1000),
    'student_env_step_s': 19.0 / (16 * 4 * 2 * 1000),
    # Seconds every job pays besides its stages.
    'job_overhead_s': 7.0 + 2.5 + 1.0,
    # Update time ~ FLOPs ** exponent (fitted, see the docstring).
    'flop_exponent': math.log(115.8 / 31.8) / math.log(13.35 / 2.44),
    # Machine share of a job with p jobs at once (2 cores: no gain past 2).
    'parallel_share': {1: 1.0, 2: 0.75},
}


def _get(config: Mapping[str, Any], dotted: str, default: Any = None) -> Any:
  node = config
  for part in dotted.split('.'):
    if not isinstance(node, Mapping) or part not in node:
      return default
    node = node[part]
  return node


def train_flops(num_layers: int, width: int, batch_size: int,
                context_len: int, *, backward: bool = True) -> float:
  """Matmul FLOPs of one update of a Decision Transformer (approximate).

  Three tokens per timestep; per layer 12 W^2 weights (attention 4 W^2, MLP
  8 W^2) and the attention scores; forward 2 FLOPs per weight and token,
  backward twice that.

  Args:
    num_layers: L.
    width: W.
    batch_size: segments per update.
    context_len: K.
    backward: count the backward pass (False: a forward pass only).

  Returns:
    FLOPs (a float; only ratios are used).
  """
  tokens = 3 * context_len
  per_token = num_layers * (12 * width * width + 2 * tokens * width)
  return (6 if backward else 2) * batch_size * tokens * per_token


def _scale(config: Mapping[str, Any], role: str) -> float:
  """An update of `role`'s model ('teacher', 'student') against its
  reference (`UNITS[role + '_ref']`): the FLOP ratio to `flop_exponent`."""
  ref = UNITS[f'{role}_ref']
  model = _get(config, f'{role}.model', {})
  flops = train_flops(model.get('num_layers', ref['num_layers']),
                      model.get('width', ref['width']),
                      _get(config, f'{role}.batch_size', ref['batch_size']),
                      _get(config, 'data.context_len', ref['context_len']))
  ref_flops = train_flops(ref['num_layers'], ref['width'], ref['batch_size'],
                          ref['context_len'])
  return (flops / ref_flops) ** UNITS['flop_exponent']


def parallel_share(parallel: int) -> float:
  """The machine share of one job when `parallel` run at once."""
  shares = UNITS['parallel_share']
  return shares[min(max(parallel, 1), max(shares))]


def teacher_job_s(config: Mapping[str, Any]) -> float:
  """Machine seconds of a sweep's teacher job, run alone.

  Args:
    config: the job's config as JSON values (`sweeps.config_json`).

  Returns:
    Train every task's teacher for `teacher.steps`, evaluate each
    (`eval.episodes`), plus the per-job overhead.
  """
  tasks = len(config['tasks'])
  seeds = len(config.get('seeds') or [config['seed']])
  update = UNITS['teacher_update_s'] * _scale(config, 'teacher')
  train = tasks * seeds * _get(config, 'teacher.steps', 0) * update
  env_steps = (tasks * seeds * _get(config, 'eval.episodes', 0)
               * _get(config, 'eval.max_episode_steps', 1000))
  return (UNITS['job_overhead_s'] + train
          + env_steps * UNITS['teacher_env_step_s'])


def member_s(config: Mapping[str, Any]) -> float:
  """Machine seconds of a sweep's member (teachers already trained), alone.

  Args:
    config: the member's config as JSON values.

  Returns:
    Distil for `student.steps`, evaluate the last and best checkpoints
    (`eval.episodes` per task), plus the per-job overhead.
  """
  ref = UNITS['student_ref']
  tasks = len(config['tasks'])
  seeds = len(config.get('seeds') or [config['seed']])
  # The teachers' part (their forward passes, the curriculum's probes) per
  # teacher; none when the student is trained from scratch.
  teachers = (0.0 if _get(config, 'curriculum.name') == 'scratch'
              else UNITS['student_teacher_share'] * tasks / ref['teachers'])
  own = (1 - UNITS['student_teacher_share']) * _scale(config, 'student')
  update = UNITS['student_update_s'] * (teachers + own)
  train = seeds * _get(config, 'student.steps', 0) * update
  env_steps = (2 * tasks * seeds * _get(config, 'eval.episodes', 0)
               * _get(config, 'eval.max_episode_steps', 1000))
  return (UNITS['job_overhead_s'] + UNITS['member_compile_s'] + train
          + env_steps * UNITS['student_env_step_s'])


def sweep_estimate(teachers: list[Any], members: list[Any], parallel: int
                   ) -> dict[str, Any]:
  """Each job's and the whole sweep's estimated machine time.

  Teachers are trained once per teacher job (one per distinct teacher
  config and seed) and shared by that job's members.

  Args:
    teachers: the sweep's teacher jobs (`sweeps.Job`, from `sweeps.plan`).
    members: its member jobs.
    parallel: jobs at once (`--parallel`).

  Returns:
    `{'parallel', 'share', 'jobs': [{'kind', 'name', 'machine_s',
    'wall_s'}], 'teachers_s', 'members_s', 'total_s'}`: machine seconds
    (alone times the share), a job's wall seconds beside the others
    (`machine_s * min(parallel, jobs)`), and the sums.
  """
  share = parallel_share(parallel)
  slots = max(1, min(parallel, len(teachers) + len(members)))
  jobs = []
  for kind, group, fn in (('teacher', teachers, teacher_job_s),
                          ('member', members, member_s)):
    for job in group:
      machine = fn(job.config) * share
      jobs.append({'kind': kind, 'name': job.name, 'machine_s': machine,
                   'wall_s': machine * slots})
  total = lambda kind: sum(j['machine_s'] for j in jobs if j['kind'] == kind)
  return {'parallel': parallel, 'share': share, 'jobs': jobs,
          'teachers_s': total('teacher'), 'members_s': total('member'),
          'total_s': total('teacher') + total('member')}


def _fmt_s(seconds: float) -> str:
  seconds = int(round(seconds))
  if seconds >= 3600:
    return f'{seconds // 3600}h{seconds % 3600 // 60:02d}m'
  return f'{seconds // 60}m{seconds % 60:02d}s'


def format_estimate(estimate: dict[str, Any]) -> list[str]:
  """`sweep_estimate`'s figures as shell comment lines.

  Args:
    estimate: from `sweep_estimate`.

  Returns:
    A header line, one line per job, and the totals.
  """
  lines = [f'# estimated machine time (distill/run/cost.py: unit costs measured'
           f' on the 2-core CPU), --parallel={estimate["parallel"]} (each'
           f' job {estimate["share"]:.2f} of its time alone):']
  for job in estimate['jobs']:
    lines.append(f'#   {job["kind"]} {job["name"]}:'
                 f' {_fmt_s(job["machine_s"])} (its wall time'
                 f' ~{_fmt_s(job["wall_s"])})')
  lines.append(f'# total: teachers {_fmt_s(estimate["teachers_s"])}, members'
               f' {_fmt_s(estimate["members_s"])}, sweep'
               f' {_fmt_s(estimate["total_s"])}')
  return lines

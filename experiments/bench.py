r"""The benchmarks: speed of this code on this machine, as JSON lines.

  python -m experiments.bench
  python -m experiments.bench --only=train,latency --repeats=7
  python -m experiments.bench --only=teacher --teacher_batch=64,4096 \
      --precision=default,highest
  python -m experiments.bench \
      --reference_cmd='/venv/bin/python ref_dt.py 3x128'
  python -m experiments.bench --only=scale,distill \
      --config=configs/mt_distill.py:paper
  python -m experiments.bench --only=data --data_transitions=200000
  python -m experiments.bench --only=mt10_eval
  python -m experiments.bench --only=checksums --checksums_workdir=/tmp/b \
      --config=configs/mt_distill.py:smoke

Every line is one JSON object, `{"figure": what it measures, "device":
"<platform>:<device kind> x<count>", ...}`, its values named with their
units (`ms_per_step`, `gflops`, `env_steps_per_s`, `segments_per_s`);
every ratio (`ratio`, `speedup`, against the `baseline` a line names) is
against a baseline measured in the same run, and timed variants take turns
(best of `--repeats`) so that load from other processes hits them alike.
The first and last lines are `matmul` and `matmul_end` (dense f32 2048^3
GFLOP/s: the machine's drift over the run).

`--only` picks sections (default: train, fusion, eval, latency):

  train      `teacher_step` (paper-size teacher 3 x 128, 1 head, K=20,
             batch 64, AdamW, dropout 0.1, and the default 2 x 64; one row
             per --teacher_sizes, --teacher_batch and --precision, with
             MFU where the peak is known; with --reference_cmd, an external
             implementation's step interleaved and the ratio) and
             `student_step` (the default distillation step, fused
             dispatches of --student_steps); `teacher`: the teacher rows
             alone (experiments/benches/train.py)
  fusion     `fusion` (1 vs 10 updates per dispatch) and `vmap` (four
             teachers of --vmap_size vmapped vs one by one,
             `teacher.vmap`); `vmap`: that alone
  eval       `eval_teacher`, `eval_student`: vector environments vs one
             environment at a time (experiments/benches/rollouts.py)
  latency    `latency`: batch-1 action latency of the teachers, the student
             and the exported student (experiments/benches/latency.py)
  scale      `population` (a population in one program vs its members one
             after another) and `devices` (the step on forced CPU devices)
             (experiments/benches/scale.py)
  distill    `distill_step`: every curriculum / surgery variant against a
             plain single-teacher step (benches/distill_variants.py)
  data       `sampler`: jitted segment sampling against a train step's
             need (experiments/benches/data.py)
  mt10_eval  `mt10_eval`: all ten Meta-World MT10 tasks in one vectorised
             loop vs one environment at a time (benches/rollouts.py)
  checksums  `checksums`: SHA-256 and guard time of a whole
             `experiments.run` with --config in --workdir
             (experiments/benches/checksums.py)

`--config` (the experiment config, with `--config.*` overrides) sizes the
scale, distill and checksums sections.
"""

import os
import sys

from absl import app
from absl import flags
from ml_collections import config_flags

from experiments.benches import checksums
from experiments.benches import common
from experiments.benches import data
from experiments.benches import distill_variants
from experiments.benches import latency
from experiments.benches import rollouts
from experiments.benches import scale
from experiments.benches import train

SECTIONS = ('train', 'teacher', 'fusion', 'vmap', 'eval', 'latency', 'scale',
            'distill', 'data', 'mt10_eval', 'checksums')
DEFAULT_SECTIONS = ('train', 'fusion', 'eval', 'latency')

_ONLY = flags.DEFINE_list(
    'only', [], f'Sections to run, of {", ".join(SECTIONS)}; default '
    f'{", ".join(DEFAULT_SECTIONS)}.')
_REPEATS = flags.DEFINE_integer('repeats', 5, 'Timed repeats (best kept).')
_EVAL_STEPS = flags.DEFINE_integer(
    'eval_steps', 200, 'eval: steps per evaluation episode.')
_EVAL_ENVS = flags.DEFINE_integer('eval_envs', 16,
                                  'eval: vector envs per task.')
_EVAL_ROUNDS = flags.DEFINE_integer(
    'eval_rounds', 3, 'eval: rounds, vector and one-env taking turns.')
_STUDENT_STEPS = flags.DEFINE_integer(
    'student_steps', 10, 'train: distillation steps per timed dispatch.')
_TEACHER_SIZES = flags.DEFINE_list(
    'teacher_sizes', ['3x128', '2x64'],
    'train: teacher steps timed, as LAYERSxWIDTH.')
_VMAP_SIZE = flags.DEFINE_string(
    'vmap_size', '2x64', 'vmap: the four teachers\' size, as LAYERSxWIDTH'
    ' (the default run\'s teachers).')
_TEACHER_BATCH = flags.DEFINE_list(
    'teacher_batch', ['64'], 'train: batch sizes of the timed teacher steps.')
_PRECISION = flags.DEFINE_list(
    'precision', ['default'], "train: matmul precisions of the teacher steps "
    "(jax.default_matmul_precision): 'default' (TF32 tensor cores on GPUs "
    "of compute capability >= 8), 'highest' (full FP32).")
_PEAK = flags.DEFINE_float(
    'peak_tflops', None, 'train: dense peak TFLOP/s of the device for MFU; '
    'default: known GPUs at the step\'s arithmetic, none on CPU.')
_REFERENCE = flags.DEFINE_string(
    'reference_cmd', None, 'train: shell command of a reference train-step'
    ' server (paper size), timed interleaved with ours.')
_CONFIG = config_flags.DEFINE_config_file(
    'config', 'configs/mt_distill.py',
    'scale, distill, checksums: the experiment config.', lock_config=False)
_SCALE_STEPS = flags.DEFINE_integer('scale_steps', 200,
                                    'scale: distillation steps per member.')
_SCALE_MEMBERS = flags.DEFINE_integer('scale_members', 4,
                                      'scale: population size.')
_SCALE_DEVICES = flags.DEFINE_list(
    'scale_devices', ['1', '2', '4'],
    'scale: forced CPU device counts of the `devices` lines (empty: none).')
_SCALE_POP_DEVICES = flags.DEFINE_integer(
    'scale_population_devices', os.cpu_count() or 1,
    'scale: forced CPU devices of the sharded population line (one per core;'
    ' 1 or less: not measured).')
_SCALE_CHILD = flags.DEFINE_integer(
    'scale_child_devices', 0, 'Internal: the `devices` line here.')
_SCALE_CHILD_POP = flags.DEFINE_integer(
    'scale_child_population_devices', 0,
    'Internal: the population split over this many devices here.')
_DISTILL_STEPS = flags.DEFINE_integer(
    'distill_steps', 50, 'distill: steps per timed dispatch.')
_DISTILL_TRANSITIONS = flags.DEFINE_integer(
    'distill_transitions', 20_000, 'distill: synthetic transitions per task.')
_DATA_TRANSITIONS = flags.DEFINE_integer(
    'data_transitions', 1_000_000, 'data: transitions in each source.')
_DATA_BATCH = flags.DEFINE_integer('data_batch_size', 64,
                                   'data: segments per batch.')
_DATA_CONTEXT = flags.DEFINE_integer('data_context_len', 20, 'data: K.')
_DATA_SECONDS = flags.DEFINE_float('data_seconds', 3.0,
                                   'data: timing duration per case.')
_DATA_STEP_SECONDS = flags.DEFINE_float(
    'data_train_step_seconds', 0.2,
    'data: time of one train step that the sampler feeds.')
_MT10_STEPS = flags.DEFINE_integer('mt10_steps', 100,
                                   'mt10_eval: steps per episode.')
_MT10_ENVS = flags.DEFINE_integer('mt10_envs', 8,
                                  'mt10_eval: vector envs per task.')
_MT10_ROUNDS = flags.DEFINE_integer(
    'mt10_rounds', 2, 'mt10_eval: rounds, vector and one-env taking turns.')
_WORKDIR = flags.DEFINE_string(
    'checksums_workdir', None, 'checksums: the run\'s workdir (default: a new'
    ' temporary directory).')


def _config_args(argv):
  """The `--config...` arguments of the command line (for child runs).

  Read from `argv` as the user typed it (`sys.argv`), not from the
  arguments absl leaves to `main`: absl consumes `--config` and every
  `--config.x` override as flags, so the child would otherwise run the
  default config.
  """
  return [a for a in argv[1:] if a.startswith('--config')]


def main(argv):
  only = set(_ONLY.value) or set(DEFAULT_SECTIONS)
  unknown = sorted(only - set(SECTIONS))
  if unknown:
    raise app.UsageError(f'bench: unknown sections {unknown}; known:'
                         f' {", ".join(SECTIONS)}')
  config = _CONFIG.value
  if _SCALE_CHILD.value:
    scale.bench_devices(config, _SCALE_STEPS.value)
    return
  if _SCALE_CHILD_POP.value:
    scale.bench_population(config, _SCALE_STEPS.value, _SCALE_MEMBERS.value,
                           shards=_SCALE_CHILD_POP.value)
    return
  repeats = _REPEATS.value
  gflops = train.bench_matmul(repeats)
  common.emit('matmul', n=2048, gflops=round(gflops, 1))
  if only & {'train', 'teacher'}:
    train.bench_teacher_steps(
        repeats, gflops, _REFERENCE.value,
        [tuple(int(x) for x in s.split('x')) for s in _TEACHER_SIZES.value],
        [int(b) for b in _TEACHER_BATCH.value], _PRECISION.value,
        peak=_PEAK.value)
  if 'train' in only:
    train.bench_student_step(repeats, _STUDENT_STEPS.value)
  if 'fusion' in only:
    train.bench_fusion(repeats)
  if only & {'fusion', 'vmap'}:
    train.bench_vmap(repeats,
                     *(int(x) for x in _VMAP_SIZE.value.split('x')))
  if 'latency' in only:
    latency.bench_latency()
  if 'eval' in only:
    rollouts.bench_eval(_EVAL_STEPS.value, _EVAL_ENVS.value,
                        _EVAL_ROUNDS.value)
  if 'mt10_eval' in only:
    rollouts.bench_mt10_eval(_MT10_STEPS.value, _MT10_ENVS.value,
                             _MT10_ROUNDS.value)
  if 'scale' in only:
    scale.bench_scale(config, _SCALE_STEPS.value, _SCALE_MEMBERS.value,
                      [int(x) for x in _SCALE_DEVICES.value if x.strip()],
                      _SCALE_POP_DEVICES.value, _config_args(sys.argv))
  if 'distill' in only:
    distill_variants.bench_distill(config, _DISTILL_STEPS.value, repeats,
                                   _DISTILL_TRANSITIONS.value)
  if 'data' in only:
    data.bench_data(_DATA_TRANSITIONS.value, _DATA_BATCH.value,
                    _DATA_CONTEXT.value, _DATA_SECONDS.value,
                    _DATA_STEP_SECONDS.value)
  if 'checksums' in only:
    checksums.bench_checksums(_WORKDIR.value, _config_args(sys.argv))
  common.emit('matmul_end', n=2048,
              gflops=round(train.bench_matmul(repeats), 1))


if __name__ == '__main__':
  app.run(main)

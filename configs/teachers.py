r"""Decision Transformer teachers, one per task, trained and evaluated.

  python -m experiments.run --config=configs/teachers.py --workdir=runs/teachers
  python -m experiments.run --config=configs/teachers.py:paper --workdir=runs/paper
  python -m experiments.run --config=configs/teachers.py:smoke --workdir=/tmp/smoke

Writes `<workdir>/datasets.json`, `<workdir>/teachers/<task>/` (orbax
checkpoints with everything needed to evaluate the teacher alone),
`<workdir>/teachers/eval.json`, `<workdir>/metrics.jsonl` and TensorBoard
events in `<workdir>/tensorboard/`.

Variants (`:arg`): '' (CPU default: 2 layers x 64, ~7 minutes on 2 cores),
'paper' (Chen et al. 2021 sizes and optimizer, 100k steps), 'smoke' (tiny,
two tasks, well under a minute once the datasets exist).

Per-task values are keyed by the task name with '-' replaced by '_':

  --config.eval.target_return.halfcheetah_forward=5000
  "--config.tasks=('hopper','walker2d')"
  --config.teacher.steps=5000 --config.teacher.vmap=False

Populations: `"--config.seeds=(0,1,2)"` trains three members (own teachers,
own student) in one compiled program; member `s` writes what a single run
with `--config.seed=s` writes, in `<workdir>/seed_<s>/`.

Raising `teacher.steps` on an existing workdir continues training from the
checkpoints; changing any other teacher, data, task or seed field retrains
(the old `teachers/` directory is moved aside).
"""

import ml_collections

TASKS = ('halfcheetah-forward', 'halfcheetah-backward', 'hopper', 'walker2d')


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the teacher config; `arg` is None/'', 'paper' or 'smoke'."""
  config = ml_collections.ConfigDict()
  # The members of the run: one seed trains one run; several train a
  # population in one compiled program (`"--config.seeds=(0,1,2)"`), each
  # member with its own teachers and student, in `<workdir>/seed_<s>/`.
  # `--config.seed=s` alone is the same as `--config.seeds=(s,)`.
  config.seed = 0
  config.seeds = (0,)
  # Devices: `population` devices on the mesh's 'population' axis (0: as
  # many as divide both the members and the devices), the rest on 'data'.
  # `members`: how a population's members share one program: 'vmap'
  # (batched), 'map' (in turn on each device) or 'auto' ('map' on CPU,
  # 'vmap' on accelerators; docs/scale.md has the measurements).
  config.mesh = ml_collections.ConfigDict(dict(population=0, members='auto'))
  config.stages = ('datasets', 'teachers', 'teacher_eval')
  config.tasks = TASKS
  # Another workdir whose teachers (and their evaluation) this run uses and
  # trains there if missing; '' is this workdir. Sweeps share teachers so.
  config.teacher_workdir = ''
  # Stop at the operation that makes a NaN (jax_debug_nans; slow): for
  # localising a "non-finite loss" error.
  config.debug_nans = False

  config.data = ml_collections.ConfigDict()
  config.data.spec = 'suite:{task}-{quality}'
  config.data.quality = 'medium'
  config.data.context_len = 20
  config.data.rtg_scale = 1000.0
  config.data.max_timestep = 1000
  config.data.clip_actions = False
  # Transitions per generated suite dataset (None: the suite's default,
  # 100k; `distill.envs.suite`).
  config.data.suite_transitions = ml_collections.FieldReference(
      None, field_type=int)

  config.teacher = ml_collections.ConfigDict()
  config.teacher.model = ml_collections.ConfigDict(dict(
      num_layers=2, width=64, num_heads=1, dropout=0.1,
      head='tanh_gaussian',  # or 'deterministic' (MSE, the original DT)
      log_std_min=-5.0, log_std_max=2.0))
  # Loss = NLL - alpha * entropy; alpha learned towards entropy -act_dim
  # (Online DT) when `learn`, else fixed at `alpha`.
  config.teacher.entropy = ml_collections.ConfigDict(dict(
      alpha=0.1, learn=True, lr=1e-4))
  config.teacher.optimizer = ml_collections.ConfigDict(dict(
      lr=1e-3, weight_decay=1e-4, warmup_steps=200, grad_clip=0.25,
      b1=0.9, b2=0.999))
  # 1500 steps: ~6 min for the four teachers on 2 quiet cores, and they
  # match their datasets' normalized scores (measured 2026-11-25).
  config.teacher.steps = 1500
  config.teacher.batch_size = 64
  # Updates fused in one lax.scan (1.2-1.3x faster than 1 on CPU).
  config.teacher.steps_per_dispatch = 10
  config.teacher.log_every = 100
  config.teacher.ckpt_every = 500
  config.teacher.keep = 2
  # True: all teachers vmapped in one compiled step; False: one by one;
  # 'auto': one by one on CPU (faster there: 0.88-0.95x vmapped, 2 cores,
  # docs/performance.md), vmapped on GPUs and TPUs (`parallel.teacher_vmap`).
  # An object field so that the command line's True/False stay booleans.
  config.teacher.vmap = ml_collections.FieldReference('auto',
                                                      field_type=object)

  config.eval = ml_collections.ConfigDict()
  config.eval.episodes = 16
  config.eval.num_envs = 16
  config.eval.seed = 10_000
  config.eval.deterministic = True  # tanh(mean); False samples
  config.eval.max_episode_steps = 1000
  # Raw returns the teachers are conditioned on (the DT paper's values for
  # the D4RL bodies; the backward cheetah reuses the forward one).
  config.eval.target_return = ml_collections.ConfigDict(dict(
      halfcheetah_forward=6000.0,
      halfcheetah_backward=6000.0,
      hopper=3600.0,
      walker2d=5000.0))

  if arg in (None, ''):
    pass
  elif arg == 'paper':
    config.teacher.model.num_layers = 3
    config.teacher.model.width = 128
    config.teacher.model.num_heads = 1
    config.teacher.model.dropout = 0.1
    config.data.context_len = 20
    config.teacher.batch_size = 64
    config.teacher.optimizer.lr = 1e-4
    config.teacher.optimizer.weight_decay = 1e-4
    config.teacher.optimizer.warmup_steps = 10_000
    config.teacher.optimizer.grad_clip = 0.25
    config.teacher.steps = 100_000
    config.teacher.log_every = 1000
    config.teacher.ckpt_every = 10_000
    config.eval.episodes = 32
  elif arg == 'smoke':
    config.tasks = ('hopper', 'walker2d')
    config.data.context_len = 5
    # Generating the suite's default 100k transitions per task takes about
    # 100 s here; the smoke run's 20 steps need far fewer.
    config.data.suite_transitions = 5000
    config.teacher.model.num_layers = 1
    config.teacher.model.width = 16
    config.teacher.batch_size = 8
    config.teacher.steps = 20
    config.teacher.steps_per_dispatch = 5
    config.teacher.log_every = 10
    config.teacher.ckpt_every = 10
    config.teacher.optimizer.warmup_steps = 5
    config.eval.episodes = 2
    config.eval.num_envs = 2
    config.eval.max_episode_steps = 20
  else:
    raise ValueError(f'configs/teachers.py: unknown config arg {arg!r};'
                     " valid: '', 'paper', 'smoke'")
  return config

r"""Behavior policies of the embedded suite: SAC per task, snapshots by stage.

  python -m experiments.collect --config=configs/collect.py --workdir=/tmp/sac
  python -m experiments.collect --config=configs/collect.py:evaluate

The first trains one SAC agent per task and writes actor snapshots
`<workdir>/snapshots/<task>-{early,middle,final}.{msgpack,json}` when the
deterministic evaluation return first reaches the stage's target (raw return;
the comment gives the normalized score). Copy them into
`distill/envs/snapshots/` to ship them. The second evaluates the shipped
snapshots (10 episodes each) and writes `distill/envs/SNAPSHOTS.md`.
"""

import ml_collections

TASKS = ("halfcheetah-forward", "halfcheetah-backward", "hopper", "walker2d")


def get_config(arg: str | None = None) -> ml_collections.ConfigDict:
  """Returns the collection config; `arg` is None/'train' or 'evaluate'."""
  config = ml_collections.ConfigDict()
  config.mode = "train"
  config.tasks = TASKS
  # SAC seed per task: the seeds of the shipped snapshots (a run that missed
  # its targets was repeated with the next seed).
  config.seeds = ml_collections.ConfigDict(dict(
      halfcheetah_forward=0,
      halfcheetah_backward=1000,
      hopper=2001,
      walker2d=3002,
  ))

  config.sac = ml_collections.ConfigDict()
  config.sac.hidden = (256, 256)
  config.sac.lr = 3e-4
  config.sac.gamma = 0.99
  config.sac.tau = 0.005
  config.sac.batch_size = 128  # 256 is standard; 128 halves the CPU cost
  config.sac.init_alpha = 1.0
  config.sac.warmup_steps = 5000  # uniform-random actions, no updates
  config.sac.chunk = 50  # env steps, then as many updates, per dispatch
  config.sac.max_env_steps = 500_000  # per task cap
  config.sac.replay_capacity = 500_000  # multiple of chunk

  config.eval = ml_collections.ConfigDict()
  config.eval.every = 5_000  # env steps
  config.eval.episodes = 5  # deterministic (tanh of the mean)

  # Raw-return targets per stage. Normalized (D4RL refs) in the comments;
  # halfcheetah-backward reuses the forward targets (same body, same scale).
  config.targets = ml_collections.ConfigDict()
  config.targets.early = ml_collections.ConfigDict(dict(
      halfcheetah_forward=1600.0,  # ~15
      halfcheetah_backward=1600.0,
      hopper=500.0,  # ~16
      walker2d=700.0,  # ~15
  ))
  config.targets.middle = ml_collections.ConfigDict(dict(
      halfcheetah_forward=3000.0,  # ~26
      halfcheetah_backward=3000.0,
      hopper=900.0,  # ~28
      walker2d=1300.0,  # ~28
  ))
  config.targets.final = ml_collections.ConfigDict(dict(
      halfcheetah_forward=5000.0,  # ~42
      halfcheetah_backward=5000.0,
      hopper=1550.0,  # ~48
      walker2d=2000.0,  # ~44
  ))

  # Evaluation of shipped snapshots (mode 'evaluate').
  config.evaluate = ml_collections.ConfigDict()
  config.evaluate.snapshot_dir = ""  # "" = the package's distill/envs/snapshots
  config.evaluate.episodes = 10
  config.evaluate.seed = 12345
  config.evaluate.random_episodes = 10  # uniform-random reference returns
  config.evaluate.output = ""  # "" = distill/envs/SNAPSHOTS.md

  if arg in (None, "", "train"):
    pass
  elif arg == "evaluate":
    config.mode = "evaluate"
  elif arg == "smoke":
    config.tasks = ("hopper",)
    config.sac.hidden = (64, 64)
    config.sac.batch_size = 64
    config.sac.warmup_steps = 500
    config.sac.max_env_steps = 2000
    config.sac.replay_capacity = 2000
    config.eval.every = 1000
    config.eval.episodes = 1
  else:
    raise ValueError(
        f"configs/collect.py: unknown config arg {arg!r}; valid: train,"
        " evaluate, smoke"
    )
  return config

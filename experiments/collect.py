r"""Trains the suite's SAC behavior policies, or evaluates the shipped ones.

  python -m experiments.collect --config=configs/collect.py --workdir=/tmp/sac
  python -m experiments.collect --config=configs/collect.py:evaluate
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging
import jax
import jax.numpy as jnp
from ml_collections import config_flags
import numpy as np

from distill.envs import rollout
from distill.envs import sac
from distill.envs import suite
from distill.envs import tasks as tasks_lib
from distill.io import fileio

_CONFIG = config_flags.DEFINE_config_file(
    "config", "configs/collect.py", "Collection config.", lock_config=True
)
_WORKDIR = flags.DEFINE_string(
    "workdir", None, "Output directory of training (snapshots/, metrics)."
)

STAGES = ("early", "middle", "final")


def evaluate(task_name, policy_fn, params, *, episodes, seed,
             deterministic=True):
  """Runs one episode in each of `episodes` vector sub-envs.

  Args:
    task_name: suite task.
    policy_fn: jitted `policy(params, obs, key, deterministic)`.
    params: actor params.
    episodes: number of episodes (= sub-environments).
    seed: environment and policy seed.
    deterministic: tanh(mean) actions when True.

  Returns:
    Episode returns [episodes] float64, in sub-environment order.
  """
  key = jax.random.key(seed)

  def policy(step, obs, reward, first):
    del reward, first  # Memoryless.
    return np.asarray(policy_fn(params, obs, jax.random.fold_in(key, step),
                                deterministic))

  return _one_episode_each(task_name, policy, episodes=episodes, seed=seed)


def _one_episode_each(task_name, policy, *, episodes, seed) -> np.ndarray:
  """Returns of one episode per sub-environment, in sub-environment order."""
  env = tasks_lib.make_vector_env(task_name, episodes, seed)
  try:
    # No reset seed: the episodes continue the streams make_vector_env seeded.
    out = rollout.run(env, policy, episodes=episodes)
  finally:
    env.close()
  return out.returns[np.argsort(out.env_index)]


def train_task(config, task_name: str, workdir: str) -> dict:
  """Trains SAC on one task; saves stage snapshots; returns a summary."""
  task = tasks_lib.get_task(task_name)
  tkey = task_name.replace("-", "_")
  targets = {s: float(config.targets[s][tkey]) for s in STAGES}
  sc = config.sac
  cfg = sac.SACConfig(
      obs_dim=task.obs_dim, act_dim=task.act_dim, hidden=tuple(sc.hidden),
      lr=sc.lr, gamma=sc.gamma, tau=sc.tau, batch_size=sc.batch_size,
      init_alpha=sc.init_alpha)
  if sc.replay_capacity % sc.chunk:
    raise ValueError("configs/collect.py: sac.replay_capacity must be a"
                     " multiple of sac.chunk")
  seed = int(config.seeds[tkey])
  key = jax.random.key(seed)
  state = sac.init_state(cfg, key)
  replay = sac.make_replay(sc.replay_capacity, task.obs_dim, task.act_dim)
  train_chunk = jax.jit(sac.make_train_chunk(cfg, sc.chunk),
                        donate_argnums=(0, 1))
  fill_chunk = jax.jit(sac.make_train_chunk(cfg, 0), donate_argnums=(0, 1))
  policy = sac.make_policy(task.act_dim, sc.hidden)
  policy_fn = jax.jit(policy, static_argnames="deterministic")

  @jax.jit
  def act_fn(params, obs_S, t):
    k = jax.random.fold_in(jax.random.fold_in(key, 7), t)
    return policy(params, obs_S[None], k, False)[0]

  env = tasks_lib.make_env(task_name)
  obs, _ = env.reset(seed=seed)
  env.action_space.seed(seed)
  rng = np.random.default_rng(seed)
  snap_dir = os.path.join(workdir, "snapshots")
  os.makedirs(snap_dir, exist_ok=True)
  log_path = os.path.join(workdir, f"{task_name}.jsonl")
  saved = {}
  best = (-np.inf, None, 0)
  prev_eval = None  # (return, params, step) of the previous evaluation
  ep_ret, ep_rets = 0.0, []
  t0 = time.time()
  metrics = {}
  buf = {k: [] for k in ("o", "a", "r", "n", "d")}

  def snapshot(stage, params, step, ret):
    info = dict(task=task_name, stage=stage, obs_dim=task.obs_dim,
                act_dim=task.act_dim, hidden=list(sc.hidden),
                env_steps=int(step), eval_return=float(ret),
                eval_episodes=int(config.eval.episodes),
                target_return=targets[stage], seed=seed,
                train_seconds=round(time.time() - t0, 1))
    sac.save_snapshot(os.path.join(snap_dir, f"{task_name}-{stage}"),
                      params, info)
    saved[stage] = info
    logging.info("%s: saved %s at step %d (eval return %.1f)", task_name,
                 stage, step, ret)
    print(f"[{task_name}] SAVED {stage} step={step} return={ret:.1f}",
          flush=True)

  step = 0
  while step < sc.max_env_steps:
    for _ in range(sc.chunk):
      if step < sc.warmup_steps:
        a = rng.uniform(-1.0, 1.0, task.act_dim).astype(np.float32)
      else:
        a = np.asarray(act_fn(state.actor_params, jnp.asarray(obs, jnp.float32),
                              step))
      nobs, r, term, trunc, _ = env.step(a)
      buf["o"].append(obs)
      buf["a"].append(a)
      buf["r"].append(r)
      buf["n"].append(nobs)
      buf["d"].append(float(term))  # timeouts bootstrap
      ep_ret += r
      step += 1
      if term or trunc:
        ep_rets.append(ep_ret)
        ep_ret = 0.0
        obs, _ = env.reset()
      else:
        obs = nobs
    chunk = sac.Chunk(
        obs_CxS=np.asarray(buf["o"], np.float32),
        actions_CxA=np.asarray(buf["a"], np.float32),
        rewards_C=np.asarray(buf["r"], np.float32),
        next_obs_CxS=np.asarray(buf["n"], np.float32),
        dones_C=np.asarray(buf["d"], np.float32))
    buf = {k: [] for k in buf}
    if step <= sc.warmup_steps:
      state, replay, _ = fill_chunk(state, replay, chunk)
    else:
      state, replay, metrics = train_chunk(state, replay, chunk)

    if step % config.eval.every == 0 and step > sc.warmup_steps:
      params = jax.tree.map(np.asarray, state.actor_params)
      rets = evaluate(task_name, policy_fn, params,
                      episodes=config.eval.episodes, seed=seed + step)
      ret = float(rets.mean())
      elapsed = time.time() - t0
      m = {k: float(v) for k, v in metrics.items()}
      rec = dict(step=step, eval_return=ret, eval_std=float(rets.std()),
                 train_return=float(np.mean(ep_rets[-10:])) if ep_rets else 0,
                 seconds=round(elapsed, 1), **m)
      with open(log_path, "a") as f:
        f.write(json.dumps(rec) + "\n")
      sps = step / elapsed
      eta = (sc.max_env_steps - step) / sps
      print(f"[{task_name}] step {step} eval {ret:.1f}+-{rets.std():.1f} "
            f"train {rec['train_return']:.1f} alpha {m.get('sac/alpha', 0):.3f}"
            f" q {m.get('sac/q_mean', 0):.1f} | {sps:.0f} steps/s, "
            f"{elapsed/60:.1f} min, ETA to cap {eta/60:.1f} min", flush=True)
      if not np.isfinite(m.get("sac/critic_loss", 0.0)):
        raise FloatingPointError(f"{task_name}: non-finite loss at {step}")
      if ret > best[0]:
        best = (ret, params, step)
      for i, stage in enumerate(STAGES[:2]):
        if stage not in saved and ret >= targets[stage]:
          if i == 0 or "early" in saved:
            snapshot(stage, params, step, ret)
          else:
            # Jumped past early and middle at once: the previous evaluation
            # becomes 'early' so the stages stay distinct.
            if prev_eval is not None:
              snapshot("early", prev_eval[1], prev_eval[2], prev_eval[0])
            snapshot(stage, params, step, ret)
      if ("middle" in saved and saved["middle"]["env_steps"] < step
          and ret >= targets["final"]):
        snapshot("final", params, step, ret)
        break
      prev_eval = (ret, params, step)
  else:
    # Step cap: the best evaluated policy is the final one.
    if "final" not in saved and best[1] is not None:
      for stage in STAGES[:2]:
        if stage not in saved:
          snapshot(stage, prev_eval[1], prev_eval[2], prev_eval[0])
      snapshot("final", best[1], best[2], best[0])
  env.close()
  summary = dict(task=task_name, steps=step, seconds=time.time() - t0,
                 stages=saved)
  print(f"[{task_name}] DONE {json.dumps(summary)}", flush=True)
  return summary


def random_returns(task_name: str, *, episodes: int, seed: int) -> np.ndarray:
  """Returns of a uniform-random policy (D4RL's random reference)."""
  rng = np.random.default_rng(seed)
  act_dim = tasks_lib.get_task(task_name).act_dim

  def policy(step, obs, reward, first):
    del step, obs, reward, first
    return rng.uniform(-1.0, 1.0, (episodes, act_dim))

  return _one_episode_each(task_name, policy, episodes=episodes, seed=seed)


def evaluate_snapshots(config) -> str:
  """Evaluates every shipped snapshot; writes the SNAPSHOTS.md table.

  Args:
    config: the collect config (uses `config.tasks` and `config.evaluate`).

  Returns:
    The markdown text written.
  """
  ev = config.evaluate
  snap_dir = ev.snapshot_dir or suite.snapshot_dir()
  out_path = ev.output or os.path.join(os.path.dirname(suite.__file__),
                                       "SNAPSHOTS.md")
  rows = []
  for name in config.tasks:
    task = tasks_lib.get_task(name)
    refs = (task.ref_min, task.ref_max)
    rand = random_returns(name, episodes=ev.random_episodes, seed=ev.seed)
    rows.append((name, "uniform random", "-", "-", "-", None, rand, refs))
    for stage in STAGES:
      params, info = sac.load_snapshot(os.path.join(snap_dir,
                                                    f"{name}-{stage}"))
      policy_fn = jax.jit(sac.make_policy(task.act_dim, info["hidden"]),
                          static_argnames="deterministic")
      det = evaluate(name, policy_fn, params, episodes=ev.episodes,
                     seed=ev.seed, deterministic=True)
      sto = evaluate(name, policy_fn, params, episodes=ev.episodes,
                     seed=ev.seed, deterministic=False)
      steps = f"{info.get('env_steps', '?')}"
      if "train_seconds" in info:
        steps += f" ({info['train_seconds'] / 60:.0f} min)"
      at_save = "-"
      if "eval_return" in info and "target_return" in info:
        at_save = (f"{info['eval_return']:.0f} / {info['target_return']:.0f}"
                   + ("" if info["eval_return"] >= info["target_return"]
                      else " (not reached)"))
      rows.append((name, stage, steps, info.get("seed", "?"), at_save, det,
                   sto, refs))
      print(f"{name} {stage}: deterministic {det.mean():.1f}, stochastic "
            f"{sto.mean():.1f}", flush=True)

  def fmt(r, refs):
    if r is None:
      return "-", "-"
    norm = 100.0 * (r - refs[0]) / (refs[1] - refs[0])
    return (f"{r.mean():.1f} ± {r.std():.1f}",
            f"{norm.mean():.1f} ± {norm.std():.1f}")

  lines = [
      "# Behavior-policy snapshots of the embedded suite",
      "",
      "SAC actors (`distill/envs/sac.py`, trained by `python -m"
      " experiments.collect --config=configs/collect.py`), saved when the"
      " deterministic evaluation return first reached each stage's target."
      " Returns over"
      f" {ev.episodes} episodes (mean ± std, seed {ev.seed}); normalized ="
      " 100 (R - ref_min) / (ref_max - ref_min). *Deterministic* acts with"
      " tanh(mean); *stochastic* samples the actor's tanh-Gaussian, as the"
      " datasets do. The uniform-random rows use"
      f" {ev.random_episodes} episodes.",
      "",
      "Reference returns (`distill/data/scores.py`): D4RL's for halfcheetah"
      " (forward), hopper and walker2d. For halfcheetah-backward, ref_min ="
      " -116.4 is the mean return of a uniform-random policy over 100"
      " episodes of the backward task (the same measurement on the forward"
      " task gives -283.6 against D4RL's -280.2: a random cheetah drifts"
      " slightly backward), and ref_max = 12135.0 is D4RL's halfcheetah"
      " expert return, reused because the body and speed scale are the same"
      " and no backward expert was trained.",
      "",
      "*SAC env steps* is the training step of the snapshot, with the"
      " wall-clock minutes when it was written (2026-11-25: the first three"
      " tasks' runs shared two busy CPU cores; 2026-11-29: walker2d on one"
      " core of two, batch 128, beside another job). *SAC seed* is"
      " `configs/collect.py` `seeds` (walker2d's first run, seed 3000,"
      " stalled near 1100 at its 300k-step cap and was repeated with seed"
      " 3002). *Eval at save / target* is the 5-episode deterministic"
      " return that triggered the save and the stage's target"
      " (`configs/collect.py`). A run that hits its step cap without"
      " reaching the final target takes its best evaluated policy as"
      " 'final' and its last evaluated policy for a missing 'middle' (so a"
      " 'middle' can come from a later step than 'final'); both are written"
      " at the cap.",
      "",
      "Regenerate: `python -m experiments.collect"
      " --config=configs/collect.py:evaluate`.",
      "",
      "| task | snapshot | SAC env steps (min) | SAC seed |"
      " eval at save / target | deterministic return |"
      " deterministic normalized | stochastic return | stochastic normalized |",
      "|---|---|---|---|---|---|---|---|---|",
  ]
  for name, stage, steps, seed, at_save, det, sto, refs in rows:
    d_raw, d_norm = fmt(det, refs)
    s_raw, s_norm = fmt(sto, refs)
    lines.append(f"| {name} | {stage} | {steps} | {seed} | {at_save} |"
                 f" {d_raw} | {d_norm} | {s_raw} | {s_norm} |")
  text = "\n".join(lines) + "\n"
  fileio.write_atomic(out_path, text)
  print(text)
  return text


def main(argv):
  del argv
  config = _CONFIG.value
  if config.mode == "evaluate":
    evaluate_snapshots(config)
    return
  if not _WORKDIR.value:
    raise app.UsageError("--workdir is required for training")
  os.makedirs(_WORKDIR.value, exist_ok=True)
  for name in config.tasks:
    tasks_lib.get_task(name)
  for name in config.tasks:
    train_task(config, name, _WORKDIR.value)


if __name__ == "__main__":
  app.run(main)

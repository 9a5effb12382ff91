"""What every bench section shares: the JSON line, timing, synthetic data.

Every line a section prints is one JSON object `{"figure": what it
measures, "device": "<platform>:<device kind> x<count>", ...values}`, the
values named with their units (`ms_per_step`, `gflops`, `env_steps_per_s`)
and every ratio against a baseline measured in the same run.
"""

import json
import time
from typing import Any

import jax
import ml_collections
import numpy as np

from distill.models import model as model_lib

# The locomotion suite's tasks and their observation / action sizes.
SUITE_TASKS = ('halfcheetah-forward', 'halfcheetah-backward', 'hopper',
               'walker2d')
SUITE_DIMS = ((17, 6), (17, 6), (11, 3), (17, 6))


def suite_config(config: ml_collections.ConfigDict
                 ) -> ml_collections.ConfigDict:
  """A copy of `config` with four tasks, for the synthetic suite-size data."""
  config = ml_collections.ConfigDict(config.to_dict())
  config.tasks = tuple(f'task{i}' for i in range(len(SUITE_DIMS)))
  return config


def random_teachers(config: ml_collections.ConfigDict, source: Any,
                    key: jax.Array) -> tuple[Any, Any]:
  """The config's teacher module and a random init per suite task, [T, ...].

  The init is jitted: run op by op under vmap, each op compiles alone.
  """
  teacher = model_lib.make_model(
      config.teacher.model, obs_dims=(source.states.shape[1],),
      act_dims=(source.actions.shape[1],),
      context_len=config.data.context_len,
      max_timestep=config.data.max_timestep)
  params_T = jax.jit(jax.vmap(lambda k: model_lib.init_params(teacher, k)))(
      jax.random.split(key, len(SUITE_DIMS)))
  return teacher, params_T


def device() -> str:
  d = jax.devices()[0]
  return f'{d.platform}:{d.device_kind} x{jax.device_count()}'


def emit(figure: str, **values: Any) -> None:
  """Prints one bench line (see the module docstring)."""
  print(json.dumps({'figure': figure, 'device': device(), **values}),
        flush=True)


def interleaved(runs, repeats):
  """Best seconds of each `run()` over `repeats` rounds taking turns.

  Each run is called once first (compile, warm up); rounds take turns so
  that load from other processes hits them alike.
  """
  for run in runs.values():
    run()
  best = dict.fromkeys(runs, np.inf)
  for _ in range(repeats):
    for k, run in runs.items():
      start = time.perf_counter()
      run()
      best[k] = min(best[k], time.perf_counter() - start)
  return best


def synthetic_datasets(dims, n, *, seed=0, episode=1000, end='timeouts',
                       actions='tanh_normal'):
  """D4RL-format arrays of random data, one dict per (obs, act) size.

  Args:
    dims: (obs_dim, act_dim) per task.
    n: transitions per task.
    seed: NumPy seed (one generator for all tasks, in order).
    episode: episode length.
    end: which flag ends an episode: 'timeouts' or 'terminals'.
    actions: 'tanh_normal' (tanh of standard normals) or 'uniform' in
      [-1, 1].

  Returns:
    One dict per task with 'observations', 'actions', 'rewards',
    'terminals' and 'timeouts' (float32 / bool).
  """
  rng = np.random.default_rng(seed)
  out = []
  for obs_dim, act_dim in dims:
    flags = {'terminals': np.zeros(n, bool), 'timeouts': np.zeros(n, bool)}
    flags[end][episode - 1::episode] = True
    obs = rng.normal(size=(n, obs_dim)).astype(np.float32)
    act = (np.tanh(rng.normal(size=(n, act_dim))) if actions == 'tanh_normal'
           else rng.uniform(-1, 1, (n, act_dim))).astype(np.float32)
    out.append({'observations': obs, 'actions': act,
                'rewards': rng.normal(size=n).astype(np.float32), **flags})
  return out

"""Exports a (student) policy as a deployable `jax.export` artifact.

    meta = export_policy('runs/default/student/last', 'runs/default/export')

writes into the output directory

  policy.jaxexport  the deterministic policy (`model.make_policy_fn`, tanh of
                    the mean at the last context position) lowered to
                    StableHLO with its parameters inside and a symbolic batch
                    size N: (rtg [N,K,1], states [N,K,S], actions [N,K,A],
                    timesteps [N,K] int32, mask [N,K], task [N] int32) ->
                    actions [N,A];
  policy.json       tasks (task-id order), obs/act dims, per-task state
                    mean/std, context_len, rtg_scale, max_timestep, S, A, the
                    model's constructor arguments and the checkpoint step;
  export_loader.py  a copy of `distill.report.export_loader` (imports jax and
                    numpy only), which loads the two and acts.

Shape letters: N rows, K context, S/A the model's padded state/action size.
"""

import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from distill.io import fileio
from distill.models import model as model_lib
from distill.report import export_loader
from distill.train import checkpointing


def export_fn(model: model_lib.DecisionTransformer,
              params: Any) -> jax.export.Exported:
  """The deterministic policy with `params` baked in, for any batch size.

  Args:
    model: a `DecisionTransformer`.
    params: its parameters.

  Returns:
    The `jax.export.Exported` of `(rtg, states, actions, timesteps, mask,
    task) -> actions_NxA` with a symbolic leading dimension.
  """
  policy_fn = model_lib.make_policy_fn(model, deterministic=True)
  params = jax.tree.map(jnp.asarray, params)
  key = jax.random.key(0)  # Unused by the deterministic policy.

  def act(rtg, states, actions, timesteps, mask, task):
    return policy_fn(params, rtg, states, actions, timesteps, mask, task, key)

  (n,) = jax.export.symbolic_shape('n')
  k, s, a = model.context_len, model.state_size, model.action_size
  spec = lambda shape, dtype=jnp.float32: jax.ShapeDtypeStruct(shape, dtype)
  return jax.export.export(jax.jit(act))(
      spec((n, k, 1)), spec((n, k, s)), spec((n, k, a)),
      spec((n, k), jnp.int32), spec((n, k)), spec((n,), jnp.int32))


def export_policy(checkpoint_dir: str, out_dir: str, *,
                  step: int | None = None) -> dict[str, Any]:
  """Writes the policy of a checkpoint as a deployable directory.

  Args:
    checkpoint_dir: a policy checkpoint (e.g. `<workdir>/student/last`).
    out_dir: where to write (created; existing files are replaced).
    step: checkpoint step; default the latest.

  Returns:
    The metadata written to `policy.json`.
  """
  model, params, meta = checkpointing.load_policy(checkpoint_dir, step=step)
  exported = export_fn(model, params)
  tasks = list(meta.get('tasks') or [meta['task']])
  out = {
      'tasks': tasks,
      'obs_dims': [int(x) for x in meta['obs_dims']],
      'act_dims': [int(x) for x in meta['act_dims']],
      'state_mean': [np.asarray(x, np.float64).tolist()
                     for x in meta['state_mean']],
      'state_std': [np.asarray(x, np.float64).tolist()
                    for x in meta['state_std']],
      'context_len': int(meta['context_len']),
      'rtg_scale': float(meta['rtg_scale']),
      'max_timestep': int(meta['max_timestep']),
      'state_size': int(model.state_size),
      'action_size': int(model.action_size),
      'model': model_lib.model_meta(model),
      'step': meta.get('step'),
      'source': os.path.abspath(checkpoint_dir),
  }
  os.makedirs(out_dir, exist_ok=True)
  fileio.write_atomic(os.path.join(out_dir, export_loader.ARTIFACT),
                      bytes(exported.serialize()))
  fileio.write_json(os.path.join(out_dir, export_loader.META), out)
  shutil.copyfile(export_loader.__file__,
                  os.path.join(out_dir, 'export_loader.py'))
  return json.loads(json.dumps(out))

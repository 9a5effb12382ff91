"""Child process of distributed_test.py: one of N processes on localhost.

  python distributed_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID OUTDIR
  python distributed_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR \
      D4RL_DIR

Every process runs the same program over the global mesh (one CPU device per
process, gloo collectives): 5 fused distillation steps on one global batch
split over 'data'. Each process prints its parameters' checksum as JSON;
only process 0 writes `OUTDIR/params.npz`.

With D4RL_DIR, the processes run the teacher stages of the pipeline
(`configs/teachers.py:smoke` on the files there) in one shared WORKDIR, and
each prints the files it wrote through `distill.io.fileio` and the metric
writers (orbax writes its own shards of the checkpoints).
"""

import json
import os
import sys

import jax
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

# pylint: disable=g-import-not-at-top,wrong-import-position
from distill.train import parallel
import parallel_worker


def main(coordinator, num_processes, process_id, outdir):
  parallel.initialize_distributed(coordinator, int(num_processes),
                                  int(process_id))
  assert jax.process_count() == int(num_processes)
  config, source, teacher, teacher_params_T = parallel_worker._setup(1)  # pylint: disable=protected-access
  place = None
  if jax.process_count() > 1:
    place = parallel.Placement(parallel.make_mesh(population=1))
  step, state, pool = parallel_worker._member(  # pylint: disable=protected-access
      config, source, teacher, teacher_params_T, 3, placement=place)
  if place is not None:
    rep = place.replicated_sharding
    state, teacher_params_T, source, pool = place.replicated(
        (state, teacher_params_T, source, pool))
    step = jax.jit(step, in_shardings=rep, out_shardings=rep)
  else:
    step = jax.jit(step)
  state, _ = step(state, teacher_params_T, source, pool)
  leaves = [np.asarray(x.addressable_data(0)) if hasattr(
      x, 'addressable_data') else np.asarray(x)
            for x in jax.tree.leaves(state.params)]
  if parallel.is_main_process():
    os.makedirs(outdir, exist_ok=True)
    np.savez(os.path.join(outdir, 'params.npz'), *leaves)
  print(json.dumps({
      'process': jax.process_index(),
      'devices': jax.device_count(),
      'step': int(np.asarray(state.step.addressable_data(0))
                  if hasattr(state.step, 'addressable_data') else state.step),
      'checksum': float(sum(np.sum(np.abs(x.astype(np.float64)))
                            for x in leaves)),
  }))


def pipeline_main(coordinator, num_processes, process_id, workdir, d4rl_dir):
  from configs import teachers as teachers_config  # pylint: disable=g-import-not-at-top
  from distill.io import fileio  # pylint: disable=g-import-not-at-top
  from distill.train import logs  # pylint: disable=g-import-not-at-top
  from distill.run import stages  # pylint: disable=g-import-not-at-top
  parallel.initialize_distributed(coordinator, int(num_processes),
                                  int(process_id))
  written = []

  def recording(fn):
    def wrapper(path, *args, **kwargs):
      written.append(os.path.relpath(str(path), workdir))
      return fn(path, *args, **kwargs)
    return wrapper

  fileio.write_json = recording(fileio.write_json)
  fileio.write_atomic = recording(fileio.write_atomic)
  init = logs.MetricWriter.__init__
  logs.MetricWriter.__init__ = lambda self, path, **kw: (
      recording(lambda p, **k: init(self, p, **k))(path, **kw))
  config = teachers_config.get_config('smoke')
  config.data.spec = os.path.join(d4rl_dir, '{task}-{quality}.hdf5')
  config.eval.max_episode_steps = 5
  config.teacher.steps = 10
  stages.run(config, workdir)
  eval_path = os.path.join(workdir, 'teachers', 'eval.json')
  print(json.dumps({
      'process': jax.process_index(), 'devices': jax.device_count(),
      'written': sorted(set(written)),
      'eval': fileio.read_json(eval_path) if os.path.exists(eval_path)
              else None}))


if __name__ == '__main__':
  if len(sys.argv) == 6:
    pipeline_main(*sys.argv[1:])
  else:
    main(*sys.argv[1:])

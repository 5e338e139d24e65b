"""One process of the multi-process `jaxdiv.evaluate` run of `test_multihost.py` (not a test).

    python _multihost_worker.py COORDINATOR NUM_PROCESSES PROCESS_ID WORKDIR

Joins the `jax.distributed` cluster at COORDINATOR (``host:port``), runs every case of
``WORKDIR/cases.pkl`` through :func:`jaxdiv.evaluation.evaluate` with the default mesh (every
device of every process) on memory-mapped inputs, and pickles what each call returned to
``WORKDIR/result<PROCESS_ID>.pkl``. A case whose ``out`` is ``"path"`` writes to
``WORKDIR/out<PROCESS_ID>/<case>.npy``: each process gets its own directory, as hosts with
local disks would, so that the test can see which processes wrote.
"""

from __future__ import annotations

import os
import pickle
import sys
import traceback


def _use_gloo(jax) -> str:
  """Cross-process collectives on CPU (`process_allgather`) need an implementation; gloo is the
  default from jax 0.4.3x on, set here for older or differently configured installs."""
  try:
    jax.config.update("jax_cpu_collectives_implementation", "gloo")
  except (AttributeError, KeyError, ValueError) as e:  # renamed or removed: keep the default
    return f"default ({type(e).__name__}: {e})"
  return "gloo"


def main(coordinator: str, num_processes: int, process_id: int, workdir: str) -> None:
  import jax

  collectives = _use_gloo(jax)
  jax.distributed.initialize(coordinator, num_processes=num_processes, process_id=process_id,
                             initialization_timeout=60)
  import numpy as np

  from jaxdiv.evaluation import evaluate

  with open(os.path.join(workdir, "cases.pkl"), "rb") as f:
    cases = pickle.load(f)
  results = {"process_index": jax.process_index(), "process_count": jax.process_count(),
             "device_count": jax.device_count(), "local_device_count": jax.local_device_count(),
             "collectives": collectives, "cases": {}}
  for case in cases:
    inputs = [np.load(os.path.join(workdir, name), mmap_mode="r") for name in case["inputs"]]
    kwargs = dict(case["kwargs"])
    if case["out"] == "path":
      directory = os.path.join(workdir, f"out{process_id}")
      os.makedirs(directory, exist_ok=True)
      kwargs["out"] = os.path.join(directory, case["name"] + ".npy")
    else:
      kwargs["out"] = case["out"]
    if case.get("iterator"):  # (p_batch, q_batch) pairs of 300 rows
      inputs = [zip(*[(x[i:i + 300] for i in range(0, len(x), 300)) for x in inputs])]
    try:
      res = evaluate(case["divergence"], *inputs, progress=False, **kwargs)
    except Exception as e:  # an expected error is the result; the test says which are
      results["cases"][case["name"]] = {"error": (type(e).__name__, str(e))}
      continue
    per_row = None if res.per_row is None else np.array(res.per_row)
    results["cases"][case["name"]] = {"per_row": per_row, "summary": res.summary,
                                      "timing": res.timing}
  jax.distributed.shutdown()
  with open(os.path.join(workdir, f"result{process_id}.pkl"), "wb") as f:
    pickle.dump(results, f)


if __name__ == "__main__":
  try:
    main(sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4])
  except BaseException:
    traceback.print_exc()
    sys.stderr.flush()
    # Skip the exit handlers: jax.distributed's shutdown barrier would wait for the other
    # processes, which may be blocked in a collective that this one will never join.
    os._exit(1)

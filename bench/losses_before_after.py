"""One jaxdiv.losses function before and after a change, beside optax, in one process.

    git archive main jaxdiv | tar -x -C /tmp/base
    python bench/losses_before_after.py --before /tmp/base/jaxdiv/losses/_classification.py

The old module is loaded from `--before` next to this tree's (its imports resolve to this
tree's jaxdiv, so it must only use modules that still exist); optax, the old and the new
function are timed in turn within each repetition (medians, value and value+grad of the summed
loss), and their ratios to optax are written to bench/results/losses-before-after-*.json.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import core

from jaxdiv import losses

SHAPES = [(1024, 1024), (4096, 4096), (256, 32768)]


def bench(before: str, name: str, reps: int) -> dict:
  spec = importlib.util.spec_from_file_location("jaxdiv_losses_before", before)
  old = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(old)
  fns = {"optax": getattr(optax.losses, name), "before": getattr(old, name),
         "after": getattr(losses, name)}
  rows = []
  for n, v in SHAPES:
    k1, k2 = jax.random.split(jax.random.key(0))
    x = jax.random.normal(k1, (n, v), jnp.float32)
    y = jax.random.randint(k2, (n,), 0, v)
    for mode in ("fwd", "fwd+vjp"):
      runs = []
      for fn in fns.values():
        f = jax.jit(fn) if mode == "fwd" else jax.jit(
            jax.grad(lambda a, b, fn=fn: jnp.sum(fn(a, b))))
        runs.append(lambda f=f, x=x, y=y: jax.block_until_ready(f(x, y)))
      t_peer, t_before, t_after = core.interleaved(runs, reps)
      row = dict(case=name, shape=f"{n}x{v}", mode=mode, optax_ms=1e3 * t_peer,
                 before_ms=1e3 * t_before, after_ms=1e3 * t_after,
                 before_ratio=t_before / t_peer, after_ratio=t_after / t_peer)
      rows.append(row)
      print(f"  {name} {n}x{v} {mode}: before {row['before_ratio']:.3f}"
            f" after {row['after_ratio']:.3f} (x optax)", flush=True)
  return dict(rows=rows, reps=reps, before=before, versions=core.versions())


def main(argv=None):
  parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
  parser.add_argument("--before", required=True, help="path of the old losses module")
  parser.add_argument("--case", default="softmax_cross_entropy_with_integer_labels")
  parser.add_argument("--reps", type=int, default=31)
  args = parser.parse_args(argv)
  result = bench(args.before, args.case, args.reps)
  print("wrote", _common.write_json("losses-before-after", result))


if __name__ == "__main__":
  main()

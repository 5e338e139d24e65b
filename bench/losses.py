"""jaxdiv.losses beside optax.losses, in one process, on the same inputs.

    python bench/losses.py            # batch 4096 x 4096 float32
    python bench/losses.py --quick    # batch 1024 x 1024
    python bench/losses.py --cases softmax_cross_entropy_with_integer_labels --tag after

Every loss that optax.losses has under the same name, with the same arguments; forward,
forward+VJP (`jax.grad`) and value+grad (`jax.value_and_grad`, a training step's) of the summed
loss with respect to the model output. Columns as in bench/core.py.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import core

from jaxdiv import losses

MiB = 1 << 20


def _inputs(n, v, seed=0):
  k1, k2, k3 = jax.random.split(jax.random.key(seed), 3)
  logits = jax.random.normal(k1, (n, v), jnp.float32)
  teacher = jax.random.normal(k2, (n, v), jnp.float32)
  return dict(
      logits=logits,
      log_predictions=jax.nn.log_softmax(logits),
      probs_labels=jax.nn.softmax(teacher),
      log_targets=jax.nn.log_softmax(teacher),
      int_labels=jax.random.randint(k3, (n,), 0, v),
      binary_labels=(jax.random.uniform(k3, (n, v)) < 0.5).astype(jnp.float32),
  )


# (name, argument names in order): the model output first, as in optax.
CASES = [
    ("softmax_cross_entropy", ("logits", "probs_labels")),
    ("softmax_cross_entropy_with_integer_labels", ("logits", "int_labels")),
    ("safe_softmax_cross_entropy", ("logits", "probs_labels")),
    ("poly_loss_cross_entropy", ("logits", "probs_labels")),
    ("sigmoid_binary_cross_entropy", ("logits", "binary_labels")),
    ("sigmoid_focal_loss", ("logits", "binary_labels")),
    ("kl_divergence", ("log_predictions", "probs_labels")),
    ("kl_divergence_with_log_targets", ("log_predictions", "log_targets")),
    ("convex_kl_divergence", ("log_predictions", "probs_labels")),
    ("generalized_kl_divergence", ("log_predictions", "probs_labels")),
]


def bench(quick: bool = False, reps: int | None = None, bw: dict | None = None,
          cases: list[str] | None = None) -> dict:
  n, v = (1024, 1024) if quick else (4096, 4096)
  reps = reps or (7 if quick else 20)
  bw = bw or core.bandwidth(64 * MiB if quick else 256 * MiB)
  unknown = set(cases or ()) - {name for name, _ in CASES}
  if unknown:
    raise ValueError(f"unknown cases {sorted(unknown)}")
  x = _inputs(n, v)
  rows = []
  for name, arg_names in CASES:
    if cases and name not in cases:
      continue
    ours, theirs = getattr(losses, name, None), getattr(optax.losses, name, None)
    if ours is None or theirs is None:
      rows.append(dict(group="losses", case=name, vs="optax",
                       peer_ms="not in " + ("jaxdiv" if ours is None else "optax")))
      continue
    args = [x[k] for k in arg_names]
    for mode in ("fwd", "fwd+vjp", "value+grad"):
      def wrap(fn, mode=mode):
        if mode == "fwd":
          return jax.jit(fn)
        d = jax.grad if mode == "fwd+vjp" else jax.value_and_grad
        return jax.jit(d(lambda a, *rest: jnp.sum(fn(a, *rest))))
      mems, runs = [], []
      for fn in (ours, theirs):
        f = wrap(fn)
        mems.append(_common.memory(f, *args)["temp_bytes"])
        runs.append(lambda f=f, args=args: jax.block_until_ready(f(*args)))
      t_own, t_peer = core.interleaved(runs, reps)
      # The model output is read (and, for the VJP, its cotangent written); the labels are read.
      moved = sum(arr.size * arr.dtype.itemsize for arr in args)
      moved += 4 * n * v if mode != "fwd" else 0
      rows.append(dict(group="losses", case=name, mode=mode, shape=f"{n}x{v}", vs="optax",
                       jaxdiv_ms=1e3 * t_own, peer_ms=1e3 * t_peer, ratio=t_own / t_peer,
                       jaxdiv_temp_MiB=mems[0] / MiB, peer_temp_MiB=mems[1] / MiB,
                       roofline=moved / (bw["GBps"] * 1e9) / t_own))
      print(f"  losses {name} {mode}: ratio {t_own / t_peer:.3f}", flush=True)
  return dict(rows=rows, bandwidth=bw, shape=[n, v], dtype="float32", reps=reps,
              versions=core.versions())


def main(argv=None):
  options = [("--cases", dict(type=lambda s: [c for c in s.split(",") if c],
                              help="comma-separated loss names (default: all)")),
             ("--reps", dict(type=int, help="timed repetitions"))]
  _common.main("losses", bench, __doc__, [("rows", core.COLUMNS)], argv, options=options,
               plot=lambda rows, png: core.plot(rows, png, "jaxdiv.losses vs optax.losses, CPU"))


if __name__ == "__main__":
  main()

"""jaxdiv under `jax.vmap` beside the hand-written line under `jax.vmap`, and beside jaxdiv on
the same rows as one batch, in one process.

    python bench/vmap.py            # 16 examples of [256, 2048]: jax.vmap over the 16
    python bench/vmap.py --quick    # 8 examples of [64, 1024]
    PYTHONPATH=<a checkout> python bench/vmap.py --tag before   # an older commit's jaxdiv

A batch of sequences mapped with `jax.vmap` (per-example losses, ensembles, per-sample
gradients) is a use the product promises to support at full speed. Per case (bench/hand.py's
forms, and three optax losses against `jaxdiv.losses`), forward and value+grad of the summed
result: `jax.vmap(jaxdiv)`, `jax.vmap(hand line)` (the peer) and jaxdiv called on the [B, T, V]
array directly, compiled once each and timed in turn within each repetition (rotated;
medians). Columns: `ratio` vmapped jaxdiv / vmapped peer; `vs_direct` vmapped jaxdiv / jaxdiv on
the batch; `temp_MiB` / `peer_temp_MiB`: XLA's temporaries of the vmapped programs.
"""

from __future__ import annotations

import os
import sys

import jax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import batch_axes
import core
import hand

SHAPE, QUICK_SHAPE = (16, 256, 2048), (8, 64, 1024)


def _cases(b, t, v):
  """(name, ours, peer, args as [B, T, V] (labels [B, T]), inputs differentiated)."""
  for case, ours, peer, args, k in batch_axes._cases(b * t, v):
    yield case, ours, peer, tuple(a.reshape(b, t, *a.shape[1:]) for a in args), k


def _temp(compiled) -> float:
  return compiled.memory_analysis().temp_size_in_bytes / 2**20


def bench(quick: bool = False, reps: int | None = None) -> dict:
  b, t, v = QUICK_SHAPE if quick else SHAPE
  reps = reps or 5
  rows = []
  for case, ours, peer, args, k in _cases(b, t, v):
    for mode in ("fwd", "fwd+vjp"):
      fs = (jax.vmap(ours), jax.vmap(peer), ours)
      if mode != "fwd":  # the summed result's gradient, each example's own (per-sample grads)
        fs = (jax.vmap(hand._vg(ours, k)), jax.vmap(hand._vg(peer, k)), hand._vg(ours, k))
      compiled = [jax.jit(f).lower(*args).compile() for f in fs]
      runs = [lambda c=c, a=args: jax.block_until_ready(c(*a)) for c in compiled]
      t_vmap, t_peer, t_direct = core.interleaved(runs, reps, warmup=1, rotate=True)
      rows.append(dict(group="vmap", case=case, mode=mode, shape="x".join(map(str, (b, t, v))),
                       vs="jax.vmap(hand line)", jaxdiv_ms=1e3 * t_vmap, peer_ms=1e3 * t_peer,
                       ratio=t_vmap / t_peer, direct_ms=1e3 * t_direct,
                       vs_direct=t_vmap / t_direct, temp_MiB=_temp(compiled[0]),
                       peer_temp_MiB=_temp(compiled[1]), direct_temp_MiB=_temp(compiled[2])))
      r = rows[-1]
      print(f"  {case:52s} {mode:8s} vmap/peer {r['ratio']:.2f}  vmap/direct "
            f"{r['vs_direct']:.2f}  temp {r['temp_MiB']:.0f} / {r['peer_temp_MiB']:.0f} MiB",
            flush=True)
  return dict(rows=rows, shape=[b, t, v], dtype="float32", reps=reps, versions=core.versions())


COLUMNS = ["case", "mode", "shape", "jaxdiv_ms", "peer_ms", "ratio", "direct_ms", "vs_direct",
           "temp_MiB", "peer_temp_MiB", "direct_temp_MiB"]


def main(argv=None):
  options = [("--reps", dict(type=int, help="timed repetitions (default 5)"))]
  _common.main("vmap", bench, __doc__, [("rows", COLUMNS)], argv, options=options)


if __name__ == "__main__":
  main()

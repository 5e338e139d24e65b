"""The guarded path of the core divergences over row blocks, beside the same path on the whole
batch and the line a user would write by hand.

    python bench/guarded.py            # the issue's shapes: 32768x512, 2048x32768, 4096x4096
    python bench/guarded.py --quick    # 4096x512 only

The guarded path runs where the unguarded fast path does not apply: a `where` mask, a function
without a fast path (the JS distance), a traced order. Its forward pass is computed over blocks
of `jaxdiv._fallback.GUARDED_BLOCK_ENTRIES` entries (`_common.guarded`). The unmasked Rényi
divergence of order 1/2 took the guarded path too until the two-input order-alpha family got
the fast path at orders in (0, 1) (2026-12-03): its rows here compare that fast path with the
hand-written line (`blocks` and `whole` are then the same program).

Per case and shape, timed in turn in one process (medians): `blocks`
(jaxdiv as it is), `whole` (the same function traced with one block the size of the batch:
the code before the change) and `hand` (a plain jnp line of the same quantity, no guards),
forward and value+grad of the summed result (both inputs). The values of `blocks` and
`whole` are compared (max relative difference).
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import core

import jaxdiv
from jaxdiv import _fallback

SHAPES = [(32768, 512), (2048, 32768), (4096, 4096)]
QUICK_SHAPES = [(4096, 512)]
lsm = jax.nn.log_softmax
rel = jax.scipy.special.rel_entr


def _hand_js(a, b):
  la, lb = lsm(a), lsm(b)
  lm = jnp.logaddexp(la, lb) - jnp.log(2.0)
  return 0.5 * jnp.sum(jnp.exp(la) * (la - lm), -1) + 0.5 * jnp.sum(jnp.exp(lb) * (lb - lm), -1)


def _masked_lsm(x, w):
  return lsm(jnp.where(w, x, -jnp.inf))


# name -> (inputs: "logits" or "probs", jaxdiv, hand-written); `w` is the mask
CASES = {
    "js_distance(logits)": (
        "logits", lambda a, b, w: jaxdiv.js_distance(a, b, from_logits=True),
        lambda a, b, w: jnp.sqrt(jnp.maximum(_hand_js(a, b), 0))),
    "renyi_divergence(alpha=0.5, logits)": (
        "logits", lambda a, b, w: jaxdiv.renyi_divergence(a, b, 0.5, from_logits=True),
        lambda a, b, w: -2 * jnp.log(jnp.sum(jnp.exp(0.5 * lsm(a) + 0.5 * lsm(b)), -1))),
    "renyi_divergence(alpha=0.5, probs)": (
        "probs", lambda p, q, w: jaxdiv.renyi_divergence(p, q, 0.5),
        lambda p, q, w: -2 * jnp.log(jnp.sum(jnp.sqrt(p * q), -1))),
    "renyi_divergence(alpha=0.5, logits, where)": (
        "logits", lambda a, b, w: jaxdiv.renyi_divergence(a, b, 0.5, from_logits=True, where=w),
        lambda a, b, w: -2 * jnp.log(jnp.sum(jnp.where(
            w, jnp.exp(0.5 * _masked_lsm(a, w) + 0.5 * _masked_lsm(b, w)), 0), -1))),
    "kl_divergence(probs, where)": (
        "probs", lambda p, q, w: jaxdiv.kl_divergence(p, q, where=w),
        lambda p, q, w: jnp.sum(jnp.where(w, rel(p, q), 0), -1)),
    "kl_divergence(logits, where)": (
        "logits", lambda a, b, w: jaxdiv.kl_divergence(a, b, from_logits=True, where=w),
        lambda a, b, w: jnp.sum(jnp.where(w, jnp.exp(_masked_lsm(a, w))
                                          * (_masked_lsm(a, w) - _masked_lsm(b, w)), 0), -1)),
}

COLUMNS = ["case", "shape", "mode", "blocks_ms", "whole_ms", "hand_ms", "blocks_vs_whole",
           "blocks_vs_hand", "whole_vs_hand", "max_rel_diff"]


def _traced_with(entries, fn, *args):
  """`fn` jitted and traced now with `GUARDED_BLOCK_ENTRIES = entries` (read when traced)."""
  old = _fallback.GUARDED_BLOCK_ENTRIES
  _fallback.GUARDED_BLOCK_ENTRIES = entries
  try:
    return jax.jit(fn).lower(*args).compile()
  finally:
    _fallback.GUARDED_BLOCK_ENTRIES = old


def _case(name, shape, mode, ours, hand, x, y, w, reps) -> dict:
  def make(f):
    if mode == "fwd":
      return lambda x, y: f(x, y, w)
    return jax.value_and_grad(lambda x, y: jnp.sum(f(x, y, w)), (0, 1))

  # distinct function objects: jit caches on the function
  blocks = _traced_with(_fallback.GUARDED_BLOCK_ENTRIES, make(ours), x, y)
  whole = _traced_with(x.size, make(lambda *z: ours(*z)), x, y)
  peer = jax.jit(make(hand)).lower(x, y).compile()
  runs = [lambda f=f: jax.block_until_ready(f(x, y)) for f in (blocks, whole, peer)]
  t_blocks, t_whole, t_hand = core.interleaved(runs, reps, warmup=1)
  vb, vw = blocks(x, y), whole(x, y)
  vb, vw = (vb, vw) if mode == "fwd" else (vb[0], vw[0])
  diff = float(jnp.max(jnp.abs(vb - vw) / jnp.maximum(jnp.abs(vw), 1e-30)))
  row = dict(case=name, shape=shape, mode=mode, blocks_ms=1e3 * t_blocks,
             whole_ms=1e3 * t_whole, hand_ms=1e3 * t_hand, blocks_vs_whole=t_blocks / t_whole,
             blocks_vs_hand=t_blocks / t_hand, whole_vs_hand=t_whole / t_hand,
             max_rel_diff=diff)
  print("  " + "  ".join(f"{k}={row[k]:.3g}" if isinstance(row[k], float) else f"{k}={row[k]}"
                         for k in COLUMNS), flush=True)
  return row


def bench(quick: bool = False, reps: int | None = None, only: str | None = None) -> dict:
  reps = reps or (5 if quick else 7)
  rows = []
  for n, v in QUICK_SHAPES if quick else SHAPES:
    key = jax.random.key(0)
    a = 3 * jax.random.normal(key, (n, v), jnp.float32)
    b = a + jax.random.normal(jax.random.fold_in(key, 1), (n, v), jnp.float32)
    w = jax.random.uniform(jax.random.fold_in(key, 2), (n, v)) > 0.1
    forms = dict(logits=(a, b), probs=(jax.nn.softmax(a), jax.nn.softmax(b)))
    for name, (form, ours, hand) in CASES.items():
      if only and not any(word in name for word in only.split(",")):
        continue
      x, y = forms[form]
      for mode in ("fwd", "vg"):
        rows.append(_case(name, f"{n}x{v}", mode, ours, hand, x, y, w, reps))
  return dict(rows=rows, reps=reps, block_entries=_fallback.GUARDED_BLOCK_ENTRIES,
              versions=core.versions())


def main(argv=None):
  options = [("--only", dict(help="comma-separated words: the cases whose name has one")),
             ("--reps", dict(type=int, help="timed repetitions (default 5 quick, 7 full)"))]
  _common.main("guarded", bench, __doc__, [("rows", COLUMNS)], argv, options=options)


if __name__ == "__main__":
  main()

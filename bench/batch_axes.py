"""jaxdiv and the hand-written line on a batch with a size-1 axis, beside the same rows as one
batch axis, in one process.

    python bench/batch_axes.py           # 2048 rows of 8192: [2048, 8192], [1, 2048, 8192],
                                         # [2048, 1, 8192]
    python bench/batch_axes.py --quick   # 256 rows of 4096

`[1, T, V]` is one sequence of tokens, `[B, 1, V]` one decoding step. XLA:CPU computes a row
reduction over such an array many times slower than over `[N, V]` (`jaxdiv._unit_axes`), the
hand-written line as much as any; jaxdiv drops the axis on entry. Per case (bench/hand.py's
forms, and three optax losses against `jaxdiv.losses`), forward and value+grad of the summed
result, the six programs (jaxdiv and the peer at the three shapes) compiled once and timed in
turn within each repetition (medians). Columns: `ratio` jaxdiv / the peer at that shape;
`vs_2d` jaxdiv at that shape / jaxdiv at `[N, V]`; `peer_vs_2d` the same for the peer.
"""

from __future__ import annotations

import contextlib
import os
import sys

import jax
import jax.numpy as jnp
import optax

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import core
import hand

import jaxdiv
import jaxdiv.discrete
import jaxdiv.losses as L

SHAPE, QUICK_SHAPE = (2048, 8192), (256, 4096)
FORMS = ("kl_divergence(logits)", "cross_entropy(logits)", "entropy(logits)",
         "js_divergence(logits)", "kl_divergence(probs)", "entropy(probs)",
         "renyi_entropy(probs)", "total_variation_distance(probs)",
         "chi_squared_divergence(probs)", "hellinger_distance(logits)",
         "f_divergence[chi2](probs)")
LOSSES = {  # name: (jaxdiv, optax, inputs: logits a, b -> arguments)
    "losses.kl_divergence": (L.kl_divergence, optax.losses.kl_divergence,
                             lambda a, b: (jax.nn.log_softmax(a), jax.nn.softmax(b))),
    "losses.softmax_cross_entropy": (L.softmax_cross_entropy, optax.losses.softmax_cross_entropy,
                                     lambda a, b: (a, jax.nn.softmax(b))),
    "losses.softmax_cross_entropy_with_integer_labels": (
        L.softmax_cross_entropy_with_integer_labels,
        optax.losses.softmax_cross_entropy_with_integer_labels,
        lambda a, b: (a, jnp.argmax(b, -1))),
}


@contextlib.contextmanager
def _axes_kept():
  """Every jaxdiv function that drops size-1 batch axes replaced by the function itself, as it
  ran before it did (`jaxdiv._unit_axes.dropped`), while the "before" programs are traced."""
  saved = []
  for mod in (jaxdiv, jaxdiv.discrete, L):
    for name in dir(mod):
      fn = getattr(mod, name)
      if getattr(fn, "drops_unit_axes", False):
        saved.append((mod, name, fn))
        setattr(mod, name, fn.__wrapped__)
  try:
    yield
  finally:
    for mod, name, fn in saved:
      setattr(mod, name, fn)


def _before(f):
  f = f.__wrapped__ if getattr(f, "drops_unit_axes", False) else f

  def run(*args):
    with _axes_kept():
      return f(*args)

  return run


def _cases(n, v):
  x = hand._inputs(n, v)
  for case, form, ours, hd, _ in hand.CASES:
    if f"{case}({form})" in FORMS:
      k = hand._n_in(hd)
      yield f"{case}({form})", ours, hd, x[form][:k], k
  a, b = x["logits"]
  for name, (ours, peer, make) in LOSSES.items():
    yield name + " vs optax", ours, peer, make(a, b), 1


def _shapes(args, n, v):
  """The arguments as [N, V], [1, N, V] and [N, 1, V] (an integer label array as the batch)."""
  out = []
  for lead in ((n,), (1, n), (n, 1)):
    out.append(tuple(a.reshape(*lead, v) if a.ndim == 2 else a.reshape(lead) for a in args))
  return out


def bench(quick: bool = False, reps: int | None = None) -> dict:
  n, v = QUICK_SHAPE if quick else SHAPE
  reps = reps or (5 if quick else 3)
  rows = []
  for case, ours, peer, args, k in _cases(n, v):
    for mode in ("fwd", "fwd+vjp"):
      fs = (ours, peer, _before(ours))
      if mode != "fwd":
        fs = tuple(hand._vg(f, k) for f in fs)
      shaped = _shapes(args, n, v)
      compiled = [[jax.jit(f).lower(*a).compile() for f in fs] for a in shaped]
      runs = [lambda c=c, a=a: jax.block_until_ready(c(*a))
              for a, cs in zip(shaped, compiled) for c in cs]
      ts = core.interleaved(runs, reps, warmup=1, rotate=True)
      own, hd, old = ts[::3], ts[1::3], ts[2::3]
      for a, t_own, t_hand, t_old in zip(shaped, own, hd, old):
        shape = "x".join(map(str, a[0].shape))
        rows.append(dict(group="batch_axes", case=case, mode=mode, shape=shape,
                         jaxdiv_ms=1e3 * t_own, peer_ms=1e3 * t_hand, ratio=t_own / t_hand,
                         before_ms=1e3 * t_old, before_ratio=t_old / t_hand,
                         after_over_before=t_own / t_old, vs_2d=t_own / own[0],
                         peer_vs_2d=t_hand / hd[0]))
      print(f"  {case} {mode}: jaxdiv / peer " + ", ".join(
          f"{r['shape']} {r['ratio']:.2f}" for r in rows[-3:]) + "; after / before "
          + ", ".join(f"{r['after_over_before']:.2f}" for r in rows[-2:]), flush=True)
  return dict(rows=rows, shape=[n, v], reps=reps, versions=core.versions())


COLUMNS = ["case", "mode", "shape", "jaxdiv_ms", "peer_ms", "ratio", "before_ratio",
           "after_over_before", "vs_2d", "peer_vs_2d"]


def main(argv=None):
  options = [("--reps", dict(type=int, help="timed repetitions (default 5 quick, 3 full)"))]
  _common.main("batch_axes", bench, __doc__, [("rows", COLUMNS)], argv, options=options)


if __name__ == "__main__":
  main()

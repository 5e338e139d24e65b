"""Row sums and guard minima in one pass (`jaxdiv._fallback.row_reduce`) against the single sum a
user would write, and against the same reductions done the ordinary way.

Each case is a hand-written row sum (`sum(p ** 2)`, `sum(|p - q|)`) and what the fast path of
the probability forms needs beside it: the mass `sum(p)` that normalises a power sum and the row
minima that send a row with a negative entry to the guarded path. Timed interleaved in one
process (medians): the hand-written sum alone, the ordinary reductions (`one_pass=False`: one
YNNPACK fusion on XLA:CPU, which reads the inputs once per reduction), and the one pass with
chunks of 32, 16 and 8 steps of one 64-byte line (`reads` = 1, 2, 4). float32.

    python bench/row_reduce.py [--quick] [--reps N]
"""

from __future__ import annotations

import _common
import jax
import jax.numpy as jnp

from jaxdiv import _fallback

SHAPES = [(32768, 512), (2048, 32768), (4096, 4096)]
QUICK_SHAPES = [(4096, 512), (256, 32768), (512, 4096)]


def _one_input(p, q, **kw):
  (s, z), (m,) = _fallback.row_reduce(lambda p: ((p * p, p), (p,)), (p,), -1, **kw)
  return s / (z * z) + 0 * jnp.sqrt(m)


def _two_inputs(p, q, **kw):
  (s,), (m, n) = _fallback.row_reduce(lambda p, q: ((jnp.abs(p - q),), (p, q)), (p, q), -1,
                                     **kw)
  return s + 0 * jnp.sqrt(jnp.minimum(m, n))


CASES = [
    ("p^2 beside sum p, min p", lambda p, q: jnp.sum(p * p, -1), _one_input),
    ("|p - q| beside min p, min q", lambda p, q: jnp.sum(jnp.abs(p - q), -1), _two_inputs),
]


def bench(quick: bool = False, reps: int | None = None) -> dict:
  reps = reps or (3 if quick else 9)
  rows = []
  for n, v in (QUICK_SHAPES if quick else SHAPES):
    k1, k2 = jax.random.split(jax.random.key(0))
    p = jax.nn.softmax(3 * jax.random.normal(k1, (n, v)), -1)
    q = jax.nn.softmax(3 * jax.random.normal(k2, (n, v)), -1)
    for case, hand, ours in CASES:
      fns = {"hand": hand, "ordinary": lambda p, q, ours=ours: ours(p, q, one_pass=False)}
      for reads in (1, 2, 4):
        fns[f"steps={32 // reads}"] = lambda p, q, ours=ours, r=reads: ours(p, q, reads=r)
      compiled = {k: jax.jit(f).lower(p, q).compile() for k, f in fns.items()}
      times = _common.time_interleaved(compiled, p, q, reps=reps)
      row = dict(case=case, shape=f"{n}x{v}", hand_ms=1e3 * times["hand"])
      for k in fns:
        if k != "hand":
          row[k] = times[k] / times["hand"]
      rows.append(row)
      print(f"  {case} {n}x{v}: " + ", ".join(f"{k} {row[k]:.2f}x" for k in fns if k != "hand"),
            flush=True)
  return dict(rows=rows, reps=reps, dtype="float32")


COLUMNS = ["case", "shape", "hand_ms", "ordinary", "steps=32", "steps=16", "steps=8"]


def main(argv=None):
  options = [("--reps", dict(type=int, help="timed repetitions (default 3 quick, 9 full)"))]
  _common.main("row_reduce", bench, __doc__, [("rows", COLUMNS)], argv, options=options)


if __name__ == "__main__":
  main()

"""Cases of `bench/hand.py` before and after a change to one jaxdiv module, beside the
hand-written line, in one process.

    git archive HEAD jaxdiv | tar -x -C /tmp/base
    python bench/hand_before_after.py --before /tmp/base/jaxdiv/discrete/_fast.py \
        --module jaxdiv.discrete._fast --names power_sum --only "(logits)" --shapes 1024x512

The old module is loaded from `--before` beside this tree's (its imports resolve to this tree's
jaxdiv, so it must only use modules that still exist); while the "before" functions are traced,
the attributes `--names` of `--module` are the old module's. The hand-written line, before and
after are compiled once and timed in turn within each repetition, each repetition starting at
the next of the three (medians), forward and
value+grad of the summed result; the rows give both ratios to the hand line and after / before,
and the largest difference between the two values and gradients. Runs on one VM drift by more
than the changes measured here (bench/README.md): one process keeps that drift out of
after / before. A program compiled later in a process ran up to 20% faster here than the same
HLO compiled earlier (bench/README.md, "Coefficients from row statistics"), so the "before"
program is compiled a second time after the "after" one: `after_over_later` (the conservative
ratio: that "before" has the advantage) and `later_over_before` (the bias itself).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import math
import os
import sys

import jax
import jax.numpy as jnp

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import _common
import core
import hand


def _max_diff(x, y) -> float:
  diffs = jax.tree.map(lambda a, b: float(jnp.max(jnp.abs(a - b))), x, y)
  return max(jax.tree.leaves(diffs))


def bench(before: str, module: str, names: list[str], only: str | None, shapes, reps: int):
  live = importlib.import_module(module)
  spec = importlib.util.spec_from_file_location(module + "_before", before)
  old = importlib.util.module_from_spec(spec)
  spec.loader.exec_module(old)
  new_attrs = {k: getattr(live, k) for k in names}
  old_attrs = {k: getattr(old, k) for k in names}

  def compiled(f, args, attrs):
    for k, v in attrs.items():
      setattr(live, k, v)
    try:  # a new lambda: a new trace, which reads the module's attributes now
      return jax.jit(lambda *a: f(*a)).lower(*args).compile()
    finally:
      for k, v in new_attrs.items():
        setattr(live, k, v)

  rows = []
  for *lead, v in shapes:
    n = math.prod(lead)
    x = {form: tuple(a.reshape(*lead, v) if a.ndim else a for a in arrays)  # (not an order)
         for form, arrays in hand._inputs(n, v).items()}
    for case, form, ours, hd, _ in hand._selected(only):
      k = hand._n_in(hd)
      args = hand._args(x, form, k)
      for mode in ("fwd", "fwd+vjp"):
        fs = (ours, hd) if mode == "fwd" else (hand._vg(ours, k), hand._vg(hd, k))
        c_hand = jax.jit(fs[1]).lower(*args).compile()
        c_old, c_new, c_later = (compiled(fs[0], args, a)
                                 for a in (old_attrs, new_attrs, old_attrs))
        diff = _max_diff(c_old(*args), c_new(*args))
        t_hand, t_old, t_new, t_later = core.interleaved(
            [lambda c=c, a=args: jax.block_until_ready(c(*a))
             for c in (c_hand, c_old, c_new, c_later)],
            reps,
            warmup=2, rotate=True)
        shape = "x".join(map(str, (*lead, v)))
        rows.append(dict(case=f"{case}({form})", mode=mode, shape=shape,
                         hand_ms=1e3 * t_hand, before=t_old / t_hand, after=t_new / t_hand,
                         after_over_before=t_new / t_old, after_over_later=t_new / t_later,
                         later_over_before=t_later / t_old, max_abs_diff=diff))
        print(f"  {case}({form}) {mode} {shape}: before {t_old / t_hand:.2f}x, after "
              f"{t_new / t_hand:.2f}x the hand line; after / before {t_new / t_old:.2f}, "
              f"after / later before {t_new / t_later:.2f} (later / first before "
              f"{t_later / t_old:.2f}); max |diff| {diff:.1e}", flush=True)
  return dict(rows=rows, before=before, module=module, names=names, only=only, reps=reps,
              versions=core.versions())


COLUMNS = ["case", "mode", "shape", "hand_ms", "before", "after", "after_over_before",
           "after_over_later", "later_over_before", "max_abs_diff"]


def main(argv=None):
  ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  ap.add_argument("--before", required=True, help="the old module's file")
  ap.add_argument("--module", required=True, help="the module whose attributes are swapped")
  ap.add_argument("--names", required=True, help="comma-separated attributes of --module")
  ap.add_argument("--only", help="comma-separated words: bench/hand.py's cases whose name has one")
  ap.add_argument("--shapes", default="0,1,2",
                  help="indices into bench/hand.py's shapes, or sizes such as 128x4096 (rows x"
                  " length) or 1x2048x32768 (the batch axes, then the length)")
  ap.add_argument("--reps", type=int, default=9)
  ap.add_argument("--tag", default="")
  args = ap.parse_args(argv)
  shapes = [tuple(map(int, s.split("x"))) if s.count("x") > 1 else hand._shape(s, hand.SHAPES)
            for s in args.shapes.split(",")]
  out = bench(args.before, args.module, args.names.split(","), args.only, shapes, args.reps)
  path = _common.write_json("hand-before-after" + args.tag, out)
  print(_common.table(out["rows"], COLUMNS))
  print(f"wrote {path}")


if __name__ == "__main__":
  main()

"""Closed-form KLs of the Gamma, Beta and Dirichlet families beside the textbook formula.

    python bench/parametric.py            # 2**20 pairs (Dirichlet: 2**16 of 16 categories)
    python bench/parametric.py --quick    # 2**16 pairs (Dirichlet: 2**12)

The peer is the formula a user writes with `jax.scipy.special` (`gammaln`, `digamma`), jitted
in the same process on the same float32 inputs; jaxdiv sums the log-gamma remainders without
cancellation (`_lgamma_bregman_g`), which costs more arithmetic. Both are timed in turn
(forward, and value+grad in all parameters), medians. Accuracy: the float32 relative error of
both against 40-digit mpmath on 300 pairs of the timing inputs ("spread": concentrations
log-uniform on [1e-2, 1e3], rates on [0.1, 10]) and 300 pairs 0.1% apart ("near": the KL is
about 1e-6 of the log-gamma values it is formed from), median and max.
"""

from __future__ import annotations

import os
import sys

import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
from jax.scipy.special import digamma
from jax.scipy.special import gammaln

sys.path.insert(0, os.path.dirname(__file__))
import _common

import jaxdiv.parametric as jp

K = 16  # Dirichlet categories


def _hand_gamma(ap, bp, aq, bq):
  return ((ap - aq) * digamma(ap) - gammaln(ap) + gammaln(aq)
          + aq * (jnp.log(bp) - jnp.log(bq)) + ap * (bq - bp) / bp)


def _hand_beta(ap, bp, aq, bq):
  log_b = lambda a, b: gammaln(a) + gammaln(b) - gammaln(a + b)
  return (log_b(aq, bq) - log_b(ap, bp) + (ap - aq) * digamma(ap) + (bp - bq) * digamma(bp)
          + (aq - ap + bq - bp) * digamma(ap + bp))


def _hand_dirichlet(cp, cq):
  sp, sq = jnp.sum(cp, -1), jnp.sum(cq, -1)
  return (gammaln(sp) - jnp.sum(gammaln(cp), -1) - gammaln(sq) + jnp.sum(gammaln(cq), -1)
          + jnp.sum((cp - cq) * (digamma(cp) - digamma(sp)[..., None]), -1))


def _mp_gamma(ap, bp, aq, bq):
  ap, bp, aq, bq = (mp.mpf(float(x)) for x in (ap, bp, aq, bq))
  return ((ap - aq) * mp.digamma(ap) - mp.loggamma(ap) + mp.loggamma(aq)
          + aq * (mp.log(bp) - mp.log(bq)) + ap * (bq - bp) / bp)


def _mp_dirichlet(cp, cq):
  cp, cq = [mp.mpf(float(x)) for x in cp], [mp.mpf(float(x)) for x in cq]
  sp, sq = sum(cp), sum(cq)
  return (mp.loggamma(sp) - sum(mp.loggamma(x) for x in cp) - mp.loggamma(sq)
          + sum(mp.loggamma(x) for x in cq)
          + sum((a - b) * (mp.digamma(a) - mp.digamma(sp)) for a, b in zip(cp, cq)))


def _mp_beta(ap, bp, aq, bq):
  return _mp_dirichlet((ap, bp), (aq, bq))


def _inputs(rng, n, near):
  """Gamma/Beta parameters (four arrays of n) and Dirichlet concentrations ([n, K] twice)."""
  conc = lambda *s: np.exp(rng.uniform(np.log(1e-2), np.log(1e3), s))
  rate = lambda *s: np.exp(rng.uniform(np.log(0.1), np.log(10), s))
  if near:
    ap, bp, cp = conc(n), conc(n), conc(n, K)
    step = lambda x: x * (1 + 1e-3 * rng.standard_normal(x.shape))
    two = (ap, rate(n), step(ap), rate(n)), (ap, bp, step(ap), step(bp)), (cp, step(cp))
  else:
    two = (conc(n), rate(n), conc(n), rate(n)), (conc(n), conc(n), conc(n), conc(n)), (
        conc(n, K), conc(n, K))
  f32 = lambda xs: tuple(np.asarray(x, np.float32) for x in xs)
  return tuple(f32(x) for x in two)


CASES = (("gamma_kl", jp.gamma_kl_divergence, _hand_gamma, _mp_gamma),
         ("beta_kl", jp.beta_kl_divergence, _hand_beta, _mp_beta),
         ("dirichlet_kl (16)", jp.dirichlet_kl_divergence, _hand_dirichlet, _mp_dirichlet))


def _value_and_grad(fn, nargs):
  def loss(*xs):
    return jnp.sum(fn(*xs))
  return jax.jit(jax.value_and_grad(loss, argnums=tuple(range(nargs))))


def bench(quick: bool, reps: int = 7) -> dict:
  n = 2 ** 16 if quick else 2 ** 20
  rng = np.random.default_rng(0)
  timing = _inputs(rng, n, near=False)
  rows = []
  for (case, ours, hand, _), args in zip(CASES, timing):
    args = tuple(jnp.asarray(a) for a in args)
    if case.startswith("dirichlet"):
      args = tuple(a[: n // 16] for a in args)
    shape = "x".join(map(str, args[0].shape))
    for mode in ("fwd", "fwd+vjp"):
      if mode == "fwd":
        fns = dict(jaxdiv=jax.jit(ours), hand=jax.jit(hand))
      else:
        fns = dict(jaxdiv=_value_and_grad(ours, len(args)), hand=_value_and_grad(hand, len(args)))
      t = _common.time_interleaved(fns, *args, reps=reps)
      rows.append(dict(group="parametric", case=case, mode=mode, shape=shape,
                       vs="textbook gammaln/digamma formula", jaxdiv_ms=1e3 * t["jaxdiv"],
                       peer_ms=1e3 * t["hand"], ratio=t["jaxdiv"] / t["hand"]))
      print(f"  {case} {mode} {shape}: {rows[-1]['ratio']:.2f}x", flush=True)
  accuracy = []
  mp.mp.dps = 40
  m = 300
  for label, near in (("spread", False), ("near", True)):
    sets = _inputs(np.random.default_rng(1), m, near)
    for (case, ours, hand, ref), args in zip(CASES, sets):
      want = np.array([float(ref(*(a[i] for a in args))) for i in range(m)])
      out = {}
      for who, fn in (("jaxdiv", ours), ("hand", hand)):
        got = np.asarray(jax.jit(fn)(*(jnp.asarray(a) for a in args)), np.float64)
        err = np.abs(got - want) / np.abs(want)
        out[f"{who}_median_rel"] = float(np.median(err))
        out[f"{who}_max_rel"] = float(np.max(err))
      accuracy.append(dict(case=case, inputs=label, **out,
                           max_ratio=out["jaxdiv_max_rel"] / out["hand_max_rel"]))
  return dict(rows=rows, accuracy=accuracy, n=n, reps=reps)


def main(argv=None):
  cols = ["case", "mode", "shape", "jaxdiv_ms", "peer_ms", "ratio"]
  acc = ["case", "inputs", "jaxdiv_median_rel", "jaxdiv_max_rel", "hand_median_rel",
         "hand_max_rel", "max_ratio"]
  return _common.main("parametric", bench, __doc__, [("rows", cols), ("accuracy", acc)], argv,
                      options=[("--reps", dict(type=int, default=7))])


if __name__ == "__main__":
  main()

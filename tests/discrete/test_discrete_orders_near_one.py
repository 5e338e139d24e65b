"""The order-alpha family just off alpha = 1 in float32: values, d/dalpha and d2/dalpha2 against
40-digit mpmath.

Near alpha = 1 the power sum S is within rounding of 1, and any form that divides by
alpha - 1 = t loses relative precision in its derivatives in alpha as 1/t^k (the value itself
was kept by log1p / expm1). References: the definitions in mpmath on the float32 inputs taken
exactly, differentiated by `mpmath.diff`.
"""

from __future__ import annotations

import discrete_reference as dref
import jax
import jax.numpy as jnp
import mpmath as mp
import numpy as np
import pytest
import scipy.special
from _helpers import tiered

import jaxdiv
from jaxdiv import _numerics


def _phi(x):
  return mp.expm1(x) / x if x != 0 else mp.mpf(1)


def _psi(y):
  return mp.log1p(y) / y if y != 0 else mp.mpf(1)


# Each side of the helpers' branch points (|x| = 1; |y| = 0.4), 0, and far from both.
_HELPERS = [
    (_numerics.expm1_over_x, _phi, [-3.0, -1.0, -0.999, -0.3, -1e-4, 0.0, 1e-7, 0.02, 0.999, 1.0,
                                     1.5, 20.0]),
    (_numerics.log1p_over_x, _psi, [-0.9, -0.41, -0.39, -0.1, -1e-6, 0.0, 1e-6, 0.1, 0.39, 0.41,
                                     1.7, 50.0]),
]
# Relative error bounds for the value and the first two derivatives, in units of the dtype's eps.
_HELPER_ULPS = (4, 16, 64)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("fn,ref,points", _HELPERS, ids=["expm1_over_x", "log1p_over_x"])
def test_series_helpers_and_their_derivatives_match_mpmath(fn, ref, points, dtype, x64):
  eps = np.finfo(dtype).eps
  derivs = [jax.jit(jax.vmap(f)) for f in (fn, jax.grad(fn), jax.grad(jax.grad(fn)))]
  x = np.asarray(points, dtype)
  with mp.workdps(40):
    for order, (f, ulps) in enumerate(zip(derivs, _HELPER_ULPS)):
      # At 0 (a removable singularity) the reference is taken at 1e-30, equal to the limit
      # far below an ulp.
      want = np.array([float(mp.diff(ref, mp.mpf(float(v)) if v else mp.mpf("1e-30"), order))
                       for v in x])
      got = np.asarray(f(x), np.float64)
      assert np.all(np.isfinite(got))
      err = np.abs(got - want) / np.abs(want)
      assert err.max() <= ulps * eps, (order, x[np.argmax(err)], err.max() / eps)


# (function, whether it takes q, the mpmath definition from S = sum p^a q^(1-a) / sum p and a).
_MEMBERS = {
    "renyi_divergence": (jaxdiv.renyi_divergence, True, lambda s, a: mp.log(s) / (a - 1)),
    "tsallis_divergence": (jaxdiv.tsallis_divergence, True, lambda s, a: (s - 1) / (a - 1)),
    "alpha_divergence": (jaxdiv.alpha_divergence, True, lambda s, a: (s - 1) / (a * (a - 1))),
    "renyi_entropy": (jaxdiv.renyi_entropy, False, lambda s, a: mp.log(s) / (1 - a)),
    "tsallis_entropy": (jaxdiv.tsallis_entropy, False, lambda s, a: (1 - s) / (a - 1)),
}
# Orders on both sides of 1 and through the decades down to 1e-6 (t d = 1e-5 here: the last
# digits of S - 1), and 1.01, which takes the near form only on the rows of small log-ratios.
_ORDERS = [1 - 1e-3, 1 + 1e-6, 1 + 1e-4, 1 + 1e-3, 1.01]


def _rows():
  rng = np.random.default_rng(7)
  a = rng.normal(size=(3, 48)) * 1.5
  b = a + rng.normal(size=a.shape)
  p, q = (np.exp(x - x.max(-1, keepdims=True)) for x in (a, b))
  p, q = (x / x.sum(-1, keepdims=True) for x in (p, q))
  return p.astype(np.float32), q.astype(np.float32)


@pytest.mark.parametrize("name", list(_MEMBERS))
def test_derivatives_in_alpha_near_one_in_float32(name):
  fn, two, definition = _MEMBERS[name]
  p, q = _rows()

  def row(alpha, p, q):
    return fn(p, q, alpha) if two else fn(p, alpha)

  f0 = jax.jit(jax.vmap(row, in_axes=(None, 0, 0)))
  f1 = jax.jit(jax.vmap(jax.grad(row), in_axes=(None, 0, 0)))
  f2 = jax.jit(jax.vmap(jax.grad(jax.grad(row)), in_axes=(None, 0, 0)))
  with mp.workdps(40):
    rows = [([mp.mpf(float(v)) for v in pr], [mp.mpf(float(v)) for v in qr])
            for pr, qr in zip(p, q)]

    def reference(alpha, pr, qr):
      qr = qr if two else [mp.mpf(1)] * len(pr)
      s = mp.fsum(pi ** alpha * qi ** (1 - alpha) for pi, qi in zip(pr, qr)) / mp.fsum(pr)
      return definition(s, alpha)

    for alpha in _ORDERS:
      a32 = jnp.float32(alpha)
      a = mp.mpf(float(a32))  # the order as float32 holds it
      for order, (f, rtol) in enumerate(zip((f0, f1, f2), (3e-6, 3e-6, 3e-5))):
        got = np.asarray(f(a32, p, q), np.float64)
        want = np.array([float(mp.diff(lambda x, r=r: reference(x, *r), a, order))
                         for r in rows])
        err = np.abs(got - want) / np.abs(want)
        assert err.max() <= rtol, (name, alpha, order, got, want)


# d D / d S of each member: D = g(S).
_SLOPES = {
    "renyi_divergence": lambda s, a: 1 / (s * (a - 1)),
    "tsallis_divergence": lambda s, a: 1 / (a - 1),
    "alpha_divergence": lambda s, a: 1 / (a * (a - 1)),
    "renyi_entropy": lambda s, a: 1 / (s * (1 - a)),
    "tsallis_entropy": lambda s, a: -1 / (a - 1),
}


# Fast tier: each member, order and kind of order once (`tiered`'s covering set).
@tiered("name,alpha,traced", [(n, a, t) for n in _MEMBERS for a in (1 - 1e-3, 1 + 1e-3, 1.1)
                              for t in (False, True)])
def test_orders_near_one_value_and_gradients_in_p_and_q_in_float32(name, alpha, traced):
  """The value and the gradients in p and q near alpha = 1 against the closed forms, S =
  sum p^a q^(1-a) / Z, Z = sum p: dS/dp_i = (a p_i^(a-1) q_i^(1-a) - S) / Z,
  dS/dq_i = (1 - a) (p_i / q_i)^a / Z. A concrete order (no derivative in alpha) keeps the
  cheaper `expm1(t d) / t` sum, a traced one the centred power mean."""
  fn, two, definition = _MEMBERS[name]
  p, q = _rows()

  def value(p, q, a):
    return fn(p, q, a) if two else fn(p, a)

  def total(p, q, a):
    return jnp.sum(value(p, q, a))

  if traced:
    a32 = jnp.float32(alpha)
    got_v = np.asarray(jax.jit(value)(p, q, a32))
    got_p, got_q = (np.asarray(g) for g in jax.jit(jax.grad(total, (0, 1)))(p, q, a32))
    alpha = float(a32)  # the reference at the order float32 holds
  else:
    got_v = np.asarray(jax.jit(lambda p, q: value(p, q, alpha))(p, q))
    got_p, got_q = (np.asarray(g) for g in
                    jax.jit(jax.grad(lambda p, q: total(p, q, alpha), (0, 1)))(p, q))
  with mp.workdps(40):
    a = mp.mpf(alpha)
    for r in range(p.shape[0]):
      pr = [mp.mpf(float(v)) for v in p[r]]
      qr = [mp.mpf(float(v)) for v in q[r]] if two else [mp.mpf(1)] * len(pr)
      z = mp.fsum(pr)
      s = mp.fsum(pi ** a * qi ** (1 - a) for pi, qi in zip(pr, qr)) / z
      slope = _SLOPES[name](s, a)
      want_v = float(definition(s, a))
      want_p = np.array([float(slope * (a * pi ** (a - 1) * qi ** (1 - a) - s) / z)
                         for pi, qi in zip(pr, qr)])
      assert abs(got_v[r] - want_v) <= 3e-6 * abs(want_v), (r, got_v[r], want_v)
      scale = np.abs(want_p).max()
      np.testing.assert_allclose(got_p[r], want_p, rtol=3e-5, atol=3e-6 * scale)
      if two:
        want_q = np.array([float(slope * (1 - a) * (pi / qi) ** a / z) for pi, qi in zip(pr, qr)])
        np.testing.assert_allclose(got_q[r], want_q, rtol=3e-5,
                                   atol=3e-6 * np.abs(want_q).max())


# From logits a static order within 1/4 of 1 takes the unguarded near form of `_fast.power_sum`
# (S - 1 as sum p expm1(t d)): each member's float64 reference from logits.
_LOGIT_REFERENCES = {
    "renyi_divergence": dref.renyi_divergence_logits,
    "tsallis_divergence": dref.tsallis_divergence_logits,
    "alpha_divergence": dref.alpha_divergence_logits,
    "renyi_entropy": dref.renyi_entropy_logits,
    "tsallis_entropy": dref.tsallis_entropy_logits,
}


def _logit_rows():
  """Rows of 512 logits: 6 ordinary ones (q's logits p's plus noise); one whose power sum S is
  below 1/4 at the orders below 1, where the near form leaves a divergence's row to the guarded
  path (its S - 1 would lose S's relative precision as 1 / S): q's logits p's reversed and scaled
  (KL 89; S = 1.1e-4 at 0.76, 0.08 for the alpha-divergence at 0.2); and a near-uniform p, whose
  S = 0.22 at 1.24 the entropies keep on the near form (their threshold is 1/32)."""
  rng = np.random.default_rng(11)
  a = rng.normal(size=(8, 512)) * 2
  b = a + rng.normal(size=a.shape)
  b[6] = -10 * a[6]
  a[7] = 0.01 * rng.normal(size=512)
  return a.astype(np.float32), b.astype(np.float32)


# Fast tier: each member once, an order each side of 1 among them.
@tiered("name,alpha", [(n, a) for n in _LOGIT_REFERENCES for a in (0.76, 1 - 1e-3, 1 + 1e-5, 1.1,
                                                                    1.24, 0.2)
                       if a != 0.2 or n == "alpha_divergence"],
        fast=[("renyi_divergence", 0.76), ("tsallis_divergence", 1.24),
              ("alpha_divergence", 0.2), ("renyi_entropy", 1.24), ("tsallis_entropy", 1 - 1e-3)])
def test_near_orders_from_logits_in_float32(name, alpha):
  """Value and gradients in both logits against float64, in float32: within 2e-6 relative
  (values) and 2e-6 of the largest gradient entry, on every row, the ones with small S
  included. The hand-written `log(sum(exp(a lp + (1 - a) lq))) / (a - 1)` loses relative
  precision as 1 / |a - 1| (Renyi on these rows: 4e-2 at a = 1 + 1e-5, 4e-4 at 0.999).
  alpha_divergence at 0.2: the order near 1 is that of its second argument (D^(a)(p||q) =
  D^(1-a)(q||p))."""
  fn, two, _ = _MEMBERS[name]
  ref = _LOGIT_REFERENCES[name]
  a, b = _logit_rows()
  a64, b64 = a.astype(np.float64), b.astype(np.float64)
  args = lambda x, y: (x, y, alpha) if two else (x, alpha)
  value = jax.jit(lambda x, y: fn(*args(x, y), from_logits=True))
  grads = jax.jit(jax.grad(lambda x, y: jnp.sum(value(x, y)), (0, 1)))
  want = ref(*args(a64, b64)[:-1], alpha)
  got = np.asarray(value(a, b), np.float64)
  np.testing.assert_allclose(got, want, rtol=2e-6)
  # The gradients in closed form: D = g(log S), S = sum exp(c_p lp + c_q lq) with (c_p, c_q) =
  # (a, 1 - a) (entropies: (a, 0)); dD/dx = g'(log S) c_x (r - softmax(x)), r the terms over S.
  lp, lq = dref.log_softmax64(a64), dref.log_softmax64(b64)
  c_q = 1 - alpha if two else 0.0
  log_s = scipy.special.logsumexp(alpha * lp + c_q * lq, axis=-1, keepdims=True)
  r = np.exp(alpha * lp + c_q * lq - log_s)
  s = np.exp(log_s)
  g = s * _SLOPES[name](s, alpha)  # dD / dlog S = S dD / dS
  for got_g, want_g in zip(grads(a, b), (g * alpha * (r - np.exp(lp)),
                                         g * c_q * (r - np.exp(lq)))):
    if not two and not np.any(want_g):
      assert not np.any(got_g)
      continue
    np.testing.assert_allclose(got_g, want_g, rtol=0, atol=2e-6 * np.abs(want_g).max())

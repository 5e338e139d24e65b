"""Second order: Hessians finite wherever the value is, at extreme and masked logits.

Every core divergence from logits and every loss is differentiated twice
(``jax.jacfwd(jax.grad(f))``, i.e. ``jax.hessian``) with respect to its logits, on rows that
hold logits of +-1e4, 1e3 and -inf (a masked class), in float32 and float64. Wherever the value
is finite, every Hessian entry must be finite: the second derivatives of the stable forms must
not meet ``0 * inf`` (optax's test of ``sigmoid_focal_loss`` asks the same of its losses).
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import tiered

import jaxdiv
from jaxdiv import losses

pytestmark = pytest.mark.filterwarnings(
    "ignore:convex_kl_divergence is deprecated:DeprecationWarning")

NEG = -np.inf
# Rows of 5 logits: extremes, a masked class (-inf, in the same place for both arguments so that
# the divergences stay finite), and an ordinary row.
P = np.array([[1e4, -1e4, 0.0, 2.0, NEG],
              [-3.0, 5.0, 1e3, -1e4, 0.0],
              [0.3, -1.2, 2.0, 0.1, -0.5]])
Q = np.array([[0.0, 1e4, -1e4, 5.0, NEG],
              [1e4, -2.0, 0.0, 1.0, -1e3],
              [-0.7, 0.4, 1.1, -2.0, 0.9]])
LABELS = np.array([0, 2, 3])
# Binary logits and soft labels, elementwise.
# |z| = 50 and 100 with hard labels: e^-50 squared underflows in float32 (the focal loss's
# Hessian was NaN there), e^100 overflows.
Z = np.array([1e4, -1e4, 30.0, -30.0, 0.0, 2.5, -1e3, 1e3, 50.0, 100.0, -50.0, -100.0, 50.0])
Y = np.array([1.0, 1.0, 0.0, 1.0, 0.5, 0.3, 0.0, 1.0, 1.0, 1.0, 0.0, 0.0, 0.0])


def _two(f, **kw):
  return lambda p, q: f(p, q, from_logits=True, **kw)


def _one(f, **kw):
  return lambda p, q: f(p, from_logits=True, **kw)


CORE = {
    "entropy": _one(jaxdiv.entropy),
    "cross_entropy": _two(jaxdiv.cross_entropy),
    "kl_divergence": _two(jaxdiv.kl_divergence),
    "jeffreys_divergence": _two(jaxdiv.jeffreys_divergence),
    "js_divergence": _two(jaxdiv.js_divergence),
    "js_divergence_beta": _two(jaxdiv.js_divergence, beta=0.2),
    "js_distance": _two(jaxdiv.js_distance),
    "renyi_divergence_0.5": _two(jaxdiv.renyi_divergence, alpha=0.5),
    "renyi_divergence_2": _two(jaxdiv.renyi_divergence, alpha=2.0),
    "renyi_divergence_inf": _two(jaxdiv.renyi_divergence, alpha=jnp.inf),
    "renyi_entropy_0.5": _one(jaxdiv.renyi_entropy, alpha=0.5),
    "renyi_entropy_3": _one(jaxdiv.renyi_entropy, alpha=3.0),
    "tsallis_divergence_0.5": _two(jaxdiv.tsallis_divergence, alpha=0.5),
    "tsallis_divergence_2": _two(jaxdiv.tsallis_divergence, alpha=2.0),
    "tsallis_entropy_2": _one(jaxdiv.tsallis_entropy, alpha=2.0),
    "alpha_divergence_0.3": _two(jaxdiv.alpha_divergence, alpha=0.3),
    "alpha_divergence_-1": _two(jaxdiv.alpha_divergence, alpha=-1.0),
    "hellinger_distance": _two(jaxdiv.hellinger_distance),
    "bhattacharyya_distance": _two(jaxdiv.bhattacharyya_distance),
    "chi_squared_divergence": _two(jaxdiv.chi_squared_divergence),
    "total_variation_distance": _two(jaxdiv.total_variation_distance),
    "binary_entropy": lambda p, q: jaxdiv.binary_entropy(p, from_logits=True),
    "binary_cross_entropy": _two(jaxdiv.binary_cross_entropy),
    "binary_kl_divergence": _two(jaxdiv.binary_kl_divergence),
}

_dist = lambda div, **kw: lambda s, t: losses.distillation_loss(s, t, divergence=div, **kw)
LOSSES = {
    "softmax_cross_entropy": lambda s, t: losses.softmax_cross_entropy(
        s, jax.nn.softmax(t), label_smoothing=0.1, z_loss=1e-4),
    "softmax_cross_entropy_with_integer_labels": lambda s, t: (
        losses.softmax_cross_entropy_with_integer_labels(s, LABELS, label_smoothing=0.1,
                                                         z_loss=1e-4)),
    "safe_softmax_cross_entropy": lambda s, t: losses.safe_softmax_cross_entropy(
        s, jax.nn.softmax(t)),
    "poly_loss_cross_entropy": lambda s, t: losses.poly_loss_cross_entropy(
        s, jax.nn.softmax(t)),
    "kl_divergence": lambda s, t: losses.kl_divergence(
        jax.nn.log_softmax(s), jax.nn.softmax(t)),
    "kl_divergence_with_log_targets": lambda s, t: losses.kl_divergence_with_log_targets(
        jax.nn.log_softmax(s), jax.nn.log_softmax(t)),
    "convex_kl_divergence": lambda s, t: losses.convex_kl_divergence(
        jax.nn.log_softmax(s), jax.nn.softmax(t)),
    "generalized_kl_divergence": lambda s, t: losses.generalized_kl_divergence(
        jax.nn.log_softmax(s), jax.nn.softmax(t)),
    "distillation_forward_kl": _dist("forward_kl", temperature=2.0),
    "distillation_reverse_kl": _dist("reverse_kl"),
    "distillation_js": _dist("js", beta=0.3),
    "distillation_skew_kl": _dist("skew_kl"),
    "distillation_skew_reverse_kl": _dist("skew_reverse_kl"),
    "distillation_tv": _dist("tv"),
    "divergence_loss": lambda s, t: losses.divergence_loss(jaxdiv.renyi_divergence, s, t,
                                                           alpha=0.5),
    # Elementwise: per-token log-probabilities (log_sigmoid keeps the elements independent).
    "kl_penalty_k1": lambda s, t: losses.kl_penalty(jax.nn.log_sigmoid(s),
                                                    jax.nn.log_sigmoid(t), estimator="k1"),
    # Elementwise: per-token log-probabilities (log_sigmoid keeps the elements independent).
    "kl_penalty_k2": lambda s, t: losses.kl_penalty(jax.nn.log_sigmoid(s),
                                                    jax.nn.log_sigmoid(t), estimator="k2"),
    # Elementwise: per-token log-probabilities (log_sigmoid keeps the elements independent).
    "kl_penalty_k3": lambda s, t: losses.kl_penalty(jax.nn.log_sigmoid(s),
                                                    jax.nn.log_sigmoid(t), estimator="k3"),
}
BINARY_LOSSES = {
    "sigmoid_binary_cross_entropy": lambda z: losses.sigmoid_binary_cross_entropy(z, Y),
    "sigmoid_focal_loss_gamma_2": lambda z: losses.sigmoid_focal_loss(z, Y, gamma=2.0),
    "sigmoid_focal_loss_gamma_0.5": lambda z: losses.sigmoid_focal_loss(z, Y, gamma=0.5,
                                                                        alpha=0.25),
    "sigmoid_focal_loss_gamma_0.1": lambda z: losses.sigmoid_focal_loss(z, Y, gamma=0.1),
    "sigmoid_focal_loss_gamma_1": lambda z: losses.sigmoid_focal_loss(z, Y, gamma=1.0),
}
DTYPES = ["float32", "float64"]


def _check(values, hessian, name, rows_axes):
  """Every Hessian entry between two finite-valued rows is finite.

  ``rows_axes`` are the two axes of ``hessian`` that index the batch row of each derivative;
  a row whose value is +inf (a divergence that overflows, such as chi² at logits 2e4 apart)
  is excluded, and must not leak into the others.
  """
  values, hessian = np.asarray(values), np.asarray(hessian)
  if values.ndim == 2:  # elementwise results: every element is a "row"
    hessian = hessian.reshape(2, values.size, 2, values.size)
    values, rows_axes = values.reshape(-1), (1, 3)
  ok = np.isfinite(values)
  assert ok.any(), f"{name}: no finite value to check"
  h = np.compress(ok, np.compress(ok, hessian, axis=rows_axes[1]), axis=rows_axes[0])
  bad = ~np.isfinite(h)
  assert not bad.any(), (
      f"{name}: {bad.sum()} non-finite Hessian entries of {bad.size} between finite rows"
      f" (values {values})")


@functools.cache
def _pair_hessian(name, dtype, table):
  fn = (CORE if table == "core" else LOSSES)[name]

  def total(pq):
    v = fn(pq[0], pq[1])
    return jnp.sum(jnp.where(jnp.isfinite(v), v, 0))

  # One compilation for the value and the Hessian.
  return jax.jit(lambda pq: (fn(pq[0], pq[1]), jax.jacfwd(jax.grad(total))(pq)))


PAIR_CASES = [(t, n, d) for t, n in [("core", n) for n in CORE] + [("loss", n) for n in LOSSES]
              for d in DTYPES]
# Fast tier (issue 14: Hessians in the default suite): one function per family/mechanism, and
# each mechanism's risky dtype (float32, where the extremes underflow, for most) plus float64
# for the stable-form families; the rest (near-duplicates: other orders and limits, the other
# dtype, the mirrored distillation divergences, the losses built on a function listed here)
# run in the slow tier.
PAIR_FAST = [
    ("core", "entropy", "float64"),  # one-argument Shannon forms
    ("core", "kl_divergence", "float32"),  # log-ratio forms (cross-entropy, Jeffreys)
    ("core", "js_divergence_beta", "float32"),  # mixtures (JS, JS distance)
    ("core", "js_distance", "float64"),  # square root of a divergence
    ("core", "renyi_divergence_0.5", "float32"),  # power sums (Rényi, Tsallis, alpha)
    ("core", "tsallis_entropy_2", "float32"),  # one-argument power sums
    ("core", "alpha_divergence_-1", "float64"),  # a negative order
    ("core", "bhattacharyya_distance", "float32"),  # square roots of products (Hellinger)
    ("core", "total_variation_distance", "float32"),  # |p - q|
    ("core", "binary_kl_divergence", "float32"),  # Bernoulli forms
    ("loss", "softmax_cross_entropy_with_integer_labels", "float32"),  # smoothing, z-loss
    ("loss", "softmax_cross_entropy", "float64"),
    ("loss", "kl_divergence_with_log_targets", "float64"),  # optax-style KL losses
    ("loss", "distillation_js", "float32"),  # the distillation kernels' default path
    ("loss", "distillation_skew_kl", "float64"),  # the plain distillation maths
    ("loss", "kl_penalty_k3", "float32"),  # elementwise k1/k2/k3
]


@tiered("table,name,dtype", PAIR_CASES, fast=PAIR_FAST)
def test_hessian_finite_at_extreme_logits(table, name, dtype):
  with jax.enable_x64(dtype == "float64"):
    pq = jnp.asarray(np.stack([P, Q]), dtype)
    values, hess = _pair_hessian(name, dtype, table)(pq)
    # Hessian [2, rows, 5, 2, rows, 5]: the row axes are 1 and 4.
    _check(values, hess, f"{name} ({dtype})", (1, 4))


# Fast: the cross-entropy in float32, and the focal loss at gamma < 1 (where (1 - p)^gamma has
# an infinite second derivative to avoid) and gamma = 2 in both dtypes.
@tiered("name,dtype", [(n, d) for n in BINARY_LOSSES for d in DTYPES],
        fast=[("sigmoid_binary_cross_entropy", "float32"),
              ("sigmoid_focal_loss_gamma_2", "float64"),
              ("sigmoid_focal_loss_gamma_0.5", "float32")])
def test_binary_loss_hessian_finite_at_extreme_logits(name, dtype):
  fn = BINARY_LOSSES[name]
  with jax.enable_x64(dtype == "float64"):
    z = jnp.asarray(Z, dtype)
    hessian = jax.jacfwd(jax.grad(lambda z: jnp.sum(fn(z))))
    values, hess = jax.jit(lambda z: (fn(z), hessian(z)))(z)
    _check(values, hess, f"{name} ({dtype})", (0, 1))


# gamma = 0 (15 s) slow; 0.5, 1 and 2 run the same code in the fast tier.
@tiered("gamma", [0.0, 0.5, 1.0, 2.0], fast=[0.5, 1.0, 2.0])
def test_focal_loss_logit_hessian_at_tiny_soft_labels(gamma):
  """float32 d²/dz² at soft labels down to 1e-38 and logits to -100, against optax's formula
  differentiated in float64. 1 - p_t is then about 1e-27 (z = -60, y = 1e-30), and log(1 - p_t)
  differentiated twice through autodiff's ``x**-2`` was NaN for every gamma."""
  zs = np.float32([-100, -80, -60, -30, -5, 0, 5, 30])
  z, y = (a.ravel() for a in np.meshgrid(zs, np.float32([1e-38, 1e-30, 1e-10, 0.3])))
  f = lambda z, y: losses.sigmoid_focal_loss(z, y, gamma=gamma)
  got = jax.vmap(jax.hessian(f))(z, y)
  with jax.enable_x64(True):
    g = lambda z, y: optax.losses.sigmoid_focal_loss(z, y, gamma=gamma)
    want = jax.vmap(jax.hessian(g))(z.astype(np.float64), y.astype(np.float64))
  assert np.isfinite(got).all()
  # float32 rounding: the curvature is at most 1/4; entries below ~1e-8 are rounding.
  np.testing.assert_allclose(got, want, rtol=1e-3, atol=1e-8)


# gamma = 0.5 (9 s) slow; 0.1 runs the same code in the fast tier.
@tiered("gamma", [0.5, 0.1], fast=[0.1])
def test_focal_loss_second_derivative_matches_closed_form(gamma):
  """d²/dz² of the focal loss against its closed form (float64 algebra).

  For a label y = 1 the loss is ``(1 - s)^gamma * (-log s)`` with ``s = sigmoid(z)``; with
  ``u = 1 - s = sigmoid(-z)``, ``du/dz = -s u`` and ``d(-log s)/dz = -u``.
  """
  with jax.enable_x64(True):
    z = jnp.array([-30.0, -2.0, 0.0, 3.0, 30.0])
    f = lambda z: losses.sigmoid_focal_loss(z, jnp.ones_like(z), gamma=gamma)
    got = jax.vmap(jax.hessian(f))(z)
    zz = np.asarray(z)
    s, u = 1 / (1 + np.exp(-zz)), 1 / (1 + np.exp(zz))
    nll = np.logaddexp(0, -zz)  # -log s
    # L = u^g n; L' = g u^(g-1) u' n + u^g n'; u' = -s u, n' = -u, s' = s u.
    # L' = -g s u^g n - u^(g+1).  Differentiate again:
    # d(u^g)/dz = -g s u^g;  d(s u^g)/dz = s u^(g+1) - g s² u^g;  d(u^(g+1))/dz = -(g+1) s u^(g+1)
    want = (-gamma * ((s * u**(gamma + 1) - gamma * s * s * u**gamma) * nll
                      + s * u**gamma * (-u))
            + (gamma + 1) * s * u**(gamma + 1))
  np.testing.assert_allclose(np.asarray(got), want, rtol=1e-9, atol=1e-15)


# One decorator over the product (ids as the two stacked ones gave): fast-float32 (5 s) slow;
# fast-float64 and guarded-float32 cover its path and its dtype in the fast tier.
@tiered("zero,dtype", [(z, d) for z in (False, True) for d in DTYPES],
        fast=[(False, "float64"), (True, "float32"), (True, "float64")],
        ids=[f"{'guarded' if z else 'fast'}-{d}" for z in (False, True) for d in DTYPES])
def test_shannon_family_hessians_on_tiny_probabilities(dtype, zero):
  """The Shannon family on probabilities with entries down to 1e-30 (float32; 1e-300 in float64)
  against the closed-form Hessians (diagonal blocks; +-inf where they overflow). Their d²/dq²
  holds p / q^2: formed with q^2, which underflows (float32 q < 1e-19), it was inf (and NaN
  across) where the true value fits. `zero` puts a 0 in each row (the guarded path's rows)."""
  tiny = [1e-30, 1e-20, 1e-25] if dtype == "float32" else [1e-300, 1e-200, 1e-160]
  rows = [([a, 0.5 - a, 0.25, 0.25], [b, 0.4 - b, 0.6, 0.0 if zero else 1e-3])
          for a in tiny for b in [*tiny, 0.3]]
  p = np.array([r[0] for r in rows])
  q = np.array([r[1] for r in rows])
  if zero:
    p[:, 3] = 0.0  # KL and the cross-entropy finite: p is 0 where q is
  m = 0.5 * (p + q)
  with np.errstate(divide="ignore", over="ignore", invalid="ignore"):
    pos_p, pos_q = p > 0, q > 0
    inv_p, inv_q = np.where(pos_p, 1 / p, 0), np.where(pos_q, 1 / q, 0)
    p_qq = np.where(pos_q, (p / q) / q, 0)  # p / q^2, without the square
    q_pp = np.where(pos_p, (q / p) / p, 0)
    inv_m = np.where(m > 0, 1 / m, 0)
    wants = {  # (d²/dp², d²/dp dq, d²/dq²), elementwise (each Hessian block is diagonal)
        "kl_divergence": (inv_p, -inv_q, p_qq),
        "cross_entropy": (0 * p, -inv_q, p_qq),
        "entropy": (-inv_p, 0 * p, 0 * p),
        "jeffreys_divergence": (inv_p + q_pp, -inv_p - inv_q, inv_q + p_qq),
        # 0.5/p - 0.25/m = 0.25 (q/p)/m: computed as that difference, within rounding of 1/p
        "js_divergence": (0.25 * np.where(pos_p, q / p, 0) * inv_m, -0.25 * inv_m,
                          0.25 * np.where(pos_q, p / q, 0) * inv_m),
    }
    slack = {"js_divergence": (inv_p, 0 * p, inv_q)}  # absolute, in eps
  big = np.finfo(dtype).max
  with jax.enable_x64(dtype == "float64"):
    x = jnp.asarray(np.stack([p, q], 1), dtype)
    for name, want in wants.items():
      fn = getattr(jaxdiv, name)
      f = (lambda v, fn=fn: fn(v[0]) + 0 * jnp.sum(v[1])) if name == "entropy" else (
          lambda v, fn=fn: fn(v[0], v[1]))
      h = np.asarray(jax.jit(jax.vmap(jax.hessian(f)))(x), np.float64)
      blocks = (h[:, 0, :, 0, :], h[:, 0, :, 1, :], h[:, 1, :, 1, :])
      for label, got, w, a in zip(("pp", "pq", "qq"), blocks, want,
                                  slack.get(name, (0 * p,) * 3)):
        w = np.where(np.abs(w) > big, np.copysign(np.inf, w), w)
        diag = np.einsum("nii->ni", got)
        off = got[:, ~np.eye(got.shape[-1], dtype=bool)]
        rtol = 1e-4 if dtype == "float32" else 1e-10
        with np.errstate(invalid="ignore"):  # inf - inf where both overflow
          close = ((np.abs(diag - w) <= rtol * np.abs(w) + 4 * np.finfo(dtype).eps * a)
                   | (diag == w))
        assert np.all(close), (name, label, diag[~close], w[~close])
        assert np.all(off == 0), f"{name} {label}"


# KL (19 s) and JS (10 s) slow; Jeffreys' and the cross-entropy (the guarded path too) fast.
@tiered("name", ["kl_divergence", "js_divergence", "jeffreys_divergence", "cross_entropy"],
        fast=["jeffreys_divergence", "cross_entropy"])
def test_shannon_hessian_symmetric_at_a_zero_probability(name):
  """A zero entry of p (the guarded path, with and without a mask): the Hessian in (p, q) is
  symmetric, forward-over-reverse as reverse-over-forward. A rule whose d/dp is held at 0 at
  p = 0 while its d/dq's own d/dp is not gave d²/dp dq 0 one way and -1/q the other."""
  fn = getattr(jaxdiv, name)
  x = jnp.asarray([[0.0, 0.25, 0.75], [0.3, 0.5, 0.2]], jnp.float32)
  for kw in ({}, {"where": jnp.asarray([True, True, True])}):
    f = lambda v, kw=kw: fn(v[0], v[1], **kw)
    fwd_rev = np.asarray(jax.jacfwd(jax.jacrev(f))(x)).reshape(6, 6)
    rev_fwd = np.asarray(jax.jacrev(jax.jacfwd(f))(x)).reshape(6, 6)
    assert np.all(np.isfinite(fwd_rev)), name
    np.testing.assert_allclose(fwd_rev, fwd_rev.T, rtol=1e-6, atol=1e-6, err_msg=name)
    np.testing.assert_allclose(rev_fwd, fwd_rev, rtol=1e-6, atol=1e-6, err_msg=name)

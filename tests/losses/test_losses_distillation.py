"""Distillation losses and divergence_loss: values, teacher constant, temperature, masks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import tiered
from jax.test_util import check_grads

import jaxdiv
import jaxdiv.losses as jl

DIVERGENCES = ("forward_kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tv")
# The default runs the kernels for forward_kl, reverse_kl and js, the plain maths for the others;
# per-divergence checks of a transformation keep one of each in the fast tier (js: the mixture,
# tv: the kink), the rest run in the slow tier. Values and masks keep every divergence fast.
FAST = ["js", "tv"]


def _logits(seed=0, shape=(3, 4, 7)):
  rng = np.random.default_rng(seed)
  return (rng.normal(size=shape).astype(np.float32),
          2 * rng.normal(size=shape).astype(np.float32))


def _softmax64(x):
  x = np.asarray(x, np.float64)
  e = np.exp(x - x.max(-1, keepdims=True))
  return e / e.sum(-1, keepdims=True)


def _kl64(p, q):
  return np.sum(p * np.log(p / q), -1)


def _reference(divergence, s, t, temperature, beta=0.5, alpha=0.1):
  q, p = _softmax64(s / temperature), _softmax64(t / temperature)
  if divergence == "forward_kl":
    return _kl64(p, q)
  if divergence == "reverse_kl":
    return _kl64(q, p)
  if divergence == "js":
    m = beta * p + (1 - beta) * q
    return beta * _kl64(p, m) + (1 - beta) * _kl64(q, m)
  if divergence == "skew_kl":
    return _kl64(p, alpha * p + (1 - alpha) * q)
  if divergence == "skew_reverse_kl":
    return _kl64(q, alpha * q + (1 - alpha) * p)
  return 0.5 * np.sum(np.abs(p - q), -1)


# Each divergence and each temperature/scaling in the fast tier, in some combination.
@tiered("divergence,temperature,scaling",
        [(d, t, sc) for t, sc in [(1.0, False), (2.0, True), (0.5, False)] for d in DIVERGENCES])
def test_matches_float64_reference(divergence, temperature, scaling):
  s, t = _logits()
  got = jl.distillation_loss(s, t, divergence=divergence, temperature=temperature,
                             temperature_scaling=scaling, beta=0.3, alpha=0.2)
  want = _reference(divergence, s, t, temperature, beta=0.3, alpha=0.2)
  want = want * (temperature**2 if scaling else 1)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_forward_kl_equals_optax_kl_on_tempered_logits():
  s, t = _logits(1)
  temperature = 3.0
  want = optax.losses.kl_divergence(jax.nn.log_softmax(s / temperature),
                                    jax.nn.softmax(t / temperature))
  got = jl.distillation_loss(s, t, temperature=temperature)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-7)
  g_want = jax.grad(lambda a: optax.losses.kl_divergence(
      jax.nn.log_softmax(a / temperature), jax.nn.softmax(t / temperature)).sum())(s)
  g_got = jax.grad(lambda a: jl.distillation_loss(a, t, temperature=temperature).sum())(s)
  np.testing.assert_allclose(g_got, g_want, rtol=1e-5, atol=1e-7)


@tiered("divergence", DIVERGENCES, fast=FAST)
def test_teacher_is_constant_and_student_gradient_finite(divergence):
  s, t = _logits(2)
  g_s, g_t = jax.grad(lambda a, b: jl.distillation_loss(a, b, divergence=divergence).sum(),
                      argnums=(0, 1))(s, t)
  np.testing.assert_array_equal(g_t, 0)
  assert np.all(np.isfinite(g_s)) and np.any(g_s != 0)


def test_temperature_scaling_scales_gradient_by_t_squared():
  s, t = _logits(3)
  fn = lambda a, scaling: jl.distillation_loss(a, t, temperature=4.0,
                                               temperature_scaling=scaling).sum()
  np.testing.assert_allclose(jax.grad(fn)(s, True), 16 * jax.grad(fn)(s, False), rtol=1e-6)


@tiered("divergence", DIVERGENCES, fast=FAST)
def test_token_mask_and_reductions(divergence):
  s, t = _logits(4)
  mask = np.random.default_rng(4).uniform(size=(3, 4)) < 0.6
  mask[2] = False  # a sequence with no valid token
  per_token = jl.distillation_loss(s, t, divergence=divergence, where=mask)
  np.testing.assert_array_equal(np.asarray(per_token)[~mask], 0)
  full = jl.distillation_loss(s, t, divergence=divergence)
  np.testing.assert_allclose(np.asarray(per_token)[mask], np.asarray(full)[mask], rtol=1e-6)
  mean = jl.distillation_loss(s, t, divergence=divergence, where=mask, reduction="mean")
  np.testing.assert_allclose(mean, np.asarray(full)[mask].mean(), rtol=1e-5)
  g = jax.grad(lambda a: jl.distillation_loss(a, t, divergence=divergence, where=mask,
                                              reduction="sequence_mean"))(s)
  np.testing.assert_array_equal(np.asarray(g)[~mask], 0)
  assert np.all(np.isfinite(g))


@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_vocabulary_mask_equals_slice(divergence):
  s, t = _logits(5)
  where = np.zeros(s.shape, bool)
  where[..., :5] = True
  t = t.copy()
  t[..., 5:] = -np.inf  # padded vocabulary entries may hold anything
  masked = jl.distillation_loss(s, t, divergence=divergence, where=where)
  sliced = jl.distillation_loss(s[..., :5], t[..., :5], divergence=divergence)
  np.testing.assert_allclose(masked, sliced, rtol=1e-5, atol=1e-7)
  g = jax.grad(lambda a: jl.distillation_loss(a, t, divergence=divergence, where=where).sum())(s)
  assert np.all(np.isfinite(g))
  np.testing.assert_array_equal(np.asarray(g)[..., 5:], 0)


# Slow tier: the fast tier runs no case of this test; it costs 5 s.
@pytest.mark.slow
def test_divergence_loss_with_core_divergences_and_a_user_generator():
  s, t = _logits(6, shape=(5, 6))
  kl_generator = lambda u: u * jnp.log(u)
  user = jl.divergence_loss(jaxdiv.f_divergence, s, t, f=kl_generator, temperature=2.0)
  np.testing.assert_allclose(user, jl.distillation_loss(s, t, temperature=2.0), rtol=1e-5)
  renyi = jl.divergence_loss(jaxdiv.renyi_divergence, s, t, alpha=0.5)
  np.testing.assert_allclose(renyi, 2 * jaxdiv.bhattacharyya_distance(t, s, from_logits=True),
                             rtol=1e-5)
  rev = jl.divergence_loss(jaxdiv.kl_divergence, s, t, reverse=True, reduction="mean")
  np.testing.assert_allclose(rev, jl.distillation_loss(s, t, divergence="reverse_kl").mean(),
                             rtol=1e-6)
  g = jax.grad(lambda a: jl.divergence_loss(jaxdiv.f_divergence, a, t, f=kl_generator,
                                            reduction="sum"))(s)
  g_want = jax.grad(lambda a: jl.distillation_loss(a, t).sum())(s)
  np.testing.assert_allclose(g, g_want, rtol=1e-4, atol=1e-6)


@tiered("divergence", DIVERGENCES, fast=FAST)
def test_check_grads(divergence, x64):
  s, t = _logits(7, shape=(2, 5))
  if divergence == "tv":
    s = s + 3 * np.arange(5)  # keep p - q away from 0, where |.| has a kink
  fn = jax.jit(lambda a: jl.distillation_loss(a, t.astype(np.float64), divergence=divergence,
                                              temperature=1.5))
  check_grads(fn, (s.astype(np.float64),), order=1, modes=["fwd", "rev"])


def test_jit_vmap_and_dtypes():
  s, t = _logits(8)
  fn = lambda a, b: jl.distillation_loss(a, b, divergence="js", temperature=2.0)
  eager = fn(s, t)
  np.testing.assert_allclose(jax.jit(fn)(s, t), eager, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(fn)(s, t), eager, rtol=1e-6)
  low = fn(jnp.asarray(s, jnp.bfloat16), jnp.asarray(t, jnp.bfloat16))
  assert low.dtype == jnp.bfloat16
  np.testing.assert_allclose(np.asarray(low, np.float32), eager, rtol=5e-2, atol=5e-3)


def test_bad_input():
  s, t = _logits()
  with pytest.raises(ValueError, match="divergence"):
    jl.distillation_loss(s, t, divergence="kl")
  with pytest.raises(ValueError, match="temperature"):
    jl.distillation_loss(s, t, temperature=0.0)
  with pytest.raises(ValueError, match="distribution axis"):
    jl.distillation_loss(s, t[..., :5])
  with pytest.raises(ValueError, match="beta"):
    jl.distillation_loss(s, t, divergence="js", beta=1.5)
  with pytest.raises(ValueError, match="reduction"):
    jl.distillation_loss(s, t, reduction="avg")
  with pytest.raises(ValueError, match="divergence='tv'"):
    jl.distillation_loss(s, t, divergence="tv", implementation="xla")
  with pytest.raises(ValueError, match="implementation"):
    jl.distillation_loss(s, t, implementation="triton")
  with pytest.raises(TypeError, match="divergence_fn"):
    jl.divergence_loss("kl", s, t)
  with pytest.raises(TypeError, match="floating-point"):
    jl.distillation_loss(s.astype(np.int32), t)


# Each divergence and each implementation in the fast tier, in some combination.
@tiered("divergence,implementation", [(d, i) for i in ["xla", "chunked", "pallas"]
                                      for d in ["forward_kl", "reverse_kl", "js"]])
def test_kernel_delegation_matches_plain_path(divergence, implementation):
  pytest.importorskip("jaxdiv.kernels")
  s, t = _logits(9)
  mask = np.ones((3, 4), bool)
  mask[0, 1] = False
  kwargs = dict(divergence=divergence, temperature=2.0, temperature_scaling=True, where=mask,
                beta=0.3)
  np.testing.assert_allclose(
      jl.distillation_loss(s, t, implementation=implementation, **kwargs),
      jl.distillation_loss(s, t, **kwargs), rtol=1e-5, atol=1e-6)


def test_default_is_the_kernels_default():
  """`implementation=None` means the same in jaxdiv.losses and jaxdiv.kernels: the same
  function runs for what the kernels take (bit for bit), the plain maths for the rest."""
  from jaxdiv import kernels
  s, t = _logits(10)
  mask = np.ones((3, 4), bool)
  mask[1, 2] = False
  kwargs = dict(divergence="js", beta=0.3, temperature=2.0)
  got = jl.distillation_loss(s, t, where=mask, **kwargs)
  want = jnp.where(mask, kernels.distillation_divergence(s, t, where=mask, **kwargs), 0)
  np.testing.assert_array_equal(got, want)
  grad = lambda f: jax.grad(lambda a: f(a, t, **kwargs).sum())(s)
  np.testing.assert_array_equal(grad(jl.distillation_loss),
                                grad(kernels.distillation_divergence))
  # A traced temperature runs the plain maths (differentiable in it); a kernel refuses it.
  fn = lambda temp, impl=None: jl.distillation_loss(s, t, divergence="js", beta=0.3,
                                                    temperature=temp, implementation=impl)
  np.testing.assert_allclose(jax.jit(fn)(2.0), fn(2.0), rtol=1e-5, atol=1e-7)
  with pytest.raises(ValueError, match="traced `temperature`"):
    jax.jit(lambda temp: fn(temp, "xla"))(2.0)
  with pytest.raises(ValueError, match="token mask"):
    jl.distillation_loss(s, t, where=np.ones(s.shape, bool), implementation="chunked")


# Slow tier (js: 7 s): forward mode of the default (js, tv) runs fast in test_check_grads.
@pytest.mark.slow
@pytest.mark.parametrize("divergence", DIVERGENCES)
def test_forward_mode_matches_reference(divergence):
  """`jax.jvp` and `jax.jacfwd` of the default (kernels for three divergences, the plain maths
  for the rest) against the float64 reference's derivative (central differences of it in
  float64: its value is a closed form in numpy)."""
  s, t = _logits(11, shape=(4, 7))
  if divergence == "tv":
    s = s + 3 * np.arange(7)  # keep p - q away from 0, where |.| has a kink
  fn = lambda a: jl.distillation_loss(a, t, divergence=divergence, temperature=1.5, beta=0.3,
                                      alpha=0.2)
  ref = lambda a: _reference(divergence, a, t, 1.5, beta=0.3, alpha=0.2)
  u = np.random.default_rng(11).normal(size=s.shape)
  h = 1e-5
  want_t = (ref(s.astype(np.float64) + h * u) - ref(s.astype(np.float64) - h * u)) / (2 * h)
  value, tangent = jax.jvp(fn, (s,), (u.astype(np.float32),))
  np.testing.assert_allclose(value, ref(s), rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(tangent, want_t, rtol=1e-4, atol=1e-6)
  jac = jax.jacfwd(fn)(s)  # [4, 4, 7]: token i depends on its own logits only
  np.testing.assert_allclose(np.einsum("ijc,jc->i", jac, u), want_t, rtol=1e-4, atol=1e-6)


def _kl_row64(p, q):
  p, q = np.asarray(p, np.float64), np.asarray(q, np.float64)
  with np.errstate(divide="ignore"):
    return float(np.sum(np.where(p > 0, p * (np.log(p) - np.log(q)), 0.0)))


def _softmax_row64(z):
  z = np.asarray(z, np.float64)
  e = np.exp(z - z.max())
  return e / e.sum()


# Fast: JS at both edges of beta and the two KLs; JS at beta = 0.5 (the edge rows of -inf logits
# that the others cover, at an ordinary beta) in the slow tier.
@tiered("divergence,beta", [("js", 0.0), ("js", 1.0), ("js", 0.5), ("forward_kl", 0.5),
                            ("reverse_kl", 0.5)],
        fast=[("js", 0.0), ("js", 1.0), ("forward_kl", 0.5), ("reverse_kl", 0.5)])
def test_default_path_edge_rows(divergence, beta):
  """The kernels' default on rows their own maths would get wrong: JS at beta 0 or 1 where one
  side misses the other's support is 0 (not 0 * inf), and a row of -inf logits (student or
  teacher) holds no distribution: 0, with no gradient. References: float64 numpy."""
  inf = np.inf
  s = np.array([[0.0, 1, -inf, 3], [0, 1, 2, 3], [-inf] * 4, [0, 1, 2, 3]], np.float32)
  t = np.array([[0.0, 1, 2, 3], [-inf] * 4, [0, 1, 2, 3], [0, -inf, 2, 3]], np.float32)
  want = []
  for i in (0, 3):
    ps, pt = _softmax_row64(s[i]), _softmax_row64(t[i])
    if divergence == "forward_kl":
      want.append(_kl_row64(pt, ps))
    elif divergence == "reverse_kl":
      want.append(_kl_row64(ps, pt))
    else:
      m = beta * pt + (1 - beta) * ps
      want.append((beta * _kl_row64(pt, m) if beta else 0.0)
                  + ((1 - beta) * _kl_row64(ps, m) if beta < 1 else 0.0))
  want = np.array([want[0], 0.0, 0.0, want[1]])
  loss = lambda a: jl.distillation_loss(a, t, divergence=divergence, beta=beta)
  np.testing.assert_allclose(np.asarray(loss(s)), want, rtol=2e-6, atol=1e-7)
  g = np.asarray(jax.grad(lambda a: jnp.sum(loss(a)))(s))
  empty = g[1:3]
  if divergence == "reverse_kl":  # against an empty teacher the gradient is NaN (noted)
    empty = empty[np.isfinite(empty)]
  np.testing.assert_array_equal(empty, 0.0)


@pytest.mark.parametrize("divergence", ["forward_kl", "reverse_kl", "js"])
def test_default_path_all_nan_row_stays_nan(divergence):
  """A row of NaN logits, student's or teacher's, is NaN, not taken for a row of -inf (0)."""
  nan = np.nan
  s = np.array([[nan] * 4, [0.0, 1, 2, 3]], np.float32)
  t = np.array([[0.0, 1, 2, 3], [nan] * 4], np.float32)
  assert np.isnan(np.asarray(jl.distillation_loss(s, t, divergence=divergence))).all()

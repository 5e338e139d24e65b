"""`softcap=` (c tanh(x / c), Gemma 2) on every kernel and the losses that wrap them, against
float64 dense references written here (values and gradients), and float64 accuracy of the
fused distillation."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered
from kernels_cases import IMPLEMENTATIONS

from jaxdiv import kernels
from jaxdiv import losses

N, D, V = 13, 24, 300
BLOCK = 128  # does not divide V
C = 2.5  # the cap, well inside the logits' range (|x| up to ~10)


def _data(seed):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(N, D))
  w = rng.normal(size=(D, V)) * 2.0
  ht = rng.normal(size=(N, D))
  wt = rng.normal(size=(D, V)) * 2.0
  y = rng.integers(0, V, N)
  where = rng.random(N) > 0.2
  cot = np.linspace(0.5, 1.5, N)
  return h, w, ht, wt, y, where, cot


def _cap(x):
  return C * jnp.tanh(x / C)


def _kl(zp, zq, temperature=1.0):
  """KL(softmax(zp / T) || softmax(zq / T)) per row."""
  lp, lq = jax.nn.log_softmax(zp / temperature), jax.nn.log_softmax(zq / temperature)
  return jnp.sum(jnp.exp(lp) * (lp - lq), axis=-1)


def _vg(f, args, argnums, dtype, cot):
  """Value and gradient of sum(cot * f) in `dtype` (float64 under enable_x64)."""
  args = [jnp.asarray(a, dtype) if i in argnums else a for i, a in enumerate(args)]
  # One jitted program: eagerly, each op of a blockwise kernel compiles on its own.
  value, grads = jax.jit(lambda *a: (f(*a), jax.grad(lambda *a: jnp.sum(cot * f(*a)),
                                                     argnums)(*a)))(*args)
  return [np.asarray(x, np.float64) for x in (value, *grads)]


def _check(ours, dense, args, argnums, rtol=2e-5):
  cot = args[-1]
  with jax.enable_x64(True):
    want = _vg(dense, args[:-1], argnums, jnp.float64, cot)
  got = _vg(ours, args[:-1], argnums, jnp.float32, cot)
  for k, (a, b) in enumerate(zip(got, want)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=str(k))
  return got


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_fused_linear_cross_entropy(implementation):
  h, w, _, _, y, where, cot = _data(0)

  def dense(h, w):
    log_q = jax.nn.log_softmax(_cap(h @ w))
    loss = -(0.9 * jnp.take_along_axis(log_q, y[:, None], 1)[:, 0] + 0.1 * log_q.mean(-1))
    return jnp.where(where, loss + 1e-3 * jax.nn.logsumexp(_cap(h @ w), -1) ** 2, 0.0)

  ours = lambda h, w: kernels.fused_linear_cross_entropy(
      h, w, y, where=where, softcap=C, label_smoothing=0.1, z_loss=1e-3,
      implementation=implementation, block_size=BLOCK)
  _check(ours, dense, (h, w, cot), (0, 1))


def test_fused_linear_cross_entropy_forward_grad():
  """The reduced loss whose gradients are formed in the forward pass, through the cap: the
  scalar's cotangent scales both gradients (2.5, not 1)."""
  h, w, _, _, y, where, _ = _data(5)

  def dense(h, w):
    log_q = jax.nn.log_softmax(_cap(h @ w))
    loss = -(0.9 * jnp.take_along_axis(log_q, y[:, None], 1)[:, 0] + 0.1 * log_q.mean(-1))
    loss = loss + 1e-3 * jax.nn.logsumexp(_cap(h @ w), -1) ** 2
    return jnp.sum(jnp.where(where, loss, 0.0)) / where.sum()

  ours = lambda h, w: kernels.fused_linear_cross_entropy(
      h, w, y, where=where, softcap=C, label_smoothing=0.1, z_loss=1e-3,
      implementation="forward_grad", reduction="mean", block_size=4)
  _check(ours, dense, (h, w, 2.5), (0, 1))


# On CPU None runs "xla": the fast tier keeps None (and the loss), "chunked" and "pallas".
@tiered("implementation", [None, *IMPLEMENTATIONS], fast=[None, "chunked", "pallas"])
def test_cross_entropy_with_integer_labels(implementation):
  h, w, _, _, y, where, cot = _data(1)
  z = h @ w
  dense = lambda z: jnp.where(where, -jnp.take_along_axis(
      jax.nn.log_softmax(_cap(z)), y[:, None], 1)[:, 0], 0.0)
  ours = lambda z: kernels.cross_entropy_with_integer_labels(
      z, y, where=where, softcap=C, implementation=implementation)
  _check(ours, dense, (z, cot), (0,))
  if implementation in (None, "xla"):
    loss = lambda z: losses.softmax_cross_entropy_with_integer_labels(
        z, y, where=where, softcap=C, implementation=implementation)
    _check(loss, dense, (z, cot), (0,))


# On CPU None runs "xla": the fast tier keeps None, "chunked" (both with the loss) and "pallas".
@tiered("implementation,divergence", [
    (None, "forward_kl"), ("xla", "reverse_kl"), ("chunked", "reverse_kl"),
    ("pallas", "forward_kl")],
    fast=[(None, "forward_kl"), ("chunked", "reverse_kl"), ("pallas", "forward_kl")])
def test_distillation_divergence(implementation, divergence):
  h, w, ht, wt, _, where, cot = _data(2)
  zs, zt = h @ w, ht @ wt

  def dense(zs):
    cs, ct = _cap(zs), _cap(zt)
    out = _kl(ct, cs, 2.0) if divergence == "forward_kl" else _kl(cs, ct, 2.0)
    return jnp.where(where, out, 0.0)

  ours = lambda zs: kernels.distillation_divergence(
      zs, zt, divergence=divergence, temperature=2.0, where=where, softcap=C,
      implementation=implementation)
  _check(ours, dense, (zs, cot), (0,))
  if implementation in (None, "chunked"):
    loss = lambda zs: losses.distillation_loss(
        zs, zt, divergence=divergence, temperature=2.0, where=where, softcap=C,
        implementation=implementation)
    _check(loss, dense, (zs, cot), (0,))


# The fast tier keeps each implementation, divergence and kind of teacher once.
@tiered("implementation,divergence,teacher", [
    ("chunked", "forward_kl", "head"), ("chunked", "reverse_kl", "logits"),
    ("chunked", "js", "head"), ("xla", "reverse_kl", "head"), ("pallas", "forward_kl", "head"),
    ("pallas", "js", "logits")],
    fast=[("chunked", "forward_kl", "head"), ("xla", "reverse_kl", "head"),
          ("pallas", "js", "logits")])
def test_fused_linear_distillation_divergence(implementation, divergence, teacher):
  h, w, ht, wt, _, where, cot = _data(3)

  def dense(h, w):
    cs, ct = _cap(h @ w) / 1.5, _cap(ht @ wt) / 1.5
    if divergence == "forward_kl":
      out = _kl(ct, cs)
    elif divergence == "reverse_kl":
      out = _kl(cs, ct)
    else:  # beta = 0.3
      lm = jnp.log(0.3 * jax.nn.softmax(ct) + 0.7 * jax.nn.softmax(cs))
      out = 0.3 * _kl(ct, lm) + 0.7 * _kl(cs, lm)
    return jnp.where(where, out, 0.0)

  t = dict(teacher_hidden=ht, teacher_weight=wt) if teacher == "head" else dict(
      teacher_logits=ht @ wt)
  ours = lambda h, w: kernels.fused_linear_distillation_divergence(
      h, w, **t, divergence=divergence, beta=0.3, temperature=1.5, where=where, softcap=C,
      implementation=implementation, block_size=BLOCK)
  _check(ours, dense, (h, w, cot), (0, 1))


@pytest.mark.parametrize("implementation", [None, "pallas"])  # both run the float64 path
def test_fused_linear_distillation_float64_is_float64_accurate(implementation):
  """float64 inputs used to get float32 products (1e-7 relative); now float64 throughout."""
  h, w, ht, wt, _, where, cot = _data(4)
  with jax.enable_x64(True):
    dense = lambda h, w: jnp.where(where, _kl(ht @ wt, h @ w), 0.0)
    ours = lambda h, w: kernels.fused_linear_distillation_divergence(
        h, w, ht, wt, where=where, implementation=implementation, block_size=BLOCK)
    want = _vg(dense, (h, w), (0, 1), jnp.float64, cot)
    got = _vg(ours, (jnp.asarray(h), jnp.asarray(w)), (0, 1), jnp.float64, cot)
    assert ours(jnp.asarray(h), jnp.asarray(w)).dtype == jnp.float64
  for a, b in zip(got, want):
    np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12 * np.abs(b).max())


def test_bad_softcap():
  z = jnp.zeros((2, 3))
  for bad in (0.0, -1.0):
    with pytest.raises(ValueError, match="softcap"):
      kernels.cross_entropy_with_integer_labels(z, jnp.array([0, 1]), softcap=bad)
    with pytest.raises(ValueError, match="softcap"):
      losses.distillation_loss(z, z, softcap=bad)


@pytest.mark.parametrize("implementation", ["chunked", "pallas"])
def test_every_kernel_is_float64_accurate_on_float64_inputs(implementation):
  """The kernels over logits and the fused ones, with the cap, against float64 dense."""
  h, w, ht, wt, y, where, cot = _data(5)
  kw = dict(implementation=implementation, softcap=C)
  with jax.enable_x64(True):
    z, zt = jnp.asarray(h @ w), jnp.asarray(ht @ wt)
    ce = lambda z: -jnp.take_along_axis(jax.nn.log_softmax(_cap(z)), y[:, None], 1)[:, 0]
    pairs = [
        (kernels.cross_entropy_with_integer_labels(z, y, **kw), ce(z)),
        (kernels.fused_linear_cross_entropy(jnp.asarray(h), jnp.asarray(w), y, **kw), ce(z)),
        (kernels.distillation_divergence(z, zt, **kw), _kl(_cap(zt), _cap(z))),
        (kernels.fused_linear_distillation_divergence(jnp.asarray(h), jnp.asarray(w),
                                                      teacher_logits=zt, **kw),
         _kl(_cap(zt), _cap(z)))]
    for k, (got, want) in enumerate(pairs):
      assert got.dtype == jnp.float64, k
      np.testing.assert_allclose(got, want, rtol=1e-12, atol=1e-12, err_msg=str(k))


# Pallas interpret mode costs seconds: its case is slow (the kernel runs in the fast tier in
# the tests above).
@tiered("implementation", IMPLEMENTATIONS, fast=["xla", "chunked"])
def test_masked_logits_stay_masked_under_the_cap(implementation):
  # c tanh(-inf / c) = -c: a -inf (masked) logit must not get probability back through the cap.
  rng = np.random.default_rng(7)
  z = rng.normal(size=(6, 40)) * 4.0
  z[:, 25:] = -np.inf  # the last 15 classes are outside every row's support
  y = rng.integers(0, 25, 6)
  zc = np.where(np.isinf(z), -np.inf, C * np.tanh(np.where(np.isinf(z), 0.0, z) / C))
  lse = np.log(np.sum(np.exp(zc[:, :25]), axis=-1))
  want = lse - zc[np.arange(6), y]  # float64 dense, over the 25 kept classes only
  zj = jnp.asarray(z, jnp.float32)
  # jitted: eagerly, each op of a kernel and of its VJP compiles on its own.
  ce = lambda x: kernels.cross_entropy_with_integer_labels(x, jnp.asarray(y), softcap=C,
                                                           implementation=implementation)
  got, g = jax.jit(lambda x: (ce(x), jax.grad(lambda x: jnp.sum(ce(x)))(x)))(zj)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=2e-6)
  got = jax.jit(lambda x: losses.softmax_cross_entropy_with_integer_labels(
      x, jnp.asarray(y), softcap=C))(zj)
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-6, atol=2e-6)
  assert np.all(np.asarray(g)[:, 25:] == 0), "masked classes get no gradient"
  teacher = jnp.asarray(np.where(np.isinf(z), -np.inf, rng.normal(size=z.shape)), jnp.float32)
  kl = jax.jit(lambda a, b: kernels.distillation_divergence(
      a, b, softcap=C, implementation=implementation))(zj, teacher)
  assert np.all(np.isfinite(np.asarray(kl))), kl

"""jaxdiv's options on the cross-entropies: label smoothing, ignore_index, class weights, z-loss."""

from __future__ import annotations

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered
from jax.test_util import check_grads

import jaxdiv.losses as jl

C = 6


def _inputs(seed=0, batch=(4, 3)):
  rng = np.random.default_rng(seed)
  logits = rng.normal(size=batch + (C,)).astype(np.float32)
  labels = rng.integers(0, C, size=batch).astype(np.int32)
  weights = rng.uniform(0.2, 2.0, size=C).astype(np.float32)
  return logits, labels, weights


def _reference(logits, labels, *, label_smoothing=0.0, ignore_index=None, weights=None,
               z_loss=0.0):
  """torch.nn.functional.cross_entropy(reduction='none') semantics plus PaLM's z-loss, float64."""
  x = np.asarray(logits, np.float64)
  lse = np.log(np.sum(np.exp(x - x.max(-1, keepdims=True)), -1)) + x.max(-1)
  log_q = x - lse[..., None]
  w = np.ones(C) if weights is None else np.asarray(weights, np.float64)
  ignored = np.zeros(labels.shape, bool) if ignore_index is None else labels == ignore_index
  safe = np.where(ignored, 0, labels)
  nll = -np.take_along_axis(log_q, safe[..., None], -1)[..., 0] * w[safe]
  smooth = -np.sum(w * log_q, -1) / C
  out = (1 - label_smoothing) * nll + label_smoothing * smooth + z_loss * lse**2
  return np.where(ignored, 0.0, out)


OPTIONS = [
    dict(label_smoothing=ls, ignore_index=ii, weights=w, z_loss=z)
    for ls, ii, w, z in itertools.product([0.0, 0.1], [None, 2, -100], [False, True],
                                          [0.0, 1e-2])
]


def _ids(o):
  return "-".join(f"{k}={v}" for k, v in o.items())


# Each value of each option in the fast tier, in some combination: all off, and all on with
# ignore_index 2 and -100; the rest of the product runs in the slow tier. (pytest.param: tiered
# reads a dict's `values` method as a parameter set's.)
_OPTION_CASES = [pytest.param(o, id=_ids(o)) for o in OPTIONS]
_FAST_OPTIONS = [dict(label_smoothing=0.0, ignore_index=None, weights=False, z_loss=0.0),
                 dict(label_smoothing=0.1, ignore_index=2, weights=True, z_loss=1e-2),
                 dict(label_smoothing=0.1, ignore_index=-100, weights=True, z_loss=1e-2)]


@tiered("options", _OPTION_CASES, fast=[c for c in _OPTION_CASES if c.values[0] in _FAST_OPTIONS])
def test_integer_labels_match_reference(options):
  logits, labels, weights = _inputs()
  if options["ignore_index"] == -100:
    labels = labels.copy()
    labels[0, 1] = labels[2, 0] = -100
  kwargs = {**options, "weights": weights if options["weights"] else None}
  got = jl.softmax_cross_entropy_with_integer_labels(logits, labels, **kwargs)
  np.testing.assert_allclose(got, _reference(logits, labels, **kwargs), rtol=2e-6, atol=1e-6)
  # The dense form with one-hot targets is the same loss.
  one_hot = np.asarray(jax.nn.one_hot(labels, C))
  dense = jl.softmax_cross_entropy(logits, one_hot, **kwargs)
  np.testing.assert_allclose(dense, got, rtol=2e-6, atol=1e-6)


@pytest.mark.parametrize("ignore_index", [3, -100])
def test_ignored_labels_have_zero_loss_and_gradient(ignore_index):
  logits, labels, weights = _inputs(1)
  labels = labels.copy()
  labels[1, :] = ignore_index
  fn = lambda x: jl.softmax_cross_entropy_with_integer_labels(
      x, labels, ignore_index=ignore_index, label_smoothing=0.2, weights=weights, z_loss=1e-3)
  out = fn(logits)
  np.testing.assert_array_equal(out[1], 0)
  assert np.all(np.asarray(out)[labels != ignore_index] > 0)
  np.testing.assert_array_equal(np.asarray(out)[labels == ignore_index], 0)
  g = jax.grad(lambda x: fn(x).sum())(logits)
  np.testing.assert_array_equal(g[1], 0)
  assert np.all(np.isfinite(g))


def test_out_of_range_label_without_ignore_index_is_nan():
  logits, labels, _ = _inputs()
  c = logits.shape[-1]
  for bad in (-100, -1, -c, c):  # optax counts -1 .. -c from the end; jaxdiv never does
    labels_bad = labels.copy()
    labels_bad[0, 0] = bad
    out = jl.softmax_cross_entropy_with_integer_labels(logits, labels_bad)
    assert np.isnan(out[0, 0]) and np.all(np.isfinite(out.ravel()[1:])), bad
    grad = jax.grad(lambda x, y=labels_bad: jnp.nansum(
        jl.softmax_cross_entropy_with_integer_labels(x, y)))(logits)
    assert np.all(np.isfinite(grad)) and not np.any(grad[0, 0]), bad


def test_mask_equals_slice_with_options():
  logits, labels, weights = _inputs(2)
  labels = np.minimum(labels, 3)
  where = np.zeros(logits.shape, bool)
  where[..., :4] = True
  kwargs = dict(label_smoothing=0.1, z_loss=1e-2)
  masked = jl.softmax_cross_entropy_with_integer_labels(logits, labels, where=where, **kwargs)
  sliced = jl.softmax_cross_entropy_with_integer_labels(logits[..., :4], labels, **kwargs)
  np.testing.assert_allclose(masked, sliced, rtol=2e-6)
  dense = jl.softmax_cross_entropy(logits, np.asarray(jax.nn.one_hot(labels, C)), where=where,
                                   **kwargs)
  np.testing.assert_allclose(dense, sliced, rtol=2e-6)
  g = jax.grad(lambda x: jl.softmax_cross_entropy_with_integer_labels(
      x, labels, where=where, **kwargs).sum())(logits)
  np.testing.assert_array_equal(g[..., 4:], 0)


def test_z_loss_is_squared_log_normaliser():
  logits, labels, _ = _inputs(3)
  base = jl.softmax_cross_entropy_with_integer_labels(logits, labels)
  with_z = jl.softmax_cross_entropy_with_integer_labels(logits, labels, z_loss=1e-4)
  lse = jax.nn.logsumexp(logits, -1)
  np.testing.assert_allclose(with_z - base, 1e-4 * lse**2, rtol=1e-4, atol=1e-7)


def test_label_smoothing_one_is_uniform_cross_entropy():
  logits, labels, _ = _inputs(4)
  got = jl.softmax_cross_entropy_with_integer_labels(logits, labels, label_smoothing=1.0)
  want = jl.softmax_cross_entropy(logits, np.full(logits.shape, 1 / C, np.float32))
  np.testing.assert_allclose(got, want, rtol=2e-6)


# Slow tier: the fast tier runs no case of this test; it costs 6 s.
@pytest.mark.slow
def test_minus_inf_logit_under_smoothing_and_zero_weight():
  x = jnp.array([[0.0, 1.0, -jnp.inf]])
  labels = jnp.array([0])
  # The uniform target gives mass to an impossible class: +inf, honestly.
  assert jl.softmax_cross_entropy_with_integer_labels(x, labels, label_smoothing=0.1)[0] == \
      np.inf
  # A zero class weight switches the class off: finite, NaN-free gradient.
  w = jnp.array([1.0, 1.0, 0.0])
  fn = lambda a: jl.softmax_cross_entropy_with_integer_labels(
      a, labels, label_smoothing=0.1, weights=w).sum()
  assert np.isfinite(fn(x))
  assert np.all(np.isfinite(jax.grad(fn)(x)))


def test_check_grads_with_options(x64):
  logits, labels, weights = _inputs(5, batch=(2,))
  fn = jax.jit(lambda x, w: jl.softmax_cross_entropy_with_integer_labels(
      x, labels, label_smoothing=0.1, weights=w, z_loss=1e-2))
  check_grads(fn, (logits.astype(np.float64), weights.astype(np.float64)), order=2,
              modes=["fwd", "rev"])


# Slow tier. The fast tier keeps the dense form's values with these options (against the float64
# reference through one-hot targets, test_integer_labels_match_reference), its second order
# without them (test_losses_optax.py::test_check_grads) and its Hessian at extreme logits with
# smoothing and z-loss (test_second_order.py).
@pytest.mark.slow
def test_check_grads_with_options_dense(x64):
  logits, _, weights = _inputs(5, batch=(2,))
  y = np.random.default_rng(5).dirichlet(np.ones(C), size=2)
  dense = jax.jit(lambda x, t: jl.softmax_cross_entropy(x, t, label_smoothing=0.1,
                                                        weights=weights, z_loss=1e-2))
  check_grads(dense, (logits.astype(np.float64), y), order=2, modes=["fwd", "rev"])


def test_dense_ignore_index_ignores_rows_whose_target_is_that_class():
  logits, labels, _ = _inputs(6)
  one_hot = np.asarray(jax.nn.one_hot(labels, C))
  got = jl.softmax_cross_entropy(logits, one_hot, ignore_index=2, z_loss=1e-2)
  want = jl.softmax_cross_entropy_with_integer_labels(logits, labels, ignore_index=2,
                                                       z_loss=1e-2)
  np.testing.assert_allclose(got, want, rtol=2e-6)
  assert np.any(labels == 2)


@pytest.mark.parametrize("dtype", [jnp.bfloat16, jnp.float16])
def test_low_precision_with_options(dtype):
  logits, labels, weights = _inputs(7)
  kwargs = dict(label_smoothing=0.1, weights=weights, z_loss=1e-3, ignore_index=1)
  low = jl.softmax_cross_entropy_with_integer_labels(jnp.asarray(logits, dtype), labels,
                                                     **kwargs)
  assert low.dtype == dtype
  high = jl.softmax_cross_entropy_with_integer_labels(
      jnp.asarray(jnp.asarray(logits, dtype), jnp.float32), labels, **kwargs)
  np.testing.assert_allclose(np.asarray(low, np.float32), high, rtol=1e-2, atol=1e-2)


def test_jit_vmap_and_traced_options():
  logits, labels, weights = _inputs(8)
  fn = lambda x, y, ls, z: jl.softmax_cross_entropy_with_integer_labels(
      x, y, label_smoothing=ls, z_loss=z, weights=weights)
  eager = fn(logits, labels, 0.1, 1e-3)
  np.testing.assert_allclose(jax.jit(fn)(logits, labels, 0.1, 1e-3), eager, rtol=1e-6)
  np.testing.assert_allclose(jax.vmap(fn, in_axes=(0, 0, None, None))(logits, labels, 0.1,
                                                                        1e-3),
                             eager, rtol=1e-6)


def test_bad_options():
  logits, labels, weights = _inputs()
  ce = jl.softmax_cross_entropy_with_integer_labels
  with pytest.raises(ValueError, match="label_smoothing"):
    ce(logits, labels, label_smoothing=1.5)
  with pytest.raises(ValueError, match="z_loss"):
    ce(logits, labels, z_loss=-1.0)
  with pytest.raises(ValueError, match="weights"):
    ce(logits, labels, weights=weights[:3])
  with pytest.raises(TypeError, match="ignore_index"):
    ce(logits, labels, ignore_index=1.0)
  with pytest.raises(ValueError, match="implementation"):
    ce(logits, labels, implementation="cuda")
  with pytest.raises(ValueError, match="weights"):
    ce(logits, labels, weights=weights, implementation="xla")
  with pytest.raises(ValueError, match="last"):
    ce(np.moveaxis(logits, -1, 0), labels, axis=0, implementation="xla")
  with pytest.raises(ValueError, match="per-class"):
    ce(logits, labels, where=np.ones(logits.shape, bool), implementation="xla")


@pytest.mark.parametrize("implementation", ["xla", "chunked", "pallas"])
def test_kernel_delegation_matches_plain_path(implementation):
  pytest.importorskip("jaxdiv.kernels")
  logits, labels, _ = _inputs(9)
  labels = labels.copy()
  labels[0, 0] = -100
  where = np.ones(labels.shape, bool)
  where[1, 1] = False
  kwargs = dict(ignore_index=-100, z_loss=1e-3, where=where)
  ce = jl.softmax_cross_entropy_with_integer_labels
  # A traced label_smoothing runs the plain-jnp reference (None picks a kernel otherwise).
  plain = jax.jit(lambda ls: ce(logits, labels, label_smoothing=ls, **kwargs))(0.1)
  np.testing.assert_allclose(
      ce(logits, labels, implementation=implementation, label_smoothing=0.1, **kwargs), plain,
      rtol=1e-5, atol=1e-6)


def test_default_is_the_kernels_default():
  """`implementation=None` means the same in jaxdiv.losses and jaxdiv.kernels: the same
  function runs for the options the kernels take (bit for bit), the reference for the rest."""
  from jaxdiv import kernels
  logits, labels, weights = _inputs(10, batch=(12,))
  kwargs = dict(label_smoothing=0.1, z_loss=1e-3)
  np.testing.assert_array_equal(
      jl.softmax_cross_entropy_with_integer_labels(logits, labels, **kwargs),
      kernels.cross_entropy_with_integer_labels(logits, labels, **kwargs))
  grad = lambda f: jax.grad(lambda x: f(x, labels, **kwargs).sum())(logits)
  np.testing.assert_array_equal(grad(jl.softmax_cross_entropy_with_integer_labels),
                                grad(kernels.cross_entropy_with_integer_labels))
  # A traced hyperparameter runs the reference (differentiable in it); an explicit kernel
  # refuses it by name.
  fn = lambda ls, impl=None: jl.softmax_cross_entropy_with_integer_labels(
      logits, labels, label_smoothing=ls, implementation=impl)
  np.testing.assert_allclose(jax.jit(fn)(0.1), fn(0.1), rtol=1e-6)
  with pytest.raises(ValueError, match="traced"):
    jax.jit(lambda ls: fn(ls, "xla"))(0.1)


def _reference_jacobian(logits, labels, *, label_smoothing=0.0, ignore_index=None, z_loss=0.0):
  """d loss_i / d z_i in float64, closed form: softmax (1 + 2 z lse) - (1 - ε) onehot - ε / C
  (0 on ignored tokens); [..., C] like the logits."""
  x = np.asarray(logits, np.float64)
  m = x.max(-1, keepdims=True)
  e = np.exp(x - m)
  p = e / e.sum(-1, keepdims=True)
  lse = np.log(e.sum(-1, keepdims=True)) + m
  one_hot = np.asarray(labels)[..., None] == np.arange(C)
  d = p * (1 + 2 * z_loss * lse) - (1 - label_smoothing) * one_hot - label_smoothing / C
  if ignore_index is not None:
    d = np.where((np.asarray(labels) == ignore_index)[..., None], 0.0, d)
  return d


# Slow tier (10 s); the fast tier runs forward over reverse of the default in the test below.
@pytest.mark.slow
def test_integer_labels_forward_mode_matches_reference():
  """`jax.jvp` and `jax.jacfwd` of the default (a kernel with a `custom_jvp`) against the
  float64 closed form; forward mode must work on the default as on the reference."""
  logits, labels, _ = _inputs(11, batch=(5,))
  labels = labels.copy()
  labels[3] = -100
  kwargs = dict(label_smoothing=0.1, ignore_index=-100, z_loss=1e-2)
  fn = lambda x: jl.softmax_cross_entropy_with_integer_labels(x, labels, **kwargs)
  jac = _reference_jacobian(logits, labels, **kwargs)
  t = np.random.default_rng(11).normal(size=logits.shape).astype(np.float32)
  value, tangent = jax.jvp(fn, (logits,), (t,))
  np.testing.assert_allclose(value, _reference(logits, labels, **kwargs), rtol=2e-6, atol=1e-6)
  np.testing.assert_allclose(tangent, np.sum(jac * t, -1), rtol=1e-5, atol=1e-6)
  got = jax.jacfwd(fn)(logits)  # [5, 5, C]: token i depends on its own logits only
  want = np.einsum("ij,jc->ijc", np.eye(5), jac)
  np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jit(jax.jacfwd(fn))(logits), want, rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(jax.jacrev(fn)(logits), want, rtol=1e-5, atol=1e-6)


# Fast: jax.hessian (forward over reverse). Forward over forward (the custom_jvp twice) runs in
# the slow tier, as does the forward mode test above.
@pytest.mark.parametrize(
    "hessian",
    [jax.hessian, pytest.param(lambda f: jax.jacfwd(jax.jacfwd(f)), marks=pytest.mark.slow)],
    ids=["fwd-over-rev", "fwd-over-fwd"])
def test_integer_labels_hessian_is_softmax_covariance(hessian):
  """d² loss / d z² = diag(p) - p pᵀ for any label and smoothing (float64 closed form)."""
  logits, labels, _ = _inputs(12, batch=(1,))
  fn = lambda x: jl.softmax_cross_entropy_with_integer_labels(x, labels,
                                                              label_smoothing=0.1)[0]
  x = np.asarray(logits, np.float64)[0]
  p = np.exp(x - x.max()) / np.exp(x - x.max()).sum()
  got = hessian(fn)(logits)[0, :, 0, :]
  np.testing.assert_allclose(got, np.diag(p) - np.outer(p, p), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("dtype", [np.uint8, np.int8, np.int16])
def test_small_integer_labels_do_not_wrap_the_vocabulary_size(dtype):
  """Labels of 8 and 16 bits with 300 classes: the bounds check must not wrap 300 to 44."""
  x = np.random.default_rng(0).normal(size=(2, 300)).astype(np.float32)
  y = np.array([100, 30])
  got = jl.softmax_cross_entropy_with_integer_labels(x, y.astype(dtype))
  x64 = x.astype(np.float64)
  lse = np.log(np.exp(x64 - x64.max(1, keepdims=True)).sum(1)) + x64.max(1)
  np.testing.assert_allclose(np.asarray(got), lse - x64[[0, 1], y], rtol=1e-6)

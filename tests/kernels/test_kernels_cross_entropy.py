"""Cross-entropy with integer labels: every implementation against the float64 reference and
optax, in value and gradient, on vocabularies that are not multiples of the block."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
import scipy.special
from _helpers import tiered
from kernels_cases import BLOCK
from kernels_cases import IMPLEMENTATIONS
from kernels_cases import N
from kernels_cases import V
from kernels_cases import assert_close
from kernels_cases import labels
from kernels_cases import logits
from kernels_cases import value_and_grad
from kernels_cases import value_and_grad64

from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import cross_entropy_with_integer_labels as ce
from jaxdiv.kernels.cross_entropy import api
from jaxdiv.kernels.cross_entropy import reference

CASES = {
    "plain": dict(),
    "ignore_and_where": dict(ignore_index=-100, where=True),
    "smoothing_z_loss": dict(label_smoothing=0.1, z_loss=1e-3),
    "all_options": dict(ignore_index=-100, where=True, label_smoothing=0.2, z_loss=1e-2),
}


def _inputs(case, seed=0, neg_inf_frac=0.0):
  z = logits(seed, neg_inf_frac=neg_inf_frac)
  y = labels(seed, z=z)
  kwargs = dict(CASES[case])
  valid = np.ones(N, bool)
  if "ignore_index" in kwargs:
    y[::5] = kwargs["ignore_index"]
    valid[::5] = False
  if kwargs.pop("where", False):
    where = np.random.default_rng(seed).random(N) > 0.3
    kwargs["where"] = jnp.asarray(where)
    valid &= where
  return z, y, valid, kwargs


def _ref(valid, kwargs):
  ls, zl = kwargs.get("label_smoothing", 0.0), kwargs.get("z_loss", 0.0)
  return lambda z, y: reference.cross_entropy(z, y, jnp.asarray(valid), label_smoothing=ls,
                                              z_loss=zl)


# A compilation a case: the fast tier keeps each implementation and each set of options once.
@tiered("implementation,case", [(i, c) for i in IMPLEMENTATIONS for c in CASES])
def test_matches_float64_reference(device, implementation, case):
  z, y, valid, kwargs = _inputs(case)
  want, want_grad = value_and_grad64(_ref(valid, kwargs), z, y)
  f = functools.partial(ce, labels=jnp.asarray(y), implementation=implementation,
                        block_size=BLOCK, **kwargs)
  got, got_grad = value_and_grad(f, jnp.asarray(z, jnp.float32))
  assert_close(got, want, err_msg="loss")
  assert_close(got_grad, want_grad, n_reduced=1, err_msg="d logits")
  assert np.all(got[~valid] == 0) and np.all(got_grad[~valid] == 0)


# Pallas interpret mode costs seconds: its case is slow (the kernel runs in the fast tier in
# test_matches_float64_reference).
@tiered("implementation", IMPLEMENTATIONS, fast=["xla", "chunked"])
def test_neg_inf_logits(device, implementation):
  z, y, valid, kwargs = _inputs("ignore_and_where", neg_inf_frac=0.3)
  want, want_grad = value_and_grad64(_ref(valid, kwargs), z, y)
  f = functools.partial(ce, labels=jnp.asarray(y), implementation=implementation,
                        block_size=BLOCK, **kwargs)
  got, got_grad = value_and_grad(f, jnp.asarray(z, jnp.float32))
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(got_grad))
  assert_close(got, want)
  assert_close(got_grad, want_grad, n_reduced=1)


# optax as a peer once in the fast tier; each implementation meets the float64 reference there.
@tiered("implementation", IMPLEMENTATIONS, fast=["xla"])
def test_equals_optax(implementation):
  z, y = jnp.asarray(logits(1), jnp.float32), jnp.asarray(labels(1))
  loss = lambda z: optax.softmax_cross_entropy_with_integer_labels(z, y)
  want, want_grad = value_and_grad(loss, z)
  f = functools.partial(ce, labels=y, implementation=implementation, block_size=BLOCK)
  got, got_grad = value_and_grad(f, z)
  assert_close(got, want)
  assert_close(got_grad, want_grad, n_reduced=1)


# The fast tier keeps the CPU default and the Pallas kernel; "chunked" is slow.
@tiered("implementation", IMPLEMENTATIONS, fast=["xla", "pallas"])
def test_bfloat16_leading_dims_and_jit(implementation):
  z = logits(2).reshape(1, N, V)
  y = labels(2).reshape(1, N)
  want, want_grad = value_and_grad64(
      lambda z, y: reference.cross_entropy(z[0], y[0], jnp.ones(N, bool))[None], z, y)
  zb = jnp.asarray(z, jnp.bfloat16)
  f = jax.jit(functools.partial(ce, labels=jnp.asarray(y), implementation=implementation,
                                block_size=BLOCK))
  got, got_grad = value_and_grad(f, zb)
  assert f(zb).dtype == jnp.bfloat16 and got_grad.shape == z.shape
  # bf16 logits are exact inputs; the error is the bf16 rounding of the inputs and outputs.
  want_b, want_grad_b = value_and_grad64(
      lambda z, y: reference.cross_entropy(z[0], y[0], jnp.ones(N, bool))[None],
      np.asarray(zb, np.float32), y)
  assert_close(got, want_b, jnp.bfloat16, n_reduced=1)
  assert_close(got_grad, want_grad_b, jnp.bfloat16, n_reduced=1)
  assert_close(got, want, jnp.bfloat16, n_reduced=V)


def test_implementations_agree_under_vmap():
  z, y = jnp.asarray(logits(3), jnp.float32), jnp.asarray(labels(3))
  batched = jax.jit(lambda z, y: ce(z, y, implementation="chunked", block_size=BLOCK))(
      z.reshape(1, N, V), y.reshape(1, N))
  mapped = jax.jit(jax.vmap(lambda z, y: ce(z, y, implementation="pallas", block_size=BLOCK)))(
      z.reshape(1, N, V), y.reshape(1, N))
  assert_close(mapped, batched)


def test_float64_is_exact(x64):
  z, y = jnp.asarray(logits(4)), jnp.asarray(labels(4))
  assert z.dtype == jnp.float64
  got = ce(z, y, implementation="chunked", label_smoothing=0.1)
  want = reference.cross_entropy(z, y, jnp.ones(N, bool), label_smoothing=0.1)
  assert got.dtype == jnp.float64
  np.testing.assert_allclose(got, want, rtol=1e-12)


def test_default_never_interprets():
  fn = _dispatch.select(api.IMPLEMENTATIONS, None, "ce", shape=(N, V), dtype=jnp.float32)
  if _dispatch.backend() == "gpu" and _dispatch.triton_supported():
    assert fn is api.IMPLEMENTATIONS["pallas"].fn_on("gpu")
  else:
    assert fn is api.IMPLEMENTATIONS["xla"].fn


def test_bad_inputs():
  z, y = jnp.zeros((4, 10)), jnp.zeros(4, jnp.int32)
  with pytest.raises(ValueError, match="implementation"):
    ce(z, y, implementation="triton")
  with pytest.raises(TypeError, match="labels"):
    ce(z, y.astype(jnp.float32))
  with pytest.raises(ValueError, match="batch shape"):
    ce(z, jnp.zeros(5, jnp.int32))
  with pytest.raises(ValueError, match="label_smoothing"):
    ce(z, y, label_smoothing=1.5)
  with pytest.raises(ValueError, match="z_loss"):
    ce(z, y, z_loss=-1.0)
  with pytest.raises(TypeError, match="logits"):
    ce(jnp.zeros((4, 10), jnp.int32), y)
  with pytest.raises(ValueError, match="where"):
    ce(z, y, where=jnp.ones(5, bool))


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_out_of_range_label_is_nan_never_a_number(implementation):
  z, y = jnp.asarray(logits(12)), np.array(labels(13))
  y[3], y[7] = V, -5  # outside [0, V) and not ignored: no implementation may invent a value
  got = np.asarray(ce(z, jnp.asarray(y), implementation=implementation, block_size=BLOCK))
  assert np.isnan(got[[3, 7]]).all() and np.isfinite(np.delete(got, [3, 7])).all()
  ignored = ce(z, jnp.asarray(y), ignore_index=-5, where=jnp.arange(N) != 3,
               implementation=implementation, block_size=BLOCK)
  assert np.isfinite(np.asarray(ignored)).all()


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_all_minus_inf_row_is_inf_with_zero_gradient(implementation):
  """A token with no mass gives +inf and no gradient, as the reference and jaxdiv.losses."""
  z = np.array(logits(14), np.float32)
  z[2] = -np.inf
  y = jnp.asarray(labels(14))
  f = functools.partial(ce, labels=y, implementation=implementation, block_size=BLOCK,
                        label_smoothing=0.1, z_loss=1e-3)
  got, got_grad = value_and_grad(lambda x: jnp.where(jnp.isfinite(f(x)), f(x), 0.0),
                                 jnp.asarray(z))
  assert np.asarray(f(jnp.asarray(z)))[2] == np.inf
  np.testing.assert_array_equal(got_grad[2], 0)
  assert np.isfinite(got_grad).all()
  want = reference.cross_entropy(jnp.asarray(z), y, jnp.ones(N, bool), label_smoothing=0.1,
                                 z_loss=1e-3)
  assert np.asarray(want)[2] == np.inf


# Pallas interpret mode costs seconds: its case is slow.
@tiered("implementation", IMPLEMENTATIONS, fast=["xla", "chunked"])
def test_full_smoothing_with_a_minus_inf_label_logit(implementation):
  """label_smoothing = 1: the label's own term has weight 0, so a -inf label logit gives the
  uniform target's cross-entropy (+inf where some logit is -inf, as the reference), not NaN;
  the other tokens against the float64 maths, -mean(log_softmax(z))."""
  z = np.array(logits(17), np.float32)
  y = np.asarray(labels(17))
  z[3, y[3]] = -np.inf
  got = np.asarray(ce(jnp.asarray(z), jnp.asarray(y), implementation=implementation,
                      block_size=BLOCK, label_smoothing=1.0))
  want = reference.cross_entropy(jnp.asarray(z), jnp.asarray(y), jnp.ones(N, bool),
                                 label_smoothing=1.0)
  assert got[3] == np.inf and np.asarray(want)[3] == np.inf
  z64 = z.astype(np.float64)
  plain = -np.mean(z64 - scipy.special.logsumexp(z64, axis=-1, keepdims=True), axis=-1)
  rows = np.arange(N) != 3
  np.testing.assert_allclose(got[rows], plain[rows], rtol=1e-5)


def test_options_the_kernels_do_not_take_run_the_reference(x64):
  """float64 logits, class weights, a per-class mask, traced hyperparameters: the reference."""
  z, y = jnp.asarray(logits(15)), jnp.asarray(labels(15))
  valid = jnp.ones(N, bool)
  w = jnp.asarray(np.random.default_rng(15).uniform(0.5, 2.0, V))
  got = api.integer_cross_entropy(z, y, valid, label_smoothing=0.1, weights=w)
  want = reference.cross_entropy(z, y, valid, label_smoothing=0.1, weights=w)
  np.testing.assert_array_equal(got, want)
  traced = jax.jit(lambda ls: api.integer_cross_entropy(z.astype(jnp.float32), y, valid,
                                                        label_smoothing=ls))(0.1)
  np.testing.assert_allclose(traced, reference.cross_entropy(z, y, valid, label_smoothing=0.1),
                             rtol=1e-5)
  with pytest.raises(ValueError, match="weights"):
    api.integer_cross_entropy(z, y, valid, weights=w, implementation="xla")
  with pytest.raises(ValueError, match="traced"):
    jax.jit(lambda ls: api.integer_cross_entropy(z, y, valid, label_smoothing=ls,
                                                 implementation="chunked"))(0.1)


@pytest.mark.parametrize("case", list(CASES))
def test_forward_mode_of_the_cpu_default(case):
  """`jax.jvp` of what `None` runs on CPU ("xla", a `custom_jvp`) against the float64
  reference's, with -inf logits and ignored tokens."""
  cpu = jax.devices("cpu")[0]
  with jax.default_device(cpu):
    assert _dispatch.select(api.IMPLEMENTATIONS, None, "ce") is api.IMPLEMENTATIONS["xla"].fn
  z, y, valid, kwargs = _inputs(case, seed=16, neg_inf_frac=0.1)
  t = np.random.default_rng(16).normal(size=z.shape)
  # jitted: eagerly, each op of the kernel and of its JVP compiles on its own.
  with jax.enable_x64(True):
    want, want_t = jax.jit(lambda a, t: jax.jvp(
        lambda a: _ref(valid, kwargs)(a, jnp.asarray(y)), (a,), (t,)))(z, t)
  f = functools.partial(ce, labels=jnp.asarray(y), **kwargs)
  with jax.default_device(cpu):
    got, got_t = jax.jit(lambda z, t: jax.jvp(f, (z,), (t,)))(
        jnp.asarray(z, jnp.float32), jnp.asarray(t, jnp.float32))
  assert_close(got, want, err_msg="loss")
  assert_close(got_t, want_t, err_msg="tangent")
  assert np.all(np.asarray(got_t)[~valid] == 0)

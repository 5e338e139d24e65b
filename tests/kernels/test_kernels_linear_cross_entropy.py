"""Fused linear cross-entropy: every implementation and weight layout against the float64
reference on materialised logits, in value and in the gradients of hidden and weight."""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest
from _helpers import tiered
from kernels_cases import IMPLEMENTATIONS
from kernels_cases import assert_close
from kernels_cases import value_and_grad
from kernels_cases import value_and_grad64

from jaxdiv.kernels import _shapes
from jaxdiv.kernels import fused_linear_cross_entropy as flce
from jaxdiv.kernels.linear_cross_entropy import reference

N, D, V = _shapes.TEST_LINEAR
BLOCK = 256  # vocabulary block (the Pallas backward chunk); 1000 is not a multiple of it


def _inputs(seed, dtype=jnp.float32):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(N, D))
  w = rng.normal(size=(D, V)) / np.sqrt(D) * 3
  y = rng.integers(0, V, N)
  return h, w, y


# A compilation a case: the fast tier keeps each implementation, options and layout once.
@tiered("implementation,options,layout",
        [(i, o, lay) for i in IMPLEMENTATIONS for o in ("plain", "all") for lay in ("dv", "vd")])
def test_matches_float64_reference(device, implementation, options, layout):
  h, w, y = _inputs(0)
  valid = np.ones(N, bool)
  kwargs = {}
  if options == "all":
    y[::4] = -1
    where = np.random.default_rng(1).random(N) > 0.2
    valid = (y != -1) & where
    kwargs = dict(ignore_index=-1, where=jnp.asarray(where), label_smoothing=0.1, z_loss=1e-3)
  w_in = w.T.copy() if layout == "vd" else w
  vd = layout == "vd"

  def ref(h, w, y):
    return reference.linear_cross_entropy(
        h, w, y, jnp.asarray(valid), vd=vd, label_smoothing=kwargs.get("label_smoothing", 0.0),
        z_loss=kwargs.get("z_loss", 0.0))

  want, (want_dh, want_dw) = value_and_grad64(ref, h, w_in, y, argnums=(0, 1))
  f = functools.partial(flce, labels=jnp.asarray(y), implementation=implementation,
                        block_size=BLOCK, weight_layout=layout, **kwargs)
  got, (got_dh, got_dw) = value_and_grad(f, jnp.asarray(h, jnp.float32),
                                         jnp.asarray(w_in, jnp.float32), argnums=(0, 1))
  assert_close(got, want, n_reduced=V * D, err_msg="loss")
  assert_close(got_dh, want_dh, n_reduced=V, err_msg="d hidden")
  assert_close(got_dw, want_dw, n_reduced=N, err_msg="d weight")
  assert np.all(got[~valid] == 0) and np.all(got_dh[~valid] == 0)


# The fast tier keeps the Pallas kernel's bfloat16 path (its own casts); the others are slow.
@tiered("implementation", IMPLEMENTATIONS, fast=["pallas"])
def test_bfloat16_with_float32_accumulation(implementation):
  h, w, y = _inputs(2)
  hb, wb = jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
  # The truth for bf16 inputs: the exact loss of the rounded inputs.
  want, (want_dh, want_dw) = value_and_grad64(
      lambda h, w, y: reference.linear_cross_entropy(h, w, y, jnp.ones(N, bool), vd=False),
      np.asarray(hb, np.float32), np.asarray(wb, np.float32), y, argnums=(0, 1))
  f = functools.partial(flce, labels=jnp.asarray(y), implementation=implementation,
                        block_size=BLOCK)
  got, (got_dh, got_dw) = value_and_grad(f, hb, wb, argnums=(0, 1))
  assert f(hb, wb).dtype == jnp.bfloat16
  assert_close(got, want, jnp.bfloat16, n_reduced=1)
  # The logits' gradient is cast to bf16 before the backward matmuls (as the issue asks).
  assert_close(got_dh, want_dh, jnp.bfloat16, n_reduced=1)
  assert_close(got_dw, want_dw, jnp.bfloat16, n_reduced=1)


def test_equals_optax_on_materialised_logits():
  h, w, y = (jnp.asarray(a, jnp.float32) if a.dtype.kind == "f" else jnp.asarray(a)
             for a in _inputs(3))
  leading = lambda x: x.reshape(1, *x.shape)
  loss = lambda h, w: optax.softmax_cross_entropy_with_integer_labels(
      jnp.dot(h, w, precision="highest"), leading(y))
  want, want_g = value_and_grad(loss, leading(h), w, argnums=(0, 1))
  got, got_g = value_and_grad(lambda h, w: flce(h, w, leading(y), block_size=BLOCK),
                              leading(h), w, argnums=(0, 1))
  assert got.shape == (1, N)
  assert_close(got, want, n_reduced=V * D)
  for a, b in zip(got_g, want_g):
    assert_close(a, b, n_reduced=V)


@pytest.mark.skipif(jax.default_backend() != "cpu",
                    reason="a property of XLA:CPU's buffer assignment; bench/kernels.py"
                           " --only memory measures the GPU's")
def test_memory_is_blockwise():
  """XLA's temporaries for value-and-grad stay far below one [tokens, vocab] float32 array."""
  n, d, v = 1024, 64, 16384
  h = jax.ShapeDtypeStruct((n, d), jnp.float32)
  w = jax.ShapeDtypeStruct((d, v), jnp.float32)
  y = jax.ShapeDtypeStruct((n,), jnp.int32)
  f = lambda h, w, y: jnp.mean(flce(h, w, y, implementation="chunked", block_size=512))
  mem = jax.jit(jax.value_and_grad(f, (0, 1))).lower(h, w, y).compile().memory_analysis()
  assert mem.temp_size_in_bytes < n * v * 4 / 8, mem


def test_layout_errors():
  h = jnp.zeros((3, 4))
  with pytest.raises(ValueError, match="square"):
    flce(h, jnp.zeros((4, 4)), jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="contract"):
    flce(h, jnp.zeros((5, 6)), jnp.zeros(3, jnp.int32))
  with pytest.raises(ValueError, match="weight_layout"):
    flce(h, jnp.zeros((4, 6)), jnp.zeros(3, jnp.int32), weight_layout="vocab_first")
  square = jax.jit(functools.partial(flce, weight_layout="vd"))(h, jnp.eye(4),
                                                               jnp.zeros(3, jnp.int32))
  np.testing.assert_allclose(square, np.log(4.0), rtol=1e-6)


@pytest.mark.parametrize("implementation", IMPLEMENTATIONS)
def test_axis_name_outside_shard_map(implementation):
  """Vocabulary parallelism needs a bound mesh axis; its tests are in test_multidevice.py."""
  h, w, y = jnp.zeros((3, 4)), jnp.zeros((4, 6)), jnp.zeros(3, jnp.int32)
  for fn in (flce, jax.jit(flce, static_argnames=("axis_name", "implementation"))):
    with pytest.raises(ValueError, match="`axis_name`='vocab' is not a mesh axis"):
      fn(h, w, y, axis_name="vocab", implementation=implementation)


# A few compilations a case: the fast tier keeps each implementation, reduction and layout once.
@tiered("implementation,reduction,layout",
        [(i, r, lay) for i in (None, "xla", "forward_grad") for r in ("mean", "sum")
         for lay in ("dv", "vd")])
def test_reduction_matches_float64_reference(implementation, reduction, layout, monkeypatch):
  # "forward_grad" forms the gradients in the forward pass (opt-in); its token blocks of 8 do
  # not divide N = 37, nor its d weight chunks of 96 (set here) V = 1000.
  if implementation == "forward_grad":
    from jaxdiv.kernels.linear_cross_entropy import forward_grad
    monkeypatch.setattr(forward_grad, "_CHUNK", 96)
  h, w, y = _inputs(5)
  y[::5] = -1
  where = np.random.default_rng(6).random(N) > 0.2
  valid = (y != -1) & where
  w_in = w.T.copy() if layout == "vd" else w
  opts = dict(label_smoothing=0.1, z_loss=1e-3)

  def ref(h, w, y):
    per_token = reference.linear_cross_entropy(h, w, y, jnp.asarray(valid),
                                               vd=layout == "vd", **opts)
    total = jnp.sum(per_token)
    return total / valid.sum() if reduction == "mean" else total

  want, (want_dh, want_dw) = value_and_grad64(ref, h, w_in, y, argnums=(0, 1))
  f = functools.partial(flce, labels=jnp.asarray(y), implementation=implementation,
                        block_size=8, weight_layout=layout, ignore_index=-1,
                        where=jnp.asarray(where), reduction=reduction, **opts)
  got, (got_dh, got_dw) = value_and_grad(jax.jit(f), jnp.asarray(h, jnp.float32),
                                         jnp.asarray(w_in, jnp.float32), argnums=(0, 1))
  assert got.shape == ()
  assert_close(got, want, n_reduced=V * D * N, err_msg="loss")
  assert_close(got_dh, want_dh, n_reduced=V, err_msg="d hidden")
  assert_close(got_dw, want_dw, n_reduced=N, err_msg="d weight")
  assert np.all(got_dh[~valid] == 0)
  # Under remat (the forward, gradients included, runs again) the result is the same.
  remat = jax.jit(jax.grad(jax.checkpoint(f), argnums=(0, 1)))(jnp.asarray(h, jnp.float32),
                                                               jnp.asarray(w_in, jnp.float32))
  assert_close(remat[1], want_dw, n_reduced=N, err_msg="d weight under jax.checkpoint")


def test_default_on_one_cpu_device_is_forward_grad(monkeypatch):
  """With one CPU device (the suite runs with 8), `implementation=None` on a reduced loss traces
  the same computation as "forward_grad", and per-token losses the same as "chunked"."""
  from jaxdiv.kernels import _dispatch
  monkeypatch.setattr(_dispatch, "backend", lambda: "cpu")
  monkeypatch.setattr(jax, "device_count", lambda platform=None: 1)
  h, w, y = _inputs(3)
  hf, wf, y = jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(y)

  def jaxpr(implementation, reduction):
    loss = lambda h, w: flce(h, w, y, implementation=implementation, reduction=reduction,
                             label_smoothing=0.1)
    return str(jax.make_jaxpr(jax.value_and_grad(loss, (0, 1)))(hf, wf))

  assert jaxpr(None, "mean") == jaxpr("forward_grad", "mean")
  assert jaxpr(None, "mean") != jaxpr("chunked", "mean")
  assert jaxpr(None, "sum") == jaxpr("forward_grad", "sum")
  per_token = lambda implementation: str(jax.make_jaxpr(
      lambda h, w: flce(h, w, y, implementation=implementation))(hf, wf))
  assert per_token(None) == per_token("chunked")
  monkeypatch.setattr(jax, "device_count", lambda platform=None: 2)
  assert jaxpr(None, "mean") == jaxpr("chunked", "mean")


def test_forward_grad_bfloat16_with_float32_accumulation():
  h, w, y = _inputs(2)
  hb, wb = jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16)
  want, (want_dh, want_dw) = value_and_grad64(
      lambda h, w, y: jnp.sum(reference.linear_cross_entropy(h, w, y, jnp.ones(N, bool),
                                                             vd=False)),
      np.asarray(hb, np.float32), np.asarray(wb, np.float32), y, argnums=(0, 1))
  f = functools.partial(flce, labels=jnp.asarray(y), implementation="forward_grad",
                        reduction="sum", block_size=8)
  got, (got_dh, got_dw) = value_and_grad(f, hb, wb, argnums=(0, 1))
  assert f(hb, wb).dtype == jnp.bfloat16 and got_dh.shape == h.shape
  assert_close(got, want, jnp.bfloat16, n_reduced=1)
  # d weight sums N tokens' bf16-rounded logits gradients in float32.
  assert_close(got_dh, want_dh, jnp.bfloat16, n_reduced=1)
  assert_close(got_dw, want_dw, jnp.bfloat16, n_reduced=N)


def test_forward_grad_errors_name_the_argument():
  h, w, y = _inputs(9)
  hf, wf, y = jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(y)
  with pytest.raises(ValueError, match="reduction"):
    flce(hf, wf, y, implementation="forward_grad")
  with jax.enable_x64(True), pytest.raises(ValueError, match="reduction"):
    flce(jnp.asarray(h), jnp.asarray(w), y, implementation="forward_grad")
  with pytest.raises(ValueError, match="axis_name"):
    flce(hf, wf, y, implementation="forward_grad", reduction="mean", axis_name="vocab")


def test_forward_grad_nan_weight_stays_nan():
  """A NaN in the weight makes the loss NaN and every token's logits NaN: every row is lost, a
  constant (the cross-entropy family's lost-row rule), so d logits is 0. The gradients are the
  float64 reference's (autodiff through the guarded reference), NaN where it has them: d weight
  0, d hidden NaN in the dimension of the NaN weight (0 * NaN in d logits @ weight^T)."""
  h, w, y = _inputs(13)
  w[0, 7] = np.nan
  f = lambda h, w: flce(h, w, jnp.asarray(y), implementation="forward_grad", reduction="mean")
  value, (dh, dw) = jax.value_and_grad(f, (0, 1))(jnp.asarray(h, jnp.float32),
                                                   jnp.asarray(w, jnp.float32))
  want, (want_dh, want_dw) = value_and_grad64(
      lambda h, w: jnp.mean(reference.linear_cross_entropy(h, w, jnp.asarray(y),
                                                           jnp.ones(N, bool), vd=False)),
      h, w, argnums=(0, 1))
  assert np.isnan(value) and np.isnan(want)
  np.testing.assert_array_equal(np.asarray(dw), want_dw)
  np.testing.assert_array_equal(np.asarray(dw), 0)
  np.testing.assert_array_equal(np.asarray(dh), want_dh)  # NaN where the reference's is


# The default case (6 s) is slow; forward_grad runs the empty batch and the vmap in the fast tier.
@tiered("implementation", [None, "forward_grad"], fast=["forward_grad"])
def test_reduced_loss_without_tokens_and_under_vmap(implementation):
  h, w, y = _inputs(10)
  hf, wf = jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32)
  f = lambda h, w, y: flce(h, w, y, implementation=implementation, reduction="mean")
  value, (dh, dw) = jax.value_and_grad(f, (0, 1))(hf[:0], wf, jnp.asarray(y[:0]))
  assert value == 0 and dh.shape == (0, D) and np.all(np.asarray(dw) == 0)
  # A batch of 3 heads' inputs under vmap: each its own mean and gradients.
  hb = jnp.stack([hf, 2 * hf, -hf])
  yb = jnp.asarray(np.stack([y, y[::-1], np.roll(y, 3)]))
  got = jax.vmap(jax.value_and_grad(f, (0, 1)), in_axes=(0, None, 0))(hb, wf, yb)
  for i in range(3):
    want, (want_dh, want_dw) = value_and_grad64(
        lambda h, w, y: jnp.mean(reference.linear_cross_entropy(h, w, y, jnp.ones(N, bool),
                                                                vd=False)),
        np.asarray(hb[i]), w, np.asarray(yb[i]), argnums=(0, 1))
    assert_close(got[0][i], want, n_reduced=V * D, err_msg="loss")
    assert_close(got[1][0][i], want_dh, n_reduced=V, err_msg="d hidden")
    assert_close(got[1][1][i], want_dw, n_reduced=N, err_msg="d weight")


def test_forward_grad_second_order():
  """Reverse over reverse differentiates the forward pass that formed the gradients: a
  Hessian-vector product in the hidden states against the float64 reference's."""
  h, w, y = _inputs(11)
  v = np.random.default_rng(12).normal(size=h.shape)

  def hvp(loss, dtype):  # d/dh <grad_h loss, v>
    g = lambda h: jax.grad(loss)(h, jnp.asarray(w, dtype))
    hv = jax.jit(jax.grad(lambda h: jnp.vdot(g(h), jnp.asarray(v, dtype))))
    return np.asarray(hv(jnp.asarray(h, dtype)), np.float64)

  ref = lambda h, w: jnp.mean(reference.linear_cross_entropy(h, w, jnp.asarray(y),
                                                             jnp.ones(N, bool), vd=False))
  ours = lambda h, w: flce(h, w, jnp.asarray(y), implementation="forward_grad",
                           reduction="mean", block_size=8)
  with jax.enable_x64(True):
    want = hvp(ref, jnp.float64)
  np.testing.assert_allclose(hvp(ours, jnp.float32), want, rtol=1e-4,
                             atol=1e-4 * np.abs(want).max())


def test_reduction_edges():
  h, w, y = _inputs(7)
  hf, wf = jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32)
  nothing = np.zeros(N, bool)
  value, grads = jax.jit(jax.value_and_grad(
      lambda a, b: flce(a, b, jnp.asarray(y), where=nothing, reduction="mean"), (0, 1)))(hf, wf)
  assert value == 0 and all(np.all(np.asarray(g) == 0) for g in grads)  # mean of nothing: 0
  with pytest.raises(ValueError, match="reduction"):
    flce(hf, wf, jnp.asarray(y), reduction="avg")


@pytest.mark.parametrize("reduction", ["none", "mean"])
@pytest.mark.parametrize("implementation", [None, "xla"])
def test_out_of_range_label_is_nan_never_a_number(implementation, reduction):
  h, w, y = _inputs(8)
  y[2], y[9] = V, -3  # outside [0, V), not ignored
  f = lambda a, b, **kw: flce(a, b, jnp.asarray(y), implementation=implementation,
                              reduction=reduction, **kw)
  hf, wf = jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32)
  out = np.asarray(f(hf, wf))
  if reduction == "none":
    assert np.isnan(out[[2, 9]]).all() and np.isfinite(np.delete(out, [2, 9])).all()
  else:
    assert np.isnan(out)
  where = np.ones(N, bool)
  where[[2, 9]] = False  # masked out: counted nowhere, so no NaN
  assert np.isfinite(np.asarray(f(hf, wf, where=jnp.asarray(where)))).all()


@pytest.mark.parametrize("reduction", ["sum", "mean"])
def test_float64_reduction_accumulates_in_float64(reduction):
  """A float64 reduced loss is summed in float64 (summed in float32, this sum of 4000 losses,
  73085.7, was 6e-5 off), against scipy's logsumexp on the logits."""
  from scipy.special import logsumexp
  rng = np.random.default_rng(12)
  n, d, v = 4000, 8, 40
  h, w, y = rng.normal(size=(n, d)), rng.normal(size=(d, v)) * 3, rng.integers(0, v, n)
  logits = h @ w
  per_token = logsumexp(logits, axis=-1) - logits[np.arange(n), y]
  want = per_token.sum() / (n if reduction == "mean" else 1)
  with jax.enable_x64(True):
    got = flce(jnp.asarray(h), jnp.asarray(w), jnp.asarray(y), reduction=reduction)
    assert got.dtype == jnp.float64
  np.testing.assert_allclose(float(got), want, rtol=1e-13)


def test_unknown_implementation_lists_every_name():
  h, w, y = _inputs(9)
  with pytest.raises(ValueError, match="'xla', 'forward_grad'\\); got 'fast'"):
    flce(jnp.asarray(h, jnp.float32), jnp.asarray(w, jnp.float32), jnp.asarray(y),
         implementation="fast")

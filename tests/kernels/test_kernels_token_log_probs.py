"""Fused per-token log-probabilities and entropy against a float64 dense reference."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import tiered

from jaxdiv.kernels import _shapes
from jaxdiv.losses import fused_linear_token_log_probs

N, D, V = _shapes.TEST_LINEAR
BLOCK = 256  # does not divide V = 1000
OPTIONS = {"plain": dict(), "capped": dict(softcap=5.0, temperature=0.7),
           "temperature": dict(temperature=1.3)}


def _inputs(seed, layout="dv", n=N, v=V, scale=3.0):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(n, D))
  w = rng.normal(size=(D, v)) * scale / np.sqrt(D)
  y = rng.integers(0, v, n)
  where = rng.random(n) > 0.2
  return h, (w.T if layout == "vd" else w), y, where


def _dense64(h, w, y, where, *, layout="dv", softcap=None, temperature=1.0):
  """Written apart from jaxdiv: float64 logits, jax.nn.log_softmax, masked by `where`."""
  x = h @ (w.T if layout == "vd" else w)
  z = (softcap * jnp.tanh(x / softcap) if softcap else x) / temperature
  log_p = jax.nn.log_softmax(z)
  lp = jnp.take_along_axis(log_p, y[:, None], axis=1)[:, 0]
  ent = -jnp.sum(jnp.exp(log_p) * log_p, axis=-1)
  return jnp.where(where, lp, 0.0), jnp.where(where, ent, 0.0)


def _objective(f, n):
  """Both outputs with non-uniform cotangents, so each reaches the gradient."""
  c1, c2 = jnp.linspace(0.5, 1.5, n), jnp.cos(jnp.arange(n))
  return lambda h, w: (lambda lp, ent: jnp.sum(c1 * lp) + jnp.sum(c2 * ent))(*f(h, w))


def _value_and_grad(f, h, w):
  """f(h, w) and the gradients of `_objective` as one jitted program (eagerly, each op of a
  blockwise kernel and of its VJP compiles on its own)."""
  return jax.jit(lambda h, w: (f(h, w), jax.grad(_objective(f, h.shape[0]), (0, 1))(h, w)))(
      h, w)


def _reference(args, **kw):
  with jax.enable_x64(True):
    h, w, y, where = (jnp.asarray(a) for a in args)
    f = lambda h, w: _dense64(h, w, y, where, **kw)
    value, grads = _value_and_grad(f, h, w)
    return [np.asarray(a) for a in (*value, *grads)]


def _ours(args, dtype=jnp.float32, **kw):
  h, w, y, where = args
  out = jnp.promote_types(dtype, jnp.float32)
  f = lambda h, w: tuple(o.astype(out) for o in fused_linear_token_log_probs(
      h, w, y, where=where, **kw))
  h, w = jnp.asarray(h, dtype), jnp.asarray(w, dtype)
  value, grads = _value_and_grad(f, h, w)
  return [np.asarray(a, np.float64) for a in (*value, *grads)]


def _assert_close(got, want, rtol):
  for name, a, b in zip(("log_probs", "entropy", "d hidden", "d weight"), got, want):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max(), err_msg=name)


# Each implementation on both layouts, with and without the cap (Pallas interpret mode is slow);
# the fast tier keeps each implementation, options and layout once.
@tiered("implementation,options,layout", [
    ("xla", "plain", "dv"), ("xla", "capped", "vd"), ("chunked", "plain", "vd"),
    ("chunked", "capped", "dv"), ("chunked", "temperature", "dv"), ("pallas", "plain", "dv"),
    ("pallas", "capped", "vd")],
    fast=[("xla", "capped", "vd"), ("chunked", "temperature", "dv"), ("pallas", "plain", "dv")])
def test_matches_float64_reference(implementation, options, layout):
  args = _inputs(0, layout)
  kw = OPTIONS[options]
  got = _ours(args, implementation=implementation, block_size=BLOCK, weight_layout=layout, **kw)
  _assert_close(got, _reference(args, layout=layout, **kw), rtol=2e-5)
  masked = ~args[3]
  assert all(np.all(g[masked] == 0) for g in (got[0], got[1], got[2]))


# float64 and bfloat16 inputs: the fast tier keeps one implementation of each (crosswise).
@tiered("implementation", ["xla", "chunked"], fast=["chunked"])
def test_float64_inputs_get_float64_accuracy(implementation):
  args = _inputs(1)
  kw = dict(softcap=4.0, temperature=0.9)
  with jax.enable_x64(True):
    got = _ours(args, dtype=jnp.float64, implementation=implementation, block_size=BLOCK, **kw)
    h = fused_linear_token_log_probs(jnp.asarray(args[0]), jnp.asarray(args[1]), args[2],
                                     implementation=implementation)[0]
    assert h.dtype == jnp.float64
  _assert_close(got, _reference(args, **kw), rtol=1e-12)


@tiered("implementation", ["xla", "chunked"], fast=["xla"])
def test_bfloat16_with_float32_accumulation(implementation):
  args = _inputs(2)
  h, w = (np.asarray(jnp.asarray(a, jnp.bfloat16), np.float64) for a in args[:2])
  want = _reference((h, w, *args[2:]), softcap=5.0)
  got = _ours(args, dtype=jnp.bfloat16, implementation=implementation, block_size=BLOCK,
              softcap=5.0)
  # float32 statistics of exact bf16 products, each result rounded to bf16 once (2^-9)
  for a, b, rtol in zip(got, want, (4e-3, 4e-3, 3e-2, 3e-2)):
    np.testing.assert_allclose(a, b, rtol=rtol, atol=rtol * np.abs(b).max())
  out = fused_linear_token_log_probs(jnp.asarray(h, jnp.bfloat16), jnp.asarray(w, jnp.bfloat16),
                                     args[2], implementation=implementation)
  assert out[0].dtype == out[1].dtype == jnp.bfloat16


def test_batch_dims_jit_and_errors():
  h, w, y, where = _inputs(4)
  f = jax.jit(fused_linear_token_log_probs, static_argnames=("implementation", "softcap"))
  lp, ent = f(h.reshape(1, N, D).astype(np.float32), w.astype(np.float32), y.reshape(1, N),
              softcap=3.0, implementation="chunked")
  lp2, ent2 = fused_linear_token_log_probs(h.astype(np.float32), w.astype(np.float32), y,
                                           softcap=3.0)
  assert lp.shape == ent.shape == (1, N)
  np.testing.assert_allclose(lp[0], lp2, rtol=1e-6)
  np.testing.assert_allclose(ent[0], ent2, rtol=1e-6)
  with pytest.raises(ValueError, match="softcap"):
    fused_linear_token_log_probs(h, w, y, softcap=0.0)
  with pytest.raises(ValueError, match="temperature"):
    fused_linear_token_log_probs(h, w, y, temperature=-1.0)
  with pytest.raises(ValueError, match="labels"):
    fused_linear_token_log_probs(h, w, y[:3])
  bad = fused_linear_token_log_probs(h, w, np.where(np.arange(N) == 0, V, y))[0]
  assert np.isnan(bad[0]) and np.all(np.isfinite(bad[1:]))


@pytest.mark.skipif(jax.default_backend() != "cpu", reason="XLA:CPU buffer assignment")
def test_memory_is_blockwise():
  n, d, v = 1024, 64, 16384
  shapes = (jax.ShapeDtypeStruct((n, d), jnp.float32), jax.ShapeDtypeStruct((d, v), jnp.float32),
            jax.ShapeDtypeStruct((n,), jnp.int32))
  f = lambda h, w, y: (lambda lp, ent: jnp.mean(lp) + jnp.mean(ent))(
      *fused_linear_token_log_probs(h, w, y, implementation="chunked", block_size=512))
  mem = jax.jit(jax.value_and_grad(f, (0, 1))).lower(*shapes).compile().memory_analysis()
  assert mem.temp_size_in_bytes < n * v * 4 / 8, mem

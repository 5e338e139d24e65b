"""`jaxdiv._fallback.row_reduce`: row sums and minima in one pass (XLA:CPU's chunked variadic
reduction), against float64 NumPy and against its own ordinary-reduction path (`one_pass=False`).

The shapes are chosen so that the one pass runs on CPU: the row length a multiple of the chunk
(64-byte lines x 32 steps / `reads`: 512 float32 or 256 float64 entries for one input read), and
the `one_pass` fixture lowers its entry threshold.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxdiv import _fallback


def _pair(x, y, reads=1, one_pass=True):
  (s, z), (m, n) = _fallback.row_reduce(lambda x, y: ((x * x, x), (x, y)), (x, y), -1,
                                      one_pass=one_pass, reads=reads)
  return s, z, m, n


@pytest.mark.parametrize("dtype,n,reads", [(np.float32, 512, 1), (np.float32, 512, 2),
                                           (np.float64, 256, 1), (np.float64, 1024, 2)])
def test_sums_and_minima_match_float64(one_pass, dtype, n, reads):
  with jax.enable_x64(dtype == np.float64):
    rng = np.random.default_rng(0)
    x = rng.random((3, 40, n)).astype(dtype)
    y = rng.normal(size=(3, 40, n)).astype(dtype)
    x[0, 1, 7] = -0.5   # a negative entry: the row minimum
    x[1, 2, 300 % n] = np.nan  # NaN propagates into its row's sums
    y[2, 3, n - 1] = -np.inf
    fn = jax.jit(lambda x, y: _pair(x, y, reads))
    got = fn(x, y)
    # the one pass is what ran: the chunks of 32 / reads steps of one 64-byte line
    lanes = 64 // np.dtype(dtype).itemsize
    assert f"x{32 // reads}x{lanes}x" in fn.lower(x, y).as_text()
    x64, y64 = x.astype(np.float64), y.astype(np.float64)
    want = ((x64 * x64).sum(-1), x64.sum(-1), x64.min(-1), y64.min(-1))
    eps = np.finfo(dtype).eps
    for g, w in zip(got[:2], want[:2]):
      assert g.shape == w.shape and g.dtype == dtype
      np.testing.assert_allclose(g, w, rtol=8 * eps)
    # Minima are exact. Not on the NaN row: XLA:CPU's own row minimum drops a NaN in some
    # shapes (jax 0.10.2: [3, 40, 512] float32), so `row_reduce` promises nothing there.
    ok = ~np.isnan(x64).any(-1)
    for g, w in zip(got[2:], want[2:]):
      np.testing.assert_array_equal(np.asarray(g)[ok], w.astype(dtype)[ok])
    # The ordinary reductions (`one_pass=False`) agree to rounding.
    plain = jax.jit(lambda x, y: _pair(x, y, reads, one_pass=False))(x, y)
    for g, w in zip(got, plain):
      np.testing.assert_allclose(np.asarray(g)[ok], np.asarray(w)[ok], rtol=8 * eps)


def test_float32_sums_as_accurate_as_the_ordinary_sum(one_pass):
  """Median and max relative error of `sum(x^2) / sum(x)^2` on 4096 rows of 512 against
  float64: no worse than the ordinary reductions' (to 10%)."""
  rng = np.random.default_rng(1)
  x = rng.random((4096, 512)).astype(np.float32)
  x64 = x.astype(np.float64)
  want = (x64 * x64).sum(-1) / x64.sum(-1) ** 2

  def ratio(x, one_pass):
    (s, z), _ = _fallback.row_reduce(lambda x: ((x * x, x), ()), (x,), -1, one_pass=one_pass)
    return s / (z * z)

  ours = np.abs(np.asarray(jax.jit(lambda x: ratio(x, True))(x), np.float64) - want) / want
  plain = np.abs(np.asarray(jax.jit(lambda x: ratio(x, False))(x), np.float64) - want) / want
  assert np.median(ours) <= 1.1 * np.median(plain), (np.median(ours), np.median(plain))
  assert ours.max() <= 1.1 * plain.max() + 1e-7, (ours.max(), plain.max())


@pytest.mark.slow  # 7 s; fast: test_terms_closing_over_a_traced_scalar (grad, jacfwd, 2nd)
def test_derivatives_are_the_sums_of_the_tangents(one_pass, x64):
  """Gradient, forward mode, Hessian and vmap through the one pass (the minima carry none)."""
  rng = np.random.default_rng(2)
  x = jnp.asarray(rng.random((4, 256)))

  def f(x):
    (s, z), (m,) = _fallback.row_reduce(lambda x: ((x ** 3, x), (x,)), (x,), -1)
    return jnp.sum(s / z + m)

  def ref(x):
    return jnp.sum(jnp.sum(x ** 3, -1) / jnp.sum(x, -1) + jax.lax.stop_gradient(x.min(-1)))

  np.testing.assert_allclose(f(x), ref(x), rtol=1e-13)
  np.testing.assert_allclose(jax.grad(f)(x), jax.grad(ref)(x), rtol=1e-12)
  np.testing.assert_allclose(jax.jacfwd(f)(x), jax.jacfwd(ref)(x), rtol=1e-12)
  np.testing.assert_allclose(jax.hessian(f)(x[:1]), jax.hessian(ref)(x[:1]), rtol=1e-10,
                             atol=1e-12)
  np.testing.assert_allclose(jax.vmap(f)(x[:, None]), jax.vmap(ref)(x[:, None]), rtol=1e-13)


@pytest.mark.parametrize("shape,axis,chunked", [((0, 512), -1, False), ((6, 512), 0, False),
                                                ((6, 500), -1, False), ((512,), 0, True),
                                                ((2, 3, 1024), -1, True)])
def test_edge_shapes(one_pass, shape, axis, chunked):
  """An empty batch, a reduced axis that is not the last and a row length that is not a
  multiple of the chunk take the ordinary reductions; a single row and a 2-D batch the one pass.
  The values are the float64 sums and the minima either way."""
  x = np.random.default_rng(3).random(shape).astype(np.float32)
  fn = jax.jit(lambda x: _fallback.row_reduce(lambda x: ((x,), (x,)), (x,), axis))
  assert ("x32x16x" in fn.lower(x).as_text()) == chunked
  (s,), (m,) = fn(x)
  np.testing.assert_allclose(s, x.astype(np.float64).sum(axis), rtol=1e-5)
  np.testing.assert_array_equal(m, x.min(axis) if x.size else np.zeros(s.shape, x.dtype))


def test_small_arrays_take_the_ordinary_reductions():
  """Below `_MIN_ENTRIES` (64K) entries the ordinary reductions run; from it the one pass."""
  small = np.ones((8, 512), np.float32)
  large = jax.ShapeDtypeStruct((8192, 512), jnp.float32)
  fn = jax.jit(lambda x: _fallback.row_reduce(lambda x: ((x,), (x,)), (x,), -1))
  assert "x32x16x" not in fn.lower(small).as_text()
  assert "x32x16x" in fn.lower(large).as_text()
  # the threshold itself: 127 rows of 512 are below 64K entries, 128 rows are 64K
  below, at = (jax.ShapeDtypeStruct((n, 512), jnp.float32) for n in (127, 128))
  assert "x32x16x" not in fn.lower(below).as_text()
  assert "x32x16x" in fn.lower(at).as_text()


@pytest.mark.parametrize("shape", [(9, 1024), (3, 3, 512), (1, 9, 1024), (2, 5, 1024)])
def test_row_blocks_match_the_whole_batch(one_pass, monkeypatch, shape):
  """Where the partial sums would exceed `_MAX_PARTIAL_BYTES`, the pass runs over blocks of rows
  (here of 1024 entries, the last block overlapping the one before; along the second axis
  where one index of the first holds more): the sums and minima of the whole batch's pass, and
  their derivatives."""
  x = np.random.default_rng(4).random(shape).astype(np.float32)
  x.reshape(-1, shape[-1])[1, 0] = -0.5  # a view: row 1 of the flattened batch
  y = np.random.default_rng(5).random(shape).astype(np.float32)
  whole = jax.jit(lambda x, y: _pair(x, y))
  want = whole(x, y)
  monkeypatch.setattr(_fallback, "_MAX_PARTIAL_BYTES", 0)
  monkeypatch.setattr(_fallback, "_BLOCK_ENTRIES", 1024)
  blocks = jax.jit(lambda x, y: _pair(x, y))
  assert "while" in blocks.lower(x, y).as_text()
  assert "while" not in whole.lower(x, y).as_text()
  got = blocks(x, y)
  for g, w in zip(got, want):
    np.testing.assert_array_equal(g, w)
  loss = lambda x, y: jnp.sum(_pair(x, y)[0] / _pair(x, y)[1])
  np.testing.assert_allclose(jax.grad(loss, (0, 1))(x, y)[0],
                             2 * x / x.sum(-1, keepdims=True)
                             - (x * x).sum(-1, keepdims=True) / x.sum(-1, keepdims=True) ** 2,
                             rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("shape, axis", [((9, 1024), -1), ((3, 3, 512), -1), ((2, 5, 1024), -1),
                                         ((1024, 9), 0)])
def test_row_blocks_cut_a_row_parameter_with_the_rows(shape, axis):
  """`row_blocks` with a row parameter beside the inputs (size 1 along `axis`, a per-example
  coefficient): it is cut into the same blocks as its rows (a `while` loop over blocks of 1024
  entries), and the results and their derivatives in both inputs are the whole batch's."""
  rng = np.random.default_rng(7)
  x = rng.random(shape).astype(np.float32)
  c_shape = tuple(1 if i == axis % len(shape) else d for i, d in enumerate(shape))
  c = rng.random(c_shape).astype(np.float32)
  fn = lambda x, c: jnp.sum(jnp.sin(c * x), axis=axis)
  blocked = _fallback.row_blocks(fn, axis, entries=1024)
  assert "while" in jax.jit(blocked).lower(x, c).as_text()
  np.testing.assert_allclose(jax.jit(blocked)(x, c), fn(x, c), rtol=1e-6)
  loss = lambda f: lambda x, c: jnp.sum(f(x, c) ** 2)
  for got, want in zip(jax.jit(jax.grad(loss(blocked), (0, 1)))(x, c),
                       jax.grad(loss(fn), (0, 1))(x, c)):
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
  # an input of another shape: the batch is taken whole
  other = np.ones(shape[:-1] + (2,) if axis == -1 else (2,) + shape[1:], np.float32)
  whole = _fallback.row_blocks(lambda x, o: fn(x, 1.0), axis, entries=1024)
  assert "while" not in jax.jit(whole).lower(x, other).as_text()


def test_terms_closing_over_a_traced_scalar(one_pass, monkeypatch, x64):
  """Terms that close over a traced scalar (a user's generator with a parameter): derivatives
  in it and in the inputs, in the one pass over the whole batch (blocks would need the terms
  traced on a block), against float64 closed forms."""
  monkeypatch.setattr(_fallback, "_MAX_PARTIAL_BYTES", 0)
  x = jnp.asarray(np.random.default_rng(6).random((5, 256)))

  def f(x, c):
    (s, z), _ = _fallback.row_reduce(lambda x: ((c * x ** 3, x), ()), (x,), -1)
    return jnp.sum(s / z)

  lowered = jax.jit(f).lower(x, 2.0).as_text()
  assert "x32x8x" in lowered and "while" not in lowered
  gx, gc = jax.grad(f, (0, 1))(x, 2.0)
  s3, s1 = (x ** 3).sum(-1, keepdims=True), x.sum(-1, keepdims=True)
  np.testing.assert_allclose(gc, jnp.sum(s3 / s1), rtol=1e-12)
  np.testing.assert_allclose(gx, 2.0 * (3 * x ** 2 / s1 - s3 / s1 ** 2), rtol=1e-12)
  np.testing.assert_allclose(jax.jacfwd(f, 1)(x, 2.0), gc, rtol=1e-12)
  np.testing.assert_allclose(jax.grad(jax.grad(f, 1), 0)(x, 2.0), gx / 2.0, rtol=1e-12)

"""The fused linear cross-entropy's opt-in gradient filter (`grad_filter_eps`): exact when off
or when nothing falls below the threshold, and otherwise off the float64 gradients by no more
than the softmax entries below the threshold can carry."""

from __future__ import annotations

import functools
import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from _helpers import CHECK_FLAG
from _helpers import cpu_mesh
from _helpers import shard_map
from _helpers import tiered
from jax.sharding import PartitionSpec as P
from kernels_cases import assert_close
from kernels_cases import value_and_grad
from kernels_cases import value_and_grad64

from jaxdiv.kernels import _shapes
from jaxdiv.kernels import fused_linear_cross_entropy as flce
from jaxdiv.kernels.linear_cross_entropy import chunked_xla
from jaxdiv.kernels.linear_cross_entropy import reference

N, D, V = _shapes.TEST_LINEAR
BLOCK = 256  # vocabulary block; 1000 is not a multiple of it (the last block is clamped)
ROWS = 8  # token rows of a filter tile in these tests; 37 is not a multiple of it
OPTIONS = dict(ignore_index=-1, label_smoothing=0.1, z_loss=1e-3)


@pytest.fixture(autouse=True)
def small_tiles(monkeypatch):
  """Tiles of 8 tokens, so that the clamped last token block and skipping are exercised."""
  monkeypatch.setattr(chunked_xla, "_FILTER_ROWS", ROWS)


def _inputs(seed, scale=3.0):
  rng = np.random.default_rng(seed)
  h = rng.normal(size=(N, D))
  w = rng.normal(size=(D, V)) / np.sqrt(D) * scale
  y = rng.integers(0, V, N)
  y[::5] = -1
  where = rng.random(N) > 0.2
  return h, w, y, where


def _cotangent():
  return np.linspace(0.5, 1.5, N)  # a per-token cotangent that is not uniform


def _want(h, w, y, where, layout, options):
  """float64 loss and gradients of sum(c * loss), with the softmax and the per-token scale."""
  valid = (y != -1) & where
  vd = layout == "vd"
  c = _cotangent()

  def ref(h, w, y):
    return c * reference.linear_cross_entropy(
        h, w, y, jnp.asarray(valid), vd=vd, label_smoothing=options.get("label_smoothing", 0.0),
        z_loss=options.get("z_loss", 0.0))

  want, grads = value_and_grad64(ref, h, w, y, argnums=(0, 1))
  z = h @ (w.T if vd else w)
  lse = np.log(np.sum(np.exp(z - z.max(1, keepdims=True)), 1)) + z.max(1)
  p = np.exp(z - lse[:, None])
  scale = np.where(valid, c * (1 + 2 * options.get("z_loss", 0.0) * lse), 0.0)
  return want / c, grads, p, scale


def _got(h, w, y, where, layout, eps, options):
  c = jnp.asarray(_cotangent(), jnp.float32)
  f = functools.partial(flce, labels=jnp.asarray(y), where=jnp.asarray(where), block_size=BLOCK,
                        weight_layout=layout, grad_filter_eps=eps, **options)
  got, grads = value_and_grad(jax.jit(lambda h, w: c * f(h, w)), jnp.asarray(h, jnp.float32),
                              jnp.asarray(w, jnp.float32), argnums=(0, 1))
  return got / np.asarray(c, np.float64), grads


# Each case is a compilation of a few seconds: the fast tier keeps one of every value of every
# axis (`tiered`), the slow tier the rest of the product.
@tiered("eps,options,layout",
         list(itertools.product([None, 0.0, 1e-30], ["plain", "all"], ["dv", "vd"])),
         fast=[(None, "plain", "dv"), (0.0, "all", "vd"),
               (1e-30, "all", "dv")])
def test_exact_when_nothing_is_filtered(eps, options, layout):
  """None and 0 are the exact path; a threshold below every probability runs the filtered
  backward (its split into softmax, label and smoothing parts) and skips nothing."""
  h, w, y, where = _inputs(0)
  opts = OPTIONS if options == "all" else dict(ignore_index=-1)
  w_in = w.T.copy() if layout == "vd" else w
  want, (want_dh, want_dw), p, _ = _want(h, w_in, y, where, layout, opts)
  assert p.min() > 1e-25  # so 1e-30 drops nothing
  got, (got_dh, got_dw) = _got(h, w_in, y, where, layout, eps, opts)
  assert_close(got, want, n_reduced=V * D, err_msg="loss")
  assert_close(got_dh, want_dh, n_reduced=V, err_msg="d hidden")
  assert_close(got_dw, want_dw, n_reduced=N, err_msg="d weight")


@tiered("eps,layout", list(itertools.product([1e-3, 0.05, 0.5], ["dv", "vd"])),
         fast=[(0.05, "vd"), (0.5, "dv")])
def test_error_bounded_by_the_entries_below_the_threshold(eps, layout):
  """The filter drops only softmax entries p < eps (each times the token's scale): the
  gradients' error is at most what all of those entries carry, computed in float64; the loss
  is unchanged. Peaked logits (scale 8), so that tiles are skipped."""
  h, w, y, where = _inputs(1, scale=8.0)
  w_in = w.T.copy() if layout == "vd" else w
  want, (want_dh, want_dw), p, scale = _want(h, w_in, y, where, layout, OPTIONS)
  got, (got_dh, got_dw) = _got(h, w_in, y, where, layout, eps, OPTIONS)
  assert_close(got, want, n_reduced=V * D, err_msg="loss")
  small = np.where(p < eps, p, 0.0) * np.abs(scale)[:, None]  # [N, V]: what may be dropped
  wa = np.abs(w_in.T if layout == "vd" else w_in)  # [D, V]
  bound_dh = small @ wa.T
  bound_dw = np.abs(h).T @ small
  if layout == "vd":
    bound_dw = bound_dw.T
  rtol, atol = 8 * 1.2e-7 * np.sqrt(V), 8 * 1.2e-7 * np.sqrt(V)
  for name, got_g, want_g, bound in (("d hidden", got_dh, want_dh, bound_dh),
                                     ("d weight", got_dw, want_dw, bound_dw)):
    excess = np.abs(got_g - want_g) - bound - atol - rtol * np.abs(want_g)
    assert excess.max() <= 0, (name, excess.max())
  # The threshold does drop something here (else this test would not test the filter).
  assert np.abs(got_dw - want_dw).max() > 1e3 * atol or eps == 1e-3


def test_nan_hidden_still_propagates():
  """A NaN hidden state: its token's loss is NaN (the filter never hides it), and that token is
  a constant, as on the unfiltered path (the cross-entropy family's lost-row rule): d hidden 0
  on it, d weight finite, both those of the same filtered loss with that token masked out."""
  h, w, y, where = _inputs(2, scale=8.0)
  h[3, 0] = np.nan
  where[:] = True
  y[3] = 1
  loss, (dh, dw) = _got(h, w, y, where, "dv", 0.5, {})
  assert np.isnan(loss[3])
  np.testing.assert_array_equal(dh[3], 0)
  assert np.isfinite(dh).all() and np.isfinite(dw).all()
  h0, where0 = h.copy(), where.copy()
  h0[3, 0], where0[3] = 0.0, False
  _, (dh0, dw0) = _got(h0, w, y, where0, "dv", 0.5, {})
  np.testing.assert_allclose(dh, dh0, rtol=1e-6, atol=1e-7)
  np.testing.assert_allclose(dw, dw0, rtol=1e-6, atol=1e-7)


def test_bad_arguments():
  h, w, y = jnp.zeros((3, 4)), jnp.zeros((4, 6)), jnp.zeros(3, jnp.int32)
  for bad in (-0.1, 1.0, "big", float("nan")):
    with pytest.raises(ValueError, match="grad_filter_eps"):
      flce(h, w, y, grad_filter_eps=bad)
  with pytest.raises(ValueError, match="grad_filter_eps.*implementation='xla'"):
    flce(h, w, y, grad_filter_eps=0.1, implementation="xla")
  with pytest.raises(ValueError, match="grad_filter_eps.*softcap"):
    flce(h, w, y, grad_filter_eps=0.1, softcap=30.0)


@pytest.mark.skipif(len(jax.devices("cpu")) < 4, reason="needs 4 CPU devices")
@tiered("eps,smoothing,layout,check",
         [(e, s, lay, c) for (e, s) in [(0.05, 0.1), (0.05, 0.0), (None, 0.0)]
          for lay in ("dv", "vd") for c in (True, False)],
         fast=[(0.05, 0.1, "dv", True), (0.05, 0.0, "vd", False)])
def test_vocab_parallel_equals_one_device(eps, smoothing, layout, check):
  """4 vocabulary shards of 250 columns: the filter keeps each shard's block maxima and
  compares them with the global lse, so it skips the same tiles as one device does. Without
  label smoothing the label logits are gathered on the shard that holds them (also exact)."""
  k = 4
  h, w, y, where = _inputs(3, scale=8.0)
  w_in = jnp.asarray(w.T if layout == "vd" else w, jnp.float32)
  h, y, where = jnp.asarray(h, jnp.float32), jnp.asarray(y), jnp.asarray(where)
  kw = dict(weight_layout=layout, block_size=125, grad_filter_eps=eps,
            **dict(OPTIONS, label_smoothing=smoothing))
  mesh = cpu_mesh(k, "vocab")
  w_spec = P("vocab", None) if layout == "vd" else P(None, "vocab")
  sharded = shard_map(lambda h, w, y, m: flce(h, w, y, where=m, axis_name="vocab", **kw),
                      mesh=mesh, in_specs=(P(), w_spec, P(), P()), out_specs=P(),
                      **({} if check else {CHECK_FLAG: False}))
  one = lambda h, w, y, m: flce(h, w, y, where=m, **kw)
  c = jnp.asarray(_cotangent(), jnp.float32)
  results = [jax.jit(jax.value_and_grad(lambda h, w, f=f: jnp.sum(c * f(h, w, y, where)),
                                        (0, 1)))(h, w_in) for f in (sharded, one)]
  (got, (got_dh, got_dw)), (want, (want_dh, want_dw)) = results
  np.testing.assert_allclose(got, want, rtol=2e-6)
  for got_g, want_g in ((got_dh, want_dh), (got_dw, want_dw)):  # float32 sums over shards
    np.testing.assert_allclose(got_g, want_g, rtol=2e-5, atol=2e-6 * np.abs(want_g).max())

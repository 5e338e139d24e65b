"""The Mosaic (TPU) cross-entropy kernels, run on CPU in Pallas's TPU interpret mode, against
the float64 reference in value and gradient, and the dispatch that picks them on TPU.

TPU interpret mode simulates the grid order, VMEM scratch and BlockSpecs, and fills what a
kernel reads past an array's edge with NaN: a missing mask on the edge blocks shows as NaN.
Shapes are tiny ((21, 300) in (8, 128) tiles: a 3 x 3 grid with a 5-row and a 44-column edge)
because the interpreter is slow.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from kernels_cases import assert_close
from kernels_cases import labels
from kernels_cases import logits
from kernels_cases import value_and_grad
from kernels_cases import value_and_grad64

from jaxdiv.kernels import _dispatch
from jaxdiv.kernels.cross_entropy import api
from jaxdiv.kernels.cross_entropy import pallas_gpu
from jaxdiv.kernels.cross_entropy import pallas_tpu
from jaxdiv.kernels.cross_entropy import reference

N, V = 21, 300
BLOCK = (8, 128)

needs_interpret = pytest.mark.skipif(
    not pallas_tpu.HAS_INTERPRET,
    reason=f"jax {jax.__version__} has no TPU interpret mode (pltpu.InterpretParams)")


def _check(z, y, valid, *, dtype=jnp.float32, block=BLOCK, **options):
  """The kernel's loss and d logits against float64 autodiff of the reference."""
  f = functools.partial(pallas_tpu.cross_entropy, labels=jnp.asarray(y),
                        valid=jnp.asarray(valid), block_size=block, interpret=True, **options)
  got, got_grad = value_and_grad(f, jnp.asarray(z, dtype))
  # bf16 logits are exact inputs: the reference sees the same rounded values.
  z_in = np.asarray(jnp.asarray(z, dtype), np.float64)
  want, want_grad = value_and_grad64(
      lambda z, y: reference.cross_entropy(z, y, jnp.asarray(valid), **options), z_in, y)
  assert np.all(np.isfinite(got)) and np.all(np.isfinite(got_grad))
  assert_close(got, want, err_msg="loss")  # accumulated in float32 whatever the input dtype
  assert_close(got_grad, want_grad, dtype, n_reduced=1, err_msg="d logits")
  assert np.all(got[~valid] == 0) and np.all(got_grad[~valid] == 0)


# TPU interpret mode costs seconds a case: the fast tier keeps the case with every option
# (test_ignore_where_smoothing_z_loss, which runs `stats` too); the others are slow.
@needs_interpret
@pytest.mark.slow
def test_plain():
  z, y = logits(0, (N, V)), labels(0, N, V)
  _check(z, y, np.ones(N, bool))


@needs_interpret
def test_ignore_where_smoothing_z_loss():
  z, y = logits(1, (N, V)), labels(1, N, V)
  valid = np.random.default_rng(1).random(N) > 0.3  # `where` and `ignore_index` as a mask
  valid[-1] = False  # in the edge row block
  _check(z, y, valid, label_smoothing=0.2, z_loss=1e-2)


@needs_interpret
@pytest.mark.slow
def test_neg_inf_logits():
  z = logits(2, (N, V), neg_inf_frac=0.3)
  z[N - 2] = -np.inf  # a whole row, masked out: loss 0 and gradient 0, not NaN
  z[:, V - 1] = -np.inf  # the last column, in the edge vocabulary block
  y = labels(2, N, V, z=np.where(np.arange(N)[:, None] == N - 2, 0.0, z))
  valid = np.ones(N, bool)
  valid[N - 2] = False
  _check(z, y, valid, z_loss=1e-3)


@needs_interpret
@pytest.mark.slow
def test_bfloat16():
  z, y = logits(3, (N, V)), labels(3, N, V)
  # 16-bit tiles are (16, 128): 21 rows are two row blocks with a 5-row edge.
  assert pallas_tpu.tile_sizes((N, V), jnp.bfloat16, BLOCK) == (16, 128)
  _check(z, y, np.ones(N, bool), dtype=jnp.bfloat16, label_smoothing=0.1)


@needs_interpret
@pytest.mark.slow
@pytest.mark.parametrize("bn, bv", [BLOCK, (N, V)])  # a 3 x 3 grid; one block (init = finish)
def test_stats_match_numpy(bn, bv):
  z, y = logits(4, (N, V)), labels(4, N, V)
  got = pallas_tpu.stats(jnp.asarray(z, jnp.float32), jnp.asarray(y, jnp.int32), bn=bn, bv=bv,
                         interpret=True)
  m = z.max(axis=1)
  np.testing.assert_allclose(got.lse, m + np.log(np.exp(z - m[:, None]).sum(axis=1)),
                             rtol=1e-6)
  np.testing.assert_allclose(got.z_label, z[np.arange(N), y], rtol=1e-6)
  np.testing.assert_allclose(got.z_sum, z.sum(axis=1), rtol=1e-5, atol=1e-4)


@pytest.mark.parametrize("dtype, shape, block", [
    (jnp.float32, (N, V), BLOCK),
    (jnp.bfloat16, (4096, 32000), None),  # the default tiles, with a vocabulary edge
])
def test_lowers_for_tpu(dtype, shape, block):
  """Value and gradient lower to Mosaic (exported for TPU from this CPU): the Pallas TPU
  lowering's rules hold, e.g. blocks of multiples of (8, 128) or whole axes. Mosaic's own
  compilation needs a TPU."""
  def loss(z, y, valid):
    f = functools.partial(pallas_tpu.cross_entropy, labels=y, valid=valid, block_size=block,
                          label_smoothing=0.1, z_loss=1e-3)
    return jax.value_and_grad(lambda z: jnp.sum(f(z)))(z)

  n = shape[0]
  exported = jax.export.export(jax.jit(loss), platforms=("tpu",))(
      jax.ShapeDtypeStruct(shape, dtype), jax.ShapeDtypeStruct((n,), jnp.int32),
      jax.ShapeDtypeStruct((n,), jnp.bool_))
  assert exported.mlir_module().count("tpu_custom_call") == 2  # forward and backward kernels


def test_tile_sizes():
  assert pallas_tpu.tile_sizes((37, 1000), jnp.float32, (5, 100)) == (8, 128)
  assert pallas_tpu.tile_sizes((37, 1000), jnp.bfloat16, (5, 100)) == (16, 128)
  assert pallas_tpu.tile_sizes((37, 1000), jnp.float32, 300) == (37, 384)  # default rows: all
  assert pallas_tpu.tile_sizes((5, 100), jnp.float32, None) == (5, 100)  # whole axes are legal
  assert pallas_tpu.tile_sizes((4096, 131072), jnp.float32, None) == pallas_tpu.DEFAULT_BLOCK
  with pytest.raises(ValueError, match="block_size"):
    pallas_tpu.tile_sizes((37, 1000), jnp.float32, (0, 128))


@pytest.mark.parametrize("platform, default, explicit, interpret", [
    # Not the default on TPU until it has been compiled on one; explicit "pallas" reaches it.
    ("tpu", api.IMPLEMENTATIONS["xla"].fn, pallas_tpu.cross_entropy, False),
    ("gpu", pallas_gpu.cross_entropy, pallas_gpu.cross_entropy, False),
    ("cpu", api.IMPLEMENTATIONS["xla"].fn, pallas_gpu.cross_entropy, True),
])
def test_dispatch(monkeypatch, platform, default, explicit, interpret):
  monkeypatch.setattr(_dispatch, "backend", lambda: platform)
  select = functools.partial(_dispatch.select, api.IMPLEMENTATIONS, op="ce", shape=(N, V),
                             dtype=jnp.float32)
  assert select(None) is default
  fn = select("pallas")
  assert fn.func is explicit and fn.keywords == {"interpret": interpret}

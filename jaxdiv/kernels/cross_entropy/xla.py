"""Cross-entropy in row blocks of whole vocabulary rows, with an lse-only custom VJP.

Forward: a loop over blocks of a few full rows (small enough to stay in cache) computes
(lse, z[y], sum z); the rows' exponentials are written once to a block-sized buffer and summed.
Backward: one elementwise pass recomputes softmax from the logits and `lse` and writes the
gradient once. Autodiff of `log_softmax` instead moves the logits several times and, on
XLA:CPU, evaluates `exp` inside reductions (unvectorised).
"""

from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _dispatch

ROWS = 4  # rows per block on CPU: 4 x 131072 float32 = 2 MiB, one core's L2


def _stats(z, labels, *, rows, smoothing):
  materialize = rows < z.shape[0]

  def body(carry, tiles, row_in, cols, own):
    state, z_label, z_sum = carry
    zl, zs = bw.label_and_sum(tiles[0], row_in[0], cols, sums=smoothing)
    return bw.lse_update(state, tiles[0], materialize=materialize), z_label + zl, z_sum + zs

  def init(b):
    return bw.lse_init((b,)), jnp.zeros((b,), jnp.float32), jnp.zeros((b,), jnp.float32)

  def finish(carry, row_in):
    return bw.lse_finish(carry[0]), carry[1], carry[2]

  return bw.CeStats(*bw.tiled_reduce((z,), (labels,), bn=rows, bv=z.shape[1], init=init,
                                     body=body, finish=finish))


def cross_entropy(logits, labels, valid, *, label_smoothing=0.0, z_loss=0.0, block_size=None):
  n, vocab = logits.shape
  # Row blocks serve XLA:CPU's caches; a GPU fuses the whole array into one pass itself.
  default = ROWS if _dispatch.backend() == "cpu" else n
  rows = bw.pick_block(n, block_size if isinstance(block_size, int) else None, default)
  cfg = dict(vocab=vocab, label_smoothing=label_smoothing, z_loss=z_loss)

  def grad(z, labels, stats, g):
    cols = jnp.arange(vocab)
    return (bw.cross_entropy_dlogits(z.astype(jnp.float32), stats.lse, labels, cols, g, **cfg)
            .astype(z.dtype),)

  f = bw.masked_loss_vjp(functools.partial(_stats, rows=rows, smoothing=bool(label_smoothing)),
                         grad, functools.partial(bw.cross_entropy_from_stats, **cfg))
  return f((logits,), labels, valid)

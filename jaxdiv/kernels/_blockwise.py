"""Blockwise pieces every large-vocabulary op shares: block walking, the online logsumexp,
cross-entropy from per-token statistics and its logits gradient.

Blocks never need padded copies of their inputs: block `i` of size `b` over a length `n >= b`
starts at `min(i * b, n - b)`, so the last block overlaps its predecessor and stays in bounds;
`owned` marks the entries a block adds to reductions (each entry counted once). Elementwise
results on the overlap (gradients) are recomputed with the same values, so writing the whole
block again is harmless.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
from jax import lax


def finite_or_zero(x: jax.Array) -> jax.Array:
  """`x` where finite, else 0: the shift that keeps `exp(z - shift)` free of `inf - inf`.

  Written with `abs(x) < inf` rather than `isfinite` so that it lowers inside Triton kernels.
  """
  return jnp.where(jnp.abs(x) < jnp.inf, x, 0.0)


def num_blocks(n: int, b: int) -> int:
  return -(-n // b)


def block_start(i, n: int, b: int):
  """Start of block `i` (clamped so that the block lies inside `[0, n)`)."""
  return jnp.minimum(i * b, n - b)


def owned(i, start, b: int) -> jax.Array:
  """[b] bool: the entries of block `i` (at `start`) that no earlier block covered."""
  return start + jnp.arange(b) >= i * b


def pick_block(n: int, requested: int | None, default: int) -> int:
  """A block size no larger than `n` (blocks are clamped into the array, not padded)."""
  b = default if requested is None else int(requested)
  if b < 1:
    raise ValueError(f"`block_size` must be a positive int; got {requested!r}.")
  return max(1, min(b, n))


class Lse(NamedTuple):
  """Running state of a logsumexp over blocks: the max seen so far and the shifted sum."""

  m: jax.Array
  s: jax.Array


def lse_init(shape) -> Lse:
  return Lse(jnp.full(shape, -jnp.inf, jnp.float32), jnp.zeros(shape, jnp.float32))


def lse_update(state: Lse, z: jax.Array, mask=None) -> Lse:
  """Folds the block `z` ([..., b], float32) into the state along its last axis.

  Trap avoided: with every entry so far -inf, `exp(z - max)` is `exp(-inf + inf) = NaN`; the
  shift is taken as 0 there (the sum stays 0 and the max -inf).
  """
  if mask is not None:
    z = jnp.where(mask, z, -jnp.inf)
  m = jnp.maximum(state.m, jnp.max(z, axis=-1))
  shift = finite_or_zero(m)
  s = state.s * jnp.exp(state.m - shift) + jnp.sum(jnp.exp(z - shift[..., None]), axis=-1)
  return Lse(m, s)


def lse_merge(a: Lse, b: Lse) -> Lse:
  """Combines two partial states (e.g. from vocabulary splits computed in parallel)."""
  m = jnp.maximum(a.m, b.m)
  shift = finite_or_zero(m)
  return Lse(m, a.s * jnp.exp(a.m - shift) + b.s * jnp.exp(b.m - shift))


def lse_finish(state: Lse) -> jax.Array:
  ok = state.s > 0
  return jnp.where(ok, jnp.log(jnp.where(ok, state.s, 1.0)) + jnp.where(ok, state.m, 0.0),
                   -jnp.inf)


def label_and_sum(z: jax.Array, labels: jax.Array, cols: jax.Array, mask=None):
  """Per-row logit at `labels` (0 if the label is outside `cols`) and row sum of `z`.

  `cols` ([b]) are the global column indices of the block; `mask` ([b] or [.., b]) the entries
  this block owns.
  """
  hit = labels[..., None] == cols
  if mask is not None:
    hit = hit & mask
    z_sum = jnp.sum(jnp.where(mask, z, 0.0), axis=-1)
  else:
    z_sum = jnp.sum(z, axis=-1)
  return jnp.sum(jnp.where(hit, z, 0.0), axis=-1), z_sum


class CeStats(NamedTuple):
  """Per-token statistics from which cross-entropy follows: lse, z[label], sum(z)."""

  lse: jax.Array
  z_label: jax.Array
  z_sum: jax.Array


def cross_entropy_from_stats(stats: CeStats, vocab: int, label_smoothing: float,
                             z_loss: float) -> jax.Array:
  """(1-ls)(lse - z[y]) + ls (lse - mean z) + z_loss lse^2, per token (float32).

  The smoothing and z-loss terms are left out when their weight is 0, so a -inf logit (whose
  mean is -inf) does not turn `0 * inf` into NaN.
  """
  loss = stats.lse - stats.z_label
  if label_smoothing:
    loss = (1.0 - label_smoothing) * loss + label_smoothing * (stats.lse - stats.z_sum / vocab)
  if z_loss:
    loss = loss + z_loss * jnp.square(stats.lse)
  return loss


def cross_entropy_dlogits(z: jax.Array, lse: jax.Array, labels: jax.Array, cols: jax.Array,
                          g: jax.Array, vocab: int, label_smoothing: float,
                          z_loss: float) -> jax.Array:
  """d loss / d z for a block `z` [rows, b] at global columns `cols`, scaled by `g` [rows].

  softmax(z) (1 + 2 z_loss lse) - (1 - ls) onehot(y) - ls / V. `g` is 0 on ignored tokens;
  their `lse` may be -inf, so it is replaced by 0 there before the exponential.
  """
  lse = finite_or_zero(lse)
  p = jnp.exp(z - lse[:, None])
  if z_loss:
    p = p * (1.0 + 2.0 * z_loss * lse)[:, None]
  onehot = (labels[:, None] == cols).astype(jnp.float32)
  d = p - (1.0 - label_smoothing) * onehot
  if label_smoothing:
    d = d - label_smoothing / vocab
  return g[:, None] * d


def masked_loss_vjp(stats_fn, grad_fn, loss_fn):
  """Builds `f(x, labels, valid) -> loss` with a custom VJP keeping only `lse` for backward.

  `stats_fn(*x, labels) -> CeStats`-like tuple whose first field is the lse; `loss_fn(stats)`
  the per-token loss; `grad_fn(*x, labels, lse, g) -> cotangents of x`, with `g` already 0
  where `valid` is False. Ignored tokens give loss 0 and no gradient. `x` is a tuple of arrays.
  """

  @jax.custom_vjp
  def f(x, labels, valid):
    return _fwd(x, labels, valid)[0]

  def _fwd(x, labels, valid):
    stats = stats_fn(*x, labels)
    loss = jnp.where(valid, loss_fn(stats), 0.0)
    return loss, (x, labels, valid, stats[0])

  def _bwd(res, g):
    x, labels, valid, lse = res
    g = jnp.where(valid, g.astype(jnp.float32), 0.0)
    return tuple(grad_fn(*x, labels, lse, g)), None, None

  f.defvjp(_fwd, _bwd)
  return f


def cast_like(x: jax.Array, like: jax.Array) -> jax.Array:
  return x.astype(like.dtype)


def fori_blocks(n_blocks: int, body, init):
  """`lax.fori_loop` over blocks, unrolled when there is one block (no loop overhead)."""
  if n_blocks == 1:
    return body(0, init)
  return lax.fori_loop(0, n_blocks, body, init)

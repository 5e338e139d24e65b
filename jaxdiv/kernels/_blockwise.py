"""Blockwise pieces every large-vocabulary op shares: block walking, the online logsumexp,
cross-entropy from per-token statistics and its logits gradient. The distillation maths that
builds on them lives in `jaxdiv.kernels.distillation.base`.

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

from jaxdiv import _numerics


def finite_or_zero(x: jax.Array) -> jax.Array:
  """`x` where finite, else 0: the shift that keeps `exp(z - shift)` free of `inf - inf`.

  Written with `abs(x) < inf` rather than `isfinite` so that it lowers inside Triton kernels.
  """
  return jnp.where(jnp.abs(x) < jnp.inf, x, 0.0)


def lse_shift(lse: jax.Array) -> jax.Array:
  """A logsumexp as the shift of `z - lse`: 0 for a row without mass (-inf), so that -inf
  entries do not become `-inf + inf = NaN`; NaN stays NaN (unlike `finite_or_zero`), so that
  a NaN input is never turned into a number."""
  return jnp.where(lse == -jnp.inf, 0.0, lse)


def pow2(x: int) -> int:
  """The smallest power of two >= x (Triton tiles are powers of two; edges are masked)."""
  return 1 << max(0, int(x) - 1).bit_length()


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


def lse_update(state: Lse, z: jax.Array, mask=None, *, materialize: bool = False) -> Lse:
  """Folds the block `z` ([..., b], float32) into the state along its last axis.

  Trap avoided: with every entry so far -inf, `exp(z - max)` is `exp(-inf + inf) = NaN`; the
  shift is taken as 0 there (the sum stays 0 and the max -inf).
  `materialize=True` (XLA only, not inside Pallas kernels) writes the block's exponentials
  before summing them: XLA:CPU vectorises `exp` in an elementwise loop but not inside a
  reduction.
  """
  if mask is not None:
    z = jnp.where(mask, z, -jnp.inf)
  return lse_step(state, z, materialize)[0]


def lse_step(state: Lse, z: jax.Array, materialize: bool = False):
  """(`lse_update`'s state, the shift, the block's shifted exponentials)."""
  m = jnp.maximum(state.m, jnp.max(z, axis=-1))
  shift = finite_or_zero(m)
  e = jnp.exp(z - shift[..., None])
  if materialize:
    e = lax.optimization_barrier(e)
  s = state.s * jnp.exp(state.m - shift) + jnp.sum(e, axis=-1)
  return Lse(m, s), shift, e


def lse_merge(a: Lse, b: Lse) -> Lse:
  """Combines two partial states (e.g. from vocabulary splits computed in parallel)."""
  m = jnp.maximum(a.m, b.m)
  shift = finite_or_zero(m)
  return Lse(m, a.s * jnp.exp(a.m - shift) + b.s * jnp.exp(b.m - shift))


def lse_psum(state: Lse, axis_name) -> Lse:
  """The whole row's state from each shard's of `axis_name` (the max through pmax, the shifted
  sums through psum); unchanged without `axis_name`."""
  if axis_name is None:
    return state
  m = _numerics.pmax(state.m, axis_name)
  return Lse(m, _numerics.psum(state.s * jnp.exp(state.m - finite_or_zero(m)), axis_name))


def lse_finish(state: Lse) -> jax.Array:
  """The logsumexp: -inf when every entry was -inf; NaN stays NaN."""
  empty = state.s <= 0
  return jnp.where(empty, -jnp.inf,
                   jnp.log(jnp.where(empty, 1.0, state.s)) + jnp.where(empty, 0.0, state.m))


def label_and_sum(z: jax.Array, labels: jax.Array, cols: jax.Array, mask=None, *,
                  sums: bool = True):
  """Per-row logit at `labels` (0 if the label is outside `cols`) and row sum of `z`.

  `cols` ([b]) are the global column indices of the block; `mask` ([b] or [.., b]) the entries
  this block owns. `sums=False` skips the row sum (returned as 0), which only label smoothing
  needs.
  """
  hit = labels[..., None] == cols
  if mask is not None:
    hit = hit & mask
    z = jnp.where(mask, z, 0.0) if sums else z
  z_sum = jnp.sum(z, axis=-1) if sums else jnp.zeros(z.shape[:-1], jnp.float32)
  return jnp.sum(jnp.where(hit, z, 0.0), axis=-1), z_sum


class CeStats(NamedTuple):
  """Per-token statistics from which cross-entropy follows: lse, z[label], sum(z)."""

  lse: jax.Array
  z_label: jax.Array
  z_sum: jax.Array


def cross_entropy_from_stats(stats: CeStats, vocab: int, label_smoothing: float,
                             z_loss: float) -> jax.Array:
  """(1-ls)(lse - z[y]) + ls (lse - mean z) + z_loss lse^2, per token (float32).

  The label, smoothing and z-loss terms are left out when their weight is 0, so a -inf logit
  (whose mean is -inf) does not turn `0 * inf` into NaN. A token whose logits are all -inf (lse
  -inf) gives +inf, as the reference (`-inf - -inf` would be NaN); `softmax_dlogits` gives it a
  zero gradient.
  """
  loss = stats.lse - stats.z_label
  if label_smoothing == 1.0:  # the label's own term has weight 0 (its logit may be -inf)
    loss = stats.lse - stats.z_sum / vocab
  elif label_smoothing:
    loss = (1.0 - label_smoothing) * loss + label_smoothing * (stats.lse - stats.z_sum / vocab)
  if z_loss:
    loss = loss + z_loss * jnp.square(stats.lse)
  return jnp.where(stats.lse == -jnp.inf, jnp.inf, loss)


def cross_entropy_dlogits(z: jax.Array, lse: jax.Array, labels: jax.Array, cols: jax.Array,
                          g: jax.Array, vocab: int, label_smoothing: float,
                          z_loss: float) -> jax.Array:
  """d loss / d z for a block `z` [rows, b] at global columns `cols`, scaled by `g` [rows].

  The softmax is recomputed from `lse`; `g` is 0 on ignored tokens, whose `lse` may be -inf,
  so it is replaced by 0 there before the exponential.
  """
  p = jnp.exp(z - lse_shift(lse)[:, None])
  return softmax_dlogits(p, lse, labels, cols, g, vocab, label_smoothing, z_loss)


lost_rows = _numerics.lost_rows


def softmax_dlogits(p: jax.Array, lse: jax.Array, labels: jax.Array, cols: jax.Array,
                    g: jax.Array, vocab: int, label_smoothing: float, z_loss: float,
                    row_scale: jax.Array | None = None) -> jax.Array:
  """d loss / d z for a block whose softmax is `p` [rows, b] (times `row_scale` [rows] when
  given: unnormalised exponentials and 1 / their sum), scaled by `g` [rows]:
  softmax(z) (1 + 2 z_loss lse) - (1 - ls) onehot(y) - ls / V. The per-row factors are folded
  into one multiply per entry. A row without mass (lse -inf: a constant +inf loss) gets 0, and
  so does a lost row (:func:`lost_rows`: NaN or +inf entries in `p`), whatever its `g`: a zero
  cotangent (a token masked or summed away) met its NaN softmax as 0 * NaN = NaN, in that row's
  logits and in anything upstream that every row shares."""
  lost = lost_rows(lse)
  g = jnp.where((lse == -jnp.inf) | lost, 0.0, g)
  scale = g if row_scale is None else g * row_scale
  if z_loss:
    scale = scale * (1.0 + 2.0 * z_loss * finite_or_zero(lse))
  p = jnp.where(lost[:, None], 0.0, p)
  scale = jnp.where(lost, 0.0, scale)  # `row_scale` (NaN or 0 there) times the zero `g`
  hit = labels[:, None] == cols
  d = p * scale[:, None] - jnp.where(hit, ((1.0 - label_smoothing) * g)[:, None], 0.0)
  if label_smoothing:
    d = d - (label_smoothing / vocab * g)[:, None]
  return d


def masked_loss_vjp(stats_fn, grad_fn, loss_fn):
  """Builds `f(x, aux, valid) -> loss` with a custom VJP whose residuals are per-token stats.

  `stats_fn(*x, aux)` gives a tuple of per-token statistics (lse and the like), `loss_fn(stats)`
  the per-token loss, and `grad_fn(*x, aux, stats, g)` the cotangents of the arrays in `x` (None
  for one that gets no gradient), with `g` already 0 where `valid` is False: ignored tokens give
  loss 0 and no gradient. The residual is the inputs and the statistics, nothing else.
  """

  @jax.custom_vjp
  def f(x, aux, valid):
    return _fwd(x, aux, valid)[0]

  def _fwd(x, aux, valid):
    stats = stats_fn(*x, aux)
    # Double where: an ignored token's statistics may be inf or NaN.
    loss = jnp.where(valid, loss_fn(stats), 0.0)
    return loss, (x, aux, valid, stats)

  def _bwd(res, g):
    x, aux, valid, stats = res
    g = jnp.where(valid, g.astype(jnp.float32), 0.0)
    return tuple(grad_fn(*x, aux, stats, g)), None, None

  f.defvjp(_fwd, _bwd)
  return f


def tiled_reduce(mats, rows_in, *, bn: int, bv: int, init, body, finish):
  """Row statistics of [n, v] matrices, walking [bn, bv] tiles (no larger intermediate).

  For each block of rows: `carry = init(bn)`; then for each vocabulary block
  `carry = body(carry, tiles, rows, cols, own)` with `tiles` the float32 tiles of `mats`, `rows`
  the row blocks of the [n] arrays `rows_in`, `cols` the tile's global columns and `own` the
  columns it owns; `finish(carry, rows)` gives a tuple of [bn] results, returned as [n] arrays.
  """
  n, v = mats[0].shape

  def row_block(i, out):
    r0 = block_start(i, n, bn)
    rows = tuple(lax.dynamic_slice_in_dim(a, r0, bn) for a in rows_in)

    def col_block(j, carry):
      c0 = block_start(j, v, bv)
      tiles = [lax.dynamic_slice(m, (r0, c0), (bn, bv)).astype(jnp.float32) for m in mats]
      return body(carry, tiles, rows, c0 + jnp.arange(bv), owned(j, c0, bv))

    new = finish(fori_blocks(num_blocks(v, bv), col_block, init(bn)), rows)
    return tuple(lax.dynamic_update_slice_in_dim(o, x, r0, 0) for o, x in zip(out, new))

  n_out = len(jax.eval_shape(lambda: finish(init(bn), tuple(a[:bn] for a in rows_in))))
  init_out = tuple(jnp.zeros((n,), jnp.float32) for _ in range(n_out))
  return fori_blocks(num_blocks(n, bn), row_block, init_out)


def tiled_map(mats, rows_in, out_dtype, *, bn: int, bv: int, fn):
  """An [n, v] array written tile by tile: `fn(tiles, rows, cols) -> [bn, bv]` (float32 tiles
  of `mats`, row blocks of `rows_in`). The clamped last tiles are recomputed identically."""
  n, v = mats[0].shape
  nv = num_blocks(v, bv)

  def tile(k, out):
    r0, c0 = block_start(k // nv, n, bn), block_start(k % nv, v, bv)
    tiles = [lax.dynamic_slice(m, (r0, c0), (bn, bv)).astype(jnp.float32) for m in mats]
    rows = tuple(lax.dynamic_slice_in_dim(a, r0, bn) for a in rows_in)
    return lax.dynamic_update_slice(out, fn(tiles, rows, c0 + jnp.arange(bv)).astype(out_dtype),
                                    (r0, c0))

  return fori_blocks(num_blocks(n, bn) * nv, tile, jnp.zeros((n, v), out_dtype))


def tile_sizes(shape, block_size, default):
  """(token block, vocabulary block) from an int (vocabulary), a pair, or None."""
  n, v = shape
  if block_size is None:
    bn, bv = default
  elif isinstance(block_size, int):
    bn, bv = default[0], block_size
  else:
    bn, bv = block_size
  return pick_block(n, bn, default[0]), pick_block(v, bv, default[1])


def fori_blocks(n_blocks: int, body, init):
  """`lax.fori_loop` over blocks, unrolled when there is one block (no loop overhead)."""
  if n_blocks == 1:
    return body(0, init)
  return lax.fori_loop(0, n_blocks, body, init)


def gradient_jvp(fn):
  """`fn(x, *rest) -> [rows]` (a custom-VJP kernel, row `i` a function of `x[i]` only, `rest`
  without gradient) as a `custom_jvp` whose tangent is `sum(d fn / d x * dx)` along the last
  axis, the row gradient formed by `fn`'s own VJP.

  So forward mode (`jax.jvp`, `jax.jacfwd`) works on a kernel that defines only a VJP, and
  reverse mode is the transposed tangent: the same passes (the gradient formed once, then
  scaled by the cotangent in place), the gradient as the one [rows, n] residual. On a row whose
  value is not finite (a NaN or +inf logit), each entry of it that is not finite is taken as 0:
  formed with a cotangent of 1, it would meet a row's zero cotangent (masked or summed away) as
  0 * NaN. (A row with a finite value keeps an overflowed entry.)
  """

  @jax.custom_jvp
  def f(x, *rest):
    return fn(x, *rest)

  @f.defjvp
  def f_jvp(primals, tangents):
    x, *rest = primals
    out, pullback = jax.vjp(lambda a: fn(a, *rest), x)
    (d,) = pullback(jnp.ones_like(out))
    d = d.astype(jnp.float32)
    d = jnp.where((jnp.abs(out) < jnp.inf)[..., None] | (jnp.abs(d) < jnp.inf), d, 0.0)
    dx = tangents[0].astype(jnp.float32)
    return out, jnp.sum(d * dx, axis=-1).astype(out.dtype)

  return f

"""Pallas kernels for the fused linear cross-entropy (Triton on GPU; interpret mode elsewhere).

`stats`: each program owns a block of tokens and a contiguous split of the vocabulary; it forms
one [bn, bv] logits tile at a time from `hidden @ weight` (a loop over the model dimension) and
folds it into an online logsumexp in registers. The partial states of the splits are merged
outside. `dlogits`: the same tile, turned into its softmax gradient and stored in the
activation dtype, for the XLA matmuls of the backward pass.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _softcap


def logits_tile(h_ref, w_ref, rows, rmask, cols, cmask, *, bk, vd):
  """[bn, bv] float32 tile of hidden[rows] @ weight[:, cols] (weight[cols, :].T if vd)."""
  d = h_ref.shape[1]
  f32 = h_ref.dtype == jnp.float32 and w_ref.dtype == jnp.float32

  def body(k, acc):
    ks = k * bk + jnp.arange(bk)
    kmask = ks < d
    h = plgpu.load(h_ref.at[rows[:, None], ks[None, :]], mask=rmask[:, None] & kmask[None, :],
                   other=0.0)
    if vd:
      w = plgpu.load(w_ref.at[cols[:, None], ks[None, :]],
                     mask=cmask[:, None] & kmask[None, :], other=0.0)
    else:
      w = plgpu.load(w_ref.at[ks[:, None], cols[None, :]],
                     mask=kmask[:, None] & cmask[None, :], other=0.0)
    # float32 inputs: full-precision products (Triton would otherwise use tf32).
    return acc + plgpu.dot(h, w, trans_b=vd, allow_tf32=False if f32 else None)

  acc = jnp.zeros((rows.shape[0], cols.shape[0]), jnp.float32)
  return lax.fori_loop(0, pl.cdiv(d, bk), body, acc)


def split_range(v: int, bv: int, splits: int):
  """The vocabulary tiles [lo, hi) of this program's split (grid axis 1); possibly none."""
  per_split = pl.cdiv(pl.cdiv(v, bv), splits)
  lo = pl.program_id(1) * per_split
  return lo, jnp.minimum(lo + per_split, pl.cdiv(v, bv))


def tile_dims(tile, sizes) -> tuple[int, ...]:
  """The (tokens, vocabulary, model dimension) tile for arrays of these `sizes`: no larger than
  needed (a power of two), and at least 16, Triton's smallest dot."""
  return tuple(max(min(t, bw.pow2(s)), 16) for t, s in zip(tile, sizes))


def refuse_interpret_under_vma(interpret: bool, *arrays):
  """Raises the clear error for interpret mode inside shard_map with replication checks.

  jax's Pallas interpreter evaluates the kernels with these types and rejects a gather that
  mixes varying refs with (invariant) program-id indices.
  """
  if interpret and any(map(varies_over_mesh, arrays)):
    raise ValueError(
        'implementation="pallas" runs in Pallas interpret mode off GPU, which jax cannot run'
        " inside shard_map with replication checks: pass check_vma=False to shard_map"
        ' (check_rep=False in jax.experimental.shard_map) or use implementation="chunked".')


def _stats_kernel(h_ref, w_ref, labels_ref, m_ref, s_ref, zl_ref, zs_ref, *, bn, bv, bk,
                  splits, vd, softcap=None):
  n = h_ref.shape[0]
  v = w_ref.shape[0 if vd else 1]
  rows = pl.program_id(0) * bn + jnp.arange(bn)
  rmask = rows < n
  labels = plgpu.load(labels_ref.at[rows], mask=rmask, other=0)
  lo, hi = split_range(v, bv, splits)

  def body(j, carry):
    state, z_label, z_sum = carry
    cols = j * bv + jnp.arange(bv)
    cmask = cols < v
    z = _softcap.apply(logits_tile(h_ref, w_ref, rows, rmask, cols, cmask, bk=bk, vd=vd), softcap)
    zl, zs = bw.label_and_sum(z, labels, cols, cmask)
    return bw.lse_update(state, z, cmask[None, :]), z_label + zl, z_sum + zs

  zeros = jnp.zeros((bn,), jnp.float32)
  state, z_label, z_sum = lax.fori_loop(lo, hi, body, (bw.lse_init((bn,)), zeros, zeros))
  split = pl.program_id(1)
  for ref, x in ((m_ref, state.m), (s_ref, state.s), (zl_ref, z_label), (zs_ref, z_sum)):
    plgpu.store(ref.at[split, rows], x, mask=rmask)


def _dlogits_kernel(h_ref, w_ref, labels_ref, lse_ref, g_ref, cols_ref, out_ref, *, bn, bv,
                    bk, vd, softcap=None, **cfg):
  n = h_ref.shape[0]
  vc = out_ref.shape[1]
  rows = pl.program_id(0) * bn + jnp.arange(bn)
  rmask = rows < n
  local = pl.program_id(1) * bv + jnp.arange(bv)
  cmask = local < vc
  x = logits_tile(h_ref, w_ref, rows, rmask, local, cmask, bk=bk, vd=vd)
  z = _softcap.apply(x, softcap)
  load_rows = functools.partial(plgpu.load, mask=rmask, other=0)
  cols = plgpu.load(cols_ref.at[local], mask=cmask, other=-1)
  d = bw.cross_entropy_dlogits(z, load_rows(lse_ref.at[rows]), load_rows(labels_ref.at[rows]),
                               cols, load_rows(g_ref.at[rows]), **cfg)
  if softcap is not None:
    d = d * _softcap.derivative(x, softcap)
  plgpu.store(out_ref.at[rows[:, None], local[None, :]], d.astype(out_ref.dtype),
              mask=rmask[:, None] & cmask[None, :])


def out_like(shape, dtype, like) -> jax.ShapeDtypeStruct:
  """An output typed like `like` across shard_map's mesh axes.

  Under shard_map's replication checks (check_vma) a `pallas_call` must be told how its outputs
  vary over the mesh; here as the inputs do (`like` is `hidden`, typed like the weight too by
  `chunked_xla.typed_alike`). The field is `manual_axis_type` in jax 0.10 and was `vma` before.
  """
  aval = jax.typeof(like)
  for field in ("manual_axis_type", "vma"):
    if getattr(aval, field, None) is not None:
      try:
        return jax.ShapeDtypeStruct(shape, dtype, **{field: getattr(aval, field)})
      except TypeError:  # a jax whose ShapeDtypeStruct names it otherwise
        pass
  return jax.ShapeDtypeStruct(shape, dtype)


def varies_over_mesh(x) -> bool:
  """Whether `x` is typed as varying over a mesh axis (inside shard_map with check_vma)."""
  aval = jax.typeof(x)
  mat = getattr(aval, "manual_axis_type", None)
  return bool(getattr(mat, "varying", None) or getattr(aval, "vma", None))


def compiler_params(num_warps, num_stages):
  return plgpu.CompilerParams(num_warps=num_warps, num_stages=num_stages)


@functools.partial(jax.jit, static_argnames=("bn", "bv", "bk", "splits", "vd", "num_warps",
                                             "num_stages", "interpret", "softcap"))
def stats(hidden, weight, labels, *, bn, bv, bk, splits, vd, num_warps=4, num_stages=3,
          interpret=False, softcap=None):
  """Per-token (lse, z[y], sum z) of hidden @ weight, never storing a logits tile."""
  n = hidden.shape[0]
  out = [out_like((splits, n), jnp.float32, hidden)] * 4
  kernel = functools.partial(_stats_kernel, bn=bn, bv=bv, bk=bk, splits=splits, vd=vd,
                             softcap=softcap)
  m, s, z_label, z_sum = pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), splits), out_shape=out, interpret=interpret,
      compiler_params=compiler_params(num_warps, num_stages))(hidden, weight, labels)
  state = bw.Lse(m[0], s[0])
  for k in range(1, splits):
    state = bw.lse_merge(state, bw.Lse(m[k], s[k]))
  return bw.CeStats(bw.lse_finish(state), z_label.sum(0), z_sum.sum(0))


@functools.partial(jax.jit, static_argnames=("bn", "bv", "bk", "vd", "vocab", "label_smoothing",
                                             "z_loss", "num_warps", "num_stages", "interpret",
                                             "softcap"))
def dlogits(hidden, w_blk, labels, lse, g, cols, *, bn, bv, bk, vd, vocab, label_smoothing,
            z_loss, num_warps=4, num_stages=3, interpret=False, softcap=None):
  """[tokens, len(cols)] gradient of the logits of one weight block, in hidden's dtype."""
  n, vc = hidden.shape[0], cols.shape[0]
  kernel = functools.partial(_dlogits_kernel, bn=bn, bv=bv, bk=bk, vd=vd, vocab=vocab,
                             label_smoothing=label_smoothing, z_loss=z_loss, softcap=softcap)
  return pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), pl.cdiv(vc, bv)),
      out_shape=out_like((n, vc), hidden.dtype, hidden), interpret=interpret,
      compiler_params=compiler_params(num_warps, num_stages))(hidden, w_blk, labels, lse, g, cols)

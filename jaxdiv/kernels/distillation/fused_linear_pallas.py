"""Fused linear distillation with Pallas kernels for the logits tiles (Triton on GPU; interpret
mode elsewhere).

The student's tile is formed from `hidden @ weight` inside the kernel (a loop over the model
dimension, `kernels._pallas_gpu.logits_tile`); the teacher's is formed
the same way from its own head, or loaded from the given logits. Forward: a kernel over a grid
of (token blocks, vocabulary splits) folds both tiles into online logsumexps and, for the
forward or reverse KL, the divergence itself (`_blockwise.KlState`); for JS a second kernel
(given the merged lses) sums its terms. Nothing of size [tokens, vocab] is stored. Backward:
`kernels._linear_blocks.backward`'s walk over vocabulary chunks, with a kernel that
recomputes the chunk's tiles and writes the student's logits gradient in the activation dtype
for the two XLA matmuls.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax
from jax.experimental import pallas as pl
from jax.experimental.pallas import triton as plgpu

from jaxdiv.kernels import _blockwise as bw
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _pallas_gpu as pg
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.distillation import base

# (tokens, vocabulary, model dimension) tile, vocabulary splits of the forward grid, warps per
# program, and the backward's vocabulary chunk. Two float32 accumulators live per program (the
# student's and the teacher's tile), so the tile is a quarter of the fused cross-entropy's
# (128 x 256) in area (`bench/kernels.py --only gpu` times it).
TILE = (64, 128, 64)
SPLITS = 4
NUM_WARPS = 4
CHUNK = 8192


def _tiles(refs, rows, rmask, cols, cmask, *, bk, vd, teacher_vd, inv_t, softcap=None):
  """Student and teacher [bn, bv] float32 tiles at vocabulary columns `cols`, capped
  (`softcap`) and divided by T.

  `refs` is (student hidden, student weight block, *teacher), the teacher being (logits,) or
  (hidden, weight); `cols` index the teacher (its whole vocabulary) and `local` columns the
  student's weight block (the same as `cols` in the forward pass).
  """
  hs_ref, ws_ref, *teacher = refs
  local, cols = cols if isinstance(cols, tuple) else (cols, cols)
  zs = pg.logits_tile(hs_ref, ws_ref, rows, rmask, local, cmask, bk=bk, vd=vd)
  if len(teacher) == 1:
    zt = plgpu.load(teacher[0].at[rows[:, None], cols[None, :]],
                    mask=rmask[:, None] & cmask[None, :], other=0.0).astype(jnp.float32)
  else:
    zt = pg.logits_tile(*teacher, rows, rmask, cols, cmask, bk=bk, vd=teacher_vd)
  return _softcap.apply(zs, softcap, inv_t), _softcap.apply(zt, softcap, inv_t)


def _lse_kernel(*refs, n_in, bn, bv, splits, vd, divergence, **tile_cfg):
  """This split's partial `KlState` (forward or reverse KL), or both lses' states (JS)."""
  ins, outs = refs[:n_in], refs[n_in:]
  v = ins[1].shape[0 if vd else 1]
  rows, rmask = pg.row_block(ins[0].shape[0], bn)
  one_pass = base.kl_one_pass(divergence)

  def body(j, state):
    cols, cmask = pg.vocab_tile(j, bv, v)
    zs, zt = _tiles(ins, rows, rmask, cols, cmask, vd=vd, **tile_cfg)
    if one_pass:
      return base.kl_update(state, zs, zt, cmask[None, :], divergence=divergence)
    return base.KlState(bw.lse_update(state.s, zs, cmask[None, :]),
                      bw.lse_update(state.t, zt, cmask[None, :]), state.a)

  state = lax.fori_loop(*pg.split_range(v, bv, splits), body, base.kl_init((bn,)))
  pg.store_split(outs, (state.s.m, state.s.s, state.t.m, state.t.s, state.a), rows, rmask)


def _div_kernel(*refs, n_in, bn, bv, splits, vd, divergence, beta, **tile_cfg):
  ins, (lse_s_ref, lse_t_ref, div_ref, c_ref) = refs[:n_in], refs[n_in:]
  v = ins[1].shape[0 if vd else 1]
  rows, rmask = pg.row_block(ins[0].shape[0], bn)
  lse_s, lse_t = (plgpu.load(r.at[rows], mask=rmask, other=0.0) for r in (lse_s_ref, lse_t_ref))

  def body(j, acc):
    cols, cmask = pg.vocab_tile(j, bv, v)
    zs, zt = _tiles(ins, rows, rmask, cols, cmask, vd=vd, **tile_cfg)
    terms = base.divergence_terms(zs, zt, lse_s, lse_t, divergence=divergence, beta=beta)
    return tuple(a + jnp.sum(jnp.where(cmask[None, :], t, 0.0), -1) for a, t in zip(acc, terms))

  zeros = jnp.zeros((bn,), jnp.float32)
  div, c = lax.fori_loop(*pg.split_range(v, bv, splits), body, (zeros, zeros))
  pg.store_split((div_ref, c_ref), (div, c), rows, rmask)


def _dlogits_kernel(*refs, n_in, bn, bv, inv_t, divergence, beta, softcap=None, **tile_cfg):
  ins, rest = refs[:n_in], refs[n_in:]
  cols_ref, lse_s_ref, lse_t_ref, c_ref, g_ref, out_ref = rest
  rows, rmask, local, cmask = pg.grad_tile(out_ref, bn, bv)
  cols = plgpu.load(cols_ref.at[local], mask=cmask, other=0)
  zs, zt = _tiles(ins, rows, rmask, (local, cols), cmask, inv_t=inv_t, softcap=softcap,
                  **tile_cfg)
  load_rows = functools.partial(plgpu.load, mask=rmask, other=0.0)
  lse_s, lse_t, c, g = (load_rows(r.at[rows]) for r in (lse_s_ref, lse_t_ref, c_ref, g_ref))
  d = base.divergence_dlogits(zs, zt, base.DivStats(lse_s, lse_t, None, c), g,
                            divergence=divergence, beta=beta, inv_t=inv_t)
  if softcap is not None:  # dz/dx = (1 - tanh^2(x / c)) / T, tanh(x / c) = z T / c
    d = d * (1.0 - jnp.square(zs * (1.0 / (softcap * inv_t))))
  pg.store_tile(out_ref, rows, rmask, local, cmask, d)


_STATIC = ("bn", "bv", "bk", "splits", "vd", "teacher_vd", "inv_t", "divergence", "beta",
           "num_warps", "interpret", "softcap")


@functools.partial(jax.jit, static_argnames=_STATIC)
def stats(hidden, weight, teacher, *, bn, bv, bk, splits, vd, teacher_vd, inv_t, divergence,
          beta, num_warps=4, interpret=False, softcap=None):
  """Per-token `DivStats` of the student `hidden @ weight` against the teacher."""
  n = hidden.shape[0]
  ins = (hidden, weight, *teacher)
  tile_cfg = dict(n_in=len(ins), bn=bn, bv=bv, splits=splits, vd=vd, bk=bk,
                  teacher_vd=teacher_vd, inv_t=inv_t, softcap=softcap)
  call = functools.partial(pl.pallas_call, grid=(pl.cdiv(n, bn), splits), interpret=interpret,
                           compiler_params=pg.compiler_params(num_warps, 2))
  parts = lambda k: [pg.out_like((splits, n), jnp.float32, hidden)] * k
  ms, ss, mt, st, a = call(functools.partial(_lse_kernel, **tile_cfg, divergence=divergence),
                           out_shape=parts(5))(*ins)
  split = lambda k: base.KlState(bw.Lse(ms[k], ss[k]), bw.Lse(mt[k], st[k]), a[k])
  state = split(0)
  for k in range(1, splits):
    state = base.kl_merge(state, split(k), divergence=divergence)
  if base.kl_one_pass(divergence):
    return base.kl_finish(state, divergence=divergence)
  # JS: a second pass for its terms, given the lses.
  lses = (bw.lse_finish(state.s), bw.lse_finish(state.t))
  kernel = functools.partial(_div_kernel, **tile_cfg, divergence=divergence, beta=beta)
  div, c = call(kernel, out_shape=parts(2))(*ins, *lses)
  return base.DivStats(*lses, div.sum(0), c.sum(0))


@functools.partial(jax.jit, static_argnames=tuple(a for a in _STATIC if a != "splits"))
def dlogits(hidden, w_blk, teacher, stats, g, cols, *, bn, bv, bk, vd, teacher_vd, inv_t,
            divergence, beta, num_warps=4, interpret=False, softcap=None):
  """[tokens, len(cols)] gradient of the student's logits at the weight block `w_blk` (the
  global columns `cols`), recomputed, in hidden's dtype."""
  n, vc = hidden.shape[0], cols.shape[0]
  ins = (hidden, w_blk, *teacher)
  kernel = functools.partial(_dlogits_kernel, n_in=len(ins), bn=bn, bv=bv, bk=bk, vd=vd,
                             teacher_vd=teacher_vd, inv_t=inv_t, divergence=divergence, beta=beta,
                             softcap=softcap)
  return pl.pallas_call(
      kernel, grid=(pl.cdiv(n, bn), pl.cdiv(vc, bv)),
      out_shape=pg.out_like((n, vc), hidden.dtype, hidden), interpret=interpret,
      compiler_params=pg.compiler_params(num_warps, 2),
  )(*ins, cols.astype(jnp.int32), stats.lse_s, stats.lse_t, stats.c, g)


def linear_divergence(hidden, weight, teacher, valid, *, vd, teacher_vd, divergence, beta,
                      inv_t, block_size=None, interpret=False, tile=TILE, splits=SPLITS,
                      num_warps=NUM_WARPS, softcap=None):
  """Per-token divergence; `teacher` is `(teacher_logits,)` or `(hidden, weight)`."""
  teacher = tuple(lax.stop_gradient(t) for t in teacher)
  pg.refuse_interpret_under_vma(interpret, hidden, weight, *teacher)
  v = lb.vocab_size(weight, vd)
  d = max(hidden.shape[1], teacher[0].shape[1] if len(teacher) == 2 else 1)
  bn, bv, bk = pg.tile_dims(tile, (hidden.shape[0], v, d))
  kw = dict(bn=bn, bv=bv, bk=bk, vd=vd, teacher_vd=teacher_vd, inv_t=inv_t,
            divergence=divergence, beta=beta, num_warps=num_warps, interpret=interpret,
            softcap=softcap)
  dlogits_fn = lambda h, w_blk, t, stats, g, cols: dlogits(h, w_blk, t, stats, g, cols, **kw)
  chunk = bw.pick_block(v, block_size, CHUNK)
  f = bw.masked_loss_vjp(
      functools.partial(stats, splits=splits, **kw),
      lambda h, w, t, st, g: lb.backward(h, w, t, st, g, bv=chunk, vd=vd, dlogits_fn=dlogits_fn),
      lambda st: st.div)
  return f((hidden, weight), teacher, valid)

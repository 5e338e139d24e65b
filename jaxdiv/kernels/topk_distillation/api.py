"""Public entry points: distillation against a teacher's stored top-k log-probabilities, from
the student's logits or fused with its linear head."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv import _sharding
from jaxdiv import _validation
from jaxdiv.kernels import _args
from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.token_log_probs.api import temperature_scale
from jaxdiv.kernels.topk_distillation import chunked_xla
from jaxdiv.kernels.topk_distillation import divergence as div
from jaxdiv.kernels.topk_distillation import pallas_gpu
from jaxdiv.kernels.topk_distillation import xla

IMPLEMENTATIONS = _dispatch.registry(
    # Tested in interpret mode only: not the default on GPU until it has run compiled there.
    _dispatch.triton(pallas_gpu.student_stats, default=False),
    _dispatch.Implementation("chunked", chunked_xla.student_stats),
    _dispatch.Implementation("xla", xla.student_stats),
)


def _check_options(divergence, tail, beta, reduction):
  if divergence not in div.DIVERGENCES:
    raise ValueError(f"`divergence` must be one of {div.DIVERGENCES}; got {divergence!r}.")
  if tail not in div.TAILS:
    raise ValueError(f"`tail` must be one of {div.TAILS}; got {tail!r}.")
  if isinstance(beta, jax.core.Tracer):
    raise TypeError("`beta` must be a concrete number.")
  _validation.check_real(beta, "beta", lo=0, hi=1, allow_array=False)
  if reduction not in ("none", "mean", "sum"):
    raise ValueError(f'`reduction` must be "none", "mean" or "sum"; got {reduction!r}.')


def _teacher(teacher_indices, teacher_log_probs, batch, vocab):
  """Flattened ([tokens, k] int32, [tokens, k] float) with trace-time shape checks."""
  idx = jnp.asarray(teacher_indices)
  if not jnp.issubdtype(idx.dtype, jnp.integer):
    raise TypeError(f"`teacher_indices` must be integers; got {idx.dtype}.")
  lt = _validation.as_float_array(teacher_log_probs, "teacher_log_probs")
  if idx.ndim != len(batch) + 1 or idx.shape[:-1] != tuple(batch):
    raise ValueError(f"`teacher_indices` must have shape {(*batch, 'k')} (the student's tokens"
                     f" and k entries); got {idx.shape}.")
  if lt.shape != idx.shape:
    raise ValueError(f"`teacher_log_probs` must have the shape of `teacher_indices` {idx.shape};"
                     f" got {lt.shape}.")
  k = idx.shape[-1]
  if not 1 <= k <= vocab:
    raise ValueError(f"the teacher's k = {k} entries must be between 1 and the vocabulary size"
                     f" {vocab}.")
  return idx.reshape(-1, k).astype(jnp.int32), lt.reshape(-1, k)


def _loss(student_stats, teacher_indices, teacher_log_probs, batch, vocab, dtype, *,
          divergence, tail, beta, where, reduction):
  """The loss of both entry points from `student_stats(idx) -> (lse [tokens], u [tokens, k])`:
  the student's lse over the vocabulary and its logits at the teacher's indices (scaled)."""
  idx, lt = _teacher(teacher_indices, teacher_log_probs, batch, vocab)
  valid = _args.token_mask(batch, where=where)
  lse, u = student_stats(idx)
  loss = div.loss_from_stats(lse, u, lt, valid, div.bad_teacher(idx, lt, vocab),
                             divergence_name=divergence, tail=tail, beta=float(beta))
  if reduction == "none":
    return loss.reshape(batch).astype(dtype)
  total = jnp.sum(loss)
  if reduction == "mean":
    total = total / jnp.maximum(jnp.sum(valid, dtype=total.dtype), 1.0)
  return total.astype(dtype)


_MATH = r"""
  With the student's log-probabilities :math:`\log q_i = z_i - \mathrm{lse}(z)` at temperature
  T over the whole vocabulary and the teacher's stored :math:`\log p_i` at the k indices
  :math:`I`, `tail="bin"` compares the distributions on k + 1 bins (the entries and the rest),

  .. math::
    \tilde p = (p_I,\; 1 - \textstyle\sum_I p_i), \qquad
    \tilde q = (q_I,\; 1 - \textstyle\sum_I q_i),

  and `tail="renormalize"` the distributions restricted to I and renormalised
  (:math:`p_I / \sum_I p_i`, as MaxText's top-k KL). The divergence is then
  :math:`\mathrm{KL}(\tilde p \| \tilde q)` ("forward_kl"), :math:`\mathrm{KL}(\tilde q \|
  \tilde p)` ("reverse_kl") or :math:`\beta\,\mathrm{KL}(\tilde p \| m) + (1 - \beta)\,
  \mathrm{KL}(\tilde q \| m)` with :math:`m = \beta \tilde p + (1 - \beta) \tilde q` ("js").
  Binning keeps the mass the teacher puts outside its top k: a student that spreads mass over
  the tail is penalised, which renormalising cannot see. Both are exact divergences between
  coarsened distributions, hence at most the full-vocabulary divergence (data processing) for
  "bin". The student's tail is floored at k·eps of its accumulation dtype (float32:
  1.2e-7 k), the precision to which :math:`1 - \sum_I q_i` is known, so that rounding never
  makes the loss infinite.
"""

_TEACHER_ARGS = """
    teacher_indices: [..., k] integer vocabulary indices of the teacher's stored entries.
    teacher_log_probs: [..., k] the teacher's full-vocabulary log-probabilities at those
      indices, at temperature T (as stored); -inf entries are allowed. The teacher is a
      constant (no gradient).
    divergence: "forward_kl", "reverse_kl" or "js" (static).
    tail: "bin" (k + 1 bins) or "renormalize" (static).
    temperature: T > 0 (static): the student's logits are divided by it.
    beta: JS's weight on the teacher, in [0, 1] (static).
    where: optional [...] token mask; False tokens give 0 and no gradient.
    reduction: "none" (per token), "mean" (over counted tokens; 0 if none) or "sum".
"""

_BAD = """
  A token with an index outside [0, vocab), a repeated index, or stored probabilities summing
  above 1 + 1e-3 (rounding up to that is forgiven: the teacher's tail is then 0) gets a NaN
  loss, never a silent number; shapes are checked at trace time.
"""


@_sharding.auto_axes_when_explicit
def topk_distillation_loss(
    student_logits: jax.typing.ArrayLike,
    teacher_indices: jax.typing.ArrayLike,
    teacher_log_probs: jax.typing.ArrayLike,
    *,
    divergence: str = "forward_kl",
    tail: str = "bin",
    temperature: float = 1.0,
    beta: float = 0.5,
    where: jax.typing.ArrayLike | None = None,
    reduction: str = "none",
) -> jax.Array:
  """Distillation loss against a teacher of which only the top-k log-probabilities are stored.
  {math}
  Args:
    student_logits: [..., vocab] the student's logits.{teacher}
  Returns:
    [...] per-token loss (or a scalar with a reduction) in the logits' dtype.
  {bad}
  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.losses import topk_distillation_loss
    >>> logits = jnp.array([[2.0, 1.0, 0.0, -1.0]])
    >>> idx = jnp.array([[0, 1]]); log_p = jnp.log(jnp.array([[0.6, 0.3]]))
    >>> topk_distillation_loss(logits, idx, log_p)
    Array([0.010918], dtype=float32)

  References:
    Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, 2015; Anshumann et
    al., Sparse Logit Sampling: Accelerating Knowledge Distillation in LLMs, 2025 (the bias of
    top-k distillation without a tail).
  """
  z = _validation.as_float_array(student_logits, "student_logits")
  if z.ndim < 1:
    raise ValueError(f"`student_logits` needs a vocabulary axis; got shape {z.shape}.")
  _check_options(divergence, tail, beta, reduction)
  inv_t = temperature_scale(temperature)
  batch, vocab = z.shape[:-1], z.shape[-1]
  x = z.reshape(-1, vocab).astype(jnp.promote_types(z.dtype, jnp.float32)) * inv_t

  def student_stats(idx):
    lse = _numerics.logsumexp(x, axis=-1)
    return lse, jnp.take_along_axis(x, jnp.clip(idx, 0, vocab - 1), axis=-1)

  return _loss(student_stats, teacher_indices, teacher_log_probs, batch, vocab, z.dtype,
               divergence=divergence, tail=tail, beta=beta, where=where, reduction=reduction)


@_sharding.auto_axes_when_explicit
def fused_linear_topk_distillation_loss(
    student_hidden: jax.typing.ArrayLike,
    student_weight: jax.typing.ArrayLike,
    teacher_indices: jax.typing.ArrayLike,
    teacher_log_probs: jax.typing.ArrayLike,
    *,
    divergence: str = "forward_kl",
    tail: str = "bin",
    temperature: float = 1.0,
    beta: float = 0.5,
    where: jax.typing.ArrayLike | None = None,
    reduction: str = "none",
    softcap: float | None = None,
    implementation: str | None = None,
    block_size: int | None = None,
    weight_layout: str | None = None,
    axis_name: str | None = None,
) -> jax.Array:
  """:func:`topk_distillation_loss` of the logits `softcap(student_hidden @ student_weight)`,
  never materialising them.

  Only two per-token statistics of the student enter the loss: the lse of its scaled logits
  over the whole vocabulary and its k logits at the teacher's indices. The blockwise
  implementation forms both in one walk over the vocabulary (the k logits by matching each
  block's columns against the indices) and keeps only the lse as residual; the backward pass
  recomputes each block's logits, whose gradient is g_lse softmax(z) plus the k cotangents at
  their columns, times the cap's derivative.
  {math}
  Args:
    student_hidden: [..., d] activations.
    student_weight: [d, vocab] or [vocab, d] (tied embedding); see `weight_layout`.{teacher}
    softcap: None, or c > 0 (static): the student's logits are capped to c tanh(x / c) before
      the temperature.
    implementation: None or "chunked" (vocabulary blocks through XLA, float64 accumulation for
      float64 inputs), "xla" (materialises the logits) or "pallas" (the lse through Triton
      kernels, interpret mode off GPU; the k logits gathered in XLA by chunks of tokens;
      float64 inputs run "chunked").
    block_size: vocabulary block; None: sized to keep one [tokens, block] tile small.
    weight_layout: "dv", "vd", or None to infer from the shapes.
    axis_name: inside ``shard_map``, the mesh axis over which the vocabulary is split (as in
      :func:`fused_linear_cross_entropy`); `teacher_indices` are global.

  Returns:
    [...] per-token loss (or a scalar with a reduction) in the promoted dtype of the student's
    hidden states and weight.
  {bad}
  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.losses import fused_linear_topk_distillation_loss
    >>> h = jnp.ones((1, 2)); w = jnp.array([[1.0, 0.5, 0.0, -0.5], [1.0, 0.5, 0.0, -0.5]])
    >>> idx = jnp.array([[0, 1]]); log_p = jnp.log(jnp.array([[0.6, 0.3]]))
    >>> fused_linear_topk_distillation_loss(h, w, idx, log_p)
    Array([0.010918], dtype=float32)
  """
  h, w, vd, batch, dtype = _args.linear_head(student_hidden, student_weight, weight_layout,
                                             axis_name, names=("student_hidden", "student_weight"))
  _check_options(divergence, tail, beta, reduction)
  inv_t = temperature_scale(temperature)
  softcap = _softcap.check(softcap)
  vocab = lb.global_vocab_size(w, vd, axis_name)
  if implementation == "pallas" and _args.is_float64(h):
    implementation = "chunked"  # the Triton kernels accumulate in float32
  fn = _dispatch.select(IMPLEMENTATIONS, implementation, "fused_linear_topk_distillation_loss",
                        dtype=dtype)

  def student_stats(idx):
    return fn(h, w, idx, vd=vd, softcap=softcap, inv_t=inv_t, block_size=block_size,
              axis_name=axis_name)

  return _loss(student_stats, teacher_indices, teacher_log_probs, batch, vocab, dtype,
               divergence=divergence, tail=tail, beta=beta, where=where, reduction=reduction)


for _f in (topk_distillation_loss, fused_linear_topk_distillation_loss):
  _f.__doc__ = _f.__doc__.format(math=_MATH, teacher=_TEACHER_ARGS.rstrip(), bad=_BAD)

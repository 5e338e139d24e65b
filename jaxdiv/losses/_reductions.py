"""Reducing per-token losses to a scalar over the valid (unmasked) tokens."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _validation

REDUCTIONS = ("mean", "sum", "sequence_mean", "none")


def reduce_loss(
    per_token: ArrayLike,
    where: ArrayLike | None = None,
    *,
    reduction: str = "mean",
    axis: int = -1,
) -> jax.Array:
  r"""Reduces a per-token loss over the tokens that ``where`` keeps.

  With mask :math:`m` and per-token loss :math:`\ell`:

  * ``"mean"``: :math:`\sum m \ell / \sum m`, the mean over every valid token of the batch
    (the token-level mean of LLM pre-training and DAPO); 0, not NaN, with no valid token.
  * ``"sum"``: :math:`\sum m \ell`.
  * ``"sequence_mean"``: the mean over valid tokens within each sequence (along ``axis``), then
    the mean over the sequences that have at least one valid token (GRPO's original
    reduction); 0 with none.
  * ``"none"``: :math:`m \ell`, the per-token loss with masked tokens set to 0.

  Masked entries may hold ``inf`` or NaN (padding); they never reach the result, and their
  gradient is 0. Sums accumulate in at least float32.

  Args:
    per_token: per-token losses, any shape (``[batch, seq]`` for ``"sequence_mean"``).
    where: boolean mask broadcastable to ``per_token``; ``None`` keeps every token.
    reduction: one of ``"mean"``, ``"sum"``, ``"sequence_mean"``, ``"none"``.
    axis: the sequence axis, used by ``"sequence_mean"``.

  Returns:
    A scalar, or ``per_token``'s shape for ``"none"``, in ``per_token``'s dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.losses import reduce_loss
    >>> loss = jnp.array([[1.0, 2.0, 9.0], [3.0, 9.0, 9.0]])
    >>> mask = jnp.array([[True, True, False], [True, False, False]])
    >>> print(reduce_loss(loss, mask), reduce_loss(loss, mask, reduction="sequence_mean"))
    2.0 2.25
  """
  if reduction not in REDUCTIONS:
    raise ValueError(f"`reduction` must be one of {REDUCTIONS}; got {reduction!r}.")
  x = _validation.as_float_array(per_token, "per_token")
  dtype, acc = _validation.compute_dtype(x)
  x = x.astype(acc)
  mask = _validation.broadcast_where(where, x.shape)
  if mask is not None:
    x = jnp.where(mask, x, 0)
  if reduction == "none":
    return x.astype(dtype)
  if reduction == "sum":
    return jnp.sum(x).astype(dtype)
  ones = jnp.ones(x.shape, acc) if mask is None else mask.astype(acc)
  if reduction == "mean":
    count = jnp.sum(ones)
    return (jnp.sum(x) / jnp.maximum(count, 1)).astype(dtype)
  if x.ndim == 0:
    raise ValueError("`reduction='sequence_mean'` needs a per-token loss with a sequence axis.")
  ax = _validation.normalize_axis(axis, x.ndim)
  count = jnp.sum(ones, axis=ax)
  per_seq = jnp.sum(x, axis=ax) / jnp.maximum(count, 1)
  has_tokens = (count > 0).astype(acc)
  return (jnp.sum(per_seq * has_tokens) / jnp.maximum(jnp.sum(has_tokens), 1)).astype(dtype)

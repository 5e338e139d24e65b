"""Public entry point and dispatch for the fused linear cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _validation
from jaxdiv.kernels import _args
from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import _softcap
from jaxdiv.kernels._args import weight_is_vd
from jaxdiv.kernels.linear_cross_entropy import chunked_xla
from jaxdiv.kernels.linear_cross_entropy import pallas_gpu
from jaxdiv.kernels.linear_cross_entropy import reference
from jaxdiv.kernels.linear_cross_entropy import xla

IMPLEMENTATIONS = _dispatch.registry(
    _dispatch.triton(pallas_gpu.linear_cross_entropy),
    _dispatch.Implementation("chunked", chunked_xla.linear_cross_entropy),
    _dispatch.Implementation("xla", xla.linear_cross_entropy),
)


def check_axis_name(axis_name) -> None:
  """A bound mesh axis (inside `shard_map`), or a clear error naming `axis_name`."""
  if axis_name is None:
    return
  try:
    lax.axis_index(axis_name)
  except NameError:
    raise ValueError(
        f"`axis_name`={axis_name!r} is not a mesh axis bound here: call"
        " fused_linear_cross_entropy inside `shard_map` over a mesh with that axis (with the"
        " weight's vocabulary split over it), or pass axis_name=None.") from None


def fused_linear_cross_entropy(
    hidden: jax.typing.ArrayLike,
    weight: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    implementation: str | None = None,
    block_size: int | None = None,
    weight_layout: str | None = None,
    axis_name: str | None = None,
    reduction: str = "none",
) -> jax.Array:
  r"""Per-token cross-entropy of the logits `hidden @ weight`, never materialising them.

  .. math::
    z = \mathrm{softcap}(h W), \qquad
    \ell = (1 - \epsilon)(\mathrm{lse}(z) - z_y) + \epsilon(\mathrm{lse}(z) - \bar z)
      + \lambda\,\mathrm{lse}(z)^2

  The same loss as :func:`cross_entropy_with_integer_labels` on `hidden @ weight`, with
  gradients for `hidden` and `weight`. The blockwise implementations keep only the per-token
  lse between the passes and recompute each block of logits in the backward (8·N·D·V FLOPs),
  with float32 accumulation for bfloat16 inputs.

  Args:
    hidden: [..., d] activations (leading dimensions are flattened into tokens).
    weight: [d, vocab], or [vocab, d] (a tied embedding); see `weight_layout`.
    labels: [...] integer classes.
    where: optional [...] boolean mask; False tokens give 0 and no gradient.
    ignore_index: tokens with this label give 0 and no gradient.
    label_smoothing: ε in [0, 1] (static).
    z_loss: λ >= 0 (static).
    softcap: None, or c > 0 (static): the logits are capped to c tanh(x / c) (Gemma 2) inside
      the kernels, the cap's derivative recomputed in the backward pass.
    implementation: ``None``: the default for the backend — ``"pallas"`` on GPU where the
      installed jax lowers Pallas to Triton without deprecation, ``"chunked"`` everywhere
      else; never Pallas interpret mode. Or ``"xla"`` (materialises the logits), ``"chunked"``
      (vocabulary blocks through XLA) or ``"pallas"`` (interpret mode off GPU) by name.
    block_size: vocabulary block (chunk for "pallas"); None: sized so that one float32
      [tokens, block] tile stays small.
    weight_layout: "dv", "vd", or None to infer from the shapes (required when d == vocab).
    axis_name: inside ``shard_map``, the mesh axis over which the vocabulary is split
      (Megatron-style vocabulary parallelism): `weight` is then this shard's slice, columns
      [i V/k, (i+1) V/k) of the vocabulary on shard i = `lax.axis_index(axis_name)` ([d, V/k],
      or [V/k, d] tied), `hidden` and `labels` are replicated over the axis and `labels` are
      global indices (tokens may be split over other mesh axes). Only per-token statistics
      cross devices (pmax and psum); the loss and the gradients of `hidden` (summed over the
      shards, in its dtype) and of the local `weight` equal the one-device ones on the full
      weight, for every option and implementation, with or without shard_map's replication
      checks (Pallas in interpret mode only without them).
    reduction: "none" (per-token losses), "mean" (over the tokens that are not masked or
      ignored; 0 if none is) or "sum", of the per-token loss of the chosen implementation.
      (The gradients are not formed in the forward pass, as Liger-Kernel does for a scalar
      loss: that needs 6·N·D·V FLOPs instead of 8 but holds a float32 [D, V] gradient until
      the backward; `bench/forward_grad.py` is that variant, timed by `bench/kernels.py`.)
  Returns:
    [...] per-token loss in the promoted dtype of `hidden` and `weight`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.kernels import fused_linear_cross_entropy
    >>> h = jnp.ones((2, 3)); w = jnp.arange(12.0).reshape(3, 4) / 10
    >>> fused_linear_cross_entropy(h, w, jnp.array([3, 0]))
    Array([0.991843, 1.891843], dtype=float32)
  """
  hidden = _validation.as_float_array(hidden, "hidden")
  weight = _validation.as_float_array(weight, "weight")
  if hidden.ndim < 1:
    raise ValueError(f"`hidden` needs a model axis; got shape {hidden.shape}.")
  vd = weight_is_vd(hidden.shape, weight.shape, weight_layout)
  check_axis_name(axis_name)
  if reduction not in ("none", "mean", "sum"):
    raise ValueError(f'`reduction` must be "none", "mean" or "sum"; got {reduction!r}.')
  batch = hidden.shape[:-1]
  labels = _args.int_labels(labels, batch)
  ls, zl = _args.smoothing_and_z_loss(label_smoothing, z_loss)
  softcap = _softcap.check(softcap)
  valid = _args.token_mask(batch, labels, where=where, ignore_index=ignore_index)
  h = hidden.reshape(-1, hidden.shape[-1])
  dtype = jnp.result_type(hidden, weight)
  h, w = h.astype(dtype), weight.astype(dtype)
  fn = _dispatch.select(IMPLEMENTATIONS, implementation, "fused_linear_cross_entropy",
                        shape=(h.shape[0], h.shape[1], weight.shape[0 if vd else 1]),
                        dtype=dtype)
  if _args.is_float64(h):  # the kernels accumulate in float32; float64 stays exact
    fn = reference.linear_cross_entropy
  loss = fn(h, w, labels.reshape(-1), valid, vd=vd, label_smoothing=ls, z_loss=zl,
            block_size=block_size, axis_name=axis_name, softcap=softcap)
  loss = _args.mark_bad_labels(loss, labels.reshape(-1), valid.reshape(-1),
                              chunked_xla.global_vocab_size(w, vd, axis_name))  # global labels
  if reduction == "none":
    return loss.reshape(batch).astype(dtype)
  total = jnp.sum(loss, dtype=jnp.float32)
  if reduction == "mean":
    total = total / jnp.maximum(jnp.sum(valid, dtype=jnp.float32), 1.0)
  return total.astype(dtype)

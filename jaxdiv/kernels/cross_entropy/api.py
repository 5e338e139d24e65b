"""Public entry point and dispatch for cross-entropy with integer labels."""

from __future__ import annotations

import jax

from jaxdiv import _validation
from jaxdiv.kernels import _args
from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.cross_entropy import chunked_xla
from jaxdiv.kernels.cross_entropy import pallas_gpu
from jaxdiv.kernels.cross_entropy import pallas_tpu
from jaxdiv.kernels.cross_entropy import reference
from jaxdiv.kernels.cross_entropy import xla

IMPLEMENTATIONS = _dispatch.registry(
    # Pallas kernels (Triton on GPU, Mosaic on TPU): one read of the logits forward, one read
    # and one write backward.
    _dispatch.pallas(gpu=pallas_gpu.cross_entropy, tpu=pallas_tpu.cross_entropy),
    _dispatch.Implementation("xla", xla.cross_entropy),
    _dispatch.Implementation("chunked", chunked_xla.cross_entropy),
)


def cross_entropy_with_integer_labels(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    implementation: str | None = None,
    block_size: int | tuple[int, int] | None = None,
    softcap: float | None = None,
) -> jax.Array:
  r"""Softmax cross-entropy between `logits` and integer `labels`, per example.

  .. math::
    \ell = (1 - \epsilon)\,(\mathrm{lse}(z) - z_y)
      + \epsilon\,(\mathrm{lse}(z) - \tfrac{1}{V}\textstyle\sum_v z_v)
      + \lambda\,\mathrm{lse}(z)^2

  i.e. H(t, softmax(z)) for the target t = (1-ε) onehot(y) + ε/V (label smoothing as in optax
  and torch), plus the z-loss λ lse². With `where` and `ignore_index` unset and ε = λ = 0 this
  equals `optax.softmax_cross_entropy_with_integer_labels` in value and gradient.

  Args:
    logits: [..., vocab] unnormalised log-probabilities; the distribution is the last axis.
    labels: [...] integer class indices.
    where: optional [...] boolean mask (broadcast to the batch shape): tokens where it is False
      give loss 0 and no gradient.
    ignore_index: tokens whose label equals it give loss 0 and no gradient.
    label_smoothing: ε in [0, 1] (a static number).
    z_loss: λ >= 0 (a static number).
    implementation: None (the fastest for the backend and shape; never Pallas interpret mode),
      "xla" (one `exp` per logit, the softmax kept as residual and scaled into the gradient
      in place: optax's cost with these options; the default on CPU), "chunked" (tiles of
      [tokens, vocab] with an online logsumexp, an lse-only residual: bounded memory) or
      "pallas" (lse-only residual. GPU, the default there: Triton kernels, one program per
      block of tokens walking the vocabulary. TPU: Mosaic kernels over a grid of (token
      blocks, vocabulary blocks), the online logsumexp state kept in VMEM across the
      vocabulary blocks; tested in TPU interpret mode and lowered for TPU, not yet compiled on
      one, so not the default there. CPU: the Triton kernels in interpret mode, slowly).
    block_size: tile size, an int (vocabulary) or a (tokens, vocabulary) pair; None: defaults.
      The Pallas kernels round it up: to powers of two (Triton), to multiples of (8, 128)
      ((16, 128) for 16-bit logits) or the whole axis (Mosaic).
    softcap: None, or c > 0 (static): the logits are first capped to c tanh(z / c) (Gemma 2),
      elementwise before the kernel (one more [tokens, vocab] array; exact gradient).

  Returns:
    [...] per-example loss in the logits' dtype (accumulated in float32).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.kernels import cross_entropy_with_integer_labels
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> cross_entropy_with_integer_labels(logits, jnp.array([0, 2]))
    Array([0.169846, 1.098612 ], dtype=float32)
  """
  logits = _validation.as_float_array(logits, "logits")
  if logits.ndim < 1:
    raise ValueError(f"`logits` needs a vocabulary axis; got shape {logits.shape}.")
  batch = logits.shape[:-1]
  labels = _args.int_labels(labels, batch)
  ls, zl = _args.smoothing_and_z_loss(label_smoothing, z_loss)
  valid = _args.token_mask(batch, labels, where=where, ignore_index=ignore_index)
  z = logits.reshape(-1, logits.shape[-1])
  softcap = _softcap.check(softcap)
  if softcap is not None:  # elementwise, before the kernels (autodiff through tanh)
    z = _softcap.apply(z, softcap)
  fn = _dispatch.select(IMPLEMENTATIONS, implementation, "cross_entropy_with_integer_labels",
                        shape=z.shape, dtype=z.dtype)
  if _args.is_float64(z):  # the kernels accumulate in float32; float64 stays exact
    loss = reference.cross_entropy(z, labels.reshape(-1), valid, label_smoothing=ls,
                                   z_loss=zl)
  else:
    loss = fn(z, labels.reshape(-1), valid, label_smoothing=ls, z_loss=zl,
              block_size=block_size)
  loss = _args.mark_bad_labels(loss, labels.reshape(-1), valid.reshape(-1), z.shape[-1])
  return loss.reshape(batch).astype(logits.dtype)

"""Argument handling shared by the kernel APIs: flattening to [tokens, ...], the token mask,
and trace-time checks of the hyperparameters."""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdiv import _validation


def token_mask(batch_shape, labels=None, *, where=None, ignore_index=None) -> jax.Array:
  """[tokens] bool: tokens that count (`where` True and label != `ignore_index`)."""
  valid = jnp.ones(batch_shape, bool)
  if where is not None:
    valid = _validation.broadcast_where(where, tuple(batch_shape))
  if ignore_index is not None:
    if not isinstance(ignore_index, (int, np.integer)) or isinstance(ignore_index, bool):
      raise TypeError(f"`ignore_index` must be an int or None; got {ignore_index!r}.")
    valid = valid & (labels != ignore_index)
  return valid.reshape(-1)


def int_labels(labels, batch_shape, name="labels") -> jax.Array:
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(f"`{name}` must be an integer array of class indices; got {labels.dtype}.")
  if labels.shape != tuple(batch_shape):
    raise ValueError(
        f"`{name}` must have the logits' batch shape {tuple(batch_shape)}; got {labels.shape}.")
  return labels.astype(jnp.int32)


def mark_bad_labels(loss: jax.Array, labels: jax.Array, valid: jax.Array,
                    vocab: int) -> jax.Array:
  """NaN for counted tokens whose label is outside [0, vocab): never silently a number (a
  label the implementations would match to no class, or wrap around, or clamp)."""
  bad = valid & ((labels < 0) | (labels >= vocab))
  return jnp.where(bad, jnp.nan, loss)


def smoothing_and_z_loss(label_smoothing, z_loss) -> tuple[float, float]:
  """Both are static Python floats (they shape the kernels): 0 <= ls <= 1, z_loss >= 0."""
  _validation.require_static(label_smoothing, "label_smoothing")
  _validation.require_static(z_loss, "z_loss")
  _validation.check_real(label_smoothing, "label_smoothing", lo=0, hi=1, allow_array=False)
  _validation.check_real(z_loss, "z_loss", lo=0, allow_array=False)
  return float(label_smoothing), float(z_loss)


def is_float64(*arrays) -> bool:
  return any(a.dtype == jnp.float64 for a in arrays)


def weight_is_vd(hidden_shape, weight_shape, weight_layout) -> bool:
  """True for a [vocab, d] weight (tied embedding), False for [d, vocab]."""
  d = hidden_shape[-1]
  if len(weight_shape) != 2:
    raise ValueError(f"`weight` must be 2-D ([d, vocab] or [vocab, d]); got {weight_shape}.")
  if weight_layout is None:
    if weight_shape[0] == d and weight_shape[1] == d:
      raise ValueError(
          f"`weight` of shape {weight_shape} is square with d = {d}: pass `weight_layout`"
          ' ("dv" for [d, vocab], "vd" for [vocab, d]).')
    weight_layout = "dv" if weight_shape[0] == d else "vd"
  if weight_layout not in ("dv", "vd"):
    raise ValueError(f'`weight_layout` must be None, "dv" or "vd"; got {weight_layout!r}.')
  vd = weight_layout == "vd"
  if weight_shape[1 if vd else 0] != d:
    raise ValueError(
        f"`hidden` of shape {tuple(hidden_shape)} and `weight` of shape {weight_shape} do not"
        f' contract over d = {d} with weight_layout="{weight_layout}".')
  return vd


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


class LinearHead(NamedTuple):
  """A model's last activations and output weight, ready for the fused kernels."""
  h: jax.Array  # [tokens, d], in `dtype`
  w: jax.Array  # [d, vocab] or [vocab, d], in `dtype`
  vd: bool  # the weight is [vocab, d]
  batch: tuple[int, ...]  # the activations' leading (token) shape
  dtype: jnp.dtype  # the promoted dtype of the activations and the weight


def linear_head(hidden, weight, weight_layout, axis_name=None, *,
                names=("hidden", "weight")) -> LinearHead:
  """Checks and flattens the activations and weight of a fused linear op (`names`: theirs)."""
  hidden = _validation.as_float_array(hidden, names[0])
  weight = _validation.as_float_array(weight, names[1])
  if hidden.ndim < 1:
    raise ValueError(f"`{names[0]}` needs a model axis; got shape {hidden.shape}.")
  vd = weight_is_vd(hidden.shape, weight.shape, weight_layout)
  check_axis_name(axis_name)
  dtype = jnp.result_type(hidden, weight)  # one dtype per product (Triton's dot needs it)
  return LinearHead(hidden.reshape(-1, hidden.shape[-1]).astype(dtype), weight.astype(dtype),
                    vd, hidden.shape[:-1], dtype)

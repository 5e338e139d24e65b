"""Validation shared by the losses: optax's axis and `where` conventions, kernel dispatch checks."""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxdiv import _validation
from jaxdiv.kernels import IMPLEMENTATIONS


def axes(axis, ndim: int, *, allow_none: bool = True, keep_order: bool = False,
         name: str = "axis") -> tuple[int, ...]:
  """optax's `axis`: an int, a tuple of ints, or None (every axis), as non-negative ints.

  `keep_order` keeps the caller's order of a tuple (optax flattens integer-label classes in that
  order); otherwise the axes are sorted.
  """
  if axis is None and not allow_none:
    raise TypeError(f"`{name}` must be an int or a tuple of ints; got None.")
  if isinstance(axis, (tuple, list)) and keep_order:
    out = tuple(_validation.normalize_axis(a, ndim, name) for a in axis)
    if len(set(out)) != len(out):
      raise ValueError(f"`{name}={axis}` repeats an axis.")
    if not out:
      raise ValueError(f"`{name}` must name at least one axis; got {axis!r}.")
    return out
  return _validation.normalize_axes(axis, ndim, name)


def expand_where(where, shape: tuple[int, ...], ax: tuple[int, ...], *, expand: bool = True):
  """optax's mask rule: a mask with fewer dimensions than the logits is per example.

  optax's cross-entropies insert the reduced axes into such a mask (`jnp.expand_dims(where,
  axis)`); the mask is then broadcast to `shape` and becomes a boolean array.
  """
  if where is None:
    return None
  where = jnp.asarray(where)
  if expand and where.ndim != len(shape):
    if where.ndim + len(ax) != len(shape):
      raise ValueError(
          f"`where` of shape {where.shape} is neither the logits' shape {shape} nor their batch"
          f" shape (the logits without axis {ax})."
      )
    where = jnp.expand_dims(where, ax)
  return _validation.broadcast_where(where, shape)


def broadcast_shapes(a: jax.Array, b: jax.Array, names: tuple[str, str]) -> tuple[int, ...]:
  try:
    return tuple(np.broadcast_shapes(a.shape, b.shape))
  except ValueError:
    raise ValueError(
        f"`{names[0]}` and `{names[1]}` cannot be broadcast together: shapes {a.shape} and"
        f" {b.shape}."
    ) from None


def check_implementation(implementation):
  if implementation is not None and implementation not in IMPLEMENTATIONS:
    raise ValueError(
        f"`implementation` must be None or one of {IMPLEMENTATIONS}; got {implementation!r}."
    )
  return implementation


def unsupported_by_kernel(option: str, function: str):
  return ValueError(
      f"`{function}` with `implementation=` delegates to jaxdiv.kernels, which does not"
      f" support {option}; leave `implementation=None`, which runs it."
  )


def check_coefficient(x, name: str, *, hi=None):
  """A non-negative scalar coefficient (label smoothing, z-loss, temperature-like)."""
  return _validation.check_real(x, name, lo=0, hi=hi, allow_array=False)


is_static_zero = _validation.is_static_zero  # a concrete 0 keeps optax's exact graph

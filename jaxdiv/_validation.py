"""Trace-time validation shared by every public function.

Everything here runs while JAX traces: shapes, dtypes and *concrete* hyperparameters are checked
and a `ValueError`/`TypeError` names the argument and the offending shape or value. Values that are
only known from the data (negative probabilities, rows that do not sum to one, a traced `alpha`)
are the business of :mod:`jaxdiv.checks`, which uses `jax.experimental.checkify`.

Broadcasting policy (applied everywhere): batch dimensions follow NumPy's rules; the reduced
(distribution) axis is never broadcast, both arguments must have the same size along it.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import jax
import jax.numpy as jnp
import numpy as np


def as_float_array(x, name: str) -> jax.Array:
  """Converts `x` to an array and rejects non-floating dtypes, naming `name`."""
  x = jnp.asarray(x)
  if jnp.issubdtype(x.dtype, jnp.complexfloating):
    raise TypeError(f"`{name}` must be a real floating-point array; got dtype {x.dtype}.")
  if not jnp.issubdtype(x.dtype, jnp.floating):
    raise TypeError(
        f"`{name}` must be a floating-point array (float16, bfloat16, float32 or float64);"
        f" got dtype {x.dtype}. Integer and boolean arrays are not probabilities or logits:"
        f" cast them explicitly, e.g. `{name}.astype(jnp.float32)`."
    )
  return x


def compute_dtype(*arrays: jax.Array):
  """Returns (result dtype, accumulation dtype): the promoted dtype and at least float32."""
  result = jnp.result_type(*arrays)
  return result, jnp.promote_types(result, jnp.float32)


def normalize_axis(axis: int, ndim: int, name: str = "axis") -> int:
  if not isinstance(axis, (int, np.integer)) or isinstance(axis, bool):
    raise TypeError(f"`{name}` must be an int; got {axis!r}.")
  if ndim == 0:
    raise ValueError(
        f"the distribution axis `{name}={axis}` needs inputs with at least one dimension;"
        " got scalars."
    )
  if not -ndim <= axis < ndim:
    raise ValueError(f"`{name}={axis}` is out of range for inputs with {ndim} dimensions.")
  return int(axis) % ndim


def normalize_axes(axis, ndim: int, name: str = "axis") -> tuple[int, ...]:
  """Normalises an int, a tuple of ints or None (all axes) to a sorted tuple of axes."""
  if axis is None:
    return tuple(range(ndim))
  if isinstance(axis, Sequence):
    axes = tuple(normalize_axis(a, ndim, name) for a in axis)
    if len(set(axes)) != len(axes):
      raise ValueError(f"`{name}={axis}` repeats an axis.")
    return tuple(sorted(axes))
  return (normalize_axis(axis, ndim, name),)


def broadcast_pair(p: jax.Array, q: jax.Array, axis: int, names=("p", "q")):
  """Broadcasts `p` and `q` over their batch dimensions; the distribution axis must match.

  Returns the broadcast arrays and the normalised (non-negative) axis.
  """
  if p.ndim == 0 and q.ndim == 0:
    raise ValueError(
        f"`{names[0]}` and `{names[1]}` are scalars; a distribution needs at least one"
        f" dimension (axis={axis}). For Bernoulli parameters use the binary_* functions."
    )
  shapes = (p.shape, q.shape)
  ndim = max(p.ndim, q.ndim, 1)
  p = jnp.reshape(p, (1,) * (ndim - p.ndim) + p.shape)
  q = jnp.reshape(q, (1,) * (ndim - q.ndim) + q.shape)
  ax = normalize_axis(axis, ndim)
  if p.shape[ax] != q.shape[ax]:
    raise ValueError(
        f"`{names[0]}` and `{names[1]}` must have the same size along the distribution axis"
        f" (axis={axis}); got shapes {shapes[0]} and {shapes[1]}."
    )
  try:
    shape = np.broadcast_shapes(p.shape, q.shape)
  except ValueError:
    raise ValueError(
        f"`{names[0]}` and `{names[1]}` have batch shapes that cannot be broadcast together:"
        f" {shapes[0]} and {shapes[1]} (distribution axis {axis})."
    ) from None
  return jnp.broadcast_to(p, shape), jnp.broadcast_to(q, shape), ax


def broadcast_where(where, shape: tuple[int, ...], name: str = "where"):
  """Converts a mask to a boolean array broadcast to `shape` (None stays None)."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if not (jnp.issubdtype(where.dtype, jnp.bool_) or jnp.issubdtype(where.dtype, jnp.integer)):
    raise TypeError(f"`{name}` must be a boolean mask; got dtype {where.dtype}.")
  try:
    np.broadcast_shapes(where.shape, shape)
  except ValueError:
    raise ValueError(
        f"`{name}` of shape {where.shape} cannot be broadcast to the inputs' shape {shape}."
    ) from None
  if len(np.broadcast_shapes(where.shape, shape)) != len(shape) or np.broadcast_shapes(
      where.shape, shape
  ) != tuple(shape):
    raise ValueError(
        f"`{name}` of shape {where.shape} would enlarge the inputs' shape {shape};"
        " a mask must broadcast *to* the inputs."
    )
  return jnp.broadcast_to(where.astype(bool), shape)


def concrete(x):
  """Returns a NumPy value for a concrete hyperparameter, or None for a tracer.

  The one test of "is this hyperparameter known at trace time?" that every module uses.
  """
  if isinstance(x, jax.core.Tracer):
    return None
  try:
    return np.asarray(x)
  except Exception:
    return None


def static_scalar(x) -> float | None:
  """A concrete scalar as a Python float (a branch can then be chosen while tracing), else None
  (a tracer or an array: every branch is traced)."""
  value = concrete(x)
  return float(value) if value is not None and value.ndim == 0 else None


def is_static_zero(x) -> bool:
  """True for a concrete 0 everywhere (a term can then be left out of the graph)."""
  value = concrete(x)
  return value is not None and bool(np.all(value == 0))


def require_static(x, name: str) -> None:
  """Raises a `TypeError` naming `name` when `x` is traced (a kernel is specialised on it)."""
  if concrete(x) is None:
    raise TypeError(f"`{name}` must be a concrete number (it is static in the kernels).")


def check_real(x, name: str, *, lo=None, hi=None, lo_open=False, hi_open=False,
               allow_inf=False, allow_array=True):
  """Checks a concrete real hyperparameter against its domain; tracers pass through.

  Traced values cannot be known at trace time; :func:`jaxdiv.checks.checked` verifies them
  under `checkify` instead.
  """
  if isinstance(x, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be a real number; got the boolean {x!r}.")
  value = concrete(x)
  if value is None:
    return x
  if value.dtype.kind not in "fiu":
    raise TypeError(f"`{name}` must be a real number; got {x!r} of dtype {value.dtype}.")
  if not allow_array and value.ndim:
    raise ValueError(f"`{name}` must be a scalar; got shape {value.shape}.")
  bad = np.isnan(value)
  if not allow_inf:
    bad |= np.isinf(value)
  if lo is not None:
    bad |= (value <= lo) if lo_open else (value < lo)
  if hi is not None:
    bad |= (value >= hi) if hi_open else (value > hi)
  if np.any(bad):
    lo_b = "(" if lo_open or (lo is None and not allow_inf) else "["
    hi_b = ")" if hi_open or (hi is None and not allow_inf) else "]"
    domain = f"{lo_b}{'-inf' if lo is None else lo}, {'inf' if hi is None else hi}{hi_b}"
    raise ValueError(f"`{name}` must lie in {domain}; got {x!r}.")
  return x


def check_base(base):
  """`base` is None (nats) or a positive number other than 1."""
  if base is None:
    return None
  check_real(base, "base", lo=0, lo_open=True, allow_inf=False)
  value = concrete(base)
  if value is not None and np.any(value == 1):
    raise ValueError("`base` must be positive and different from 1; got 1.")
  return base


def check_callable(f, name: str):
  if not callable(f):
    raise TypeError(f"`{name}` must be a callable; got {type(f).__name__}.")
  return f


def check_bool(x, name: str):
  if not isinstance(x, (bool, np.bool_)):
    raise TypeError(f"`{name}` must be a Python bool; got {x!r}.")
  return bool(x)


def is_number(x) -> bool:
  return isinstance(x, numbers.Number)

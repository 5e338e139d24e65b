"""Logit soft-capping and temperature as one elementwise map of the raw logits, shared by the
kernels that accept `softcap=` (Gemma 2: Team Gemma, 2024).

.. math::
  z = \\frac{c \\tanh(x / c)}{T}, \\qquad \\frac{dz}{dx} = \\frac{1 - \\tanh^2(x / c)}{T}

Without a cap, z = x / T. The derivative is recomputed from `x` in the backward passes, never
stored.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv import _numerics
from jaxdiv import _validation


def check(softcap) -> float | None:
  """None, or a concrete float c > 0 (static in the kernels); a clear error otherwise."""
  if softcap is None:
    return None
  if isinstance(softcap, jax.core.Tracer):
    raise TypeError("`softcap` must be a concrete number or None (it is static in the kernels).")
  _validation.check_real(softcap, "softcap", lo=0, lo_open=True, allow_array=False)
  return float(softcap)


def apply(x: jax.Array, softcap: float | None, inv_t: float = 1.0) -> jax.Array:
  """c tanh(x / c) / T (x / T without a cap); -inf stays -inf, +inf becomes c / T."""
  if softcap is None:
    return x if inv_t == 1.0 else x * inv_t
  return _numerics.softcap(x, softcap, inv_t)


def derivative(x: jax.Array, softcap: float | None, inv_t: float = 1.0):
  """dz/dx of `apply` at `x`: (1 - tanh^2(x / c)) / T, or the scalar 1 / T without a cap; 0 at a
  NaN (its row is lost, d logits 0 there: 0 * NaN otherwise)."""
  if softcap is None:
    return inv_t
  t = jnp.tanh(jnp.where(jnp.isnan(x), jnp.inf, x) * (1.0 / softcap))
  return inv_t * (1.0 - t * t)

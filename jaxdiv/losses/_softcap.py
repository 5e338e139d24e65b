"""Logit soft-capping for the losses over given logits: c tanh(x / c) (Gemma 2)."""

from __future__ import annotations

import jax

from jaxdiv import _numerics
from jaxdiv import _validation


def cap(logits, softcap):
  """`logits` capped to c tanh(x / c) for a concrete c > 0 (-inf stays -inf); unchanged for None.

  Elementwise, so gradients through it are autodiff's (1 - tanh^2(x / c)), exact.
  """
  if softcap is None:
    return logits
  if isinstance(softcap, jax.core.Tracer):
    raise TypeError("`softcap` must be a concrete number or None.")
  _validation.check_real(softcap, "softcap", lo=0, lo_open=True, allow_array=False)
  x = _validation.as_float_array(logits, "logits")
  return _numerics.softcap(x, float(softcap)).astype(x.dtype)

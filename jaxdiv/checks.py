"""Data-dependent validation through `jax.experimental.checkify`.

Shapes, dtypes and concrete hyperparameters are checked at trace time by every function. What
can only be known from the data (negative probabilities, rows that do not sum to 1, NaN logits, a
traced `alpha` out of its domain) is checked here, on request, without slowing the unchecked
path::

    from jax.experimental import checkify
    checked_kl = checkify.checkify(jaxdiv.checks.checked(jaxdiv.kl_divergence))
    err, value = jax.jit(checked_kl)(p, q)
    err.throw()   # ValueError naming the argument and the failed condition
"""

from __future__ import annotations

import functools
import inspect

import jax.numpy as jnp
from jax.experimental import checkify

from jaxdiv import _validation

__all__ = ["check_probabilities", "check_logits", "check_parameter", "checked"]


def check_probabilities(p, *, name: str = "p", axis: int | None = -1, where=None,
                        atol: float | None = None) -> None:
  """Checks (under `checkify`) that `p` is in [0, 1] and, on `axis`, sums to 1 within `atol`.

  Args:
    p: probabilities.
    name: the argument's name used in the error message.
    axis: the distribution axis; ``None`` checks only the range (Bernoulli parameters).
    where: mask of the entries that belong to the support.
    atol: tolerance on the row sums; default ``sqrt(n) * 16 * eps`` of the dtype (at least
      1e-6 for float32).
  """
  p = jnp.asarray(p)
  mask = jnp.ones(p.shape, bool) if where is None else jnp.broadcast_to(where, p.shape)
  checkify.check(jnp.all(jnp.where(mask, ~jnp.isnan(p), True)), f"`{name}` contains NaN.")
  checkify.check(jnp.all(jnp.where(mask, p >= 0, True)),
                 f"`{name}` has negative probabilities (min {{m}}); if these are logits, pass"
                 " `from_logits=True`.",
                 m=jnp.min(jnp.where(mask, p, jnp.inf)))
  if axis is None:
    checkify.check(jnp.all(jnp.where(mask, p <= 1, True)),
                   f"`{name}` has probabilities above 1 (max {{m}}); if these are logits,"
                   " pass `from_logits=True`.",
                   m=jnp.max(jnp.where(mask, p, -jnp.inf)))
    return
  n = p.shape[axis]
  if atol is None:
    eps = float(jnp.finfo(jnp.promote_types(p.dtype, jnp.float32)).eps)
    atol = max(16 * eps * n**0.5, 1e-6 if eps > 1e-10 else 1e-12)
    if p.dtype in (jnp.bfloat16, jnp.float16):
      atol = max(atol, 2e-2)
  total = jnp.sum(jnp.where(mask, p, 0).astype(jnp.promote_types(p.dtype, jnp.float32)),
                  axis=axis)
  err = jnp.max(jnp.abs(total - 1)) if total.size else jnp.zeros(())
  checkify.check(err <= atol, f"`{name}` rows do not sum to 1 along axis {axis}: largest"
                 f" deviation {{e}} exceeds atol={atol:g}.", e=err)


def check_logits(x, *, name: str = "logits", where=None) -> None:
  """Checks (under `checkify`) that logits are not NaN and not +inf (-inf marks no support)."""
  x = jnp.asarray(x)
  mask = jnp.ones(x.shape, bool) if where is None else jnp.broadcast_to(where, x.shape)
  checkify.check(jnp.all(jnp.where(mask, ~jnp.isnan(x), True)), f"`{name}` contains NaN.")
  checkify.check(jnp.all(jnp.where(mask, x != jnp.inf, True)), f"`{name}` contains +inf.")


def _domain(lo, hi) -> str:
  """``[0, inf]``, ``[0, 1]``: the closed interval as a reader writes it (not ``[0.0, None]``)."""
  fmt = lambda v, inf: inf if v is None else f"{v:g}"
  return f"[{fmt(lo, '-inf')}, {fmt(hi, 'inf')}]"


def check_parameter(x, name: str, *, lo=None, hi=None) -> None:
  """Checks (under `checkify`) a possibly traced hyperparameter against ``[lo, hi]``."""
  x = jnp.asarray(x)
  ok = ~jnp.isnan(x)
  if lo is not None:
    ok &= x >= lo
  if hi is not None:
    ok &= x <= hi
  checkify.check(jnp.all(ok), f"`{name}` must lie in {_domain(lo, hi)}; got {{v}}.",
                 v=jnp.min(jnp.where(ok, jnp.inf, x)) if x.ndim else x)


_PARAM_DOMAINS = {"alpha": (0.0, None), "beta": (0.0, 1.0)}
_REAL_ALPHA = {"alpha_divergence"}


def checked(fn, *, atol: float | None = None):
  """Wraps a jaxdiv divergence so that its inputs are validated under `checkify`.

  The wrapper checks each distribution argument (`p`, `q`) as probabilities or logits according
  to ``from_logits``, and the ``alpha``/``beta`` hyperparameters against their domains, then calls
  ``fn``. Use it inside ``checkify.checkify``; outside, the checks are an error.
  """
  sig = inspect.signature(fn)
  if not any(n in sig.parameters for n in ("p", "q")):
    raise TypeError(f"`fn` must be a jaxdiv divergence taking `p` (and `q`); got {fn!r}.")

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    binary = fn.__name__.startswith("binary_")
    axis = None if binary else a.get("axis", -1)
    names = [n for n in ("p", "q") if n in a]
    xs = {n: _validation.as_float_array(a[n], n) for n in names}
    where = a.get("where")
    shapes = [x.shape for x in xs.values()] + ([] if where is None else [jnp.shape(where)])
    try:
      shape = jnp.broadcast_shapes(*shapes)
    except ValueError:
      shape = None  # `fn` itself raises the clear error below
    for name in names:
      x, w = xs[name], where
      if shape is not None:
        x = jnp.broadcast_to(x, shape)
        w = None if where is None else jnp.broadcast_to(where, shape)
      if a.get("from_logits", False):
        check_logits(x, name=name, where=w)
      else:
        check_probabilities(x, name=name, axis=axis, where=w, atol=atol)
    for name, (lo, hi) in _PARAM_DOMAINS.items():
      if name in a and not (name == "alpha" and fn.__name__ in _REAL_ALPHA):
        check_parameter(a[name], name, lo=lo, hi=hi)
    return fn(*bound.args, **bound.kwargs)

  return wrapper

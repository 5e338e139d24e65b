"""Data-dependent validation through `jax.experimental.checkify`.

Shapes, dtypes and concrete hyperparameters are checked at trace time by every function. What
can only be known from the data (negative probabilities, rows that do not sum to 1, NaN logits, a
traced `alpha` out of its domain) is checked here, on request, without slowing the unchecked
path::

    from jax.experimental import checkify
    checked_kl = checkify.checkify(jaxdiv.checks.checked(jaxdiv.kl_divergence))
    err, value = jax.jit(checked_kl)(p, q)
    err.throw()   # ValueError naming the argument and the failed condition

`checked` is the one entry point for every jaxdiv function: the categorical divergences' rule
(`p`, `q`, `alpha`, `beta`) is the default, and the packages above register theirs (parametric
scales, rates and covariances; the losses' and kernels' logits and targets) with `register`.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable

import jax.numpy as jnp
from jax.experimental import checkify

from jaxdiv import _validation

__all__ = ["check_probabilities", "check_logits", "check_parameter", "check_positive",
           "check_positive_definite", "check_distributions", "check_log_space", "checked",
           "register"]


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


def check_positive(x, name: str, *, allow_zero: bool = False) -> None:
  """Checks (under `checkify`) that every entry of `x` is > 0 (>= 0 with `allow_zero`)."""
  x = jnp.asarray(x)
  ok = (x >= 0) if allow_zero else (x > 0)
  rel = ">= 0" if allow_zero else "> 0"
  checkify.check(jnp.all(ok), f"`{name}` must be {rel} (and not NaN); smallest entry {{m}}.",
                 m=jnp.min(jnp.where(ok, jnp.inf, x)) if x.ndim else x)


def check_positive_definite(x, name: str, *, covariance: str = "full") -> None:
  """Checks (under `checkify`) a covariance in the ``mvn_*`` parameterisations."""
  x = jnp.asarray(x)
  if covariance == "diag":
    check_positive(x, name)
    return
  if covariance == "cholesky":
    dg = jnp.diagonal(x, axis1=-2, axis2=-1)
    checkify.check(jnp.all(jnp.isfinite(dg) & (dg != 0)),
                   f"`{name}` (a Cholesky factor) has a zero or non-finite diagonal entry.")
    return
  acc = jnp.promote_types(x.dtype, jnp.float32)
  chol = jnp.linalg.cholesky(x.astype(acc))
  checkify.check(jnp.all(jnp.isfinite(chol)),
                 f"`{name}` is not symmetric positive definite (its Cholesky factorisation"
                 " failed).")


# A rule checks the bound arguments of one call: ``rule(fn, arguments, atol=...)``. Each package
# registers the rule for the functions it defines (`register`), when it is imported; the
# categorical divergences (`p`, `q`) need none, theirs is the default.
Rule = Callable[..., None]
_RULES: dict[str, Rule] = {}


def register(package: str, rule: Rule) -> None:
  """Makes :func:`checked` check the functions defined under ``package`` with ``rule``.

  Args:
    package: a module or package name (``"jaxdiv.parametric"``); the rule covers every function
      whose ``__module__`` is that module or lies inside it, unless a package inside it has a
      rule of its own.
    rule: ``rule(fn, arguments, *, atol)``, called with ``fn`` and its bound arguments (defaults
      applied) inside the checked function; it calls the ``check_*`` helpers of this module.
  """
  _RULES[package] = rule


def _rule_for(fn) -> Rule | None:
  """The rule of the innermost registered package that defines `fn` (not the first one
  registered: ``"jaxdiv.x.y"`` wins over ``"jaxdiv.x"`` in either order)."""
  module = getattr(fn, "__module__", None) or ""
  covering = [p for p in _RULES if module == p or module.startswith(p + ".")]
  return _RULES[max(covering, key=len)] if covering else None


_PARAM_DOMAINS = {"alpha": (0.0, None), "beta": (0.0, 1.0)}
_REAL_ALPHA = {"alpha_divergence"}


def check_distributions(fn, a, *, atol: float | None = None) -> None:
  """The rule of the categorical divergences: `p`, `q` (and `alpha`, `beta`) of one call.

  Each distribution argument is checked as probabilities or logits according to
  ``from_logits``, against the mask ``where`` and on ``axis`` (binary functions: the range
  only); ``alpha`` and ``beta`` against their domains.
  """
  binary = fn.__name__.startswith("binary_")
  axis = None if binary else a.get("axis", -1)
  names = [n for n in ("p", "q") if n in a]
  xs = {n: _validation.as_float_array(a[n], n) for n in names}
  where = a.get("where")
  shapes = [x.shape for x in xs.values()] + ([] if where is None else [jnp.shape(where)])
  try:
    shape = jnp.broadcast_shapes(*shapes)
  except ValueError:
    shape = None  # `fn` itself raises the clear error
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


# Arguments that hold logits or log-probabilities wherever they appear (losses, kernels).
LOG_SPACE = ("logits", "student_logits", "teacher_logits", "teacher_log_probs",
             "log_predictions", "log_targets", "log_probs", "ref_log_probs")


def mask_for(where, shape):
  """`where` broadcast to `shape`: as NumPy broadcasts, or per row (`where` of `shape[:-1]`, a
  token mask of [..., vocab] logits); None without `where` or when it fits neither."""
  if where is None:
    return None
  where = jnp.asarray(where)
  if where.ndim and where.shape == tuple(shape[:-1]):
    where = where[..., None]
  try:
    if jnp.broadcast_shapes(where.shape, shape) == tuple(shape):
      return jnp.broadcast_to(where, shape)
  except ValueError:
    pass
  return None


def check_log_space(fn, a, *, atol: float | None = None) -> None:
  """The rule of functions of logits (`jaxdiv.kernels`): every argument named in `LOG_SPACE`
  is checked with :func:`check_logits` (not NaN, not ``+inf``) outside the mask ``where``."""
  del fn, atol
  for name in LOG_SPACE:
    if a.get(name) is not None:
      x = jnp.asarray(a[name])
      check_logits(x, name=name, where=mask_for(a.get("where"), x.shape))


def checked(fn, *, atol: float | None = None):
  """Wraps a jaxdiv function so that its inputs are validated under `checkify`.

  The one checkify entry point for every jaxdiv function: a categorical divergence has its
  distribution arguments (`p`, `q`) checked as probabilities or logits according to
  ``from_logits``, and ``alpha``/``beta`` against their domains; the other packages
  (``jaxdiv.parametric``, ``jaxdiv.losses``, ``jaxdiv.kernels``) register the rule for their
  own functions
  (:func:`register`). Use it inside ``checkify.checkify``; outside, the checks are an error.

  Args:
    fn: a jaxdiv function (or any function taking `p` and/or `q`).
    atol: tolerance on the row sums of probabilities (see :func:`check_probabilities`).

  Returns:
    ``fn`` with the same signature, checking its arguments before it runs.
  """
  sig = inspect.signature(fn)
  rule = _rule_for(fn)
  if rule is None:
    if not any(n in sig.parameters for n in ("p", "q")):
      raise TypeError(f"`fn` must be a jaxdiv function (or take `p` and `q`); got {fn!r}.")
    rule = check_distributions

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    rule(fn, bound.arguments, atol=atol)
    return fn(*bound.args, **bound.kwargs)

  return wrapper

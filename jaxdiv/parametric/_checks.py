"""Data-dependent parameter checks under ``jax.experimental.checkify``.

The unchecked functions return NaN for parameters outside their domain; wrapping one with
:func:`checked` turns that into a ``checkify`` error that names the argument::

    from jax.experimental import checkify
    import jaxdiv.parametric as jp
    kl = checkify.checkify(jp.checked(jp.normal_kl_divergence))
    err, value = jax.jit(kl)(0.0, -1.0, 0.0, 1.0)
    err.throw()  # ValueError: `scale_p` must be > 0 ...
"""

from __future__ import annotations

import functools
import inspect

import jax.numpy as jnp
from jax.experimental import checkify

from jaxdiv import checks as _core_checks

__all__ = ["check_positive", "check_positive_definite", "checked"]


def check_positive(x, name: str, *, allow_zero: bool = False) -> None:
  """Checks (under ``checkify``) that every entry of ``x`` is > 0 (>= 0 with ``allow_zero``)."""
  x = jnp.asarray(x)
  ok = (x >= 0) if allow_zero else (x > 0)
  rel = ">= 0" if allow_zero else "> 0"
  checkify.check(jnp.all(ok), f"`{name}` must be {rel} (and not NaN); smallest entry {{m}}.",
                 m=jnp.min(jnp.where(ok, jnp.inf, x)) if x.ndim else x)


def check_positive_definite(x, name: str, *, covariance: str = "full") -> None:
  """Checks (under ``checkify``) a covariance in the ``mvn_*`` parameterisations."""
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


# Parameter-name stems and their domains; `_p`/`_q` suffixes are stripped.
_POSITIVE = {"scale", "rate", "concentration", "concentration0", "concentration1"}
_NONNEGATIVE_BY_FN = {"poisson_kl_divergence": {"rate"}, "poisson_entropy": {"rate"},
                      "von_mises_entropy": {"concentration"},
                      "von_mises_kl_divergence": {"concentration"},
                      "normal_wasserstein_distance": {"scale"}}


def checked(fn):
  """Wraps a ``jaxdiv.parametric`` function so that its parameters are checked under checkify.

  Scales, rates and concentrations must be positive (non-negative where the function allows
  0), probabilities in [0, 1], covariances positive definite, ``low < high``, and ``alpha``
  non-negative. Use inside ``checkify.checkify``.
  """
  sig = inspect.signature(fn)
  name = fn.__name__

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    bound = sig.bind(*args, **kwargs)
    bound.apply_defaults()
    a = bound.arguments
    for pname, value in a.items():
      stem = pname[:-2] if pname.endswith(("_p", "_q")) else pname
      if stem in ("cov",):
        check_positive_definite(value, pname, covariance=a.get("covariance", "full"))
      elif stem in _POSITIVE:
        check_positive(value, pname, allow_zero=stem in _NONNEGATIVE_BY_FN.get(name, ()))
      elif stem == "probs":
        if a.get("from_logits", False):
          _core_checks.check_logits(value, name=pname)
        else:
          axis = a.get("axis", -1) if name.startswith("categorical_") else None
          _core_checks.check_probabilities(value, name=pname, axis=axis)
      elif stem == "alpha":
        _core_checks.check_parameter(value, "alpha", lo=0.0)
    if "low" in a and "high" in a:
      checkify.check(jnp.all(jnp.asarray(a["high"]) > jnp.asarray(a["low"])),
                     "`high` must be > `low`.")
    for s in ("_p", "_q"):
      if f"low{s}" in a:
        checkify.check(jnp.all(jnp.asarray(a[f"high{s}"]) > jnp.asarray(a[f"low{s}"])),
                       f"`high{s}` must be > `low{s}`.")
    return fn(*bound.args, **bound.kwargs)

  return wrapper

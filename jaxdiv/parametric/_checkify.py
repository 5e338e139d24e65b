"""The checkify rule of the closed forms, registered with :func:`jaxdiv.checks.checked`.

The unchecked functions return NaN for parameters outside their domain; wrapping one with
:func:`jaxdiv.checks.checked` turns that into a ``checkify`` error that names the argument::

    from jax.experimental import checkify
    import jaxdiv.parametric as jp
    kl = checkify.checkify(jaxdiv.checks.checked(jp.normal_kl_divergence))
    err, value = jax.jit(kl)(0.0, -1.0, 0.0, 1.0)
    err.throw()  # ValueError: `scale_p` must be > 0 ...
"""

from __future__ import annotations

import jax.numpy as jnp
from jax.experimental import checkify

from jaxdiv import checks

# Parameter-name stems and their domains; `_p`/`_q` suffixes are stripped.
_POSITIVE = {"scale", "rate", "concentration", "concentration0", "concentration1"}
_NONNEGATIVE_BY_FN = {"poisson_kl_divergence": {"rate"}, "poisson_entropy": {"rate"},
                      "von_mises_entropy": {"concentration"},
                      "von_mises_kl_divergence": {"concentration"},
                      "normal_wasserstein_distance": {"scale"}}


def check_arguments(fn, a, *, atol: float | None = None) -> None:
  """Checks the parameters of one call of a ``jaxdiv.parametric`` function.

  Scales, rates and concentrations must be positive (non-negative where the function allows
  0), probabilities in [0, 1] (categorical: rows summing to 1 within ``atol``), covariances
  positive definite, ``low < high``, and ``alpha`` non-negative.
  """
  name = fn.__name__
  for pname, value in a.items():
    stem = pname[:-2] if pname.endswith(("_p", "_q")) else pname
    if stem in ("cov",):
      checks.check_positive_definite(value, pname, covariance=a.get("covariance", "full"))
    elif stem in _POSITIVE:
      checks.check_positive(value, pname, allow_zero=stem in _NONNEGATIVE_BY_FN.get(name, ()))
    elif stem == "probs":
      if a.get("from_logits", False):
        checks.check_logits(value, name=pname)
      else:
        axis = a.get("axis", -1) if name.startswith("categorical_") else None
        checks.check_probabilities(value, name=pname, axis=axis, atol=atol)
    elif stem == "alpha":
      checks.check_parameter(value, "alpha", lo=0.0)
  for s in ("", "_p", "_q"):
    if f"low{s}" in a and f"high{s}" in a:
      checkify.check(jnp.all(jnp.asarray(a[f"high{s}"]) > jnp.asarray(a[f"low{s}"])),
                     f"`high{s}` must be > `low{s}`.")

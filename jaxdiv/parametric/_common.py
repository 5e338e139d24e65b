"""Shared plumbing of the closed forms: parameter conversion, broadcasting, domains, units.

Policy (the same for every family):

* Parameters are floating arrays; Python numbers are accepted (``loc=0``), integer and boolean
  arrays raise ``TypeError`` like the core functions.
* Batch dimensions of all parameters broadcast with NumPy's rules; shapes that cannot raise a
  ``ValueError`` naming every argument and its shape, at trace time.
* Computation is in at least float32; the result has the promoted input dtype.
* A parameter outside its domain (a negative scale, a non-positive-definite covariance) gives
  ``NaN``, never a finite wrong number; :func:`jaxdiv.checks.checked` reports it through
  ``checkify``.
"""

from __future__ import annotations

import functools
import numbers

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxdiv import _numerics
from jaxdiv import _validation


def as_param(x, name: str) -> jax.Array:
  """Converts a parameter to a floating array; Python numbers become weakly-typed floats."""
  if isinstance(x, numbers.Real) and not isinstance(x, (bool, np.bool_)):
    return jnp.asarray(float(x))
  return _validation.as_float_array(x, name)


def prepare(params: dict, *, event: dict | None = None):
  """Converts and broadcasts parameters.

  Args:
    params: ``name -> value``, in signature order.
    event: ``name -> number of trailing event dimensions`` (1 for a vector, 2 for a matrix);
      those dimensions are excluded from broadcasting.

  Returns:
    ``(arrays, batch_shape, dtype, acc)``: the parameters in ``acc`` dtype, each broadcast to
    ``batch_shape + its event shape``.
  """
  event = event or {}
  arrays = {n: as_param(v, n) for n, v in params.items()}
  for n, a in arrays.items():
    if a.ndim < event.get(n, 0):
      raise ValueError(
          f"`{n}` needs at least {event[n]} dimension(s) (its event shape); got shape {a.shape}.")
  batch = {n: a.shape[:a.ndim - event.get(n, 0)] for n, a in arrays.items()}
  try:
    shape = np.broadcast_shapes(*batch.values())
  except ValueError:
    desc = ", ".join(f"`{n}` {a.shape}" for n, a in arrays.items())
    raise ValueError(f"parameters have batch shapes that cannot be broadcast together: {desc}."
                     ) from None
  dtype, acc = _validation.compute_dtype(*arrays.values())
  out = []
  for n, a in arrays.items():
    ev = a.shape[a.ndim - event.get(n, 0):]
    out.append(jnp.broadcast_to(a.astype(acc), tuple(shape) + ev))
  return out, tuple(shape), dtype, acc


def finish(out: jax.Array, dtype, base=None, valid=None) -> jax.Array:
  """Applies the domain mask (NaN outside), the unit conversion and the output dtype."""
  if valid is not None:
    out = jnp.where(valid, out, jnp.nan)
  if base is not None:
    out = out / jnp.log(jnp.asarray(base, out.dtype))
  return out.astype(dtype)


def check_alpha(alpha):
  """Rényi order: concrete values must lie in [0, inf); traced ones are left to checkify."""
  return _validation.check_real(alpha, "alpha", lo=0, allow_inf=False)


def log1p_over(t: jax.Array, x: jax.Array) -> jax.Array:
  """``log1p(t x) / t`` with its limit ``x`` at ``t = 0``; ``-inf / t`` sign kept elsewhere.

  Trap avoided: ``log(1 + t x) / t`` cancels catastrophically as ``t -> 0`` (the Rényi order
  near 1); ``log1p`` keeps full relative accuracy, and the ``t == 0`` branch is selected with a
  double ``where`` so its gradient is finite.
  """
  zero = t == 0
  ts = jnp.where(zero, 1.0, t)
  arg = ts * x
  ok = arg > -1
  val = _numerics.log1p(jnp.where(ok, arg, 0.0)) / ts
  # 1 + t x <= 0: the interpolated distribution is not normalisable, the divergence is +inf.
  val = jnp.where(ok, val, -jnp.inf * jnp.sign(ts))
  return jnp.where(zero, x, val)


def log_ratio(a: jax.Array, b: jax.Array) -> jax.Array:
  """``log(a / b)`` for positive ``a``, ``b``, with full relative accuracy when ``a ~ b``.

  Trap avoided: ``log a - log b`` subtracts two rounded logarithms, an absolute error of
  ``eps * |log a|`` on a result near 0 (float32 scales 2 and 2.0002 gave 4e-4 relative
  error); ``log1p((a - b) / b)`` has an exact difference there (Sterbenz).
  """
  near = jnp.abs(a - b) < 0.5 * b
  return jnp.where(near, _numerics.log1p(jnp.where(near, (a - b) / b, 0.0)),
                   jnp.log(a) - jnp.log(b))


expm1_minus_x = _numerics.expm1_minus_x  # the Monte Carlo k3 estimator's helper too


def log_partition_derivatives(log_partition_along, acc, order: int) -> list:
  """``[d^n/dt^n A(eta_t)`` at ``t = 1`` for ``n = 2..order]``, natural parameters linear in t.

  With ``eta_1 = eta_p`` and ``eta_0 = eta_q`` these are the cumulants of ``log p/q`` under p;
  nested forward-mode derivatives of ``t -> A(eta_t)``.
  """
  one = jnp.ones((), acc)
  fns = [log_partition_along]
  for _ in range(order):
    fns.append(lambda t, f=fns[-1]: jax.jvp(f, (t,), (one,))[1])
  return [fns[n](one) for n in range(2, order + 1)]


def exp_family_near_one(at_one, log_partition_along, acc, order: int = 4):
  """``D_alpha = KL + sum_{n=2}^{order} A_n s^(n-1) / n!`` with ``s = alpha - 1``, near 1.

  The exponential-family form divides a difference of log-partitions by ``alpha - 1``, which
  cancels catastrophically as ``alpha -> 1`` (float64 gave a 5% wrong d/dalpha at
  ``alpha = 1 + 1e-6``). Its Taylor series in ``s`` has the cumulants of the log-ratio as
  coefficients; truncated after ``s^(order - 1)``. ``near(s)`` returns the sum and its last
  term: :func:`alpha_select` takes the series only where that term is negligible (the
  cumulants grow with the gap between the two distributions, so a fixed radius is not enough:
  exponential rates 1 and 100 at ``alpha = 1.002`` were 3.5e-4 off with a radius of 3e-3).
  """
  def near(s):
    coeffs = log_partition_derivatives(log_partition_along, acc, order)
    out, fact, power, last = at_one(), 1.0, 1.0, None
    for n, c in enumerate(coeffs, start=2):
      fact *= n
      power = power * s
      last = c * (power / fact)
      out = out + last
    return out, last
  return near


def near_one_radius(acc) -> float:
  """Where the series of :func:`exp_family_near_one` replaces the divided difference."""
  return 3e-3 if jnp.dtype(acc) == jnp.float64 else 5e-2


def alpha_select(alpha, acc, at_one, general, taylor=None, near=None, radius=None):
  """Evaluates a Rényi-type divergence at ``alpha``, with its exact ``alpha = 1`` limit.

  ``general(alpha_safe)`` is only evaluated at ``alpha != 1`` (double ``where`` for traced
  orders, so the gradient stays finite); a concrete ``alpha == 1`` calls ``at_one()`` alone.
  ``at_one()`` does not depend on ``alpha``; for a traced order the derivatives at 1 come from
  ``taylor()``, the pair ``(dD/dalpha, d²D/dalpha²)`` at 1 (``Var_p[log p/q] / 2`` and
  ``Kappa_3[log p/q] / 3``, cumulants under p), added as ``s slope + s^2 curvature / 2`` with
  ``s = alpha - 1`` (0 in value; the same correction as the core ``renyi_divergence``); or from
  ``near(s)``, a series in ``s`` used for ``|s| < radius`` (default
  :func:`near_one_radius`).
  """
  radius = near_one_radius(acc) if radius is None else radius
  value = _validation.concrete(alpha)
  if value is not None and value.ndim == 0:
    a = float(value)
    if a == 1.0:
      return at_one()
    if near is None or abs(a - 1) >= radius:
      return general(jnp.asarray(alpha, acc))
  alpha = jnp.asarray(alpha, acc)
  if near is not None:
    close = jnp.abs(alpha - 1) < radius
    series, last = near(jnp.where(close, alpha - 1, 0.0))
    exact = general(jnp.where(alpha == 1, 0.5, alpha))
    # The series only where its last term is below eps^(2/3) of the sum (truncation error
    # negligible) and the divided difference is finite: an order whose mixture is not
    # normalisable is +inf, which no truncated series shows.
    tol = float(jnp.finfo(acc).eps) ** (2 / 3)
    use = close & (jnp.abs(last) <= tol * jnp.abs(series)) & jnp.isfinite(series)
    use = use & ((alpha == 1) | jnp.isfinite(exact))
    return jnp.where(use, series, exact)
  one = alpha == 1
  k = jnp.where(one, alpha, 1.0) - 1
  s, cv = taylor()
  s = jnp.where(jnp.isfinite(s), s, 0.0)  # an infinite limit has no derivative to add
  # Only the curvature's value matters (the second derivative in alpha); held constant, so that
  # an overflowed curvature (it grows as the cube of the variance ratio, the slope as the
  # square) neither reaches the slope nor a gradient in the parameters.
  cv = lax.stop_gradient(cv)
  s = s + 0.5 * k * jnp.where(jnp.isfinite(cv), cv, 0.0)
  at1 = at_one() + k * s
  return jnp.where(one, at1, general(jnp.where(one, 0.5, alpha)))


def log_mix_over_t(alpha: jax.Array, log_r: jax.Array):
  """``m = alpha + (1 - alpha) r`` and ``log(m) / (1 - alpha)`` for a ratio ``r = e^log_r``.

  ``m`` is the interpolated variance over ``var_q`` of the Gaussian Rényi forms. Trap avoided:
  ``1 + t (r - 1)`` (``t = 1 - alpha``) rounds to 0 at ``alpha = 0`` when ``r`` is tiny (the
  scales 1e-5 and 1e5), making a finite divergence +inf; for ``alpha <= 1`` both terms of
  ``alpha + t r`` are non-negative, so ``m`` is formed without cancellation, and ``log1p(t (r -
  1)) / t`` keeps the accuracy near ``alpha = 1``. ``m <= 0`` (only for ``alpha > 1``) means the
  interpolated density is not normalisable: the log-term is then ``+inf``.

  Returns:
    ``(m, ok, log(m) / t)`` with ``ok = m > 0``; the last is ``r - 1`` at ``t = 0``.
  """
  t = 1 - alpha
  r_minus_1 = jnp.expm1(log_r)
  m = jnp.where(t >= 0.5, alpha + t * jnp.exp(log_r), 1 + t * r_minus_1)
  ok = m > 0
  m_safe = jnp.where(ok, m, 1.0)
  near = jnp.abs(t) < 0.5
  val = jnp.where(near, log1p_over(jnp.where(near, t, 0.0), r_minus_1),
                  jnp.log(m_safe) / jnp.where(near, 1.0, t))
  return m, ok, jnp.where(ok, val, jnp.inf)


def gaussian_log_det_term(alpha, x):
  """``h = [log(alpha + t r) - t log r] / t``, ``t = 1 - alpha``, ``r = e^x``, per eigenvalue.

  The Gaussian ``D_alpha`` (Normal, MVN) holds ``[log |Σ_alpha| - t log |Σ_p| - alpha log |Σ_q|]
  / (2 t)``, which is ``Σ_i h_i / 2``. Trap avoided: dividing that difference by ``t`` cancels
  catastrophically near ``alpha = 1`` (float32 lost 1e-7 d / |t| absolutely, and d/dalpha with
  it), and near ``r = 1`` (the Normal's Hellinger distance was NaN at scales 1 and 1 + 1e-9).
  Since ``alpha + t = 1``, ``e^(-t x) (alpha + t r) = 1 + alpha φ(-t x) + t φ(alpha x)`` with
  ``φ(y) = e^y - 1 - y >= 0``, so ``h = log1p(t u) / t`` with ``u = alpha φ(-t x) / t +
  φ(alpha x)``: both terms of ``u`` are formed without cancellation (non-negative for
  ``alpha <= 1``), and ``u = φ(x) = r - 1 - log r`` (the KL term) at ``t = 0``. For small
  ``|t u|``, ``log1p(t u) / t = u - φ(log1p(t u)) / t`` keeps d/dalpha accurate as well
  (differentiating ``log1p(t u) / t`` itself cancels again). ``alpha + t r <= 0`` (only for
  ``alpha > 1``): the mixture is not normalisable, ``h = +inf`` with a finite gradient.

  Returns:
    ``(h, ok)``; ``h`` has only the value (not the derivatives in alpha) right at ``t = 0``,
    where :func:`alpha_select` adds the Taylor terms.
  """
  phi = expm1_minus_x
  t = 1 - alpha
  ts = jnp.where(t == 0, 1.0, t)
  u_of = lambda x: alpha * phi(-t * x) / ts + phi(alpha * x)
  ok = (t >= 0) | (t * u_of(jax.lax.stop_gradient(x)) > -1)
  u = u_of(jnp.where(ok, x, 0.0))
  z = t * u
  small = jnp.abs(z) < 0.5
  h_small = u - phi(_numerics.log1p(jnp.where(small, z, 0.0))) / ts
  h_large = _numerics.log1p(jnp.where(small, 1.0, z)) / ts
  return jnp.where(ok, jnp.where(small, h_small, h_large), jnp.inf), ok


def in_domain(*xs, allow_zero: bool = False):
  """(valid, xs): whether every one of `xs` is > 0 (>= 0 with `allow_zero`), and each of them
  with 1 where not: a safe value, so that no NaN reaches the gradient (`finish` gives NaN
  there)."""
  valid = functools.reduce(jnp.logical_and, ((x >= 0) if allow_zero else (x > 0) for x in xs))
  return valid, tuple(jnp.where(valid, x, 1.0) for x in xs)

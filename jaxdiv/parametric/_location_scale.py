"""Laplace, Gumbel, Log-normal, Uniform and von Mises: entropy and KL.

``scale`` is always the scale parameter of scipy (``scipy.stats.laplace(loc, scale)``,
``gumbel_r(loc, scale)``, ``lognorm(s=scale, scale=exp(loc))``); von Mises takes ``loc`` (mean
direction, radians) and ``concentration`` (``kappa``, scipy's ``vonmises(kappa, loc)``).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.special import gammaln
from jax.scipy.special import i0e
from jax.scipy.special import i1e
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv.parametric import _common
from jaxdiv.parametric import _normal

_EULER_GAMMA = 0.5772156649015329


def _ls_prepare(loc_p, scale_p, loc_q, scale_q):
  (lp, sp, lq, sq), _, dtype, _ = _common.prepare(
      {"loc_p": loc_p, "scale_p": scale_p, "loc_q": loc_q, "scale_q": scale_q})
  valid, (sp, sq) = _common.in_domain(sp, sq)
  return lp, sp, lq, sq, valid, dtype


def laplace_entropy(loc: ArrayLike, scale: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Entropy of Laplace(loc, scale): ``H = 1 + log(2 b)``.

  Args:
    loc: location (it does not enter; kept for a uniform signature).
    scale: ``b > 0``, broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.laplace_entropy(0.0, 0.5)), 4))
    1.0
  """
  (_, b), _, dtype, _ = _common.prepare({"loc": loc, "scale": scale})
  return _common.finish(1 + math.log(2) + jnp.log(jnp.where(b > 0, b, 1.0)), dtype, base, b > 0)


def laplace_kl_divergence(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Laplace(loc_p, scale_p) and Laplace(loc_q, scale_q).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{b_q}{b_p} + \frac{|\mu_p - \mu_q|}{b_q}
      + \frac{b_p}{b_q} e^{-|\mu_p - \mu_q| / b_p} - 1.

  Args:
    loc_p: location of p.
    scale_p: scale of p (> 0).
    loc_q: location of q.
    scale_q: scale of q (> 0). All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.laplace_kl_divergence(0.0, 1.0, 1.0, 1.0)), 4))
    0.3679

  References:
    Gil, Alajaji & Linder, Rényi divergence measures for commonly used univariate continuous
    distributions, 2013 (the alpha -> 1 limit).
  """
  lp, sp, lq, sq, valid, dtype = _ls_prepare(loc_p, scale_p, loc_q, scale_q)
  d = jnp.abs(lp - lq)
  lr = _common.log_ratio(sp, sq)
  # = (e^l - 1 - l) + e^l (e^{-u} - 1 + u), with l = log(b_p/b_q) and u = d/b_p (as
  # e^l u = d/b_q): two non-negative terms, each without cancellation near p = q.
  out = _common.expm1_minus_x(lr) + jnp.exp(lr) * _common.expm1_minus_x(-d / sp)
  return _common.finish(out, dtype, base, valid)


def gumbel_entropy(loc: ArrayLike, scale: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Entropy of the (maximum) Gumbel(loc, scale): ``H = log(beta) + gamma + 1``.

  ``gamma`` is the Euler–Mascheroni constant.

  Args:
    loc: location (it does not enter).
    scale: ``beta > 0``, broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.gumbel_entropy(0.0, 1.0)), 4))
    1.5772
  """
  (_, b), _, dtype, _ = _common.prepare({"loc": loc, "scale": scale})
  out = jnp.log(jnp.where(b > 0, b, 1.0)) + _EULER_GAMMA + 1
  return _common.finish(out, dtype, base, b > 0)


def gumbel_kl_divergence(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between (maximum) Gumbel distributions.

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{\beta_q}{\beta_p}
      + \gamma\left(\frac{\beta_p}{\beta_q} - 1\right) + \frac{\mu_p - \mu_q}{\beta_q}
      + e^{(\mu_q - \mu_p)/\beta_q}\, \Gamma\!\left(1 + \frac{\beta_p}{\beta_q}\right) - 1,

  from ``E[exp(-t Z)] = Γ(1 + t)`` for a standard Gumbel ``Z``; the last two terms are taken as
  one ``expm1`` of a log-space sum.

  Args:
    loc_p: location of p.
    scale_p: scale of p (> 0).
    loc_q: location of q.
    scale_q: scale of q (> 0). All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.gumbel_kl_divergence(0.0, 1.0, 1.0, 1.0)), 4))
    0.7183
  """
  lp, sp, lq, sq, valid, dtype = _ls_prepare(loc_p, scale_p, loc_q, scale_q)
  # With v = lgamma(1 + r) - z and expm1(v) = v + phi(v), phi(y) = e^y - 1 - y >= 0, the form
  # above is g(r) + phi(v), g(r) = lgamma(r) + gamma (r - 1) >= 0: no cancellation of its terms'
  # first order near p = q (float32 scales 1 and 1.0002 were 34x off).
  x = (sp - sq) / sq  # r - 1, an exact difference near r = 1
  g, lgamma_1p_r = _lgamma_plus_euler(x, sp / sq)
  z = (lp - lq) / sq
  out = g + _common.expm1_minus_x(lgamma_1p_r - z)
  return _common.finish(out, dtype, base, valid)


def _zeta(k: int, n: int = 64) -> float:
  """Riemann zeta at an integer k >= 2 (Euler-Maclaurin after n terms: error below 1e-18)."""
  head = math.fsum(m ** -k for m in range(1, n))
  tail = (n ** (1 - k) / (k - 1) + 0.5 * n ** -k + k * n ** (-k - 1) / 12
          - k * (k + 1) * (k + 2) * n ** (-k - 3) / 720
          + k * (k + 1) * (k + 2) * (k + 3) * (k + 4) * n ** (-k - 5) / 30240)
  return head + tail


# lgamma(1 + x) = -gamma x + sum_{k >= 2} zeta(k) (-x)^k / k for |x| < 1.
_LGAMMA_SERIES = [(-1) ** k * _zeta(k) / k for k in range(2, 52)]
# Inside it the series (0.5^51 / 51 < 2^-56; float32 stops at 22 terms), outside lgamma itself,
# whose own error then dominates (jax's float32 lgamma(0.71) is 4e-6 relative off).
_LGAMMA_SERIES_RADIUS = 0.5


def _lgamma_plus_euler(x: jax.Array, r: jax.Array):
  """``(lgamma(r) + gamma x, lgamma(1 + r))`` for ``r = 1 + x > 0`` (both given: ``1 + x``
  rounds a tiny ``r`` to 0), the first without the cancellation of its linear terms near
  ``x = 0`` (a power series there, `_LGAMMA_SERIES`)."""
  small = jnp.abs(x) < _LGAMMA_SERIES_RADIUS
  xs = jnp.where(small, x, 0.0)
  terms = 22 if jnp.dtype(x.dtype).itemsize <= 4 else len(_LGAMMA_SERIES)
  series = jnp.zeros_like(xs)
  for c in reversed(_LGAMMA_SERIES[:terms]):
    series = (series + c) * xs
  series = series * xs
  r = jnp.where(small, 2.0, r)
  g = jnp.where(small, series, gammaln(r) + _EULER_GAMMA * (r - 1))
  # lgamma(2 + x) = log(1 + x) + lgamma(1 + x)
  lgamma_2 = jnp.where(small, _numerics.log1p(xs) - _EULER_GAMMA * xs + series, gammaln(1 + r))
  return g, lgamma_2


def log_normal_entropy(
    loc: ArrayLike, scale: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""Entropy of LogNormal(loc, scale), where ``log X ~ N(loc, scale²)``.

  .. math::
    H = \mu + \tfrac12 \log(2 \pi e \sigma^2).

  Args:
    loc: mean of ``log X``.
    scale: standard deviation of ``log X`` (> 0), broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.log_normal_entropy(1.0, 1.0)), 4))
    2.4189
  """
  (loc, scale), _, dtype, _ = _common.prepare({"loc": loc, "scale": scale})
  out = loc + _normal._HALF_LOG_2PI_E + jnp.log(jnp.where(scale > 0, scale, 1.0))
  return _common.finish(out, dtype, base, scale > 0)


def log_normal_kl_divergence(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between log-normals: the Normal KL of the logs (KL is invariant under ``exp``).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{\sigma_q}{\sigma_p}
      + \frac{\sigma_p^2 + (\mu_p - \mu_q)^2}{2 \sigma_q^2} - \frac12.

  Args:
    loc_p: mean of ``log X`` under p.
    scale_p: standard deviation of ``log X`` under p (> 0).
    loc_q: mean of ``log X`` under q.
    scale_q: standard deviation of ``log X`` under q (> 0).
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.log_normal_kl_divergence(0.0, 1.0, 1.0, 2.0)), 4))
    0.4431
  """
  return _normal.normal_kl_divergence(loc_p, scale_p, loc_q, scale_q, base=base)


def uniform_entropy(low: ArrayLike, high: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Entropy of Uniform(low, high): ``H = log(high - low)``.

  Args:
    low: lower end.
    high: upper end (> ``low``), broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.uniform_entropy(0.0, 2.0, base=2)), 4))
    1.0
  """
  (lo, hi), _, dtype, _ = _common.prepare({"low": low, "high": high})
  w = hi - lo
  return _common.finish(jnp.log(jnp.where(w > 0, w, 1.0)), dtype, base, w > 0)


def uniform_kl_divergence(
    low_p: ArrayLike, high_p: ArrayLike, low_q: ArrayLike, high_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Uniform(low_p, high_p) and Uniform(low_q, high_q).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{h_q - l_q}{h_p - l_p}
      \text{ if } [l_p, h_p] \subseteq [l_q, h_q], \quad +\infty \text{ otherwise}.

  Args:
    low_p: lower end of p.
    high_p: upper end of p (> ``low_p``).
    low_q: lower end of q.
    high_q: upper end of q (> ``low_q``). All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.uniform_kl_divergence(0.0, 1.0, 0.0, 2.0)), 4))
    0.6931
  """
  (lp, hp, lq, hq), _, dtype, _ = _common.prepare(
      {"low_p": low_p, "high_p": high_p, "low_q": low_q, "high_q": high_q})
  wp, wq = hp - lp, hq - lq
  valid = (wp > 0) & (wq > 0)
  inside = (lp >= lq) & (hp <= hq)
  out = jnp.log(jnp.where(valid, wq, 1.0)) - jnp.log(jnp.where(valid, wp, 1.0))
  return _common.finish(jnp.where(inside, out, jnp.inf), dtype, base, valid)


def _log_i0(k):
  return jnp.log(i0e(k)) + k


def von_mises_entropy(
    loc: ArrayLike, concentration: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""Entropy of von Mises(loc, concentration) on the circle.

  .. math::
    H = \log(2 \pi I_0(\kappa)) - \kappa \frac{I_1(\kappa)}{I_0(\kappa)},

  with exponentially scaled Bessel functions (``i0e``, ``i1e``) so large ``kappa`` does not
  overflow.

  Args:
    loc: mean direction (it does not enter).
    concentration: ``kappa >= 0``, broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape (``log 2 pi`` at ``kappa = 0``).

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.von_mises_entropy(0.0, 0.0)), 4))
    1.8379
  """
  (_, k), _, dtype, _ = _common.prepare({"loc": loc, "concentration": concentration})
  valid = k >= 0
  k = jnp.where(valid, k, 1.0)
  i0, i1 = i0e(k), i1e(k)
  out = math.log(2 * math.pi) + jnp.log(i0) + k * (i0 - i1) / i0
  return _common.finish(out, dtype, base, valid)


def von_mises_kl_divergence(
    loc_p: ArrayLike, concentration_p: ArrayLike, loc_q: ArrayLike,
    concentration_q: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between von Mises distributions.

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{I_0(\kappa_q)}{I_0(\kappa_p)}
      + A(\kappa_p)\left(\kappa_p - \kappa_q \cos(\mu_p - \mu_q)\right),
      \qquad A(\kappa) = \frac{I_1(\kappa)}{I_0(\kappa)}.

  Args:
    loc_p: mean direction of p (radians).
    concentration_p: ``kappa_p >= 0``.
    loc_q: mean direction of q.
    concentration_q: ``kappa_q >= 0``. All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape. For ``kappa`` above about 1e4 use float64 (``1 - A`` is
    ``1/(2 kappa)`` and loses relative accuracy in float32).

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.von_mises_kl_divergence(0.0, 1.0, 0.0, 0.0)), 4))
    0.2105

  References:
    Mardia & Jupp, Directional Statistics, 2000.
  """
  (lp, kp, lq, kq), _, dtype, _ = _common.prepare(
      {"loc_p": loc_p, "concentration_p": concentration_p, "loc_q": loc_q,
       "concentration_q": concentration_q})
  valid, (kp, kq) = _common.in_domain(kp, kq, allow_zero=True)
  i0p, i1p = i0e(kp), i1e(kp)
  a = i1p / i0p
  # log I0(kq) - log I0(kp) + A kp - A kq cos, with the e^k scalings regrouped so that every
  # term stays O(1) for large kappa, and written as (kq - kp)(1 - A) + 2 kq A sin²(d/2): each
  # term is then exactly 0 at p = q, and none cancels against another near it.
  one_minus_a = (i0p - i1p) / i0p
  out = (jnp.log(i0e(kq)) - jnp.log(i0p) + (kq - kp) * one_minus_a
         + 2 * kq * a * jnp.sin(0.5 * (lp - lq)) ** 2)
  return _common.finish(out, dtype, base, valid)

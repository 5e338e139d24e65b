"""Univariate Normal N(loc, scale²): entropy, KL, Rényi, Bhattacharyya, Hellinger, Jeffreys, W2.

Every function takes the standard deviation ``scale`` (not the variance); the
``*_from_log_variance`` and :func:`normal_vae_kl` forms take ``log_variance = log scale²``,
the output of a VAE encoder. All work with the log-ratio of the scales, so scales from 1e-6 to
1e6 lose no accuracy, and ``r - 1 - log r`` is evaluated without cancellation.
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv.parametric import _common

_HALF_LOG_2PI_E = 0.5 * math.log(2 * math.pi * math.e)


def _kl_terms(loc_p, loc_q, log_ratio, inv_var_q):
  # KL = 1/2 [r - 1 - log r + (mu_p - mu_q)^2 / var_q] with log r = log(var_p / var_q).
  d = loc_p - loc_q
  return 0.5 * (_common.expm1_minus_x(log_ratio) + d * d * inv_var_q)


def normal_entropy(loc: ArrayLike, scale: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Differential entropy of N(loc, scale²).

  .. math::
    H = \tfrac12 \log(2 \pi e) + \log \sigma.

  Args:
    loc: mean (it does not enter; kept so every family takes its full parameter list).
    scale: standard deviation ``sigma > 0``, broadcastable with ``loc``.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape; NaN where ``scale <= 0``.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_entropy(0.0, 1.0)), 4))
    1.4189

  References:
    Cover & Thomas, Elements of Information Theory, 2nd ed., 2006, Table 17.1.
  """
  (_, scale), _, dtype, _ = _common.prepare({"loc": loc, "scale": scale})
  out = _HALF_LOG_2PI_E + jnp.log(jnp.where(scale > 0, scale, 1.0))
  return _common.finish(out, dtype, base, scale > 0)


def normal_kl_divergence(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between p = N(loc_p, scale_p²) and q = N(loc_q, scale_q²).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{\sigma_q}{\sigma_p}
      + \frac{\sigma_p^2 + (\mu_p - \mu_q)^2}{2 \sigma_q^2} - \frac12.

  Args:
    loc_p: mean of p.
    scale_p: standard deviation of p (> 0).
    loc_q: mean of q.
    scale_q: standard deviation of q (> 0). All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape; NaN where a scale is not positive.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_kl_divergence(0.0, 1.0, 1.0, 2.0)), 4))
    0.4431

  References:
    Kullback, Information Theory and Statistics, 1959.
  """
  (lp, sp, lq, sq), _, dtype, _ = _common.prepare(
      {"loc_p": loc_p, "scale_p": scale_p, "loc_q": loc_q, "scale_q": scale_q})
  valid, (sp, sq) = _common.in_domain(sp, sq)
  out = _kl_terms(lp, lq, 2 * _common.log_ratio(sp, sq), 1 / (sq * sq))
  return _common.finish(out, dtype, base, valid)


def normal_kl_divergence_from_log_variance(
    loc_p: ArrayLike, log_variance_p: ArrayLike, loc_q: ArrayLike, log_variance_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Normals given by mean and log-variance ``log sigma²``.

  .. math::
    \mathrm{KL}(p \,\|\, q) = \tfrac12 \left(e^{v_p - v_q} - 1 - (v_p - v_q)
      + (\mu_p - \mu_q)^2 e^{-v_q}\right), \qquad v = \log \sigma^2.

  Args:
    loc_p: mean of p.
    log_variance_p: ``log sigma_p²`` (any real).
    loc_q: mean of q.
    log_variance_q: ``log sigma_q²``. All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_kl_divergence_from_log_variance(0.0, 0.0, 1.0, 1.0)), 4))
    0.3679
  """
  (lp, vp, lq, vq), _, dtype, _ = _common.prepare(
      {"loc_p": loc_p, "log_variance_p": log_variance_p, "loc_q": loc_q,
       "log_variance_q": log_variance_q})
  return _common.finish(_kl_terms(lp, lq, vp - vq, jnp.exp(-vq)), dtype, base)


def normal_vae_kl(
    loc: ArrayLike, log_variance: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""The VAE prior term KL(N(loc, exp(log_variance)) ‖ N(0, 1)), elementwise.

  .. math::
    \mathrm{KL} = \tfrac12 \left(\mu^2 + e^{v} - 1 - v\right), \qquad v = \log \sigma^2.

  Sum the result over the latent dimensions for a diagonal Gaussian posterior.

  Args:
    loc: posterior mean, any shape.
    log_variance: posterior log-variance, broadcastable with ``loc``.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The per-dimension KL, the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_vae_kl(1.0, 0.0)), 4))
    0.5

  References:
    Kingma & Welling, Auto-Encoding Variational Bayes, 2014, Appendix B.
  """
  (loc, v), _, dtype, _ = _common.prepare({"loc": loc, "log_variance": log_variance})
  return _common.finish(0.5 * (loc * loc + _common.expm1_minus_x(v)), dtype, base)


def _renyi(lp, log_r, lq, sq, alpha):
  # var_alpha = alpha var_q + (1 - alpha) var_p = var_q m, m = alpha + (1 - alpha) r. The log
  # term [log m - (1 - alpha) log r] / (1 - alpha): where |log r| < 1 the cancellation-free
  # form; farther apart log_mix_over_t's, which has no cancellation there and no overflow of
  # e^(-t log r) (scales 1e-10 and 1e10, float32).
  m, ok, log_m_over_t = _common.log_mix_over_t(alpha, log_r)
  near = jnp.abs(log_r) < 1
  h, ok_h = _common.gaussian_log_det_term(alpha, jnp.where(near, log_r, 0.0))
  h = jnp.where(near, h, log_m_over_t - log_r)
  d = lp - lq
  quad = alpha * d * d / (sq * sq * jnp.where(ok, m, 1.0))
  return jnp.where(ok & (ok_h | ~near), 0.5 * (quad + h), jnp.inf)


def _renyi_taylor(lp, sp, log_r, lq, sq):
  # (dD/dalpha, d²D/dalpha²) at 1 = (Kappa_2 / 2, Kappa_3 / 3) of log p/q under p. With
  # x = mu_p + sigma_p z: log p/q = (r - 1) z²/2 + b z + const, b = sigma_p d / var_q, so
  # Kappa_2 = (r - 1)²/2 + b² and Kappa_3 = (r - 1)³ + 3 b² (r - 1).
  r_minus_1 = jnp.expm1(log_r)
  d = lp - lq
  b2 = sp * sp * d * d / (sq * sq * sq * sq)
  return (0.25 * r_minus_1 * r_minus_1 + 0.5 * b2,
          r_minus_1 * (r_minus_1 * r_minus_1 / 3 + b2))


def normal_renyi_divergence(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
    *, alpha: ArrayLike, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence of order ``alpha`` between two Normals, D_alpha(p‖q).

  .. math::
    D_\alpha(p \,\|\, q) = \frac{\alpha (\mu_p - \mu_q)^2}{2 \sigma_\alpha^2}
      - \frac{1}{2(\alpha - 1)} \log \frac{\sigma_\alpha^2}{\sigma_p^{2(1-\alpha)}
      \sigma_q^{2\alpha}}, \qquad \sigma_\alpha^2 = \alpha \sigma_q^2 + (1-\alpha)\sigma_p^2,

  ``+inf`` when ``sigma_alpha² <= 0`` (possible for ``alpha > 1``), the exact KL at
  ``alpha = 1`` and 0 at ``alpha = 0``. The log-term is evaluated as ``log1p(t x)/t`` with
  ``t = 1 - alpha``, accurate as ``alpha -> 1``.

  Args:
    loc_p: mean of p.
    scale_p: standard deviation of p (> 0).
    loc_q: mean of q.
    scale_q: standard deviation of q (> 0).
    alpha: order, ``>= 0`` (a concrete value is checked at trace time), broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_renyi_divergence(0.0, 1.0, 1.0, 1.0, alpha=2.0)), 4))
    1.0

  References:
    Gil, Alajaji & Linder, Rényi divergence measures for commonly used univariate continuous
    distributions, Information Sciences, 2013.
  """
  _common.check_alpha(alpha)
  (lp, sp, lq, sq, a), _, dtype, acc = _common.prepare(
      {"loc_p": loc_p, "scale_p": scale_p, "loc_q": loc_q, "scale_q": scale_q, "alpha": alpha})
  valid, (sp, sq) = _common.in_domain(sp, sq)
  log_r = 2 * _common.log_ratio(sp, sq)  # log(var_p / var_q), exact near equal scales
  kl = lambda: _kl_terms(lp, lq, log_r, 1 / (sq * sq))
  out = _common.alpha_select(alpha, acc, kl, lambda al: _renyi(lp, log_r, lq, sq, a * 0 + al),
                             lambda: _renyi_taylor(lp, sp, log_r, lq, sq))
  return _common.finish(out, dtype, base, valid)


def normal_bhattacharyya_distance(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""Bhattacharyya distance between two Normals.

  .. math::
    D_B = -\log \int \sqrt{p q} = \frac{(\mu_p - \mu_q)^2}{4(\sigma_p^2 + \sigma_q^2)}
      + \frac12 \log \frac{\sigma_p^2 + \sigma_q^2}{2 \sigma_p \sigma_q}
      = \tfrac12 D_{1/2}(p \,\|\, q).

  Args:
    loc_p: mean of p.
    scale_p: standard deviation of p (> 0).
    loc_q: mean of q.
    scale_q: standard deviation of q (> 0).
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_B, the broadcast shape (symmetric in p and q).

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_bhattacharyya_distance(0.0, 1.0, 2.0, 1.0)), 4))
    0.5

  References:
    Bhattacharyya, On a measure of divergence between two statistical populations, 1943.
  """
  return 0.5 * normal_renyi_divergence(loc_p, scale_p, loc_q, scale_q, alpha=0.5, base=base)


def normal_hellinger_distance(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
) -> jax.Array:
  r"""Hellinger distance between two Normals, in [0, 1].

  .. math::
    H(p, q) = \sqrt{1 - \int \sqrt{p q}} = \sqrt{1 - e^{-D_B(p, q)}}
      = \sqrt{1 - \sqrt{\frac{2 \sigma_p \sigma_q}{\sigma_p^2 + \sigma_q^2}}
        e^{-\frac{(\mu_p - \mu_q)^2}{4(\sigma_p^2 + \sigma_q^2)}}}.

  Same normalisation as :func:`jaxdiv.hellinger_distance`. The gradient at ``p == q`` is 0.

  Args:
    loc_p: mean of p.
    scale_p: standard deviation of p (> 0).
    loc_q: mean of q.
    scale_q: standard deviation of q (> 0).

  Returns:
    H(p, q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_hellinger_distance(0.0, 1.0, 2.0, 1.0)), 4))
    0.6273

  References:
    Hellinger, Neue Begründung der Theorie quadratischer Formen, 1909.
  """
  db = normal_bhattacharyya_distance(loc_p, scale_p, loc_q, scale_q)
  return _numerics.safe_sqrt(-jnp.expm1(-db.astype(jnp.promote_types(db.dtype, jnp.float32)))
                             ).astype(db.dtype)


def normal_jeffreys_divergence(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
    *, base: float | None = None,
) -> jax.Array:
  r"""Jeffreys divergence KL(p‖q) + KL(q‖p) between two Normals.

  .. math::
    J(p, q) = \frac{(\sigma_p^2 - \sigma_q^2)^2 + (\mu_p - \mu_q)^2 (\sigma_p^2 + \sigma_q^2)}
      {2 \sigma_p^2 \sigma_q^2}.

  Args:
    loc_p: mean of p.
    scale_p: standard deviation of p (> 0).
    loc_q: mean of q.
    scale_q: standard deviation of q (> 0).
    base: logarithm base of the result (``None``: nats).

  Returns:
    J(p, q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_jeffreys_divergence(0.0, 1.0, 1.0, 1.0)), 4))
    1.0

  References:
    Jeffreys, An invariant form for the prior probability in estimation problems, 1946.
  """
  return (normal_kl_divergence(loc_p, scale_p, loc_q, scale_q, base=base)
          + normal_kl_divergence(loc_q, scale_q, loc_p, scale_p, base=base))


def normal_wasserstein_distance(
    loc_p: ArrayLike, scale_p: ArrayLike, loc_q: ArrayLike, scale_q: ArrayLike,
) -> jax.Array:
  r"""2-Wasserstein distance between two Normals (Euclidean ground cost).

  .. math::
    W_2(p, q) = \sqrt{(\mu_p - \mu_q)^2 + (\sigma_p - \sigma_q)^2}.

  Square it for ``W_2²``. The gradient at ``p == q`` is 0 (a subgradient), not NaN.

  Args:
    loc_p: mean of p.
    scale_p: standard deviation of p (>= 0).
    loc_q: mean of q.
    scale_q: standard deviation of q (>= 0).

  Returns:
    W_2(p, q), the broadcast shape, in the units of ``loc``.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.normal_wasserstein_distance(0.0, 1.0, 3.0, 5.0)), 4))
    5.0

  References:
    Dowson & Landau, The Fréchet distance between multivariate normal distributions, 1982.
  """
  (lp, sp, lq, sq), _, dtype, _ = _common.prepare(
      {"loc_p": loc_p, "scale_p": scale_p, "loc_q": loc_q, "scale_q": scale_q})
  valid = (sp >= 0) & (sq >= 0)
  d, s = lp - lq, sp - sq
  return _common.finish(_numerics.safe_sqrt(d * d + s * s), dtype, None, valid)

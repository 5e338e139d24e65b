"""Float64 NumPy/SciPy references for the categorical divergences, written independently.

They follow scipy.special's edge semantics (entr, rel_entr, xlogy) and the textbook formulas
with the limits handled case by case; nothing here imports jaxdiv.
"""

from __future__ import annotations

import numpy as np
from scipy import special
from scipy.spatial import distance


def _f64(*xs):
  return [np.asarray(x, np.float64) for x in xs]


def entropy(p, axis=-1):
  (p,) = _f64(p)
  return special.entr(p).sum(axis)


def cross_entropy(p, q, axis=-1):
  p, q = _f64(p, q)
  return -special.xlogy(p, q).sum(axis)


def kl_divergence(p, q, axis=-1):
  p, q = _f64(p, q)
  return special.rel_entr(p, q).sum(axis)


def jeffreys_divergence(p, q, axis=-1):
  p, q = _f64(p, q)
  return (special.rel_entr(p, q) + special.rel_entr(q, p)).sum(axis)


def js_divergence(p, q, beta=0.5, axis=-1):
  p, q = _f64(p, q)
  m = beta * p + (1 - beta) * q
  left = beta * special.rel_entr(p, m).sum(axis) if beta > 0 else 0.0
  right = (1 - beta) * special.rel_entr(q, m).sum(axis) if beta < 1 else 0.0
  return left + right


def js_distance(p, q, axis=-1):
  p, q = _f64(p, q)
  # scipy normalises; the inputs given here are normalised already.
  return distance.jensenshannon(p, q, axis=axis)


def _log_power_sum(p, q, a, axis):
  """log sum_{p>0} p^a q^(1-a), case by case for zeros."""
  with np.errstate(divide="ignore", invalid="ignore"):
    logp, logq = np.log(p), np.log(q)
    terms = a * logp + (1 - a) * logq
  terms = np.where(p > 0, terms, -np.inf)
  if a > 1:
    terms = np.where((p > 0) & (q == 0), np.inf, terms)
  else:
    terms = np.where((p > 0) & (q == 0), -np.inf, terms)
  with np.errstate(invalid="ignore"):
    return special.logsumexp(terms, axis=axis)


def renyi_divergence(p, q, alpha, axis=-1):
  p, q = _f64(p, q)
  if alpha == 1:
    return kl_divergence(p, q, axis)
  if np.isinf(alpha):
    with np.errstate(divide="ignore", invalid="ignore"):
      r = np.where(p > 0, np.log(p) - np.log(q), -np.inf)
    return r.max(axis)
  return _log_power_sum(p, q, alpha, axis) / (alpha - 1)


def renyi_entropy(p, alpha, axis=-1):
  (p,) = _f64(p)
  if alpha == 1:
    return entropy(p, axis)
  if np.isinf(alpha):
    return -np.log(p.max(axis))
  if alpha == 0:
    return np.log((p > 0).sum(axis))
  with np.errstate(divide="ignore"):
    return special.logsumexp(np.where(p > 0, alpha * np.log(p), -np.inf), axis=axis) / (1 - alpha)


def tsallis_entropy(p, alpha, axis=-1):
  (p,) = _f64(p)
  if alpha == 1:
    return entropy(p, axis)
  if np.isinf(alpha):
    return np.zeros(p.shape[:-1])
  powers = np.where(p > 0, np.abs(p) ** alpha, 0.0)
  return (1 - powers.sum(axis)) / (alpha - 1)


def tsallis_divergence(p, q, alpha, axis=-1):
  p, q = _f64(p, q)
  if alpha == 1:
    return kl_divergence(p, q, axis)
  return np.expm1(_log_power_sum(p, q, alpha, axis)) / (alpha - 1)


def alpha_divergence(p, q, alpha, axis=-1):
  p, q = _f64(p, q)
  if alpha == 1:
    return kl_divergence(p, q, axis)
  if alpha == 0:
    return kl_divergence(q, p, axis)
  if alpha < 0:  # p^a with p = 0 is infinite; use the swapped form with 1 - a > 1
    return alpha_divergence(q, p, 1 - alpha, axis)
  return np.expm1(_log_power_sum(p, q, alpha, axis)) / (alpha * (alpha - 1))


def hellinger_distance(p, q, axis=-1):
  p, q = _f64(p, q)
  return np.sqrt(0.5 * ((np.sqrt(p) - np.sqrt(q)) ** 2).sum(axis))


def total_variation_distance(p, q, axis=-1):
  p, q = _f64(p, q)
  return 0.5 * np.abs(p - q).sum(axis)


def chi_squared_divergence(p, q, axis=-1):
  p, q = _f64(p, q)
  with np.errstate(divide="ignore", invalid="ignore"):
    terms = (p - q) ** 2 / q
  terms = np.where((p == 0) & (q == 0), 0.0, terms)
  return terms.sum(axis)


def bhattacharyya_distance(p, q, axis=-1):
  p, q = _f64(p, q)
  with np.errstate(divide="ignore"):
    return -np.log(np.sqrt(p * q).sum(axis))


def f_divergence(p, q, f, f_prime_inf, f_zero, axis=-1):
  """sum q f(p/q) with the perspective limits given explicitly."""
  p, q = _f64(p, q)
  with np.errstate(divide="ignore", invalid="ignore"):
    inner = q * f(np.where(q > 0, p / np.where(q > 0, q, 1), 1.0))
  with np.errstate(invalid="ignore"):
    terms = np.where(q > 0, np.where(p > 0, inner, q * f_zero),
                     np.where(p > 0, p * f_prime_inf, 0.0))
  return terms.sum(axis)


def binary_entropy(p):
  (p,) = _f64(p)
  # (1 - p) log(1 - p) with log1p: `1 - p` rounds to 1 at p = 1e-30 and loses the ~p term.
  return special.entr(p) - special.xlog1py(1 - p, -p)


def binary_cross_entropy(p, q):
  p, q = _f64(p, q)
  return -special.xlogy(p, q) - special.xlog1py(1 - p, -q)


def binary_kl_divergence(p, q):
  p, q = _f64(p, q)
  # (1 - p) log((1 - p) / (1 - q)) with log1p on both logs (1 - 1e-30 rounds to 1).
  return special.rel_entr(p, q) + special.xlog1py(1 - p, -p) - special.xlog1py(1 - p, -q)


def softmax64(z, axis=-1):
  (z,) = _f64(z)
  return special.softmax(z, axis=axis)


# Log-space references for finite logits so extreme that a float64 softmax underflows: the
# order-alpha family and chi-squared are dominated there by ratios of underflowed probabilities.
def log_softmax64(z, axis=-1):
  (z,) = _f64(z)
  return special.log_softmax(z, axis=axis)


def renyi_divergence_logits(zp, zq, alpha, axis=-1):
  lp, lq = log_softmax64(zp, axis), log_softmax64(zq, axis)
  if alpha == 1:
    return (np.exp(lp) * (lp - lq)).sum(axis)
  if np.isinf(alpha):
    return (lp - lq).max(axis)
  return special.logsumexp(alpha * lp + (1 - alpha) * lq, axis=axis) / (alpha - 1)


def renyi_entropy_logits(zp, alpha, axis=-1):
  lp = log_softmax64(zp, axis)
  if alpha == 1:
    return -(np.exp(lp) * lp).sum(axis)
  if np.isinf(alpha):
    return -lp.max(axis)
  return special.logsumexp(alpha * lp, axis=axis) / (1 - alpha)


def tsallis_divergence_logits(zp, zq, alpha, axis=-1):
  if alpha == 1:
    return renyi_divergence_logits(zp, zq, 1.0, axis)
  return np.expm1((alpha - 1) * renyi_divergence_logits(zp, zq, alpha, axis)) / (alpha - 1)


def alpha_divergence_logits(zp, zq, alpha, axis=-1):
  if alpha == 1:
    return renyi_divergence_logits(zp, zq, 1.0, axis)
  if alpha == 0:
    return renyi_divergence_logits(zq, zp, 1.0, axis)
  lp, lq = log_softmax64(zp, axis), log_softmax64(zq, axis)
  log_s = special.logsumexp(alpha * lp + (1 - alpha) * lq, axis=axis)
  return np.expm1(log_s) / (alpha * (alpha - 1))


def chi_squared_divergence_logits(zp, zq, axis=-1):
  lp, lq = log_softmax64(zp, axis), log_softmax64(zq, axis)
  return np.expm1(special.logsumexp(2 * lp - lq, axis=axis))


def tsallis_entropy_logits(zp, alpha, axis=-1):
  if alpha == 1:
    return renyi_entropy_logits(zp, 1.0, axis)
  lp = log_softmax64(zp, axis)
  return -np.expm1(special.logsumexp(alpha * lp, axis=axis)) / (alpha - 1)

"""Shannon family: entropy, cross-entropy, KL, Jeffreys and (generalised) Jensen–Shannon."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _checks
from jaxdiv import _numerics
from jaxdiv.discrete import _common


def entropy(
    p: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None, axis_name: str | None = None,
) -> jax.Array:
  r"""Shannon entropy of a categorical distribution.

  .. math::
    H(p) = -\sum_i p_i \log p_i, \qquad 0 \log 0 = 0.

  Args:
    p: probabilities (or logits with ``from_logits=True``), shape ``[..., n, ...]``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to ``p``; ``False`` entries are outside the support.
    from_logits: ``p`` holds unnormalised log-probabilities (normalised with a log-softmax).
    base: logarithm base of the result (``None``: nats, ``2``: bits).
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the result and gradient equal the unsharded ones.

  Returns:
    The entropy, shape of ``p`` without ``axis``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(jaxdiv.entropy(jnp.array([0.5, 0.5]), base=2))
    1.0

  References:
    Shannon, A Mathematical Theory of Communication, 1948.
  """
  _checks.check_base(base)
  prep = _common.prepare(p, names=("p",), axis=axis, where=where, from_logits=from_logits,
                         axis_name=axis_name)
  (d,) = prep.dists
  out = -prep.sum(_numerics.mul_log(d.prob, d.log_prob))
  return _common.finish(out, prep, base, nonnegative=True)


def cross_entropy(
    p: ArrayLike, q: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None, axis_name: str | None = None,
) -> jax.Array:
  r"""Cross-entropy of ``q`` relative to ``p``.

  .. math::
    H(p, q) = -\sum_i p_i \log q_i = H(p) + \mathrm{KL}(p \,\|\, q).

  It is ``+inf`` when ``q`` gives zero probability to an outcome that ``p`` gives mass to.

  Args:
    p: the reference (\"true\") distribution, shape ``[..., n, ...]``.
    q: the model distribution, broadcastable with ``p``; same size on ``axis``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs; ``False`` entries are dropped.
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base of the result (``None``: nats).
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the result and gradient equal the unsharded ones.

  Returns:
    The cross-entropy, the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.25, 0.75])
    >>> print(round(float(jaxdiv.cross_entropy(p, q)), 4))
    0.8370
  """
  _checks.check_base(base)
  prep = _common.prepare(p, q, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name)
  dp, dq = prep.dists
  out = -prep.sum(_numerics.mul_log(dp.prob, dq.log_prob))
  return _common.finish(out, prep, base, nonnegative=True)


def _kl(dp: _common.Dist, dq: _common.Dist, prep: _common.Prepared) -> jax.Array:
  # log p - log q is NaN where both are -inf; `mul_log` drops it there since p == 0.
  return prep.sum(_numerics.mul_log(dp.prob, dp.log_prob - dq.log_prob))


def kl_divergence(
    p: ArrayLike, q: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None, axis_name: str | None = None,
) -> jax.Array:
  r"""Kullback–Leibler divergence KL(p‖q) (relative entropy of ``p`` with respect to ``q``).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \sum_i p_i \log \frac{p_i}{q_i},

  with ``0 log(0/q) = 0`` and ``p log(p/0) = +inf`` (``scipy.special.rel_entr``).

  Args:
    p: the reference distribution, shape ``[..., n, ...]``.
    q: the approximating distribution, broadcastable with ``p``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs; ``False`` entries are dropped (with
      ``from_logits`` both softmaxes are taken over the remaining entries).
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base of the result (``None``: nats).
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the result and gradient equal the unsharded ones.

  Returns:
    KL(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.kl_divergence(p, q)), 4))
    0.5108

  References:
    Kullback & Leibler, On Information and Sufficiency, 1951.
  """
  _checks.check_base(base)
  prep = _common.prepare(p, q, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name)
  return _common.finish(_kl(*prep.dists, prep), prep, base, nonnegative=True)


def jeffreys_divergence(
    p: ArrayLike, q: ArrayLike, *, axis: int = -1, where: ArrayLike | None = None,
    from_logits: bool = False, base: float | None = None, axis_name: str | None = None,
) -> jax.Array:
  r"""Jeffreys divergence, the symmetrised KL.

  .. math::
    J(p, q) = \mathrm{KL}(p \,\|\, q) + \mathrm{KL}(q \,\|\, p)
            = \sum_i (p_i - q_i)(\log p_i - \log q_i).

  Each term is non-negative, so the sum is too, even in floating point.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base of the result (``None``: nats).
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the result and gradient equal the unsharded ones.

  Returns:
    J(p, q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> p = jnp.array([0.5, 0.5]); q = jnp.array([0.9, 0.1])
    >>> print(round(float(jaxdiv.jeffreys_divergence(p, q)), 4))
    0.8789

  References:
    Jeffreys, An Invariant Form for the Prior Probability in Estimation Problems, 1946.
  """
  _checks.check_base(base)
  prep = _common.prepare(p, q, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name)
  dp, dq = prep.dists
  out = prep.sum(_numerics.mul_log(dp.prob - dq.prob, dp.log_prob - dq.log_prob))
  return _common.finish(out, prep, base)


def _weighted_kl(b, kl):
  """`b * KL` with `0 * inf = 0` and d/db = KL where it is finite (as `mul_log`)."""
  return b * jnp.where((b != 0) | jnp.isfinite(kl), kl, 0)


def _js(prep: _common.Prepared, beta) -> jax.Array:
  dp, dq = prep.dists
  dtype = dp.prob.dtype
  static = _checks.static_scalar(beta)
  beta = _common.batch_param(beta, prep, dtype, "beta")
  if prep.from_logits:
    log_m = _numerics.log_add_exp(dp.log_prob, dq.log_prob, beta, 1 - beta)
  else:
    # Linear mixture so that the gradient reaches entries where p (or q) is 0.
    log_m = _numerics.safe_log(beta * dp.prob + (1 - beta) * dq.prob)
  dm = _common.Dist(None, log_m)
  b = jnp.squeeze(beta, prep.axis) if beta.ndim else beta
  # A weight that is statically 0 drops its KL altogether: KL(p||m) may be inf there, and
  # even a zero weight times an infinite derivative is NaN.
  out = 0.0
  if static != 0.0:
    out = out + _weighted_kl(b, _kl(dp, dm, prep))
  if static != 1.0:
    out = out + _weighted_kl(1 - b, _kl(dq, dm, prep))
  return out


def js_divergence(
    p: ArrayLike, q: ArrayLike, beta: ArrayLike = 0.5, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False, base: float | None = None,
    axis_name: str | None = None,
) -> jax.Array:
  r"""(Generalised) Jensen–Shannon divergence.

  .. math::
    \mathrm{JS}_\beta(p, q) = \beta\, \mathrm{KL}(p \,\|\, m) + (1-\beta)\, \mathrm{KL}(q \,\|\, m),
    \qquad m = \beta p + (1-\beta) q.

  ``beta = 0.5`` is the usual symmetric JS divergence, bounded by ``log 2``; in general it is
  bounded by the binary entropy of ``beta``.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    beta: mixture weight of ``p`` in ``[0, 1]``; a scalar or an array over the batch shape.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base of the result (``None``: nats; ``2`` bounds it by 1).
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the result and gradient equal the unsharded ones.

  Returns:
    JS_beta(p, q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(float(jaxdiv.js_divergence(jnp.array([1., 0.]), jnp.array([0., 1.]), base=2)))
    1.0

  References:
    Lin, Divergence Measures Based on the Shannon Entropy, 1991.
  """
  _checks.check_base(base)
  _checks.check_real(beta, "beta", lo=0, hi=1)
  prep = _common.prepare(p, q, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name)
  return _common.finish(_js(prep, beta), prep, base, nonnegative=True)


def js_distance(
    p: ArrayLike, q: ArrayLike, beta: ArrayLike = 0.5, *, axis: int = -1,
    where: ArrayLike | None = None, from_logits: bool = False, base: float | None = None,
    axis_name: str | None = None,
) -> jax.Array:
  r"""Jensen–Shannon distance, the square root of :func:`js_divergence` (a metric at beta=1/2).

  .. math::
    d_{\mathrm{JS}}(p, q) = \sqrt{\mathrm{JS}_\beta(p, q) / \log b}.

  Matches ``scipy.spatial.distance.jensenshannon`` (which also takes ``base``) on normalised
  inputs. The gradient at ``p == q`` is 0 (a subgradient) rather than NaN.

  Args:
    p: first distribution, shape ``[..., n, ...]``.
    q: second distribution, broadcastable with ``p``.
    beta: mixture weight of ``p`` in ``[0, 1]``.
    axis: the axis that holds the distribution.
    where: boolean mask broadcastable to the inputs.
    from_logits: ``p`` and ``q`` are logits.
    base: logarithm base applied before the square root (``None``: nats).
    axis_name: inside ``shard_map``, the mesh axis over which ``axis`` is split (a vocabulary
      sharded across devices); the result and gradient equal the unsharded ones.

  Returns:
    The JS distance, the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> print(float(jaxdiv.js_distance(jnp.array([1., 0.]), jnp.array([0., 1.]), base=2)))
    1.0

  References:
    Endres & Schindelin, A New Metric for Probability Distributions, 2003.
  """
  _checks.check_base(base)
  _checks.check_real(beta, "beta", lo=0, hi=1)
  prep = _common.prepare(p, q, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name)
  js = _numerics.to_base(_js(prep, beta), base)
  # Rounding can leave a tiny negative JS for p close to q; the distance is then 0.
  out = _numerics.safe_sqrt(jnp.where(js < 0, 0, js))
  return _common.finish(out, prep)

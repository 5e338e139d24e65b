"""Shannon family: entropy, cross-entropy, KL, Jeffreys and (generalised) Jensen–Shannon."""

from __future__ import annotations

import math
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv import _unit_axes
from jaxdiv import _validation
from jaxdiv.discrete import _common
from jaxdiv.discrete import _fast

# The same on probabilities, used as given (not renormalised): where every entry is positive
# and finite the plain logs are exact; a zero, negative, NaN or infinite entry makes a row
# non-finite and the batch takes the guarded path.


def _entropy_probs(ax, p):
  lp = jnp.log(p)
  return -jnp.sum(p * lp, axis=ax), lp


def _entropy_probs_coefs(ax, h, lp, p):
  return (-(jnp.log(p) + 1),)


def _ce_probs(ax, p, q):
  lq = jnp.log(q)
  return -jnp.sum(p * lq, axis=ax), lq


# The coefficients' quotients p / q through `_numerics.ratio`: differentiated again (a Hessian)
# autodiff formed p / q**2 with q**2, which underflows below q = 1e-19 in float32.
def _ce_probs_coefs(ax, ce, lq, p, q):
  return -jnp.log(q), -_numerics.ratio(p, q)


def _kl_probs(ax, p, q):
  d = jnp.log(p) - jnp.log(q)
  return jnp.sum(p * d, axis=ax), d


def _kl_probs_coefs(ax, kl, d, p, q):
  # From the inputs, not the forward's `d`: XLA then fuses them into the backward's multiply
  # instead of keeping a [N, V] residual.
  return jnp.log(p) - jnp.log(q) + 1, -_numerics.ratio(p, q)


def _jeffreys_probs(ax, p, q):
  d = jnp.log(p) - jnp.log(q)
  return jnp.sum((p - q) * d, axis=ax), d


def _jeffreys_probs_coefs(ax, j, d, p, q):
  return (d + _numerics.difference_quotient(p, q, p),
          -d - _numerics.difference_quotient(p, q, q))


# The mixture m = beta p + (1 - beta) q as w s, s = k_p p + k_q q with the weights divided by
# w, the power of two at or below the smaller one (so k_p, k_q >= 1, up to 2**25, unless beta
# or 1 - beta is below 2**-24 times the other): s is at least p and at least q. Formed
# directly, a positive entry whose beta p and (1 - beta) q both fall below float32's normal
# range (1.2e-38; p = 1.5e-38 at q = 0) gave m = 0 where XLA:CPU flushes subnormals, and its
# term p log(p / 0) made the row +inf (JS is at most log 2). With w a power of two, s rounds
# exactly as m / w, and log(p / m) is taken as log(p / w) - log s: exactly 0 at p = q, as log
# p - log m was (log p - log s - log w left an ulp of log p, which the JS distance's root made
# 1e-4 at p = q). The k are constants for a static beta (1 at beta = 1/2).
_MIXTURE_SPREAD = 2.0 ** -24


def _mixture(beta):
  """`(k_p, k_q, 1 / w)` with `beta p + (1 - beta) q = w (k_p p + k_q q)`, w a power of two:
  Python floats for a static beta; for an array, w behind `stop_gradient` (it cancels: the
  derivatives in beta are those of m)."""
  if isinstance(beta, float):
    w = max(min(beta, 1 - beta), _MIXTURE_SPREAD * max(beta, 1 - beta))
    w = math.ldexp(1.0, math.frexp(w)[1] - 1)
    return beta / w, (1 - beta) / w, 1 / w
  w = jnp.maximum(jnp.minimum(beta, 1 - beta), _MIXTURE_SPREAD * jnp.maximum(beta, 1 - beta))
  inv_w = lax.stop_gradient(jnp.ldexp(jnp.ones_like(w), 1 - jnp.frexp(w)[1]))
  return beta * inv_w, (1 - beta) * inv_w, inv_w


def _js_probs(beta):
  k_p, k_q, inv_w = _mixture(beta)

  def value(ax, p, q):
    ls = jnp.log(k_p * p + k_q * q)
    dp, dq = jnp.log(inv_w * p) - ls, jnp.log(inv_w * q) - ls
    # One sum of both KLs' terms: as two, XLA:CPU wrote log m out for both at rows of 32768
    # (a [N, V] temporary: 256 MiB at 2048x32768).
    return jnp.sum(beta * (p * dp) + (1 - beta) * (q * dq), axis=ax), (dp, dq)
  return value


def _js_probs_coefs(beta):
  # d/dp of beta p log(p/m) + (1 - beta) q log(q/m), m = beta p + (1 - beta) q: the terms
  # from d m / d p sum to -beta (m / m), which cancels the +beta of d(p log p)/dp.
  def coefs(ax, js, aux, p, q):
    dp, dq = aux
    return beta * dp, (1 - beta) * dq
  return coefs


# Unguarded row values and their derivatives, d value / d logits, for `_via_fast`. With p the
# softmax of a, d p_i / d a_j = p_j (delta_ij - p_i), so d sum_i p_i f_i / d a_j =
# p_j (f_j - <f>_p) (plus the sum's own dependence on a through f).


def _entropy_value(ax, a):
  la = _fast.log_softmax(a, ax)
  pa = _fast.softmax(a, ax)
  return -jnp.sum(pa * la, axis=ax), None


def _entropy_coefs(ax, h, aux, a):
  # From the logits again, not from the value's arrays: those would cross the fallback's
  # `cond` as operands, written out in full (value+grad at 32768x512: 2.1x the hand-written
  # line with them, 1.5x without).
  # `shift_and_sum`: below 4096 rows its sum reads the max behind a barrier, so that `e` is
  # recomputed in the gradient's loop instead of written out (value+grad at 1024x1024: 0.83x ->
  # 0.45x the hand-written line; 2048x32768: 0.69x -> 0.53x).
  y, total = _fast.shift_and_sum(a, ax)
  e = jnp.exp(y)
  return (-(e / total) * (y - jnp.log(total) + jnp.expand_dims(h, ax)),)


def _ce_value(ax, a, b):
  lb = _fast.log_softmax(b, ax)
  pa = _fast.softmax(a, ax)
  return -jnp.sum(pa * lb, axis=ax), (lb, pa)


def _ce_coefs(ax, ce, aux, a, b, parts=None):
  lb, pa = aux if parts is None else (parts[1][0], parts[0][1])
  return -pa * (lb + jnp.expand_dims(ce, ax)), jnp.exp(lb) - pa


def _kl_value(ax, a, b):
  la, lb = _fast.log_softmax(a, ax), _fast.log_softmax(b, ax)
  pa = _fast.softmax(a, ax)
  return jnp.sum(pa * (la - lb), axis=ax), (la, lb, pa)


def _kl_coefs(ax, kl, aux, a, b, parts=None):
  la, lb, pa = aux if parts is None else (parts[0][0], parts[1][0], parts[0][1])
  return pa * (la - lb - jnp.expand_dims(kl, ax)), jnp.exp(lb) - pa


def _jeffreys_value(ax, a, b):
  la, lb = _fast.log_softmax(a, ax), _fast.log_softmax(b, ax)
  pa, pb = _fast.softmax(a, ax), _fast.softmax(b, ax)
  d = la - lb
  # One sum for the value (as the hand-written line: fewer roundings); the two KLs only for
  # the derivative.
  kl_pq, kl_qp = jnp.sum(pa * d, axis=ax), -jnp.sum(pb * d, axis=ax)
  return jnp.sum((pa - pb) * d, axis=ax), (d, pa, pb, kl_pq, kl_qp)


def _jeffreys_coefs(ax, _, aux, a, b, parts=None):
  if parts is None:
    d, pa, pb, kl_pq, kl_qp = aux
  else:
    ((la, pa), (lb, pb)), (kl_pq, kl_qp) = parts, aux
    d = la - lb
  # J = KL(p||q) + KL(q||p); d KL(q||p) / d a = p - q.
  return (pa * (d - jnp.expand_dims(kl_pq, ax)) + pa - pb,
          pb * (-d - jnp.expand_dims(kl_qp, ax)) + pb - pa)


def _js_terms(beta, la, lb):
  pa, pb = jnp.exp(la), jnp.exp(lb)  # as the hand-written JS
  # log m in log space (not log(beta pa + (1 - beta) pb)): where both probabilities underflow
  # to 0 the linear mixture would give -inf and a NaN row. At beta = 1/2 this is
  # logaddexp(la, lb) - log 2 exactly.
  lm = _fast.logaddexp(la, lb + float(np.log1p(-beta) - np.log(beta))) + float(np.log(beta))
  return pa, pb, lm


def _js_value(beta):
  def value(ax, a, b):
    la, lb = _fast.log_softmax(a, ax), _fast.log_softmax(b, ax)
    pa, pb, lm = _js_terms(beta, la, lb)
    terms_p, terms_q = pa * (la - lm), pb * (lb - lm)
    # One reduction for the value: XLA:CPU runs two as two passes below 4096 rows, and
    # slower from there (bench/hand.py at 32768x512 and 4096x4096, against the hand-written
    # two sums: forward 0.26x with one sum, 0.76x-0.80x with two; value+grad 0.63x-0.65x and
    # 0.52x-0.53x; float32 error on 20000x512, max 0.97x and 1.07x the hand line's). The two
    # KLs only for the derivative: XLA drops them from a forward pass.
    js = jnp.sum(beta * terms_p + (1 - beta) * terms_q, axis=ax)
    kl_pm, kl_qm = jnp.sum(terms_p, axis=ax), jnp.sum(terms_q, axis=ax)
    return js, (la, lb, lm, pa, pb, kl_pm, kl_qm)
  return value


def _js_coefs(beta):
  # JS = H(m) - beta H(p) - (1 - beta) H(q), m = beta p + (1 - beta) q, which gives
  # d JS / d a = beta p (log p - log m - KL(p||m)), and the same for b with 1 - beta.
  def coefs(ax, _, aux, a, b, parts=None):
    if parts is None:
      la, lb, lm, pa, pb, kl_pm, kl_qm = aux
    else:
      ((la, _), (lb, _)), (kl_pm, kl_qm) = parts, aux
      pa, pb, lm = _js_terms(beta, la, lb)
    return (beta * pa * (la - lm - jnp.expand_dims(kl_pm, ax)),
            (1 - beta) * pb * (lb - lm - jnp.expand_dims(kl_qm, ax)))
  return coefs


# Above glibc's mmap threshold (32 MiB: an allocation that large gets fresh pages on every
# call, XLA's temporaries included), the per-entry arrays that the coefficients read from the
# value would cross the fallback's `cond` as its operands, written out: there the coefficients
# form them again inside it from each input's row statistics (`_fast.from_stats`; gradients
# agree with the arrays' to about an ulp). Value+grad at the issue's shapes: 0.71-0.92x its
# time with the arrays (KL at 2048x32768 1.08x -> 0.70x the hand-written line); below the
# threshold, where the arrays are reused from call to call, the arrays ran faster
# (bench/README.md, "Coefficients from row statistics").
_FRESH_BYTES = 32 << 20


class _RowStats(NamedTuple):
  """`value_for_coefs`'s aux above the threshold: each input's `(max, sum exp)` and the row sums
  the coefficients read."""
  stats: tuple
  sums: tuple


def _by_size(arrays: int, value, coefs, rows):
  """`(value, coefs, value_for_coefs)` for `_fast.run`: `value` and `coefs` (which reads its
  `arrays` per-entry arrays) below the threshold, above it a `value_for_coefs` that returns
  the inputs' row statistics and `rows(aux)` (the row sums the coefficients read), and
  `coefs(ax, out, aux, a, b, parts)` given each input's `(log_softmax, softmax)` formed from
  them. Under `jax.vmap` the size is the mapped batch's (`_fallback.mapped_size`); the
  coefficients, traced inside the fallback's `cond` where the mapping is not seen, follow the
  aux they are given."""
  def for_coefs(ax, a, b):
    out, aux = value(ax, a, b)
    # The per-entry arrays are the inputs' broadcast shape over every example `vmap` maps in
    # either input (with `in_axes=(None, 0)` the first alone counted one: value+grad of KL from
    # logits over 16 x [256, 2048] held 98 MiB of temporaries, now 64; `in_axes=0`, with no
    # cotangent to sum over the examples, 40).
    size = math.prod(jnp.broadcast_shapes(a.shape, b.shape)) * _fallback.mapped_size(a, b)
    if arrays * size * a.dtype.itemsize <= _FRESH_BYTES:
      return out, aux
    return out, _RowStats(tuple(_fast.max_and_sum_exp(x, ax) for x in (a, b)), rows(aux))

  def coefs_(ax, out, aux, a, b):
    if not isinstance(aux, _RowStats):
      return coefs(ax, out, aux, a, b)
    parts = tuple(_fast.from_stats(x, st) for x, st in zip((a, b), aux.stats))
    return coefs(ax, out, aux.sums, a, b, parts)
  return value, coefs_, for_coefs


@_unit_axes.dropped(dists=("p",))
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
  _validation.check_base(base)
  fast = _common.fast_inputs(p, names=("p",), axis=axis, where=where, from_logits=from_logits,
                             axis_name=axis_name)
  if fast is not None:
    return _fast.run(fast, (_entropy_value, _entropy_coefs),
                     (_entropy_probs, _entropy_probs_coefs), _entropy, base, nonnegative=True)
  return _common.guarded((p,), _entropy, names=("p",), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name, base=base,
                         nonnegative=True)


def _entropy(prep: _common.Prepared) -> jax.Array:
  (d,) = prep.dists
  if prep.from_logits:
    return -prep.sum(_numerics.mul_log(d.prob, d.log_prob))
  return -prep.sum(_numerics.mul_log_of(d.prob, d.prob))  # (p log p)'' = 1/p, no p**-2


@_unit_axes.dropped(dists=("p", "q"))
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
  _validation.check_base(base)
  fast = _common.fast_inputs(p, q, names=("p", "q"), axis=axis, where=where,
                             from_logits=from_logits, axis_name=axis_name)
  if fast is not None:
    return _fast.run(fast, _by_size(2, _ce_value, _ce_coefs, lambda aux: ()),
                     (_ce_probs, _ce_probs_coefs),
                     _cross_entropy, base, nonnegative=True)
  return _common.guarded((p, q), _cross_entropy, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name, base=base,
                         nonnegative=True)


def _cross_entropy(prep: _common.Prepared) -> jax.Array:
  dp, dq = prep.dists
  if prep.from_logits:
    return -prep.sum(_numerics.mul_log(dp.prob, dq.log_prob))
  return -prep.sum(_numerics.mul_log_of(dp.prob, dq.prob))  # d/dq = -p/q as one quotient


def _kl(dp: _common.Dist, dq: _common.Dist, prep: _common.Prepared) -> jax.Array:
  if not prep.from_logits:  # probabilities: d/dq = -p/q as one quotient (no q**-2 to underflow)
    return prep.sum(_numerics.mul_log_ratio(dp.prob, dq.prob))
  # log p - log q is NaN where both are -inf; `mul_log` drops it there since p == 0.
  return prep.sum(_numerics.mul_log(dp.prob, dp.log_prob - dq.log_prob))


@_unit_axes.dropped(dists=("p", "q"))
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
  _validation.check_base(base)
  fast = _common.fast_inputs(p, q, names=("p", "q"), axis=axis, where=where,
                             from_logits=from_logits, axis_name=axis_name)
  if fast is not None:
    return _fast.run(fast, _by_size(3, _kl_value, _kl_coefs, lambda aux: ()),
                     (_kl_probs, _kl_probs_coefs),
                     lambda prep: _kl(*prep.dists, prep), base,
                     nonnegative=True)
  return _common.guarded((p, q), lambda prep: _kl(*prep.dists, prep), names=("p", "q"),
                         axis=axis, where=where, from_logits=from_logits,
                         axis_name=axis_name, base=base, nonnegative=True)


@_unit_axes.dropped(dists=("p", "q"))
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
  _validation.check_base(base)
  fast = _common.fast_inputs(p, q, names=("p", "q"), axis=axis, where=where,
                             from_logits=from_logits, axis_name=axis_name)
  if fast is not None:
    return _fast.run(fast, _by_size(3, _jeffreys_value, _jeffreys_coefs, lambda aux: aux[3:]),
                     (_jeffreys_probs, _jeffreys_probs_coefs), _jeffreys, base,
                     nonnegative=False)
  return _common.guarded((p, q), _jeffreys, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name, base=base)


def _jeffreys(prep: _common.Prepared) -> jax.Array:
  dp, dq = prep.dists
  if not prep.from_logits:  # its derivatives' quotients whole (no q**-2 to underflow)
    return prep.sum(_numerics.mul_log_diff(dp.prob, dq.prob))
  return prep.sum(_numerics.mul_log(dp.prob - dq.prob, dp.log_prob - dq.log_prob))


def _weighted_kl(b, kl):
  """`b * KL` with `0 * inf = 0` and d/db = KL where it is finite (as `mul_log`)."""
  return b * jnp.where((b != 0) | jnp.isfinite(kl), kl, 0)


def _js(prep: _common.Prepared, beta) -> jax.Array:
  dp, dq = prep.dists
  dtype = dp.prob.dtype
  static = _validation.static_scalar(beta)
  beta = _common.batch_param(beta, prep, dtype, "beta")
  if prep.from_logits:
    dm = _common.Dist(None, _numerics.log_add_exp(dp.log_prob, dq.log_prob, beta, 1 - beta))

    def kl(d):
      return _kl(d, dm, prep)
  else:
    # Linear mixture so that the gradient reaches entries where p (or q) is 0; also as s = m /
    # w (see `_mixture`), which `mul_log_ratio_scaled` reads where m is near the bottom of the
    # normal range. (KL(p/w || s) of the scaled inputs alone took logs of p / w and q / w
    # beside the log p and log q that `finish` sums: the masked forward at 2048x4096 took
    # 30-32 ms, against 25.)
    k_p, k_q, inv_w = _mixture(beta if static is None else float(static))
    p, q = dp.prob, dq.prob
    m, s = beta * p + (1 - beta) * q, k_p * p + k_q * q

    def kl(d):
      return prep.sum(_numerics.mul_log_ratio_scaled(d.prob, m, s, inv_w))
  b = jnp.squeeze(beta, prep.axis) if beta.ndim else beta
  # A weight that is statically 0 drops its KL altogether: KL(p||m) may be inf there, and
  # even a zero weight times an infinite derivative is NaN.
  out = 0.0
  if static != 0.0:
    out = out + _weighted_kl(b, kl(dp))
  if static != 1.0:
    out = out + _weighted_kl(1 - b, kl(dq))
  return out


@_unit_axes.dropped(dists=("p", "q"), params=("beta",))
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
  _validation.check_base(base)
  _validation.check_real(beta, "beta", lo=0, hi=1)
  static = _validation.static_scalar(beta)
  fast = _common.fast_inputs(p, q, names=("p", "q"), axis=axis, where=where,
                             from_logits=from_logits, axis_name=axis_name)
  if fast is not None and static is not None and 0 < static < 1:
    return _fast.run(fast, _by_size(5, _js_value(static), _js_coefs(static), lambda aux: aux[5:]),
                     (_js_probs(static), _js_probs_coefs(static)), lambda prep: _js(prep, beta),
                     base, nonnegative=True)
  return _common.guarded((p, q), _js, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name, hyper=(beta,),
                         base=base, nonnegative=True)


@_unit_axes.dropped(dists=("p", "q"), params=("beta",))
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
  _validation.check_base(base)
  _validation.check_real(beta, "beta", lo=0, hi=1)

  def body(prep, b, bs):
    js = _numerics.to_base(_js(prep, b), bs)
    # Rounding can leave a tiny negative JS for p close to q; the distance is then 0.
    return _numerics.safe_sqrt(jnp.where(js < 0, 0, js))

  # The units go inside the root: `base` is the body's, not `guarded`'s.
  return _common.guarded((p, q), body, names=("p", "q"), axis=axis, where=where,
                         from_logits=from_logits, axis_name=axis_name, hyper=(beta, base))

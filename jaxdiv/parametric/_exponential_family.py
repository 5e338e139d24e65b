r"""Bernoulli, Categorical, Beta, Gamma, Exponential, Dirichlet and Poisson.

Rates, not scales: Gamma(concentration, rate) has mean ``concentration / rate`` (distrax and
``scipy.stats.gamma(a, scale=1/rate)``), Exponential(rate) mean ``1 / rate``, Poisson(rate) mean
``rate``. The Rényi divergences use the log-partition function ``A`` of each family:

.. math::
  D_\alpha(p \,\|\, q) = \frac{A(\alpha \eta_p + (1 - \alpha) \eta_q) - \alpha A(\eta_p)
    - (1 - \alpha) A(\eta_q)}{\alpha - 1},

``+inf`` when the interpolated natural parameter leaves the natural parameter space (possible
only for ``alpha > 1``), with the exact KL at ``alpha = 1``. Near ``alpha = 1`` (within 3e-3
in float64, 5e-2 in float32) the division by ``alpha - 1`` would cancel, so the Taylor series
in ``alpha - 1`` is used there, its coefficients the cumulants of ``log p/q`` under p (derivatives
of ``A``): values and ``alpha``-derivatives are accurate at and around 1. The difference of
log-partitions still rounds near ``p = q``: a value below 0 there is returned as 0.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax.scipy.special import digamma
from jax.scipy.special import gammaln
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv import discrete
from jaxdiv.parametric import _common

# ---------------------------------------------------------------------------------------------
# Bernoulli and Categorical: thin wrappers over the core functions, so the family is complete.


def bernoulli_entropy(
    probs: ArrayLike, *, from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Entropy of Bernoulli(probs), elementwise: :func:`jaxdiv.binary_entropy`.

  .. math::
    H = -p \log p - (1 - p) \log (1 - p).

  Args:
    probs: probability of 1 (or its logit with ``from_logits=True``), any shape.
    from_logits: ``probs`` holds logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the shape of ``probs``.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.bernoulli_entropy(0.5, base=2)), 4))
    1.0
  """
  return discrete.binary_entropy(_common.as_param(probs, "probs"), from_logits=from_logits,
                                 base=base)


def bernoulli_kl_divergence(
    probs_p: ArrayLike, probs_q: ArrayLike, *, from_logits: bool = False,
    base: float | None = None,
) -> jax.Array:
  r"""KL(Bernoulli(probs_p)‖Bernoulli(probs_q)), elementwise: :func:`jaxdiv.binary_kl_divergence`.

  .. math::
    \mathrm{KL}(p \,\|\, q) = p \log \frac{p}{q} + (1 - p) \log \frac{1 - p}{1 - q}.

  Args:
    probs_p: probability of 1 under p (or logit), any shape.
    probs_q: probability of 1 under q (or logit), broadcastable.
    from_logits: both are logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.bernoulli_kl_divergence(0.5, 0.9)), 4))
    0.5108
  """
  return discrete.binary_kl_divergence(_common.as_param(probs_p, "probs_p"),
                                       _common.as_param(probs_q, "probs_q"),
                                       from_logits=from_logits, base=base)


def bernoulli_renyi_divergence(
    probs_p: ArrayLike, probs_q: ArrayLike, *, alpha: ArrayLike, from_logits: bool = False,
    base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence D_alpha(p‖q) between Bernoullis, elementwise.

  .. math::
    D_\alpha(p \,\|\, q) = \frac{1}{\alpha - 1}
      \log\left(p^\alpha q^{1-\alpha} + (1-p)^\alpha (1-q)^{1-\alpha}\right).

  Computed by :func:`jaxdiv.renyi_divergence` on the two-outcome distributions, so the edge
  cases (``p`` in {0, 1}, ``alpha`` in {0, 1, inf}) follow the core function.

  Args:
    probs_p: probability of 1 under p (or logit), any shape.
    probs_q: probability of 1 under q (or logit), broadcastable.
    alpha: order, ``>= 0``.
    from_logits: both are logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.bernoulli_renyi_divergence(0.5, 0.9, alpha=1.0)), 4))
    0.5108
  """
  p = _common.as_param(probs_p, "probs_p")
  q = _common.as_param(probs_q, "probs_q")
  if from_logits:
    stack = lambda x: jnp.stack([jnp.zeros_like(x), x], axis=-1)
  else:
    stack = lambda x: jnp.stack([1 - x, x], axis=-1)
  p, q = jnp.broadcast_arrays(p, q)
  return discrete.renyi_divergence(stack(p), stack(q), alpha=alpha, from_logits=from_logits,
                                   base=base)


def categorical_entropy(
    probs: ArrayLike, *, axis: int = -1, from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Entropy of Categorical(probs): :func:`jaxdiv.entropy` (``H = -sum_i p_i log p_i``).

  Args:
    probs: probabilities (or logits), the categories on ``axis``.
    axis: the category axis.
    from_logits: ``probs`` holds logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the shape of ``probs`` without ``axis``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> print(round(float(jp.categorical_entropy(jnp.zeros(4), from_logits=True, base=2)), 4))
    2.0
  """
  return discrete.entropy(probs, axis=axis, from_logits=from_logits, base=base)


def categorical_kl_divergence(
    probs_p: ArrayLike, probs_q: ArrayLike, *, axis: int = -1, from_logits: bool = False,
    base: float | None = None,
) -> jax.Array:
  r"""KL between Categoricals: :func:`jaxdiv.kl_divergence` (``sum_i p_i log(p_i/q_i)``).

  Args:
    probs_p: probabilities (or logits) of p, the categories on ``axis``.
    probs_q: probabilities (or logits) of q, broadcastable; same size on ``axis``.
    axis: the category axis.
    from_logits: both are logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> kl = jp.categorical_kl_divergence(jnp.array([0.5, 0.5]), jnp.array([0.9, 0.1]))
    >>> print(round(float(kl), 4))
    0.5108
  """
  return discrete.kl_divergence(probs_p, probs_q, axis=axis, from_logits=from_logits, base=base)


def categorical_renyi_divergence(
    probs_p: ArrayLike, probs_q: ArrayLike, *, alpha: ArrayLike, axis: int = -1,
    from_logits: bool = False, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence between Categoricals: :func:`jaxdiv.renyi_divergence`.

  .. math::
    D_\alpha(p \,\|\, q) = \frac{1}{\alpha - 1} \log \sum_i p_i^\alpha q_i^{1-\alpha}.

  Args:
    probs_p: probabilities (or logits) of p, the categories on ``axis``.
    probs_q: probabilities (or logits) of q, broadcastable; same size on ``axis``.
    alpha: order, ``>= 0``.
    axis: the category axis.
    from_logits: both are logits.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> d = jp.categorical_renyi_divergence(jnp.array([0.5, 0.5]), jnp.array([0.5, 0.5]),
    ...                                     alpha=2.0)
    >>> print(round(float(d), 4))
    0.0
  """
  return discrete.renyi_divergence(probs_p, probs_q, alpha=alpha, axis=axis,
                                   from_logits=from_logits, base=base)


# ---------------------------------------------------------------------------------------------
# Gamma and Exponential (rate parameterisation).


def _renyi_from_log_partition(alpha, acc, kl, log_partition, mix, valid_mix, kl_between=None):
  """Generic exponential-family Rényi divergence (see the module docstring).

  With `kl_between(r, x, w, ok)`, the KL from the distribution of parameters `r` to that of `x`
  (where `ok`; `x - r = w (p - q)` in the parameters, for a family that takes the step exactly
  rather than from the rounded `r`), the
  difference of log-partitions is taken as `alpha KL(r_a || p) + (1 - alpha) KL(r_a || q)`
  over `1 - alpha` (r_a the distribution at the mixed natural parameters; van Erven &
  Harremoës 2014, eq. 10): for 0 < alpha < 1 a sum of two non-negative terms, where the
  log-partitions themselves cancel near p = q (Gamma, float32 concentrations 1e4 and 1.1e4:
  exactly 0 at alpha 0.3 and 0.5, true 6.7e-4 and 1.1e-3)."""
  def general(al):
    params_a = mix(al)
    ok = valid_mix(params_a)
    true = jnp.asarray(True)
    if kl_between is not None:
      # `ok` is batch-shaped; a parameter may hold an event axis (Dirichlet concentrations).
      safe = tuple(jnp.where(jnp.reshape(ok, ok.shape + (1,) * (jnp.ndim(x) - ok.ndim)), x, 1.0)
                   for x in params_a)
      t = 1 - al
      out = (al * kl_between(safe, mix(1.0), t, ok) + t * kl_between(safe, mix(0.0), -al, ok)) / t
      out = out + jax.lax.stop_gradient(jnp.where(out < 0, -out, 0.0))
      return jnp.where(ok, out, jnp.inf)
    out = (log_partition(params_a, ok) - al * log_partition(mix(1.0), true)
           - (1 - al) * log_partition(mix(0.0), true)) / (al - 1)
    # D_alpha >= 0; the difference of log-partitions cancels near p = q (float32 gave -1e-6).
    # Value clamped, gradient passed through (a rounding-level fix must not zero d/dalpha).
    out = out + jax.lax.stop_gradient(jnp.where(out < 0, -out, 0.0))
    return jnp.where(ok, out, jnp.inf)

  along = lambda t: log_partition(mix(t), jnp.asarray(True))
  # Through KLs the general form keeps its accuracy much closer to alpha = 1, while the series'
  # cumulants (derivatives of the log-partition) cancel at large concentrations: float32 Beta
  # Rényi was 2.6e-3 off at alpha = 0.97 (Beta(0.02, 5.1e4) against Beta(0.021, 5.4e4)). Its
  # radius there is 1e-4 in float32 (worst of both forms 4.7e-6 on the review's cases; 3e-5
  # left the general form at 4.6e-5).
  radius = 1e-4 if kl_between is not None and jnp.dtype(acc) == jnp.float32 else None
  return _common.alpha_select(alpha, acc, kl, general,
                              near=_common.exp_family_near_one(kl, along, acc), radius=radius)


def _beta_pair(ap, bp, aq, bq):
  """(valid, [..., 2] concentrations of p, of q): two Betas as Dirichlets on 2 categories."""
  valid, (ap, bp, aq, bq) = _common.in_domain(ap, bp, aq, bq)
  return valid, jnp.stack([ap, bp], -1), jnp.stack([aq, bq], -1)


def gamma_entropy(
    concentration: ArrayLike, rate: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""Entropy of Gamma(concentration, rate) (density ``∝ x^{a-1} e^{-b x}``).

  .. math::
    H = a - \log b + \log\Gamma(a) + (1 - a) \psi(a).

  Args:
    concentration: shape ``a > 0``.
    rate: inverse scale ``b > 0`` (``scipy.stats.gamma(a, scale=1/b)``), broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape; NaN outside the domain.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.gamma_entropy(1.0, 1.0)), 4))
    1.0

  References:
    Lazo & Rathie, On the entropy of continuous probability distributions, 1978.
  """
  (a, b), _, dtype, _ = _common.prepare({"concentration": concentration, "rate": rate})
  valid, (a, b) = _common.in_domain(a, b)
  out = a - jnp.log(b) + gammaln(a) + (1 - a) * digamma(a)
  return _common.finish(out, dtype, base, valid)


# Stirling's series, log Γ(x) = (x - 1/2) log x - x + log(2π)/2 + sum_m c_m x^-m (odd m).
_STIRLING = ((1, 1 / 12), (3, -1 / 360), (5, 1 / 1260), (7, -1 / 1680), (9, 1 / 1188),
             (11, -691 / 360360), (13, 1 / 156), (15, -3617 / 122400), (17, 43867 / 244188),
             (19, -174611 / 125400))


def _log_shift(x, y, delta):
  """``log(y / x)`` for ``y = x + δ``: log1p of ``δ / x`` where it is near 0, else the log of
  the quotient (``δ / x`` would round ``1 + u`` near -1)."""
  u = _numerics.ratio(delta, x)
  near = jnp.abs(u) < 0.5
  # The quotient overflows or underflows beyond a ratio of about 1e38 (float32): there the
  # difference of the logarithms is as exact, relative to the result.
  q = _numerics.ratio(y, x)
  whole = jnp.isfinite(q) & (q >= jnp.finfo(q.dtype).tiny)
  far = jnp.log(jnp.where(whole, q, 1)) + jnp.where(whole, 0, jnp.log(y) - jnp.log(x))
  return jnp.where(near, _numerics.log1p(jnp.where(near, u, 0)), far)


def _log1p_bregman(x, y, delta, lg=None):
  """``φ = δ/x - log(y/x)`` (``u - log1p(u)`` at ``u = δ/x``, >= 0): by the series of
  ``expm1_minus_x`` where ``l = log(y/x)`` is in (-1, 1), else as written (``expm1(l)`` of a
  large ``l`` carries the error of ``l`` times ``l``). ``lg``: ``_log_shift(x, y, delta)`` if
  the caller has it."""
  lg = _log_shift(x, y, delta) if lg is None else lg
  small = jnp.abs(lg) < 1
  return jnp.where(small, _numerics.expm1_minus_x(jnp.where(small, lg, 0)),
                   _numerics.ratio(delta, x) - lg)


def _xlogx_bregman(x, y, delta, lg=None):
  """The Bregman remainder of ``x log x - x`` from x to ``y = x + δ``: ``y log(y/x) - δ`` (>= 0):
  ``x h(l)`` by :func:`jaxdiv._numerics.xexpx_bregman`'s series where ``l = log(y/x)`` is in
  (-1, 1), else as written (at most a factor e of cancellation; ``x e^l`` would overflow).
  ``lg``: ``_log_shift(x, y, delta)`` if the caller has it."""
  lg = _log_shift(x, y, delta) if lg is None else lg
  small = jnp.abs(lg) < 1
  return jnp.where(small, x * _numerics.xexpx_bregman(jnp.where(small, lg, 0)),
                   y * lg - delta)


def _stirling_bregman(x, y, delta, n_terms, lg=None):
  """The Bregman remainder from x to ``y = x + δ`` (both >= K) of ``G = log Γ - (x log x -
  x)``, from Stirling's series ``G(x) = -log(x)/2 + log(2π)/2 + sum_m c_m x^-m``: ``φ(l)/2 +
  (δ/x)(δ/y) sum_m c_m P_m`` with ``P_m = sum_{j=1..m} j x^-j y^-(m-j)`` (the remainder of
  ``x^-m``, exactly; every factor bounded, for x and y far apart too)."""
  out = 0.5 * _log1p_bregman(x, y, delta, lg)
  # δ/y as 1 - x/y where y >> x: the derivative of δ/y forms y^-2, which underflows to 0 for
  # y beyond 1e154 (float64) and left an error of 1/y, times δ/x (d/dy off by 3e-4).
  v = jnp.where(jnp.abs(delta) < 0.5 * y, delta / y, 1 - x / y)
  uv, xi, yi = (delta / x) * v, 1 / x, 1 / y
  # P_m = P_(m-1) / y + m x^-m, every term >= 0: a few operations a power, where the sums of
  # products as written took 280 operations, which second derivatives in an order multiplied.
  coeffs = dict(_STIRLING[:n_terms])
  poly = xm = series = None
  for m in range(1, max(coeffs) + 1):
    xm = xi if xm is None else xm * xi
    poly = xm if poly is None else poly * yi + m * xm
    if m in coeffs:
      series = coeffs[m] * poly if series is None else series + coeffs[m] * poly
  return out + uv * series


# Jitted, so that an eager call compiles once per shape: the loop built from closures here was
# compiled again on every call (`dirichlet_kl_divergence` of 128 rows: 500 ms a call).
@jax.jit
def _lgamma_bregman_g(a, b, delta=None):
  """``G``, the Bregman remainder from ``a`` to ``b`` (both > 0; ``delta``: ``b - a`` if known
  more exactly than their difference) of ``log Γ(x) - (x log x - x)``; >= 0. With ``F``, that
  of ``x log x - x`` (:func:`_xlogx_bregman`, also >= 0), ``F + G`` is the remainder of
  ``log Γ``, ``log Γ(b) - log Γ(a) - (b - a) ψ(a)``; the KLs below sum their ``F`` parts in
  closed form (the means' terms) and take ``G`` from here.

  Trap avoided: near p = q the KLs of the Gamma/Beta/Dirichlet families are differences of
  ``log Γ`` values (about 6e3 at a = 1e3) whose sum is small: as written, float32 lost 1.6% at
  concentrations 1.1% apart (float64 4e-11), and a Taylor series in ``b - a`` covered only 1%
  of a. ``G`` comes from Stirling's series where ``a`` and ``b`` are at least K (4 in float32,
  10 in float64; terms to x^-13 and x^-19: the first omitted term's second derivative, 2 c_m
  m (m + 1) x^-(m+2), is below 1.3e-8 and 1.3e-17 of G's, about 1/(2 x^2); 8 and 16 with
  fewer terms took twice the time); elsewhere the recurrence ``log Γ(x) = log Γ(x + K) -
  sum_j log(x + j)`` moves both to ``+ K`` first: the ``log Γ`` remainder is then ``sum_j
  φ(δ/(a + j)) + F + G`` there, ``φ(u) = u - log1p(u)``, every term non-negative, and ``G``
  is that less ``F`` (see the far form in the code where ``F`` is much the larger). One
  Stirling series serves both cases, on the shifted or unshifted pair. Measured against
  50-digit mpmath (3000 pairs, a in [1e-3, 1e6], b/a in [1e-6, 1e6]): the ``log Γ`` remainder
  F + G, float32 at most 3e-7 relative (the textbook difference: 1.6e-2); G alone at most
  2.4e-6 in float32 (before the far form below: 1e-2) and 4e-14 in float64.
  """
  f64 = jnp.result_type(a, b) == jnp.float64
  shifts, n_terms = (10, 10) if f64 else (4, 7)
  delta = b - a if delta is None else delta
  small = jnp.minimum(a, b) < shifts
  # The recurrence's terms see safe values where they are not selected (finite gradients).
  a_small, b_small = jnp.where(small, a, 1), jnp.where(small, b, 1)
  d_small = jnp.where(small, delta, 0)
  x = jnp.where(small, a_small + shifts, a)
  y = jnp.where(small, b_small + shifts, b)
  l0, lk = _log_shift(a_small, b_small, d_small), _log_shift(x, y, delta)
  # The remainder of x log x - x moves from (a, b) to (a + K, b + K): sum_j φ(δ/(a + j)) +
  # F(a + K, b + K) - F(a, b), as written where b/a is within (1/e, e) (each term O(δ^2)).
  # Beyond, the F's are y log(y/x) - δ, dominated by δ where one concentration is far larger
  # (a = 8e5 against b = 3.3: G was 1% off in float32). There the same sum is taken as
  #   sum_j [b φ(v_j) - a v_j + (j + 1) (log1p(1/(b + j)) - log1p(1/(a + j)))] + b log1p(K/b)
  # with v_j = 1/(a + j), φ(v) = v - log1p(v) (the δ's cancelled exactly, b log1p(K/a)
  # telescoped into the φ's, and log((b + K)/(b + j)) = sum_(i >= j) log1p(1/(b + i))): terms
  # of the result's size in both directions.
  # Only where the larger concentration is at least 1 (below, the F's are small against G, and
  # the far form's own terms cancel: 2e-6 at 0.0014 against 0.00043). Safe values where unused.
  use_far = (jnp.abs(l0) >= 1) & (jnp.maximum(a_small, b_small) >= 1)
  af, bf = jnp.where(use_far, a_small, 1), jnp.where(use_far, b_small, 1)

  def log1p_over(c, x):
    # log1p(c/x), as log(x + c) - log(x) below 1: autodiff of c/x forms x^-2, which overflows
    # (float32 at 1e-20) where the derivative, -c/(x (x + c)), does not.
    lo = x < 1
    xl, xh = jnp.where(lo, x, 1), jnp.where(lo, 1, x)
    return jnp.where(lo, jnp.log(xl + c) - jnp.log(xl), jnp.log1p(c / xh))

  # The K terms in a loop: along a new axis of K, XLA:CPU ran them 7x slower (its reduction
  # over a short minor axis is not vectorised); unrolled, second derivatives in an order
  # (Rényi, through KLs) compiled for 90 s into 6.5 GB (float64, K = 10).
  def term(j, sums):
    near, far = sums
    j = j.astype(a_small.dtype)
    near = near + _log1p_bregman(a_small + j, b_small + j, d_small)
    la, lb = log1p_over(1, af + j), log1p_over(1, bf + j)  # log1p(v_j), v_j = 1/(a + j)
    # b φ(v_j): the series in log1p(v) below v = 1, v - log1p(v) above (exp of a rounded
    # log1p(1e20) was 3e-6 off).
    big = af + j <= 1
    b_phi = jnp.where(big, _numerics.ratio(bf, af + j) - bf * la,
                      bf * _numerics.expm1_minus_x(jnp.where(big, 0, la)))
    return near, far + (b_phi - _numerics.ratio(af, af + j) + (j + 1) * (lb - la))

  near, far = jax.lax.fori_loop(0, shifts, term, (jnp.zeros_like(d_small), jnp.zeros_like(bf)))
  near = near + (_xlogx_bregman(x, y, d_small, lk) - _xlogx_bregman(a_small, b_small, d_small, l0))
  far = far + bf * log1p_over(shifts, bf)
  moved = jnp.where(use_far, far, near)
  return _stirling_bregman(x, y, delta, n_terms, lk) + jnp.where(small, moved, 0)


@jax.custom_jvp
def _gamma_means_term(ap, bp, aq, bq):
  """``a_q φ(z)``, ``z = log(μ_p / μ_q) = log(b_q/b_p) - log(a_q/a_p)``, ``φ(z) = e^z - 1 - z``.

  Its partials by hand: d/d a_q is ``φ(z) - expm1(z) = -z`` exactly, which autodiff formed as
  that difference (1e15 - 1e15 + ... in float64 at a_p = 1e16 against a_q = 10: 3e-3 off)."""
  return _gamma_means_parts(ap, bp, aq, bq)[0]


def _gamma_means_parts(ap, bp, aq, bq):
  """``(a_q φ(z), a_q (e^z - 1), z)``; where |z| >= 1 with ``a_q e^z = a_p b_q / b_p``, as
  ``e^z`` overflows first (a_p = 1e34 against a_q = 1e-6 in float32)."""
  z = _common.log_ratio(bq, bp) - _log_shift(ap, aq, aq - ap)
  small = jnp.abs(z) < 1
  zs = jnp.where(small, z, 0)
  scaled = ap * (bq / bp)  # a_q e^z
  out = jnp.where(small, aq * _common.expm1_minus_x(zs), scaled - aq * (1 + z))
  slope = jnp.where(small, aq * jnp.expm1(zs), scaled - aq)
  return out, slope, z


@_gamma_means_term.defjvp
def _gamma_means_term_jvp(primals, tangents):
  ap, bp, aq, bq = primals
  dap, dbp, daq, dbq = tangents
  out, m, z = _gamma_means_parts(ap, bp, aq, bq)  # m = a_q dφ/dz
  return out, m * (dap / ap + dbq / bq - dbp / bp) - z * daq


def _gamma_kl(ap, bp, aq, bq):
  # = a_q φ(log(μ_p / μ_q)) + G(a_p, a_q - a_p), μ = a / b the means, φ(x) = e^x - 1 - x and G
  # the Bregman remainder of log Γ(x) - (x log x - x): a term for the means and one for the
  # shapes, both >= 0. (The remainder of x log x - x, (a_q) log(a_q/a_p) - (a_q - a_p), and the
  # rate terms a_p (e^l - 1 - l) + (a_p - a_q) l, l = log(b_q/b_p), sum to the first: where
  # they offset each other, means close and shapes apart, float32 lost 1e-4 relative.)
  g = _lgamma_bregman_g(ap, aq, aq - ap)
  return _gamma_means_term(ap, bp, aq, bq) + g


def gamma_kl_divergence(
    concentration_p: ArrayLike, rate_p: ArrayLike, concentration_q: ArrayLike,
    rate_q: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Gamma(a_p, b_p) and Gamma(a_q, b_q) (rate parameterisation).

  .. math::
    \mathrm{KL}(p \,\|\, q) = (a_p - a_q) \psi(a_p) - \log\Gamma(a_p) + \log\Gamma(a_q)
      + a_q \log\frac{b_p}{b_q} + a_p \frac{b_q - b_p}{b_p}.

  Args:
    concentration_p: shape of p (> 0).
    rate_p: rate of p (> 0).
    concentration_q: shape of q (> 0).
    rate_q: rate of q (> 0). All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape. The ``log Γ`` terms are summed without cancellation
    (float32 within 1e-6 relative where the rates are equal, concentrations 1e-3 to 1e7);
    where the concentration and rate terms offset each other (means close, concentrations
    apart: 1e4 against 1.3e4 at rates 1.3 and 1.7) float32 loses up to about 1e-4 relative.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.gamma_kl_divergence(2.0, 1.0, 2.0, 2.0)), 4))
    0.6137

  References:
    Penny, KL-divergences of Normal, Gamma, Dirichlet and Wishart densities, 2001.
  """
  (ap, bp, aq, bq), _, dtype, _ = _common.prepare(
      {"concentration_p": concentration_p, "rate_p": rate_p,
       "concentration_q": concentration_q, "rate_q": rate_q})
  valid, (ap, bp, aq, bq) = _common.in_domain(ap, bp, aq, bq)
  return _common.finish(_gamma_kl(ap, bp, aq, bq), dtype, base, valid)


def gamma_renyi_divergence(
    concentration_p: ArrayLike, rate_p: ArrayLike, concentration_q: ArrayLike,
    rate_q: ArrayLike, *, alpha: ArrayLike, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence D_alpha(p‖q) between Gammas (rate parameterisation).

  .. math::
    D_\alpha = \frac{1}{\alpha - 1}\left(\log\Gamma(a_\alpha) - a_\alpha \log b_\alpha
      - \alpha(\log\Gamma(a_p) - a_p \log b_p) - (1-\alpha)(\log\Gamma(a_q) - a_q \log b_q)
      \right),

  with ``a_alpha = alpha a_p + (1 - alpha) a_q`` and ``b_alpha`` likewise; ``+inf`` unless both
  are positive.

  Args:
    concentration_p: shape of p (> 0).
    rate_p: rate of p (> 0).
    concentration_q: shape of q (> 0).
    rate_q: rate of q (> 0).
    alpha: order, ``>= 0``.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.gamma_renyi_divergence(2.0, 1.0, 2.0, 2.0, alpha=1.0)), 4))
    0.6137

  References:
    Gil, Alajaji & Linder, Rényi divergence measures for commonly used univariate continuous
    distributions, 2013.
  """
  _common.check_alpha(alpha)
  (ap, bp, aq, bq, al), _, dtype, acc = _common.prepare(
      {"concentration_p": concentration_p, "rate_p": rate_p,
       "concentration_q": concentration_q, "rate_q": rate_q, "alpha": alpha})
  valid, (ap, bp, aq, bq) = _common.in_domain(ap, bp, aq, bq)

  def log_partition(ab, ok):
    a, b = (jnp.where(ok, x, 1.0) for x in ab)
    return gammaln(a) - a * jnp.log(b)

  mix = lambda t: (t * ap + (1 - t) * aq, t * bp + (1 - t) * bq)
  out = _renyi_from_log_partition(
      alpha, acc, lambda: _gamma_kl(ap, bp, aq, bq), log_partition,
      lambda t: mix(al * 0 + t), lambda ab: (ab[0] > 0) & (ab[1] > 0),
      kl_between=lambda r, x, w, ok: _gamma_kl(*r, *x))
  return _common.finish(out, dtype, base, valid)


def exponential_entropy(rate: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Entropy of Exponential(rate) (mean ``1/rate``): ``H = 1 - log(rate)``.

  Args:
    rate: ``lambda > 0``, any shape (``scipy.stats.expon(scale=1/rate)``).
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the shape of ``rate``.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.exponential_entropy(1.0)), 4))
    1.0
  """
  (b,), _, dtype, _ = _common.prepare({"rate": rate})
  return _common.finish(1 - jnp.log(jnp.where(b > 0, b, 1.0)), dtype, base, b > 0)


def exponential_kl_divergence(
    rate_p: ArrayLike, rate_q: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Exponential(rate_p) and Exponential(rate_q).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{\lambda_p}{\lambda_q} + \frac{\lambda_q}{\lambda_p} - 1,

  evaluated as ``e^l - 1 - l`` with ``l = log(lambda_q/lambda_p)``, free of cancellation.

  Args:
    rate_p: rate of p (> 0).
    rate_q: rate of q (> 0), broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.exponential_kl_divergence(1.0, 2.0)), 4))
    0.3069
  """
  (bp, bq), _, dtype, _ = _common.prepare({"rate_p": rate_p, "rate_q": rate_q})
  valid, (bp, bq) = _common.in_domain(bp, bq)
  return _common.finish(_common.expm1_minus_x(jnp.log(bq) - jnp.log(bp)), dtype, base, valid)


def exponential_renyi_divergence(
    rate_p: ArrayLike, rate_q: ArrayLike, *, alpha: ArrayLike, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence D_alpha(p‖q) between Exponentials.

  .. math::
    D_\alpha(p \,\|\, q) = \log\frac{\lambda_p}{\lambda_q}
      + \frac{1}{\alpha - 1} \log \frac{\lambda_p}{\lambda_\alpha},
      \qquad \lambda_\alpha = \alpha \lambda_p + (1 - \alpha) \lambda_q,

  ``+inf`` when ``lambda_alpha <= 0``.

  Args:
    rate_p: rate of p (> 0).
    rate_q: rate of q (> 0), broadcastable.
    alpha: order, ``>= 0``.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.exponential_renyi_divergence(1.0, 2.0, alpha=0.5)), 4))
    0.1178
  """
  return gamma_renyi_divergence(1.0, rate_p, 1.0, rate_q, alpha=alpha, base=base)


# ---------------------------------------------------------------------------------------------
# Beta and Dirichlet.


def _log_beta(a, axis=-1):
  return jnp.sum(gammaln(a), axis=axis) - gammaln(jnp.sum(a, axis=axis))


def _dirichlet_kl(cp, cq, dp=None):
  # = sum_i B(c_p,i, c_q,i - c_p,i) - B(s_p, s_q - s_p), B the Bregman remainder of log Γ, split
  # as F + G (:func:`_lgamma_bregman_g`): the F parts sum to s_q KL(m_q || m_p) of the
  # means m = c / s, summed as sum_i s_q m_p,i h(log(m_q,i / m_p,i)) (terms >= 0, h(y) = 1 +
  # (y - 1) e^y); the G parts, O(1) against the F parts' O(s), cancel far less (the B's of a
  # concentration much larger than the others cancelled: float32 Beta(2e4, 2.5) against
  # Beta(2.006e4, 2.5) lost 0.2%).
  # The step of the sums: the sum of the concentrations' own (exact where within a factor 2),
  # not s_q - s_p, which cancels the rounding of both sums (float32 Beta(0.05, 0.04) to 0.3%
  # larger concentrations: 3e-5 relative error in the KL).
  # s_q summed itself, not s_p + Δ: where a large concentration shrinks (7.4e25 to 7.4e20),
  # s_p + Δ keeps an ulp of s_p, huge against s_q (float32 Beta KL 3e15 for 0.0105).
  # The sums ride along as one more category, so that each remainder is formed once in the
  # graph (second derivatives in an order, through the Rényi divergence, multiply it).
  cp, cq = jnp.broadcast_arrays(cp, cq)
  dp = cq - cp if dp is None else jnp.broadcast_to(dp, cp.shape)
  sums = lambda c: jnp.concatenate([c, jnp.sum(c, axis=-1, keepdims=True)], axis=-1)
  cp_s, cq_s, dp_s = sums(cp), sums(cq), sums(dp)
  sp, sq = cp_s[..., -1:], cq_s[..., -1:]
  g = _lgamma_bregman_g(cp_s, cq_s, dp_s)
  shift = _log_shift(cp_s, cq_s, dp_s)
  y = shift[..., :-1] - shift[..., -1:]  # log(m_q / m_p)
  weights = cp * _numerics.ratio(sq, sp)  # s_q m_p (sp^-2 underflows at sp = 2e-20, float32)
  means = jnp.sum(weights * _numerics.xexpx_bregman(y), axis=-1)
  return means + (jnp.sum(g[..., :-1], axis=-1) - g[..., -1])


def _dirichlet_entropy(c):
  s = jnp.sum(c, axis=-1)
  k = c.shape[-1]
  return _log_beta(c) + (s - k) * digamma(s) - jnp.sum((c - 1) * digamma(c), axis=-1)


def _event(t):
  # A batch-shaped order against [..., K] concentrations: the order broadcasts over K.
  return t[..., None]


def _dirichlet_renyi(cp, cq, alpha, al, acc):
  # The concentrations as a 1-tuple of parameters, as `kl_between` takes them: through KLs the
  # difference of log-partitions no longer cancels near p = q (float32 at concentrations 1e4
  # and 0.1% apart: 68x the true value at alpha = 1.5, 5x at 0.3).
  def log_partition(c, ok):
    return _log_beta(jnp.where(ok[..., None], c[0], 1.0))
  return _renyi_from_log_partition(
      alpha, acc, lambda: _dirichlet_kl(cp, cq), log_partition,
      lambda t: (_event(al * 0 + t) * cp + (1 - _event(al * 0 + t)) * cq,),
      lambda c: jnp.all(c[0] > 0, axis=-1),
      kl_between=lambda r, x, w, ok: _dirichlet_kl(r[0], x[0], jnp.where(
          ok[..., None], _event(w) * (cp - cq), x[0] - r[0])))


def beta_entropy(
    concentration1: ArrayLike, concentration0: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""Entropy of Beta(concentration1, concentration0) (density ``∝ x^{a-1} (1-x)^{b-1}``).

  .. math::
    H = \log B(a, b) - (a - 1)\psi(a) - (b - 1)\psi(b) + (a + b - 2)\psi(a + b).

  Args:
    concentration1: ``a > 0`` (distrax's name; scipy's ``a``).
    concentration0: ``b > 0`` (scipy's ``b``), broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.beta_entropy(1.0, 1.0)), 4))
    0.0
  """
  (a, b), _, dtype, _ = _common.prepare({"concentration1": concentration1,
                                         "concentration0": concentration0})
  valid, (a, b) = _common.in_domain(a, b)
  c = jnp.stack([a, b], -1)
  return _common.finish(_dirichlet_entropy(c), dtype, base, valid)


def beta_kl_divergence(
    concentration1_p: ArrayLike, concentration0_p: ArrayLike, concentration1_q: ArrayLike,
    concentration0_q: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Beta(a_p, b_p) and Beta(a_q, b_q).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{B(a_q, b_q)}{B(a_p, b_p)} + (a_p - a_q)\psi(a_p)
      + (b_p - b_q)\psi(b_p) + (a_q - a_p + b_q - b_p)\psi(a_p + b_p).

  Args:
    concentration1_p: ``a`` of p (> 0).
    concentration0_p: ``b`` of p (> 0).
    concentration1_q: ``a`` of q (> 0).
    concentration0_q: ``b`` of q (> 0). All four broadcast together.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.beta_kl_divergence(2.0, 2.0, 1.0, 1.0)), 4))
    0.1251

  References:
    Penny, KL-divergences of Normal, Gamma, Dirichlet and Wishart densities, 2001.
  """
  (ap, bp, aq, bq), _, dtype, _ = _common.prepare(
      {"concentration1_p": concentration1_p, "concentration0_p": concentration0_p,
       "concentration1_q": concentration1_q, "concentration0_q": concentration0_q})
  valid, cp, cq = _beta_pair(ap, bp, aq, bq)
  return _common.finish(_dirichlet_kl(cp, cq), dtype, base, valid)


def beta_renyi_divergence(
    concentration1_p: ArrayLike, concentration0_p: ArrayLike, concentration1_q: ArrayLike,
    concentration0_q: ArrayLike, *, alpha: ArrayLike, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence D_alpha(p‖q) between Betas.

  .. math::
    D_\alpha(p \,\|\, q) = \frac{1}{\alpha - 1}\log\frac{B(a_\alpha, b_\alpha)}
      {B(a_p, b_p)^\alpha B(a_q, b_q)^{1-\alpha}},

  ``a_alpha = alpha a_p + (1 - alpha) a_q`` and ``b_alpha`` likewise; ``+inf`` unless both are
  positive.

  Args:
    concentration1_p: ``a`` of p (> 0).
    concentration0_p: ``b`` of p (> 0).
    concentration1_q: ``a`` of q (> 0).
    concentration0_q: ``b`` of q (> 0).
    alpha: order, ``>= 0``.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.beta_renyi_divergence(2.0, 2.0, 1.0, 1.0, alpha=1.0)), 4))
    0.1251

  References:
    Gil, Alajaji & Linder, Rényi divergence measures for commonly used univariate continuous
    distributions, 2013.
  """
  _common.check_alpha(alpha)
  (ap, bp, aq, bq, al), _, dtype, acc = _common.prepare(
      {"concentration1_p": concentration1_p, "concentration0_p": concentration0_p,
       "concentration1_q": concentration1_q, "concentration0_q": concentration0_q,
       "alpha": alpha})
  valid, cp, cq = _beta_pair(ap, bp, aq, bq)
  return _common.finish(_dirichlet_renyi(cp, cq, alpha, al, acc), dtype, base, valid)


def dirichlet_entropy(concentration: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Entropy of Dirichlet(concentration), the categories on the last axis.

  .. math::
    H = \log B(\alpha) + (\alpha_0 - K)\psi(\alpha_0) - \sum_i (\alpha_i - 1)\psi(\alpha_i),
    \qquad \alpha_0 = \sum_i \alpha_i.

  Args:
    concentration: ``[..., K]``, every entry > 0.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, shape ``[...]``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> print(round(float(jp.dirichlet_entropy(jnp.ones(3))), 4))
    -0.6931
  """
  (c,), _, dtype, _ = _common.prepare({"concentration": concentration},
                                      event={"concentration": 1})
  valid = jnp.all(c > 0, axis=-1)
  c = jnp.where(valid[..., None], c, 1.0)
  return _common.finish(_dirichlet_entropy(c), dtype, base, valid)


def _dirichlet_prepare(cp, cq, extra=None):
  params = {"concentration_p": cp, "concentration_q": cq, **(extra or {})}
  arrays, _, dtype, acc = _common.prepare(
      params, event={"concentration_p": 1, "concentration_q": 1})
  cp, cq = arrays[:2]
  if cp.shape[-1] != cq.shape[-1]:
    raise ValueError("`concentration_p` and `concentration_q` must have the same number of"
                     f" categories (last axis); got shapes {cp.shape} and {cq.shape}.")
  valid = jnp.all(cp > 0, axis=-1) & jnp.all(cq > 0, axis=-1)
  cp = jnp.where(valid[..., None], cp, 1.0)
  cq = jnp.where(valid[..., None], cq, 1.0)
  return cp, cq, arrays[2:], valid, dtype, acc


def dirichlet_kl_divergence(
    concentration_p: ArrayLike, concentration_q: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Dirichlet(concentration_p) and Dirichlet(concentration_q).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \log\frac{B(\beta)}{B(\alpha)}
      + \sum_i (\alpha_i - \beta_i)\left(\psi(\alpha_i) - \psi(\alpha_0)\right),

  with ``alpha = concentration_p``, ``beta = concentration_q`` and ``alpha_0 = sum_i alpha_i``.

  Args:
    concentration_p: ``[..., K]``, > 0.
    concentration_q: ``[..., K]``, > 0; batch dimensions broadcast.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> kl = jp.dirichlet_kl_divergence(jnp.array([2.0, 2.0]), jnp.array([1.0, 1.0]))
    >>> print(round(float(kl), 4))
    0.1251

  References:
    Penny, KL-divergences of Normal, Gamma, Dirichlet and Wishart densities, 2001.
  """
  cp, cq, _, valid, dtype, _ = _dirichlet_prepare(concentration_p, concentration_q)
  return _common.finish(_dirichlet_kl(cp, cq), dtype, base, valid)


def dirichlet_renyi_divergence(
    concentration_p: ArrayLike, concentration_q: ArrayLike, *, alpha: ArrayLike,
    base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence D_alpha(p‖q) between Dirichlets.

  .. math::
    D_\alpha(p \,\|\, q) = \frac{1}{\alpha - 1}\log\frac{B(\alpha c_p + (1-\alpha) c_q)}
      {B(c_p)^\alpha B(c_q)^{1-\alpha}},

  with the multivariate Beta function ``B``; ``+inf`` unless the interpolated concentration is
  positive.

  Args:
    concentration_p: ``[..., K]``, > 0.
    concentration_q: ``[..., K]``, > 0.
    alpha: order, ``>= 0``, broadcastable with the batch shape.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> d = jp.dirichlet_renyi_divergence(jnp.array([2.0, 2.0]), jnp.array([1.0, 1.0]),
    ...                                   alpha=1.0)
    >>> print(round(float(d), 4))
    0.1251
  """
  _common.check_alpha(alpha)
  cp, cq, (al,), valid, dtype, acc = _dirichlet_prepare(concentration_p, concentration_q,
                                                        {"alpha": alpha})
  return _common.finish(_dirichlet_renyi(cp, cq, alpha, al, acc), dtype, base, valid)


# ---------------------------------------------------------------------------------------------
# Poisson.

_POISSON_TERMS = 384
_POISSON_ASYMPTOTIC = 100.0
_LOG_FACTORIALS = np.concatenate([[0.0], np.cumsum(np.log(np.arange(1, _POISSON_TERMS)))])


def poisson_entropy(rate: ArrayLike, *, base: float | None = None) -> jax.Array:
  r"""Entropy of Poisson(rate).

  .. math::
    H = \lambda (1 - \log \lambda) + e^{-\lambda} \sum_{k \ge 0}
      \frac{\lambda^k \log k!}{k!}.

  There is no closed form: the series is summed (384 terms, exact to rounding) for
  ``rate <= 100`` and the asymptotic expansion
  ``1/2 log(2 pi e lambda) - 1/(12 lambda) - 1/(24 lambda²) - 19/(360 lambda³)``
  (relative error below 1e-9 there) is used above.

  Args:
    rate: ``lambda >= 0``, any shape.
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the shape of ``rate``.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.poisson_entropy(1.0)), 4))
    1.3048

  References:
    Evans & Boersma, The entropy of a Poisson distribution, SIAM Review, 1988.
  """
  (lam,), _, dtype, acc = _common.prepare({"rate": rate})
  valid = lam >= 0
  small = valid & (lam <= _POISSON_ASYMPTOTIC)
  ls = jnp.where(small, lam, 1.0)
  k = jnp.arange(_POISSON_TERMS, dtype=acc)
  # log k! summed in float64 at trace time: float32 `gammaln(1)` is 4.8e-7, not 0, which made
  # the entropy at rate 0 positive and 3% high at rate 1e-6.
  log_fact = jnp.asarray(_LOG_FACTORIALS, acc)
  log_pmf = _numerics.mul_log(k, _numerics.safe_log(ls)[..., None]) - ls[..., None] - log_fact
  series = -jnp.sum(_numerics.mul_log(jnp.exp(log_pmf), log_pmf), axis=-1)
  lb = jnp.where(small, _POISSON_ASYMPTOTIC * 2, jnp.where(valid, lam, 1.0))
  asym = (0.5 * jnp.log(2 * jnp.pi * jnp.e * lb) - 1 / (12 * lb) - 1 / (24 * lb**2)
          - 19 / (360 * lb**3))
  return _common.finish(jnp.where(small, series, asym), dtype, base, valid)


def poisson_kl_divergence(
    rate_p: ArrayLike, rate_q: ArrayLike, *, base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between Poisson(rate_p) and Poisson(rate_q).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \lambda_p \log\frac{\lambda_p}{\lambda_q} - \lambda_p + \lambda_q,

  with ``0 log 0 = 0``; ``+inf`` for ``lambda_q = 0 < lambda_p``.

  Args:
    rate_p: rate of p (>= 0).
    rate_q: rate of q (>= 0), broadcastable.
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.poisson_kl_divergence(1.0, 2.0)), 4))
    0.3069
  """
  (lp, lq), _, dtype, _ = _common.prepare({"rate_p": rate_p, "rate_q": rate_q})
  valid, (lp, lq) = _common.in_domain(lp, lq, allow_zero=True)
  log_ratio = _numerics.safe_log(lp) - _numerics.safe_log(lq)
  out = _numerics.mul_log(lp, log_ratio) - lp + lq
  pos = (lp > 0) & (lq > 0)
  lp_s, lq_s = jnp.where(pos, lp, 1.0), jnp.where(pos, lq, 1.0)
  out = jnp.where(pos, _poisson_kl(lp_s, lq_s, _common.log_ratio(lp_s, lq_s)), out)
  return _common.finish(out, dtype, base, valid)


def _poisson_kl(lp, lq, x):
  """KL between Poissons of positive rates, ``x = log(lambda_p / lambda_q)``: near p = q
  (|x| < 1) ``lambda_p (e^-x - 1 + x)``, without the cancellation of the closed form (which
  lost 5e-4 relative at rates 1e3 and 1e3 (1 + 1e-6)); the closed form beyond, where it does
  not cancel and ``e^-x = lambda_q / lambda_p`` would overflow (rates 1e-10 and 1e30)."""
  near = jnp.abs(x) < 1
  return jnp.where(near, lp * _common.expm1_minus_x(-jnp.where(near, x, 0.0)), lp * x - lp + lq)


def poisson_renyi_divergence(
    rate_p: ArrayLike, rate_q: ArrayLike, *, alpha: ArrayLike, base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence D_alpha(p‖q) between Poissons.

  .. math::
    D_\alpha(p \,\|\, q) = \frac{\lambda_p^\alpha \lambda_q^{1-\alpha} - \alpha\lambda_p
      - (1 - \alpha)\lambda_q}{\alpha - 1}.

  Args:
    rate_p: rate of p (> 0).
    rate_q: rate of q (> 0), broadcastable.
    alpha: order, ``>= 0``.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the broadcast shape.

  Example:
    >>> import jaxdiv.parametric as jp
    >>> print(round(float(jp.poisson_renyi_divergence(1.0, 4.0, alpha=0.5)), 4))
    1.0
  """
  _common.check_alpha(alpha)
  (lp, lq, al), _, dtype, acc = _common.prepare(
      {"rate_p": rate_p, "rate_q": rate_q, "alpha": alpha})
  valid, (lp, lq) = _common.in_domain(lp, lq)
  phi = _common.expm1_minus_x
  x = _common.log_ratio(lp, lq)  # exact difference near p = q
  # With x = log(lambda_p / lambda_q): the numerator is lambda_q [phi(alpha x) - alpha phi(x)],
  # phi(y) = e^y - 1 - y, where the three terms of the closed form (each ~lambda) cancel to
  # O(lambda x^2) near p = q (float32 rates 99.9 and 100.1: 14% off); the closed form itself
  # where |x| >= 1 (no cancellation there, and no overflow of e^(alpha x) before the result).
  near = jnp.abs(x) < 1
  x_near = jnp.where(near, x, 0.0)

  def general(a):
    a = al * 0 + a
    small = lq * (phi(a * x_near) - a * phi(x_near)) / (a - 1)
    direct = (jnp.exp(a * jnp.log(lp) + (1 - a) * jnp.log(lq)) - a * lp - (1 - a) * lq) / (a - 1)
    return jnp.where(near, small, jnp.maximum(direct, 0.0))

  # Along the natural parameter log lambda_q + t x the log-partition is lambda_q e^(t x) =
  # lambda_p e^((t - 1) x) (this form does not overflow at t = 1), whose derivatives at t = 1
  # are the series' cumulants.
  kl = lambda: _poisson_kl(lp, lq, x)
  out = _common.alpha_select(
      alpha, acc, kl, general,
      near=_common.exp_family_near_one(kl, lambda t: lp * jnp.exp((t - 1) * x), acc))
  return _common.finish(out, dtype, base, valid)

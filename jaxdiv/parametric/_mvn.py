"""Multivariate Normal N(loc, Σ): entropy, KL, Rényi, Bhattacharyya, Hellinger, Jeffreys, W2.

One keyword, ``covariance``, says how the second parameter of each distribution is given:

* ``"full"``: the covariance matrix ``Σ``, shape ``[..., d, d]`` (symmetric positive definite;
  only its Cholesky factor is used, through ``jnp.linalg.cholesky``, which symmetrises).
* ``"cholesky"``: a lower-triangular ``L`` with ``Σ = L Lᵀ`` (distrax's ``scale_tril``); the
  upper triangle is ignored and the diagonal must be non-zero.
* ``"diag"``: the diagonal of ``Σ`` (the *variances*, not standard deviations), ``[..., d]``.

No matrix is ever inverted: every ``Σ⁻¹ v`` is a triangular solve with a Cholesky factor and
every log-determinant is ``2 Σ log|L_ii|``. A covariance that is not positive definite (Cholesky
fails) gives NaN; :func:`jaxdiv.parametric.checked` reports it under ``checkify``. Near-singular
covariances are fine as long as their Cholesky factorisation succeeds in the working precision
(condition numbers up to about 1e6 in float32, 1e14 in float64).
"""

from __future__ import annotations

import math

import jax
import jax.numpy as jnp
from jax.scipy.linalg import solve_triangular
from jax.typing import ArrayLike

from jaxdiv import _numerics
from jaxdiv.parametric import _common

COVARIANCES = ("full", "cholesky", "diag")


def _prepare(locs: dict, covs: dict, covariance: str, extra: dict | None = None):
  if covariance not in COVARIANCES:
    raise ValueError(f"`covariance` must be one of {COVARIANCES}; got {covariance!r}.")
  cov_ndim = 1 if covariance == "diag" else 2
  params = {**locs, **covs, **(extra or {})}
  event = {**{n: 1 for n in locs}, **{n: cov_ndim for n in covs}}
  arrays, batch, dtype, acc = _common.prepare(params, event=event)
  named = dict(zip(params, arrays))
  dims = {n: named[n].shape[-1] for n in locs}
  for n in covs:
    shape = named[n].shape
    if cov_ndim == 2 and shape[-1] != shape[-2]:
      raise ValueError(f"`{n}` must be a square matrix [..., d, d] (covariance={covariance!r});"
                       f" got shape {shape}.")
    dims[n] = shape[-1]
  if len(set(dims.values())) > 1:
    desc = ", ".join(f"`{n}` {named[n].shape}" for n in params if n in dims)
    raise ValueError(f"event dimensions disagree (covariance={covariance!r}): {desc}.")
  return arrays, dtype


class _Cov:
  """A covariance as its factor: lower-triangular ``tril`` (Σ = L Lᵀ) or the variances."""

  def __init__(self, x, covariance):
    self.diag = covariance == "diag"
    if self.diag:
      self.valid = jnp.all(x > 0, axis=-1)
      self.var = jnp.where(self.valid[..., None], x, 1.0)
      self.logdet = jnp.sum(jnp.log(self.var), axis=-1)
      return
    tril = jnp.linalg.cholesky(x) if covariance == "full" else jnp.tril(x)
    dg = jnp.diagonal(tril, axis1=-2, axis2=-1)
    self.valid = jnp.all(jnp.isfinite(dg) & (dg != 0), axis=-1)
    eye = jnp.eye(x.shape[-1], dtype=x.dtype)
    # Invalid rows are replaced by the identity so that no NaN reaches the valid rows' gradient.
    self.tril = jnp.where(self.valid[..., None, None], tril, eye)
    self.logdet = 2 * jnp.sum(jnp.log(jnp.abs(jnp.diagonal(self.tril, axis1=-2, axis2=-1))),
                              axis=-1)

  def matrix(self):
    return self.tril @ jnp.swapaxes(self.tril, -1, -2)

  def solve_tril(self, b):
    """``L⁻¹ b`` for a matrix ``b``."""
    return solve_triangular(self.tril, b, lower=True)

  def maha(self, d):
    """``dᵀ Σ⁻¹ d``."""
    if self.diag:
      return jnp.sum(d * d / self.var, axis=-1)
    z = self.solve_tril(d[..., None])[..., 0]
    return jnp.sum(z * z, axis=-1)


def _kl(lp, cp: _Cov, lq, cq: _Cov):
  d = lp - lq
  if cp.diag:
    return 0.5 * jnp.sum(_common.expm1_minus_x(jnp.log(cp.var) - jnp.log(cq.var))
                         + d * d / cq.var, axis=-1)
  m = cq.solve_tril(cp.tril)
  dim = lp.shape[-1]
  return 0.5 * (jnp.sum(m * m, axis=(-2, -1)) - dim + cq.maha(d) + cq.logdet - cp.logdet)


class _Relative:
  """p relative to q in q's whitened coordinates, where ``Σ_q = I``.

  ``x``: the logarithms of the eigenvalues ``r_i`` of ``Σ_q^{-1/2} Σ_p Σ_q^{-1/2}`` (the
  squared singular values of ``A = L_q⁻¹ L_p``; for ``"diag"``, ``var_p / var_q``), ``w``: the
  whitened mean difference ``L_q⁻¹ (μ_p - μ_q)``. Every log-determinant ratio of the Rényi form
  is a sum over the ``x_i``; the singular values alone (no vectors) keep the gradient finite for
  repeated eigenvalues (e.g. ``Σ_p = Σ_q``).
  """

  def __init__(self, lp, cp: _Cov, lq, cq: _Cov):
    d = lp - lq
    self.diag = cp.diag
    if cp.diag:
      self.x = _common.log_ratio(cp.var, cq.var)
      self.a = jnp.sqrt(cp.var / cq.var)
      self.w = d / jnp.sqrt(cq.var)
    else:
      self.a = cq.solve_tril(cp.tril)
      self.x = 2 * jnp.log(jnp.linalg.svd(self.a, compute_uv=False))
      self.w = cq.solve_tril(d[..., None])[..., 0]

  def maha_mix(self, alpha, h, ok_h):
    """``wᵀ (alpha I + (1 - alpha) A Aᵀ)⁻¹ w`` (``= dᵀ Σ_alpha⁻¹ d``) and whether it is finite.

    ``h``, ``ok_h``: the terms of :func:`_common.gaussian_log_det_term`; ``"diag"`` takes the
    eigenvalues of the mixture from them,
    ``log(alpha + (1 - alpha) r_i) = (1 - alpha) (h_i + x_i)``.
    """
    if self.diag:
      m = jnp.exp((1 - alpha[..., None]) * (jnp.where(ok_h, h, 0.0) + self.x))
      return jnp.sum(self.w * self.w / m, axis=-1), jnp.all(ok_h, axis=-1)
    a = alpha[..., None, None]
    eye = jnp.eye(self.a.shape[-1], dtype=self.a.dtype)
    # A Aᵀ overflows (float32) once p's covariance exceeds q's by ~1e38 in some direction,
    # although the form is finite: above e^40 the mixture is divided by a power of two near
    # A's largest squared singular value (w by its root), exactly, so that only the alpha I
    # part can underflow. Mixed directions (huge and tiny at once) can still fail there.
    top = jax.lax.stop_gradient(jnp.max(self.x, axis=-1))
    root = jnp.where(top > 40, jnp.exp2(jnp.round(0.5 * top / math.log(2))), 1.0)
    root = root.astype(self.a.dtype)[..., None, None]
    a_s = self.a / root
    mix = a / (root * root) * eye + (1 - a) * (a_s @ jnp.swapaxes(a_s, -1, -2))
    # Cholesky fails only when the mixture is not positive definite (alpha > 1 far from q): the
    # failure is detected on a constant copy, and the identity factorised in its place (double
    # where): the derivative of a failed Cholesky is NaN, and a zero cotangent does not cancel.
    ok = _Cov(jax.lax.stop_gradient(mix), "full").valid
    c = _Cov(jnp.where(ok[..., None, None], mix, eye), "full")
    return c.maha(self.w / root[..., 0]), ok & c.valid


def _renyi(rel: _Relative, alpha):
  """``D_alpha = alpha/2 dᵀ Σ_alpha⁻¹ d + 1/2 Σ_i h_i`` (see
  :func:`_common.gaussian_log_det_term`)."""
  h, ok_h = _common.gaussian_log_det_term(alpha[..., None], rel.x)
  maha, ok_m = rel.maha_mix(alpha, h, ok_h)
  out = 0.5 * (alpha * maha + jnp.sum(h, axis=-1))
  return jnp.where(jnp.all(ok_h, axis=-1) & ok_m, out, jnp.inf)


def _renyi_at_one(rel: _Relative):
  """The KL, ``1/2 (Σ_i φ(x_i) + |w|²)``: the ``t = 0`` limit of the same terms."""
  return 0.5 * jnp.sum(_common.expm1_minus_x(rel.x) + rel.w * rel.w, axis=-1)


def _renyi_taylor(rel: _Relative):
  # (dD/dalpha, d²D/dalpha²) at 1 = (Kappa_2 / 2, Kappa_3 / 3) of log p/q under p. With
  # x = mu_p + L_p z, log p/q = z'(M - I)z/2 + b'z + const, M = AᵀA (eigenvalues r_i),
  # b = Aᵀw: Kappa_2 = Σ_i (r_i - 1)²/2 + |b|², Kappa_3 = Σ_i (r_i - 1)³ + 3 (|A b|² - |b|²).
  r_minus_1 = jnp.expm1(rel.x)
  if rel.diag:
    b2 = (rel.a * rel.w) ** 2
    lin2 = jnp.sum(b2, axis=-1)
    lin3 = jnp.sum(r_minus_1 * b2, axis=-1)
  else:
    b = jnp.swapaxes(rel.a, -1, -2) @ rel.w[..., None]
    ab = rel.a @ b
    lin2 = jnp.sum(b * b, axis=(-2, -1))
    lin3 = jnp.sum(ab * ab, axis=(-2, -1)) - lin2
  return (0.25 * jnp.sum(r_minus_1 * r_minus_1, axis=-1) + 0.5 * lin2,
          jnp.sum(r_minus_1 ** 3, axis=-1) / 3 + lin3)


_DOC_ARGS = """
  Args:
    loc_p: mean of p, shape ``[..., d]``.
    cov_p: covariance of p as set by ``covariance``: ``[..., d, d]`` or ``[..., d]``.
    loc_q: mean of q, ``[..., d]``.
    cov_q: covariance of q, same parameterisation. Batch dimensions of all four broadcast.
    covariance: ``"full"``, ``"cholesky"`` or ``"diag"`` (see the module docstring)."""


def mvn_entropy(
    loc: ArrayLike, cov: ArrayLike, *, covariance: str = "full", base: float | None = None,
) -> jax.Array:
  r"""Differential entropy of N(loc, Σ).

  .. math::
    H = \tfrac{d}{2} \log(2 \pi e) + \tfrac12 \log |\Sigma|.

  Args:
    loc: mean, shape ``[..., d]`` (it does not enter; it fixes ``d`` and the batch shape).
    cov: covariance as set by ``covariance``: ``[..., d, d]`` or ``[..., d]`` for ``"diag"``.
    covariance: ``"full"``, ``"cholesky"`` or ``"diag"`` (see the module docstring).
    base: logarithm base of the result (``None``: nats).

  Returns:
    The entropy, the batch shape; NaN where the covariance is not positive definite.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> print(round(float(jp.mvn_entropy(jnp.zeros(2), jnp.eye(2))), 4))
    2.8379

  References:
    Cover & Thomas, Elements of Information Theory, 2nd ed., 2006, Theorem 8.4.1.
  """
  (loc, cov), dtype = _prepare({"loc": loc}, {"cov": cov}, covariance)
  c = _Cov(cov, covariance)
  out = 0.5 * loc.shape[-1] * math.log(2 * math.pi * math.e) + 0.5 * c.logdet
  return _common.finish(out, dtype, base, c.valid)


def mvn_kl_divergence(
    loc_p: ArrayLike, cov_p: ArrayLike, loc_q: ArrayLike, cov_q: ArrayLike,
    *, covariance: str = "full", base: float | None = None,
) -> jax.Array:
  r"""KL(p‖q) between p = N(loc_p, Σ_p) and q = N(loc_q, Σ_q).

  .. math::
    \mathrm{KL}(p \,\|\, q) = \tfrac12 \left( \operatorname{tr}(\Sigma_q^{-1} \Sigma_p)
      + (\mu_q - \mu_p)^\top \Sigma_q^{-1} (\mu_q - \mu_p) - d
      + \log \frac{|\Sigma_q|}{|\Sigma_p|} \right),

  with ``tr(Σ_q⁻¹ Σ_p) = ||L_q⁻¹ L_p||_F²`` (triangular solves).
  {args}
    base: logarithm base of the result (``None``: nats).

  Returns:
    KL(p‖q), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> kl = jp.mvn_kl_divergence(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 2 * jnp.eye(2))
    >>> print(round(float(kl), 4))
    0.6931

  References:
    Kullback, Information Theory and Statistics, 1959; Duchi, Derivations for Linear Algebra
    and Optimization (KL between Gaussians), 2007.
  """
  (lp, lq, cp, cq), dtype = _prepare({"loc_p": loc_p, "loc_q": loc_q},
                                     {"cov_p": cov_p, "cov_q": cov_q}, covariance)
  cp, cq = _Cov(cp, covariance), _Cov(cq, covariance)
  return _common.finish(_kl(lp, cp, lq, cq), dtype, base, cp.valid & cq.valid)


def mvn_renyi_divergence(
    loc_p: ArrayLike, cov_p: ArrayLike, loc_q: ArrayLike, cov_q: ArrayLike,
    *, alpha: ArrayLike, covariance: str = "full", base: float | None = None,
) -> jax.Array:
  r"""Rényi divergence of order ``alpha`` between multivariate Normals, D_alpha(p‖q).

  .. math::
    D_\alpha(p \,\|\, q) = \frac{\alpha}{2} (\mu_p - \mu_q)^\top \Sigma_\alpha^{-1}
      (\mu_p - \mu_q) - \frac{1}{2(\alpha - 1)} \log \frac{|\Sigma_\alpha|}
      {|\Sigma_p|^{1-\alpha} |\Sigma_q|^{\alpha}},
      \qquad \Sigma_\alpha = \alpha \Sigma_q + (1 - \alpha) \Sigma_p,

  ``+inf`` (with a finite gradient) where ``Σ_alpha`` is not positive definite (possible for
  ``alpha > 1``), the exact KL at ``alpha = 1`` and 0 at ``alpha = 0``. The log-determinant
  ratio is a sum over the eigenvalues ``r_i`` of ``Σ_q^{-1/2} Σ_p Σ_q^{-1/2}`` (squared singular
  values of ``L_q⁻¹ L_p``) of terms written with ``expm1``/``log1p`` that need no division by
  ``alpha - 1`` to cancel, so the value and its derivative in ``alpha`` are accurate to rounding
  for ``alpha`` near and at 1, in float32 as in float64.
  {args}
    alpha: order, ``>= 0``, broadcastable with the batch shape.
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_alpha(p‖q), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> d = jp.mvn_renyi_divergence(jnp.zeros(2), jnp.eye(2), jnp.ones(2), jnp.eye(2), alpha=2.0)
    >>> print(round(float(d), 4))
    2.0

  References:
    Gil, Alajaji & Linder, Rényi divergence measures for commonly used univariate continuous
    distributions, 2013; Pardo, Statistical Inference Based on Divergence Measures, 2006.
  """
  _common.check_alpha(alpha)
  (lp, lq, cp, cq, a), dtype = _prepare({"loc_p": loc_p, "loc_q": loc_q},
                                        {"cov_p": cov_p, "cov_q": cov_q}, covariance,
                                        {"alpha": alpha})
  cp, cq = _Cov(cp, covariance), _Cov(cq, covariance)
  rel = _Relative(lp, cp, lq, cq)
  out = _common.alpha_select(alpha, a.dtype, lambda: _renyi_at_one(rel),
                             lambda al: _renyi(rel, a * 0 + al), lambda: _renyi_taylor(rel))
  return _common.finish(out, dtype, base, cp.valid & cq.valid)


def mvn_bhattacharyya_distance(
    loc_p: ArrayLike, cov_p: ArrayLike, loc_q: ArrayLike, cov_q: ArrayLike,
    *, covariance: str = "full", base: float | None = None,
) -> jax.Array:
  r"""Bhattacharyya distance between multivariate Normals.

  .. math::
    D_B = \tfrac18 (\mu_p - \mu_q)^\top \Sigma^{-1} (\mu_p - \mu_q)
      + \tfrac12 \log \frac{|\Sigma|}{\sqrt{|\Sigma_p| |\Sigma_q|}},
      \qquad \Sigma = \tfrac12 (\Sigma_p + \Sigma_q),

  which is ``D_{1/2}(p‖q) / 2``.
  {args}
    base: logarithm base of the result (``None``: nats).

  Returns:
    D_B, the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> d = jp.mvn_bhattacharyya_distance(jnp.zeros(2), jnp.eye(2), jnp.ones(2), jnp.eye(2))
    >>> print(round(float(d), 4))
    0.25

  References:
    Bhattacharyya, On a measure of divergence between two statistical populations, 1943.
  """
  return 0.5 * mvn_renyi_divergence(loc_p, cov_p, loc_q, cov_q, alpha=0.5,
                                    covariance=covariance, base=base)


def mvn_hellinger_distance(
    loc_p: ArrayLike, cov_p: ArrayLike, loc_q: ArrayLike, cov_q: ArrayLike,
    *, covariance: str = "full",
) -> jax.Array:
  r"""Hellinger distance between multivariate Normals, in [0, 1].

  .. math::
    H(p, q) = \sqrt{1 - e^{-D_B(p, q)}}.

  Same normalisation as :func:`jaxdiv.hellinger_distance`; gradient 0 (not NaN) at ``p == q``.
  {args}

  Returns:
    H(p, q), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> h = jp.mvn_hellinger_distance(jnp.zeros(2), jnp.eye(2), jnp.zeros(2), jnp.eye(2))
    >>> print(round(float(h), 4))
    0.0
  """
  db = mvn_bhattacharyya_distance(loc_p, cov_p, loc_q, cov_q, covariance=covariance)
  acc = jnp.promote_types(db.dtype, jnp.float32)
  return _numerics.safe_sqrt(-jnp.expm1(-db.astype(acc))).astype(db.dtype)


def mvn_jeffreys_divergence(
    loc_p: ArrayLike, cov_p: ArrayLike, loc_q: ArrayLike, cov_q: ArrayLike,
    *, covariance: str = "full", base: float | None = None,
) -> jax.Array:
  r"""Jeffreys divergence KL(p‖q) + KL(q‖p) between multivariate Normals.

  .. math::
    J(p, q) = \tfrac12 \left(\operatorname{tr}(\Sigma_q^{-1}\Sigma_p + \Sigma_p^{-1}\Sigma_q)
      - 2d + (\mu_p - \mu_q)^\top (\Sigma_p^{-1} + \Sigma_q^{-1}) (\mu_p - \mu_q)\right).
  {args}
    base: logarithm base of the result (``None``: nats).

  Returns:
    J(p, q), the batch shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> j = jp.mvn_jeffreys_divergence(jnp.zeros(2), jnp.eye(2), jnp.ones(2), jnp.eye(2))
    >>> print(round(float(j), 4))
    2.0

  References:
    Jeffreys, An invariant form for the prior probability in estimation problems, 1946.
  """
  return (mvn_kl_divergence(loc_p, cov_p, loc_q, cov_q, covariance=covariance, base=base)
          + mvn_kl_divergence(loc_q, cov_q, loc_p, cov_p, covariance=covariance, base=base))


def mvn_wasserstein_distance(
    loc_p: ArrayLike, cov_p: ArrayLike, loc_q: ArrayLike, cov_q: ArrayLike,
    *, covariance: str = "full",
) -> jax.Array:
  r"""2-Wasserstein distance between multivariate Normals (Bures form).

  .. math::
    W_2^2(p, q) = \|\mu_p - \mu_q\|^2 + \operatorname{tr}\Sigma_p + \operatorname{tr}\Sigma_q
      - 2 \operatorname{tr}\left(\Sigma_q^{1/2} \Sigma_p \Sigma_q^{1/2}\right)^{1/2}.

  The last trace is the nuclear norm of ``L_pᵀ L_q`` (the sum of its singular values, which are
  the square roots of the eigenvalues of ``Σ_p Σ_q``), so no matrix square root is formed and
  the gradient is finite for repeated eigenvalues (e.g. ``Σ_p = Σ_q = I``). With ``"diag"`` it
  is ``||μ_p - μ_q||² + Σ_i (σ_p,i - σ_q,i)²``. Square the result for ``W_2²``.
  {args}

  Returns:
    W_2(p, q), the batch shape; gradient 0 (a subgradient) at ``p == q``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.parametric as jp
    >>> w = jp.mvn_wasserstein_distance(jnp.zeros(2), jnp.eye(2), jnp.ones(2), 4 * jnp.eye(2))
    >>> print(round(float(w), 4))
    2.0

  References:
    Dowson & Landau, The Fréchet distance between multivariate normal distributions, 1982;
    Bhatia, Jain & Lim, On the Bures–Wasserstein distance between positive definite matrices,
    2019.
  """
  (lp, lq, cp, cq), dtype = _prepare({"loc_p": loc_p, "loc_q": loc_q},
                                     {"cov_p": cov_p, "cov_q": cov_q}, covariance)
  cp, cq = _Cov(cp, covariance), _Cov(cq, covariance)
  d = lp - lq
  if covariance == "diag":
    s = jnp.sqrt(cp.var) - jnp.sqrt(cq.var)
    w2 = jnp.sum(d * d + s * s, axis=-1)
  else:
    nuclear = jnp.sum(jnp.linalg.svd(jnp.swapaxes(cp.tril, -1, -2) @ cq.tril,
                                     compute_uv=False), axis=-1)
    tr = jnp.sum(cp.tril * cp.tril, axis=(-2, -1)) + jnp.sum(cq.tril * cq.tril, axis=(-2, -1))
    # Rounding can make the Bures term slightly negative when Σ_p ≈ Σ_q.
    w2 = jnp.sum(d * d, axis=-1) + jnp.maximum(tr - 2 * nuclear, 0.0)
  return _common.finish(_numerics.safe_sqrt(w2), dtype, None, cp.valid & cq.valid)


for _fn in (mvn_kl_divergence, mvn_renyi_divergence, mvn_bhattacharyya_distance,
            mvn_hellinger_distance, mvn_jeffreys_divergence, mvn_wasserstein_distance):
  _fn.__doc__ = _fn.__doc__.replace("{args}", _DOC_ARGS)

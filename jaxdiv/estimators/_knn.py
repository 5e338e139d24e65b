"""k-nearest-neighbour estimators of entropy and KL divergence, blocked over query rows."""

from __future__ import annotations

import functools
import math

import jax
import jax.numpy as jnp
from jax import lax
from jax.scipy.special import digamma
from jax.typing import ArrayLike

from jaxdiv import _validation
from jaxdiv.estimators import _blocking

# Up to this dimension the distances are formed as sums of squared differences (exact to
# rounding, O(B m d) work like the matmul); above it the Gram expansion picks candidates.
_EXACT_DIM = 8
# Extra Gram-expansion candidates re-ranked by their exact distance (dimension > _EXACT_DIM).
_EXTRA_CANDIDATES = 16


# Jitted, so that an eager call compiles once per shape: the loop built from closures here was
# compiled again on every call (`knn_entropy` of 256 samples: 330 ms a call).
@functools.partial(jax.jit, static_argnames=("k", "block_size", "exclude_self"))
def _kth_neighbour_distance(queries, points, k, block_size, exclude_self):
  """Distance from each query to its k-th nearest point (excluding itself when asked).

  Trap avoided: the Gram expansion ``|q|² + |p|² - 2 q·p`` rounds at the scale of the norms,
  not of the distances; in float32 on 1-D samples 5.7% of the points got the wrong k-th
  neighbour (a biased estimate). In low dimension the distances are computed from the
  differences directly; in high dimension (where the expansion's matmul pays) the expansion
  only proposes ``k + 16`` candidates, which are re-ranked by their exact distance.
  """
  m, d = points.shape
  k_top = k if d <= _EXACT_DIM else min(k + _EXTRA_CANDIDATES, m)

  def rows(qb, idx, valid):
    if d <= _EXACT_DIM:
      diff = qb[:, None, :] - points[None, :, :]
      sq = jnp.sum(diff * diff, axis=-1)
    else:
      sq = _blocking.sq_distances(qb, points)
    if exclude_self:
      sq = jnp.where(idx[:, None] == jnp.arange(m)[None, :], jnp.inf, sq)
    _, nn = lax.top_k(-sq, k_top)
    diff = qb[:, None, :] - points[nn]
    exact = jnp.sum(diff * diff, axis=-1)
    if exclude_self:
      exact = jnp.where(nn == idx[:, None], jnp.inf, exact)
    kth = -lax.top_k(-exact, k)[0][:, k - 1]
    return jnp.sqrt(kth)

  return _blocking.map_row_blocks(rows, queries, block_size)


def _check_k(k, n, name):
  if not isinstance(k, int) or isinstance(k, bool) or k < 1:
    raise ValueError(f"`k` must be a positive int; got {k!r}.")
  if k > n:
    raise ValueError(f"`k={k}` exceeds the number of available neighbours in `{name}` ({n}).")


def _log_unit_ball_volume(d):
  return 0.5 * d * math.log(math.pi) - math.lgamma(0.5 * d + 1)


def knn_entropy(x: ArrayLike, *, k: int = 1, block_size: int = 1024) -> jax.Array:
  r"""Kozachenko–Leonenko k-nearest-neighbour estimate of differential entropy (nats).

  .. math::
    \hat H = \psi(n) - \psi(k) + \log V_d + \frac{d}{n} \sum_{i=1}^n \log \rho_k(i),

  with ``rho_k(i)`` the distance from ``x_i`` to its k-th nearest neighbour among the other
  samples and ``V_d = pi^{d/2} / Gamma(d/2 + 1)`` the unit-ball volume. Consistent and
  asymptotically unbiased (not unbiased at finite ``n``; the bias grows with ``d``). Query rows
  are processed ``block_size`` at a time: memory ``O(block_size * n)``, so a 100k x 100k
  distance matrix never exists. Duplicate samples give ``rho = 0`` and ``-inf``.

  Args:
    x: samples ``[n, d]`` (or ``[n]``), ``n > k``.
    k: neighbour order.
    block_size: query rows per block.

  Returns:
    The scalar entropy estimate.

  Example:
    >>> import jax, jaxdiv.estimators as je
    >>> x = jax.random.normal(jax.random.key(0), (4000, 1))
    >>> print(round(float(je.knn_entropy(x, k=3)), 1))  # true: 1.4189
    1.4

  References:
    Kozachenko & Leonenko, Sample estimate of the entropy of a random vector, 1987;
    Kraskov, Stögbauer & Grassberger, Estimating mutual information, 2004.
  """
  x = _blocking.as_samples(x, "x")
  _blocking.check_block_size(block_size)
  n, d = x.shape
  _check_k(k, n - 1, "x")
  dtype, acc = _validation.compute_dtype(x)
  x = x.astype(acc)
  x = x - lax.stop_gradient(jnp.mean(x, axis=0))
  rho = _kth_neighbour_distance(x, x, k, block_size, exclude_self=True)
  out = (digamma(jnp.asarray(n, acc)) - digamma(jnp.asarray(k, acc))
         + _log_unit_ball_volume(d) + d * jnp.mean(jnp.log(rho)))
  return out.astype(dtype)


def knn_kl_divergence(
    x: ArrayLike, y: ArrayLike, *, k: int = 1, block_size: int = 1024,
) -> jax.Array:
  r"""Wang–Kulkarni–Verdú k-nearest-neighbour estimate of KL(P‖Q) (nats).

  .. math::
    \widehat{\mathrm{KL}}(P \,\|\, Q) = \frac{d}{n} \sum_{i=1}^n \log\frac{\nu_k(i)}{\rho_k(i)}
      + \log\frac{m}{n - 1},

  with ``x_i ~ P`` (``n`` samples), ``y_j ~ Q`` (``m`` samples), ``rho_k(i)`` the distance
  from ``x_i`` to its k-th nearest neighbour in ``x`` (itself excluded) and ``nu_k(i)`` to its
  k-th nearest neighbour in ``y``. Consistent (asymptotically unbiased), not unbiased at finite
  sample sizes; it can be negative. Blocked over query rows like :func:`knn_entropy`.

  Args:
    x: samples from P, ``[n, d]`` (or ``[n]``).
    y: samples from Q, ``[m, d]``.
    k: neighbour order.
    block_size: query rows per block.

  Returns:
    The scalar KL estimate.

  Example:
    >>> import jax, jaxdiv.estimators as je
    >>> x = jax.random.normal(jax.random.key(0), (4000, 1))
    >>> y = jax.random.normal(jax.random.key(1), (4000, 1)) + 1.0
    >>> print(round(float(je.knn_kl_divergence(x, y, k=5)), 1))  # true: 0.5
    0.5

  References:
    Wang, Kulkarni & Verdú, Divergence estimation for multidimensional densities via
    k-nearest-neighbor distances, IEEE Trans. Inf. Theory, 2009.
  """
  x = _blocking.as_samples(x, "x")
  y = _blocking.as_samples(y, "y")
  _blocking.check_dims(x, y)
  _blocking.check_block_size(block_size)
  n, d = x.shape
  m = y.shape[0]
  _check_k(k, n - 1, "x")
  _check_k(k, m, "y")
  dtype, acc = _validation.compute_dtype(x, y)
  x, y = x.astype(acc), y.astype(acc)
  c = lax.stop_gradient(jnp.mean(jnp.concatenate([x, y]), axis=0))
  x, y = x - c, y - c
  rho = _kth_neighbour_distance(x, x, k, block_size, exclude_self=True)
  nu = _kth_neighbour_distance(x, y, k, block_size, exclude_self=False)
  out = d * jnp.mean(jnp.log(nu) - jnp.log(rho)) + math.log(m / (n - 1))
  return out.astype(dtype)

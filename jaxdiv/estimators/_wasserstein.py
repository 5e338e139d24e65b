"""Sliced Wasserstein distance between two (weighted) sample sets."""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax.typing import ArrayLike

from jaxdiv import _validation
from jaxdiv.estimators import _blocking


def _weights(w, n, name, acc):
  if w is None:
    return jnp.full((n,), 1.0 / n, acc)
  w = _validation.as_float_array(w, name).astype(acc)
  if w.shape != (n,):
    raise ValueError(f"`{name}` must have shape ({n},) (one weight per sample); got {w.shape}.")
  return w / jnp.sum(w)


def wasserstein_1d(u, v, a, b, p):
  """``W_p^p`` between weighted 1-D empirical laws via their quantile functions."""
  iu, iv = jnp.argsort(u), jnp.argsort(v)
  u, a, v, b = u[iu], a[iu], v[iv], b[iv]
  cu, cv = jnp.cumsum(a), jnp.cumsum(b)
  qs = jnp.sort(jnp.concatenate([cu, cv]))
  ju = jnp.clip(jnp.searchsorted(cu, qs), 0, u.shape[0] - 1)
  jv = jnp.clip(jnp.searchsorted(cv, qs), 0, v.shape[0] - 1)
  dq = jnp.diff(qs, prepend=0.0)
  return jnp.sum(dq * jnp.abs(u[ju] - v[jv]) ** p)


def sliced_wasserstein_distance(
    x: ArrayLike, y: ArrayLike, *, key: jax.Array, num_projections: int = 128, p: float = 2,
    a: ArrayLike | None = None, b: ArrayLike | None = None,
) -> jax.Array:
  r"""Sliced p-Wasserstein distance between two weighted sample sets.

  .. math::
    \mathrm{SW}_p(P, Q) = \left(\mathbb{E}_{\theta \sim \mathcal{U}(S^{d-1})}
      W_p^p(\theta_\# P, \theta_\# Q)\right)^{1/p},

  with the expectation over ``num_projections`` random directions and each 1-D ``W_p^p``
  exact (sorted quantile functions, ``O((n + m) log(n + m))``). Sample sets of different sizes
  and weights are allowed. The plug-in estimate is biased upward for finite samples (the
  empirical laws differ even when P = Q); it converges at rate ``n^{-1/2}`` in ``SW_2²``.

  Args:
    x: samples from P, ``[n, d]`` (or ``[n]``).
    y: samples from Q, ``[m, d]``.
    key: PRNG key for the projections.
    num_projections: number of random directions.
    p: order ``>= 1``.
    a: weights of ``x`` (``[n]``, normalised here); ``None``: uniform.
    b: weights of ``y`` (``[m]``); ``None``: uniform.

  Returns:
    The scalar estimate of ``SW_p`` (in the units of the samples).

  Example:
    >>> import jax, jax.numpy as jnp, jaxdiv.estimators as je
    >>> x = jnp.array([[0.0], [1.0]]); y = x + 2.0
    >>> print(round(float(je.sliced_wasserstein_distance(x, y, key=jax.random.key(0))), 4))
    2.0

  References:
    Bonneel, Rabin, Peyré & Pfister, Sliced and Radon Wasserstein barycenters of measures,
    2015; Nadjahi et al., Statistical and topological properties of sliced probability
    divergences, 2020.
  """
  x = _blocking.as_samples(x, "x")
  y = _blocking.as_samples(y, "y")
  _blocking.check_dims(x, y)
  _validation.check_real(p, "p", lo=1)
  if not isinstance(num_projections, int) or num_projections < 1:
    raise ValueError(f"`num_projections` must be a positive int; got {num_projections!r}.")
  dtype, acc = _validation.compute_dtype(x, y)
  x, y = x.astype(acc), y.astype(acc)
  a = _weights(a, x.shape[0], "a", acc)
  b = _weights(b, y.shape[0], "b", acc)
  theta = jax.random.normal(key, (x.shape[1], num_projections), acc)
  theta = theta / jnp.linalg.norm(theta, axis=0, keepdims=True)
  px, py = x @ theta, y @ theta
  w = jax.vmap(wasserstein_1d, in_axes=(1, 1, None, None, None))(px, py, a, b, p)
  return (jnp.mean(w) ** (1 / p)).astype(dtype)

"""Cross-entropy with integer labels in plain jnp: the statement of the maths.

Every other implementation is tested against it, and it runs what the kernels do not take:
class weights, a per-class mask, a vocabulary split over a mesh axis, traced hyperparameters
and float64 logits (`api.integer_cross_entropy` routes them here). Gradients are autodiff's.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv import _validation


def cross_entropy(logits: jax.Array, labels: jax.Array, valid: jax.Array, *,
                  label_smoothing=0.0, z_loss=0.0, weights: jax.Array | None = None,
                  where: jax.Array | None = None, axis_name: str | None = None) -> jax.Array:
  r"""Per-token cross-entropy of `logits` [tokens, vocab] against integer `labels`.

  .. math::
    \ell = (1 - \varepsilon)\, w_y (\mathrm{lse} - z_y)
      + \frac{\varepsilon}{C} \sum_j w_j (\mathrm{lse} - z_j) + \lambda\, \mathrm{lse}^2

  over the ``C`` classes that ``where`` keeps (all by default), ``w = 1`` without weights.

  Args:
    logits: [tokens, vocab], any float dtype, computed in at least float32. With
      `axis_name`, this shard's columns: classes ``[i V, (i + 1) V)`` on shard ``i``.
    labels: [tokens] int, global class indices, read only where `valid`; a label outside
      ``[0, num_classes)`` gives NaN.
    valid: [tokens] bool: False gives 0 and no gradient.
    label_smoothing: :math:`\varepsilon \in [0, 1]`, a number or a (traced) scalar.
    z_loss: :math:`\lambda \ge 0`, a number or a (traced) scalar.
    weights: None or [vocab] per-class weights (this shard's with `axis_name`).
    where: None or [tokens, vocab] bool, the classes in the softmax; a token with none left
      gives 0.
    axis_name: inside ``shard_map``, the mesh axis over which the vocabulary is split.

  Returns:
    [tokens] loss in the compute dtype (float32, or float64 for float64 logits). A token whose
    logits are all ``-inf`` gives ``+inf`` with a zero gradient.
  """
  z = logits.astype(jnp.promote_types(logits.dtype, jnp.float32))
  psum = lambda v: _numerics.psum(v, axis_name)
  # A row whose normaliser is NaN or +inf (a NaN or +inf logit) is a constant: its logits'
  # tangents are zeroed (the transpose selects 0 over the 0 * NaN that a zero cotangent meets
  # in its softmax), and its terms are 0 before the hyperparameters scale them, so that
  # d/d(label_smoothing), d/d(z_loss) and d/d(weights) are finite.
  lost = _numerics.lost_rows(lax.stop_gradient(
      _numerics.logsumexp(z, axis=-1, where=where, axis_name=axis_name)))
  z = _fallback.tangent_if(jnp.logical_not(lost)[:, None], z)
  lse = _numerics.logsumexp(z, axis=-1, where=where, axis_name=axis_name)
  ok = jnp.isfinite(lse)
  lse_s = jnp.where(ok, lse, 0)
  safe_labels = jnp.where(valid, labels, 0)
  nll = jnp.where(lost, 0, lse_s - _take_class(z, safe_labels, axis_name))
  # An infinite partial (a term of +inf: the label, or under label smoothing any class, on a
  # -inf logit) in a weight or the label smoothing is taken as 0, as the soft targets' fast
  # path takes it: the zero cotangent of a row summed away met it as 0 * inf = NaN.
  finite = lambda term, x: _fallback.tangent_if(
      lax.stop_gradient(jnp.isfinite(term)), jnp.broadcast_to(x, term.shape))
  if weights is not None:
    w = finite(nll, _take_class(weights.astype(z.dtype), safe_labels, axis_name))
    nll = _numerics.mul_log(w, nll)
  if _validation.is_static_zero(label_smoothing):
    out = nll
  else:
    log_q = jnp.where(ok[:, None], z - lse_s[:, None], -jnp.inf)
    if where is None:
      u = jnp.full_like(z, 1.0 / psum(z.shape[-1]))
    else:
      log_q = jnp.where(where, log_q, -jnp.inf)
      count = psum(jnp.sum(where, axis=-1, keepdims=True).astype(z.dtype))
      u = jnp.where(where, 1 / jnp.where(count > 0, count, 1), 0)
    if weights is not None:
      u = finite(log_q, u * weights.astype(z.dtype))
    smooth = jnp.where(lost, 0, -psum(jnp.sum(_numerics.mul_log(u, log_q), axis=-1)))
    # `mul_log`: a zero coefficient switches its term off, also where the term is infinite.
    out = (_numerics.mul_log(1 - finite(nll, label_smoothing), nll)
           + _numerics.mul_log(finite(smooth, label_smoothing), smooth))
  if not _validation.is_static_zero(z_loss):
    out = out + jnp.where(ok, z_loss * jnp.square(lse_s), 0)
  # No finite normaliser: all logits -inf (+inf), all masked (0, below); NaN stays NaN.
  # (held constant: in forward mode a lost row's lse carries 0 * NaN from its softmax)
  out = jnp.where(ok, out, lax.stop_gradient(jnp.where(lse == -jnp.inf, jnp.inf, lse)))
  if where is not None:
    out = jnp.where(psum(jnp.any(where, axis=-1).astype(jnp.int32)) > 0, out, 0)
  return jnp.where(valid, out, 0)


def _take_class(table, labels, axis_name):
  """`table[..., label]` for global labels; with `axis_name` the last axis is this shard's
  slice of the classes, and the owning shard's value is summed to every shard. Out-of-range
  labels read NaN, as optax: invalid data is not silently 0."""
  if axis_name is None:
    if table.ndim == 1:
      return jnp.take(table, labels, mode="fill")
    return jnp.take_along_axis(table, labels[..., None], axis=-1, mode="fill")[..., 0]
  v_local = table.shape[-1]
  local = labels - lax.axis_index(axis_name) * v_local
  mine = (local >= 0) & (local < v_local)
  local = jnp.where(mine, local, 0)
  if table.ndim == 1:
    got = jnp.take(table, local)
  else:
    got = jnp.take_along_axis(table, local[..., None], axis=-1)[..., 0]
  total = _numerics.psum(jnp.where(mine, got, 0), axis_name)
  n_classes = v_local * _numerics.psum(1, axis_name)
  return jnp.where((labels >= 0) & (labels < n_classes), total, jnp.nan)

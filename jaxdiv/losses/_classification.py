"""Classification losses on logits: optax's names, order and values, NaN-free, with more options.

Each function computes the same quantity as its namesake in ``optax.losses`` (same argument
order, defaults, ``axis`` and ``where`` rules), built from the log-space primitives of
:mod:`jaxdiv._numerics` instead of ``jax.nn.log_softmax``: ``0 * log 0`` is 0 in value and
gradient, and a row with nothing left after masking is 0. The keyword-only options after
optax's arguments (label smoothing, ``ignore_index``, class weights, z-loss) are jaxdiv's.
The integer-label loss is :mod:`jaxdiv.kernels`' (one implementation of its maths, one
meaning of ``implementation=None``); this module adds optax's ``axis`` and ``where`` rules.
"""

from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax
from jax.typing import ArrayLike

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv import _unit_axes
from jaxdiv import _validation
from jaxdiv.kernels.cross_entropy import api as ce_api
from jaxdiv.losses import _common


def _scaled(c, x):
  """`c * x` with `0 * x = 0` also for an infinite `x` (a zero weight switches a term off).

  The derivative with respect to `c` stays `x` at `c = 0` where `x` is finite (a weight
  differentiated at 0, such as label smoothing or the focal `alpha`, has that slope).
  """
  return _numerics.mul_log(c, x)


def _class_weights(weights, class_shape, ndim, ax, dtype):
  """Validates per-class weights (shape of the class axes) and shapes them to broadcast."""
  w = _validation.as_float_array(weights, "weights").astype(dtype)
  if w.shape != tuple(class_shape):
    raise ValueError(
        f"`weights` must hold one weight per class, shape {tuple(class_shape)} (the logits'"
        f" axis {ax}); got shape {w.shape}."
    )
  return w


def _ignore_index(ignore_index):
  if ignore_index is None:
    return None
  if isinstance(ignore_index, bool) or not isinstance(ignore_index, int):
    raise TypeError(f"`ignore_index` must be None or a Python int; got {ignore_index!r}.")
  return ignore_index


def _check_options(label_smoothing, z_loss):
  _common.check_coefficient(label_smoothing, "label_smoothing", hi=1)
  _common.check_coefficient(z_loss, "z_loss")


def _z_term(z_loss, lse):
  """PaLM's auxiliary z-loss, `z_loss * logsumexp(logits)**2`, on rows with a finite normaliser."""
  ok = jnp.isfinite(lse)
  return jnp.where(ok, z_loss * jnp.square(jnp.where(ok, lse, 0)), 0)


def _prepare_dense(logits, labels, axis, where):
  """Validates logits and probability targets, broadcasts them and raises them to the compute
  dtype; returns (x, y, shape, axes, mask, result dtype, compute dtype)."""
  logits = _validation.as_float_array(logits, "logits")
  labels = _validation.as_float_array(labels, "labels")
  shape = _common.broadcast_shapes(logits, labels, ("logits", "labels"))
  if not shape:
    raise ValueError("`logits` must have at least one (class) dimension; got a scalar.")
  ax = _common.axes(axis, len(shape))
  full = (1,) * (len(shape) - logits.ndim) + logits.shape
  for a in ax:
    if full[a] != shape[a] and shape[a] > 1:  # broadcast to no classes: empty rows, as optax
      raise ValueError(
          f"`logits` would be broadcast along class axis {a - len(shape)} (size {full[a]}) to"
          f" the labels' {shape[a]} classes: shapes {logits.shape} and {labels.shape}. A softmax"
          " over copies of one logit means nothing (optax takes it over the one entry); give"
          " the logits every class.")
  result_dtype, acc = _validation.compute_dtype(logits, labels)
  x = jnp.broadcast_to(logits, shape).astype(acc)
  y = jnp.broadcast_to(labels, shape).astype(acc)
  return x, y, shape, ax, _common.expand_where(where, shape, ax), result_dtype, acc


def _dense_cross_entropy(logits, labels, ax, mask, *, weights=None, label_smoothing=0.0,
                         z_loss=0.0, axis_name=None):
  """`-sum_j w_j y_j log softmax(logits)_j` over `ax` (+ z-loss), inputs in the compute dtype.

  With `axis_name`, the class axes are the local shard of classes split over that mesh axis.
  """
  psum = lambda v: _numerics.psum(v, axis_name)
  # A row whose normaliser is NaN or +inf (a NaN or +inf logit), or whose targets hold a NaN or
  # an infinity, is NaN and a constant: its tangents are zeroed (`tangent_if`, whose transpose
  # selects 0 over the 0 * NaN that a zero cotangent meets in its softmax and log-softmax), and
  # its non-finite targets count as 0 inside (the row's value is set to NaN at the end), so that
  # the derivatives in `label_smoothing`, `z_loss` and `weights` stay finite. The normaliser is
  # the log-softmax's own (the same operations on the same values: one computation under jit).
  lse = lax.stop_gradient(_numerics.logsumexp(
      logits if mask is None else jnp.where(mask, logits, -jnp.inf), axis=ax, keepdims=True,
      axis_name=axis_name))
  finite_y = jnp.abs(labels) < jnp.inf
  if mask is not None:  # a masked class's target is not read
    finite_y = finite_y | jnp.logical_not(mask)
  lost = _numerics.lost_rows(lse) | jnp.logical_not(
      psum(jnp.all(finite_y, axis=ax, keepdims=True).astype(jnp.int32)) == psum(1))
  keep = jnp.logical_not(lost)
  logits = _fallback.tangent_if(keep, logits)
  labels = jnp.where(finite_y, labels, 0)
  log_p = _numerics.log_softmax(logits, axis=ax, where=mask, axis_name=axis_name)
  y = labels if mask is None else jnp.where(mask, labels, 0)
  if not _common.is_static_zero(label_smoothing):
    if mask is None:
      n = 1
      for a in ax:
        n *= logits.shape[a]
      n = psum(n)
      uniform = jnp.full_like(y, 1.0 / n)
    else:
      count = psum(jnp.sum(mask, axis=ax, keepdims=True).astype(y.dtype))
      uniform = jnp.where(mask, 1 / jnp.where(count > 0, count, 1), 0)
    y = (1 - label_smoothing) * y + label_smoothing * uniform
  if weights is not None:
    y = y * weights
  # A target above 0 on a -inf log-probability (the row is +inf) has an infinite partial,
  # taken as 0 as on the fast path (`finite_coefs`): the zero cotangent of a row summed away
  # met it as 0 * inf = NaN, in the target and in a shared label smoothing or weight.
  y = _fallback.tangent_if(keep & (lax.stop_gradient(log_p) > -jnp.inf), y)
  out = -psum(jnp.sum(_numerics.mul_log(y, log_p), axis=ax))
  if not _common.is_static_zero(z_loss):
    lse = _numerics.logsumexp(logits, axis=ax, where=mask, axis_name=axis_name)
    out = out + _z_term(z_loss, lse)
  out = jnp.where(jnp.squeeze(lost, ax), jnp.nan, out)
  if mask is not None:
    out = jnp.where(psum(jnp.any(mask, axis=ax).astype(jnp.int32)) > 0, out, 0)
  return out


def _soft_cross_entropy_fast(x, y, axis: int, epsilon=None):
  """optax's line, `-sum(y * log_softmax(x))`, on the rows where it is finite;
  `_dense_cross_entropy`'s guarded terms on the rows where it is not (a zero target on a
  `-inf` logit: 0 * inf there; a NaN or `+inf` logit; a row of `-inf`).

  With `epsilon` (the row parameter of `poly_loss_cross_entropy`, keepdims along `axis`), the
  poly-1 loss, `+ epsilon * sum(y * (1 - softmax(x)))`, in the same one sum and one closed-form
  derivative (the cross-entropy and a custom-derivative softmax added up, and their
  derivatives, took 1.76x optax's forward+VJP at 4096x4096; one sum, 1.06x).

  The derivative is the closed form, `softmax(x) sum(y) - y` in the logits and
  `-log_softmax(x)` in the targets (0 where a zero target meets a `-inf` log-probability, as
  `mul_log`'s), computed only for the inputs being differentiated; with `epsilon`, plus
  `-epsilon q (y - sum(y q))` in the logits, `epsilon (1 - q)` in the targets and
  `sum(y (1 - q))` in `epsilon` (q the softmax). It is the guarded path's on every row whose
  value is finite: a `-inf` logit has probability 0, and a row without a finite normaliser
  (every logit `-inf`) has log-probabilities `-inf`, so probabilities 0. A row whose value is
  NaN (a NaN or `+inf` logit, a NaN or infinite target) has NaN coefficients, taken as 0
  (`finite_coefs`): it is a constant. The logits' derivative has no select (`_row_exp`); the
  targets' guards act on row statistics.

  The entry guards kept XLA:CPU from compiling the sum as one loop: 2.7x optax's forward time
  and 1.8x its value+grad at 4096x4096 (`python bench/losses.py --cases
  softmax_cross_entropy`); a `with_fallback` derivative (its coefficients inside a `cond`)
  measured 1.7x; the normaliser shared with the value instead of recomputed, no faster."""

  def unguarded(x, y, *eps):
    # `_fallback.log_softmax`: jax.nn's, or below 4096 rows the same operations arranged so
    # that XLA:CPU does not write the shifted logits out (see `_fallback.shift_and_sum`).
    log_p = _fallback.log_softmax(x, axis)
    if not eps:
      return -jnp.sum(y * log_p, axis=axis)
    return jnp.sum(y * (eps[0] * (1 - jnp.exp(log_p)) - log_p), axis=axis)

  def careful(x, y, *eps):
    ce = _dense_cross_entropy(x, y, (axis,), None)
    if not eps:
      return ce
    q = jnp.exp(_numerics.log_softmax(x, axis=axis))
    return ce + jnp.squeeze(eps[0], axis) * jnp.sum(y * (1 - q), axis=axis)

  def coefs(need, x, y, *eps):
    poly = bool(eps)
    d_x = d_y = d_eps = None
    y_sum = jnp.sum(y, axis=axis, keepdims=True)  # (traced where a coefficient reads it)
    if need[0] or (poly and need[2]):
      if poly:
        e, total, y_e = _row_exp(x, axis, y)
        q = e / total
        y_q = y_e / total
        d_x = q * (y_sum - eps[0] * (y - y_q)) - y
        d_eps = y_sum - y_q
      else:
        e, total = _row_exp(x, axis)
        d_x = e * (y_sum / total) - y
    if need[1]:
      log_p = x - _row_log_normaliser(x, axis)  # -inf on a row without a finite normaliser
      d_y = -jnp.where((y != 0) | (log_p > -jnp.inf), log_p, 0)
      if poly:
        d_y = d_y + eps[0] * (1 - jnp.exp(log_p))
      # NaN on a row whose targets hold a NaN or an infinity (taken as 0: the row is a
      # constant); the partials in the targets do not read them otherwise.
      d_y = d_y + 0 * y_sum
    return (d_x, d_y) + ((d_eps,) if poly else ())

  xs = (x, y) if epsilon is None else (x, y, epsilon)
  return _fallback.finite_rows_with_coefs(unguarded, careful, coefs, *xs, axis=axis)


@_unit_axes.dropped(dists=("logits", "labels"), where_by_rank=True, keep=("weights",))
def softmax_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
    *,
    label_smoothing: ArrayLike = 0.0,
    ignore_index: int | None = None,
    weights: ArrayLike | None = None,
    z_loss: ArrayLike = 0.0,
    axis_name: str | None = None,
) -> jax.Array:
  r"""Softmax cross-entropy between logits and target distributions (optax's, NaN-free).

  With :math:`\log q = \mathrm{log\_softmax}(x)` over ``axis`` and targets :math:`y`,

  .. math::
    \ell(x, y) = -\sum_j w_j\, \tilde y_j \log q_j + z\, \Big(\log \sum_j e^{x_j}\Big)^2,
    \qquad \tilde y = (1 - \varepsilon)\, y + \varepsilon / C,

  which is the cross-entropy H(y, q) = H(y) + KL(y‖q) for :math:`w = 1, \varepsilon = z = 0`
  (optax's loss). Unlike optax, a zero target on a ``-inf`` logit contributes 0 (not NaN) in
  value and gradient, and a row with every entry masked is 0 with a zero gradient.

  Args:
    logits: unnormalised log-probabilities, shape ``[..., num_classes]``.
    labels: target probabilities (e.g. one-hot), broadcastable with ``logits``; the logits
      have every class (a softmax over copies of a broadcast logit is refused).
    axis: the class axis or axes (optax's convention; ``None``: every axis).
    where: mask of the classes to include, the logits' shape, or per example (the batch shape,
      expanded over ``axis`` as optax does). Masked classes leave the softmax.
    label_smoothing: :math:`\varepsilon \in [0, 1]`; mixes the targets with the uniform
      distribution over the (unmasked) classes, as ``torch.nn.CrossEntropyLoss``.
    ignore_index: examples whose target's largest entry is class ``ignore_index`` (the
      one-hot encoding of a padding token), or whose target is all zero (``jax.nn.one_hot`` of
      an out-of-range index such as -100), give 0 and no gradient, z-loss included: with
      one-hot targets, exactly the integer-label behaviour.
    weights: per-class weights :math:`w`, shape of the class axes (``[num_classes]``),
      multiplying each class's term (torch's ``weight`` for probability targets).
    z_loss: coefficient :math:`z \ge 0` of the squared log-normaliser (PaLM's z-loss).
    axis_name: inside ``shard_map``, the mesh axis over which the class axis is split (a
      vocabulary sharded across devices, as Megatron's vocab-parallel cross-entropy): the
      normaliser and sums are reduced across it; values and gradients equal the unsharded ones.
      ``weights`` are then this shard's; ``ignore_index`` is not supported with it.

  Returns:
    The per-example loss, the broadcast shape without ``axis``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([[1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])
    >>> loss = jaxdiv.losses.softmax_cross_entropy(logits, labels)
    >>> print([round(float(v), 4) for v in loss])
    [0.2761, 2.9518]

  References:
    Szegedy et al., Rethinking the Inception Architecture for Computer Vision, 2016 (label
    smoothing); Chowdhery et al., PaLM: Scaling Language Modeling with Pathways, 2022 (z-loss).
  """
  ignore_index = _ignore_index(ignore_index)
  _check_options(label_smoothing, z_loss)
  x, y, shape, ax, mask, result_dtype, acc = _prepare_dense(logits, labels, axis, where)
  w = None
  if weights is not None:
    class_shape = [shape[a] for a in ax]
    w = _class_weights(weights, class_shape, len(shape), ax, acc)
    w = jnp.reshape(w, [shape[i] if i in ax else 1 for i in range(len(shape))])
  if ignore_index is not None and axis_name is not None:
    raise ValueError("`ignore_index` with `axis_name` is not supported for probability targets:"
                     " the arg-max of a sharded target is not local; mask with `where`.")
  plain = (mask is None and w is None and axis_name is None and len(ax) == 1
           and _common.is_static_zero(label_smoothing) and _common.is_static_zero(z_loss))
  if plain:
    out = _soft_cross_entropy_fast(x, y, ax[0])
  else:
    out = _dense_cross_entropy(x, y, ax, mask, weights=w, label_smoothing=label_smoothing,
                               z_loss=z_loss, axis_name=axis_name)
  if ignore_index is not None:
    flat = jnp.moveaxis(y, ax, range(len(shape) - len(ax), len(shape)))
    flat = flat.reshape(flat.shape[:len(shape) - len(ax)] + (-1,))
    ignored = (jnp.argmax(flat, axis=-1) == ignore_index) | jnp.all(flat == 0, axis=-1)
    out = jnp.where(ignored, 0, out)
  return out.astype(result_dtype)


def safe_softmax_cross_entropy(logits: ArrayLike, labels: ArrayLike, *,
                               axis_name: str | None = None) -> jax.Array:
  r"""Softmax cross-entropy with ``0 * log 0 = 0`` (optax's ``safe_softmax_cross_entropy``).

  .. math::
    \ell(x, y) = -\sum_j y_j \log \mathrm{softmax}(x)_j, \qquad 0 \cdot \log 0 = 0,

  over the last axis. In jaxdiv every cross-entropy has this convention, so this is
  :func:`softmax_cross_entropy` on the last axis.

  Args:
    logits: unnormalised log-probabilities, shape ``[..., num_classes]``.
    labels: target probabilities, broadcastable to ``logits``.
    axis_name: inside ``shard_map``, the mesh axis over which the class axis is split (a
      vocabulary sharded across devices, as Megatron's vocab-parallel cross-entropy): the
      normaliser and sums are reduced across it; values and gradients equal the unsharded ones.

  Returns:
    The per-example loss, shape ``[...]``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> logits = jnp.array([0.0, -jnp.inf]); labels = jnp.array([1.0, 0.0])
    >>> print(jaxdiv.losses.safe_softmax_cross_entropy(logits, labels))
    0.0
  """
  return softmax_cross_entropy(logits, labels, axis=-1, axis_name=axis_name)


def _flatten_classes(x, ax):
  """Moves the class axes (in the given order) to the end and flattens them, as optax does."""
  batch = tuple(i for i in range(x.ndim) if i not in ax)
  x = jnp.transpose(x, batch + ax)
  return x.reshape(x.shape[:len(batch)] + (-1,))


# Its gather and log-sum-exp run at the 2-D speed with any batch axes: only leading size-1 axes
# are dropped (a gradient over [B, V] reshaped to [B, 1, V] is copied once more, 1.2x).
@_unit_axes.dropped(dists=("logits",), params=("labels",), where_by_rank=True,
                    keep=("weights",), leading=True)
def softmax_cross_entropy_with_integer_labels(
    logits: ArrayLike,
    labels: ArrayLike,
    axis: int | tuple[int, ...] = -1,
    where: ArrayLike | None = None,
    *,
    label_smoothing: ArrayLike = 0.0,
    ignore_index: int | None = None,
    weights: ArrayLike | None = None,
    z_loss: ArrayLike = 0.0,
    implementation: str | None = None,
    axis_name: str | None = None,
    softcap: float | None = None,
) -> jax.Array:
  r"""Softmax cross-entropy with integer labels (optax's, NaN-free), with torch's options.

  With :math:`\log q = \mathrm{log\_softmax}(x)` over the ``C`` (unmasked) classes,

  .. math::
    \ell(x, y) = (1 - \varepsilon)\, w_y (-\log q_y)
      + \frac{\varepsilon}{C} \sum_j w_j (-\log q_j)
      + z \Big(\log \sum_j e^{x_j}\Big)^2,

  the cross-entropy H(δ_y, q) = KL(δ_y‖q) for :math:`w = 1, \varepsilon = z = 0` (optax's loss;
  ``torch.nn.functional.cross_entropy(..., reduction="none")`` with ``weight``,
  ``label_smoothing`` and ``ignore_index``). Options combine freely.

  Edge cases: an example whose classes are all masked by ``where`` gives 0; one whose logits are
  all ``-inf`` gives ``+inf`` with a zero gradient (optax: NaN). A label outside
  ``[0, num_classes)`` that is not ``ignore_index`` is invalid data and gives NaN with a zero
  gradient; optax gives NaN too from ``num_classes`` up and below ``-num_classes``, but counts a
  label in ``[-num_classes, 0)`` from the end (NumPy's negative indexing: -1 is the last class),
  which jaxdiv does not, so that a padding label such as -1 is never read as a class.

  Args:
    logits: unnormalised log-probabilities, shape ``[..., num_classes]``.
    labels: integer class indices, shape ``[...]`` (the logits without ``axis``; broadcast).
    axis: the class axis, or a tuple of axes whose flattened (C-order, in the given order)
      index is the label, as in optax.
    where: mask of the classes to include (the logits' shape) or of the examples (the batch
      shape), as in optax; an example with nothing left gives 0.
    label_smoothing: :math:`\varepsilon \in [0, 1]`, as ``torch.nn.CrossEntropyLoss``.
    ignore_index: labels equal to it give 0 and a zero gradient (z-loss included), also when
      it is out of range (torch's ``-100``).
    weights: per-class weights :math:`w`, shape ``[num_classes]`` (the class axes' shape),
      as torch's ``weight`` (per-example values, not yet normalised by the weight sum).
    z_loss: coefficient :math:`z \ge 0` of the squared log-normaliser (PaLM).
    implementation: ``None``: the default for the backend — ``"pallas"`` on GPU where the
      installed jax lowers Pallas to Triton without deprecation, ``"xla"`` everywhere else
      (CPU, TPU, GPU otherwise); never Pallas interpret mode. Inputs the kernels do not take
      run the plain-jnp reference (`jaxdiv.kernels.cross_entropy.reference`): class
      ``weights``, a per-class ``where``, ``axis_name``, a traced ``label_smoothing`` or
      ``z_loss`` (differentiable there), float64 logits. Or one of ``"xla"``, ``"chunked"``,
      ``"pallas"``, as in :func:`jaxdiv.kernels.cross_entropy_with_integer_labels` (class
      axis last; the inputs above are then an error). ``"xla"`` and the reference work in
      every mode of autodiff; ``"chunked"`` and ``"pallas"`` define the gradient with a custom
      VJP: reverse mode and forward-over-reverse (Hessians) work, forward mode alone
      (``jax.jvp``, ``jax.jacfwd``) does not.
    axis_name: inside ``shard_map``, the mesh axis over which the class axis is split (a
      vocabulary sharded across devices, as Megatron's vocab-parallel cross-entropy): the
      normaliser and sums are reduced across it; values and gradients equal the unsharded ones.
      Labels are then global class indices (shard ``i`` holds classes ``[i V, (i+1) V)``),
      ``axis`` must be a single axis and ``weights`` are this shard's.
    softcap: ``None``, or c > 0: the logits are capped to c tanh(x / c) first (Gemma 2).

  Returns:
    The per-example loss, the labels' (batch) shape, in the logits' dtype.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> logits = jnp.array([[1.2, -0.8, -0.5], [0.9, -1.2, 1.1]])
    >>> labels = jnp.array([0, -100])
    >>> loss = jaxdiv.losses.softmax_cross_entropy_with_integer_labels
    >>> print(loss(logits, labels, ignore_index=-100))
    [0.2761 0.    ]

  References:
    Szegedy et al., Rethinking the Inception Architecture for Computer Vision, 2016 (label
    smoothing); Chowdhery et al., PaLM: Scaling Language Modeling with Pathways, 2022 (z-loss).
  """
  logits = _validation.as_float_array(logits, "logits")
  labels = jnp.asarray(labels)
  if not jnp.issubdtype(labels.dtype, jnp.integer):
    raise TypeError(
        f"`labels` must be integer class indices; got dtype {labels.dtype}. For target"
        " probabilities use `softmax_cross_entropy`."
    )
  if logits.ndim == 0:
    raise ValueError("`logits` must have at least one (class) dimension; got a scalar.")
  ignore_index = _ignore_index(ignore_index)
  _check_options(label_smoothing, z_loss)
  _common.check_implementation(implementation)
  if isinstance(axis, bool) or not isinstance(axis, (int, tuple)):
    raise TypeError(f"`axis` must be an int or a tuple of ints; got {axis!r}.")
  ax = _common.axes(axis, logits.ndim, allow_none=False, keep_order=True)
  batch_shape = tuple(s for i, s in enumerate(logits.shape) if i not in ax)
  try:
    labels = jnp.broadcast_to(labels, batch_shape)
  except ValueError:
    raise ValueError(
        f"`labels` of shape {labels.shape} does not match the logits' batch shape"
        f" {batch_shape} (logits {logits.shape} without axis {axis})."
    ) from None
  if axis_name is not None and len(ax) != 1:
    raise ValueError(f"`axis_name` needs a single class axis; got axis={axis}.")
  if implementation is not None and ax != (logits.ndim - 1,):
    raise _common.unsupported_by_kernel(
        f"a class axis other than the last (axis={axis})",
        "softmax_cross_entropy_with_integer_labels")
  # optax's mask rule: the logits' shape is per class, fewer dimensions per example.
  class_mask, valid = None, jnp.ones(batch_shape, bool)
  if where is not None:
    where = jnp.asarray(where)
    if where.ndim == logits.ndim:
      class_mask = _flatten_classes(_common.expand_where(where, logits.shape, ax), ax)
    elif where.ndim + len(ax) == logits.ndim:
      valid = _validation.broadcast_where(where, batch_shape)
    else:
      raise ValueError(
          f"`where` of shape {where.shape} is neither the logits' shape {logits.shape} nor"
          f" their batch shape {batch_shape} (the logits without axis {axis}).")
  if jnp.iinfo(labels.dtype).bits < 32:  # 8/16-bit labels: the vocabulary size must not wrap
    labels = labels.astype(jnp.int32)
  if ignore_index is not None:
    valid = valid & (labels != ignore_index)
  w = None
  if weights is not None:
    _, acc = _validation.compute_dtype(logits)
    w = _class_weights(weights, [logits.shape[a] for a in ax], logits.ndim, ax, acc).reshape(-1)
  x = _flatten_classes(logits, ax)
  x = x.reshape(-1, x.shape[-1])
  out = ce_api.integer_cross_entropy(
      x, labels.reshape(-1), valid.reshape(-1), label_smoothing=label_smoothing, z_loss=z_loss,
      weights=w, where=None if class_mask is None else class_mask.reshape(x.shape),
      axis_name=axis_name, implementation=implementation, softcap=softcap,
      op="softmax_cross_entropy_with_integer_labels")
  return out.reshape(batch_shape).astype(logits.dtype)


def sigmoid_binary_cross_entropy(logits, labels):
  r"""Elementwise sigmoid (binary) cross-entropy (optax's, NaN-free at infinite logits).

  .. math::
    \ell(x, y) = -y \log \sigma(x) - (1 - y) \log (1 - \sigma(x)),

  the Bernoulli cross-entropy H(y, σ(x)), with ``0 * log 0 = 0``: a logit of ``+inf`` with
  label 1 gives 0 (optax: NaN).

  Args:
    logits: log-odds, any shape.
    labels: targets in ``[0, 1]`` (binary or soft), broadcastable to ``logits``; cast to the
      logits' dtype as optax does.

  Returns:
    The elementwise loss, the broadcast shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> loss = jaxdiv.losses.sigmoid_binary_cross_entropy(jnp.array([0.0, jnp.inf]),
    ...                                                   jnp.array([1.0, 1.0]))
    >>> print(jnp.abs(loss))  # optax: [0.6931 nan]
    [0.6931 0.    ]
  """
  logits = _validation.as_float_array(logits, "logits")
  labels = jnp.asarray(labels).astype(logits.dtype)
  _common.broadcast_shapes(logits, labels, ("logits", "labels"))
  _, acc = _validation.compute_dtype(logits)
  out = _sigmoid_cross_entropy(logits.astype(acc), labels.astype(acc))
  return out.astype(logits.dtype)


@jax.custom_jvp
def _sigmoid_cross_entropy(x, y):
  """-y log sigmoid(x) - (1 - y) log sigmoid(-x) = y max(-x, 0) + (1 - y) max(x, 0) + log1p(e),
  e = exp(-|x|), with 0 * inf = 0 (masks only at an infinite x). Each product has one non-zero
  factor of x's sign: `max(x, 0) - y x`, the same for finite x, cancelled for y near 1 (float32,
  y = 0.999 on x in [0.5, 60]: 5.8e-5 largest relative error, optax's 1.0e-7; y = 1 - 2**-24 at
  x = 17: 85%) and overflowed for y > 1 at x near the float maximum.

  optax's line has two log-sigmoids, and autodiff of it (and of this one's masks) recomputed them
  in the gradient: d/dx below is one sigmoid, and a tanh near x = 0 (bench/README.md, "Sigmoid
  cross-entropy: the derivative as one sigmoid")."""
  lin = jnp.where(jnp.isfinite(x), y * jnp.maximum(-x, 0) + (1 - y) * jnp.maximum(x, 0),
                  _numerics.mul_log(y, jnp.maximum(-x, 0))
                  + _numerics.mul_log(1 - y, jnp.maximum(x, 0)))
  return lin + jnp.log1p(jnp.exp(-jnp.abs(x)))


@_sigmoid_cross_entropy.defjvp
def _sigmoid_cross_entropy_jvp(primals, tangents):
  (x, y), (dx, dy) = primals, tangents
  _, _, small, _ = _numerics.logistic(x)  # sigmoid(-|x|)
  # d/dx = sigmoid(x) - y: (1 - y) - sigmoid(-x) for x >= 0, sigmoid(x) - y below (no sigmoid
  # near 1 formed); for |x| < 1/2 as (1/2 - y) + tanh(x / 2) / 2, whose second term keeps its
  # digits where the sigmoid near 1/2 is stored to 3e-8 (y = 0.5, x = 1e-3: 7e-5 relative error
  # with it, 1.3e-5 optax's). d/dy = log sigmoid(-x) - log sigmoid(x) = -x. Both 0 at an infinite
  # logit whose label makes the value finite (x = +inf with y = 1, -inf with y = 0: 0 * inf = 0
  # there, as in the value), so that the mixed second derivative is 0 in either order.
  held = jnp.isinf(x) & (y == (x > 0))
  near = jnp.abs(x) < 0.5
  slope = jnp.where(near, (0.5 - y) + 0.5 * jnp.tanh(0.5 * jnp.where(near, x, 0)),
                    jnp.where(x >= 0, (1 - y) - small, small - y))
  dx_slope = jnp.where(held, 0, slope)
  dy_slope = jnp.where(held, 0, -x)
  return _sigmoid_cross_entropy(x, y), dx_slope * dx + dy_slope * dy


def sigmoid_focal_loss(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    alpha: ArrayLike | None = None,
    gamma: ArrayLike = 2.0,
) -> jax.Array:
  r"""Sigmoid focal loss (optax's, NaN-free at infinite logits and for ``gamma = 0``).

  .. math::
    \mathrm{FL}(x, y) = \alpha_t\, (1 - p_t)^\gamma\, H(y, \sigma(x)), \qquad
    1 - p_t = (1 - y)\, \sigma(x) + y\, (1 - \sigma(x)),

  with :math:`\alpha_t = \alpha y + (1 - \alpha)(1 - y)` (no weighting for ``alpha=None``) and
  :math:`H` the binary cross-entropy. :math:`\log(1 - p_t)` is formed in log space, and
  :math:`(1 - p_t)^0 = 1` also where :math:`1 - p_t = 0`.

  Args:
    logits: log-odds, any shape.
    labels: targets in ``[0, 1]``, broadcastable to ``logits``. Outside it the formula is
      computed where :math:`1 - p_t \ge 0` or :math:`\gamma = 0`, and is NaN where
      :math:`1 - p_t < 0` for :math:`\gamma > 0` (optax: NaN or a power of a negative number);
      a NaN label gives NaN. :func:`jaxdiv.checks.checked` reports such labels.
    alpha: weight of the positive class in ``(0, 1)``, or ``None``.
    gamma: focusing exponent :math:`\gamma \ge 0`.

  Returns:
    The elementwise loss, the broadcast shape.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> print(jaxdiv.losses.sigmoid_focal_loss(jnp.array([0.0]), jnp.array([1.0])))
    [0.1732]

  References:
    Lin et al., Focal Loss for Dense Object Detection, 2017.
  """
  logits = _validation.as_float_array(logits, "logits")
  labels = jnp.asarray(labels).astype(logits.dtype)
  _validation.check_real(gamma, "gamma", lo=0)
  if alpha is not None:
    _validation.check_real(alpha, "alpha", lo=0, hi=1)
  _common.broadcast_shapes(logits, labels, ("logits", "labels"))
  _, acc = _validation.compute_dtype(logits)
  x, y = logits.astype(acc), labels.astype(acc)
  log_p, log_not_p = _log_sigmoid(x), _log_sigmoid(-x)
  ce = _sigmoid_cross_entropy(x, y)  # the binary cross-entropy's, with its closed derivative
  # log((1 - y) p + y (1 - p)) with the labels outside the log: its gradient in y stays exact
  # at y = 0 and y = 1, where log(y) or log(1 - y) would be -inf.
  # The shift is the larger term *with a non-zero weight*: with the plain max, a hard label
  # (y = 1 at z = 50) left s = e^-50, whose square underflows in float32 and made the Hessian
  # NaN (for every gamma); here s >= the larger weight, never tiny.
  m = lax.stop_gradient(jnp.maximum(jnp.where(y < 1, log_p, -jnp.inf),
                                    jnp.where(y > 0, log_not_p, -jnp.inf)))
  m = jnp.where(jnp.isfinite(m), m, 0)
  # A zero-weight term can exceed 1 (even overflow): `_scaled` makes it 0 in value, keeps its
  # label derivative where it is finite (a hard label's gradient in y), and blocks an inf.
  big = float(np.log(np.finfo(acc).max)) - 1

  def exp_or_inf(v):  # exp, with an overflow as +inf behind a double where (no NaN derivative)
    fits = v < big
    return jnp.where(fits, jnp.exp(jnp.where(fits, v, 0)), jnp.inf)

  s = _scaled(1 - y, exp_or_inf(log_p - m)) + _scaled(y, exp_or_inf(log_not_p - m))
  pos = s > 0
  # `log_quotient`: its second derivative has no s**-2 (s = 1e-27 at y = 1e-30, z = -60: NaN).
  log_one_minus_pt = jnp.where(pos, _numerics.log_quotient(jnp.where(pos, s, 1)) + m, -jnp.inf)
  gamma = jnp.asarray(gamma, acc)
  focal = jnp.exp(_numerics.mul_log(gamma, log_one_minus_pt))
  loss = _scaled(focal, ce)
  if alpha is not None:
    alpha = jnp.asarray(alpha, acc)
    loss = _scaled(alpha * y + (1 - alpha) * (1 - y), loss)
  # A label outside [0, 1] can make 1 - p_t negative, a NaN label makes it NaN: the power is
  # NaN (for gamma = 0 it is 1), set here so that no NaN enters the computation above (a zero
  # alpha_t would make its value 0 and its gradient NaN) and none is hidden (-inf gave 0).
  undefined = jnp.isnan(s) | ((s < 0) & (gamma != 0))
  return jnp.where(undefined, jnp.nan, loss).astype(logits.dtype)


@jax.custom_jvp
def _log_sigmoid(x):
  """``log sigmoid(x)`` whose derivative is ``sigmoid(-x)`` itself (the focal loss's helper).

  Trap avoided: ``jax.nn.log_sigmoid``'s derivative is formed as ``1 - sigmoid(x)``-like
  rounding, so its second derivative at ``x = -30`` is 1.3% off in float64 (-9.24e-14 against
  -9.36e-14); the focal loss's Hessian inherited it.
  """
  return jax.nn.log_sigmoid(x)


@_log_sigmoid.defjvp
def _log_sigmoid_jvp(primals, tangents):
  (x,), (t,) = primals, tangents
  return _log_sigmoid(x), jax.nn.sigmoid(-x) * t


@_unit_axes.dropped(dists=("logits", "labels"), params=("epsilon",), where_by_rank=True)
def poly_loss_cross_entropy(
    logits: ArrayLike,
    labels: ArrayLike,
    *,
    epsilon: ArrayLike = 2.0,
    axis: int | tuple[int, ...] | None = -1,
    where: ArrayLike | None = None,
) -> jax.Array:
  r"""Poly-1 loss: cross-entropy plus ``epsilon`` times the first polynomial term (optax's).

  .. math::
    \ell(x, y) = -\sum_j y_j \log q_j + \epsilon \sum_j y_j (1 - q_j),
    \qquad q = \mathrm{softmax}(x).

  Args:
    logits: unnormalised log-probabilities, shape ``[..., num_classes]``.
    labels: target probabilities, broadcastable to ``logits``.
    epsilon: coefficient of the first polynomial term (2 for ImageNet, -1 for detection).
    axis: the class axis or axes.
    where: mask of the classes to include, the logits' shape (or per example, the batch
      shape); a fully masked example gives 0 (optax: NaN gradient).

  Returns:
    The per-example loss, the broadcast shape without ``axis``.

  Example:
    >>> import jax.numpy as jnp, jaxdiv.losses
    >>> logits = jnp.array([1.2, -0.8, -0.5]); labels = jnp.array([1.0, 0.0, 0.0])
    >>> print(jaxdiv.losses.poly_loss_cross_entropy(logits, labels))
    0.7587

  References:
    Leng et al., PolyLoss: A Polynomial Expansion Perspective of Classification Loss
    Functions, 2022.
  """
  _validation.check_real(epsilon, "epsilon")
  x, y, shape, ax, mask, result_dtype, acc = _prepare_dense(logits, labels, axis, where)
  epsilon = jnp.asarray(epsilon, acc)
  batch = tuple(d for i, d in enumerate(shape) if i not in ax)
  if (mask is None and len(ax) == 1
      and jnp.broadcast_shapes(epsilon.shape, batch) == batch):
    # One sum and one closed-form derivative, epsilon a row parameter (see the function).
    eps = jnp.expand_dims(jnp.broadcast_to(epsilon, batch), ax[0])
    return _soft_cross_entropy_fast(x, y, ax[0], eps).astype(result_dtype)
  ce = _dense_cross_entropy(x, y, ax, mask)
  # A row whose cross-entropy is NaN (a NaN or +inf logit, a NaN target) is a constant, as the
  # cross-entropy's: its inputs' tangents are zeroed and its polynomial term is 0 inside, so
  # that the zero cotangent of a row summed away meets no NaN (in its inputs and in epsilon).
  # A NaN or infinite target counts as 0 inside, as in `_dense_cross_entropy`.
  lost = jnp.isnan(lax.stop_gradient(ce))
  keep = jnp.logical_not(jnp.expand_dims(lost, ax))
  y = _fallback.tangent_if(keep, jnp.where(jnp.abs(y) < jnp.inf, y, 0))
  q = jnp.exp(_numerics.log_softmax(_fallback.tangent_if(keep, x), axis=ax, where=mask))
  y = y if mask is None else jnp.where(mask, y, 0)
  term = jnp.where(lost, 0, jnp.sum(y * (1 - q), axis=ax))
  return (ce + epsilon * term).astype(result_dtype)


def _row_exp(x, axis: int, weights=None):
  """`(exp(x - m), total)`, m the row max: `e / total` is the softmax, and 0 on a row of every
  logit `-inf` (m floored at the lowest finite value makes `e` 0 there, and `total` is 1 there;
  elsewhere it is the row sum, at least 1, unchanged, with its own derivative). Arithmetic
  only: a select or compare on a row statistic between the reductions and the entries split
  XLA:CPU's single fused pass of the gradient (softmax cross-entropy value+grad at 4096x4096:
  42.5 and 35.8 ms with them, 32.9 without, optax's 32.4). Below `_fallback.FUSED_ROWS` rows the
  sum reads the max behind `optimization_barrier`, so that XLA:CPU recomputes `e` in the
  gradient's loop instead of writing it out (`_fallback.shift_and_sum`; value+grad against
  optax at 256x32768: 0.85x -> 0.74x, 2048x32768: 0.89x -> 0.85x).

  With `weights`, also `sum(weights * e)`, from the same `e`, which XLA:CPU then writes out
  once below `FUSED_ROWS` rows (the poly loss's gradient; recomputing it for each of the two
  sums and the gradient, behind a barrier each, took 1.27-1.33x optax's time at 1024x1024,
  written out once 0.95-1.09x)."""
  m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  m = jnp.maximum(m, jnp.finfo(x.dtype).min)
  floor_at_one = lambda total: total + lax.stop_gradient(1 - jnp.minimum(total, 1))
  if weights is None:
    return jnp.exp(x - m), floor_at_one(_fallback.sum_exp(x, m, axis))
  e = jnp.exp(x - m)
  total = jnp.sum(e, axis=axis, keepdims=True)
  return e, floor_at_one(total), jnp.sum(weights * e, axis=axis, keepdims=True)


def _row_log_normaliser(x, axis: int):
  """`logsumexp(x)` with keepdims, `+inf` on a row without a finite one (every logit `-inf`:
  probabilities `exp(x - inf) = 0`; a NaN or `+inf` logit: NaN probabilities), with finite
  gradients wherever it is finite. Its selects act on row statistics, not on entries."""
  m = lax.stop_gradient(jnp.max(x, axis=axis, keepdims=True))
  m_ok = jnp.isfinite(m)
  m = jnp.where(m_ok, m, 0)
  total = jnp.sum(jnp.exp(x - m), axis=axis, keepdims=True)
  ok = m_ok & (total > 0) & (total < jnp.inf)
  return jnp.where(ok, m + jnp.log(jnp.where(ok, total, 1)), jnp.inf)

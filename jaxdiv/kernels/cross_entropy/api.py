"""Public entry point and dispatch for cross-entropy with integer labels.

`integer_cross_entropy` is the one entry that `jaxdiv.kernels` and `jaxdiv.losses` both call:
it sends what the kernels take to the registry's implementation and everything else to the
plain-jnp reference, so the maths and the meaning of `implementation=None` exist once.
"""

from __future__ import annotations

import jax

from jaxdiv import _numerics
from jaxdiv import _sharding
from jaxdiv import _validation
from jaxdiv.kernels import _args
from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.cross_entropy import chunked_xla
from jaxdiv.kernels.cross_entropy import pallas_gpu
from jaxdiv.kernels.cross_entropy import pallas_tpu
from jaxdiv.kernels.cross_entropy import reference
from jaxdiv.kernels.cross_entropy import xla

IMPLEMENTATIONS = _dispatch.registry(
    # Pallas kernels (Triton on GPU, Mosaic on TPU): one read of the logits forward, one read
    # and one write backward. `None` takes the first that `supported_on` the backend.
    _dispatch.pallas(gpu=pallas_gpu.cross_entropy, tpu=pallas_tpu.cross_entropy),
    _dispatch.Implementation("xla", xla.cross_entropy),
    _dispatch.Implementation("chunked", chunked_xla.cross_entropy),
)


@_sharding.auto_axes_when_explicit
def cross_entropy_with_integer_labels(
    logits: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    implementation: str | None = None,
    block_size: int | tuple[int, int] | None = None,
    softcap: float | None = None,
) -> jax.Array:
  r"""Softmax cross-entropy between `logits` and integer `labels`, per example.

  .. math::
    \ell = (1 - \epsilon)\,(\mathrm{lse}(z) - z_y)
      + \epsilon\,(\mathrm{lse}(z) - \tfrac{1}{V}\textstyle\sum_v z_v)
      + \lambda\,\mathrm{lse}(z)^2

  i.e. H(t, softmax(z)) for the target t = (1-ε) onehot(y) + ε/V (label smoothing as in optax
  and torch), plus the z-loss λ lse². With `where` and `ignore_index` unset and ε = λ = 0 this
  equals `optax.softmax_cross_entropy_with_integer_labels` in value and gradient.
  :func:`jaxdiv.losses.softmax_cross_entropy_with_integer_labels` is the same computation with
  optax's `axis` and `where`, class weights, `axis_name` and differentiable hyperparameters.

  Args:
    logits: [..., vocab] unnormalised log-probabilities; the distribution is the last axis.
    labels: [...] integer class indices.
    where: optional [...] boolean mask (broadcast to the batch shape): tokens where it is False
      give loss 0 and no gradient.
    ignore_index: tokens whose label equals it give loss 0 and no gradient.
    label_smoothing: ε in [0, 1] (a static number).
    z_loss: λ >= 0 (a static number).
    implementation: ``None``: the default for the backend — ``"pallas"`` on GPU where the
      installed jax lowers Pallas to Triton without deprecation, ``"xla"`` everywhere else
      (CPU, TPU, GPU otherwise); never Pallas interpret mode. Inputs the kernels do not take
      run the plain-jnp reference (`jaxdiv.kernels.cross_entropy.reference`): here float64
      logits. Or by name: ``"xla"`` (one `exp` per logit, the softmax kept as residual and
      scaled into the gradient in place), ``"chunked"`` (tiles of [tokens, vocab] with an
      online logsumexp, an lse-only residual: bounded memory) or ``"pallas"`` (lse-only
      residual; Triton kernels on GPU, one program per block of tokens walking the
      vocabulary; Mosaic kernels on TPU over a grid of (token blocks, vocabulary blocks), the
      online logsumexp state kept in VMEM; elsewhere the Triton kernels in Pallas interpret
      mode, slowly). ``"xla"`` and the reference work in every mode of autodiff (``"xla"``
      has a `custom_jvp`, linear in the logits' tangent); ``"chunked"`` and ``"pallas"`` define
      the gradient with a custom VJP: reverse mode and forward-over-reverse (Hessians) work,
      forward mode alone (`jax.jvp`, `jax.jacfwd`) does not.
    block_size: tile size, an int (vocabulary) or a (tokens, vocabulary) pair; None: defaults.
      The Pallas kernels round it up: to powers of two (Triton), to multiples of (8, 128)
      ((16, 128) for 16-bit logits) or the whole axis (Mosaic).
    softcap: None, or c > 0 (static): the logits are first capped to c tanh(z / c) (Gemma 2),
      elementwise before the kernel (one more [tokens, vocab] array; exact gradient).

  Returns:
    [...] per-example loss in the logits' dtype (accumulated in float32). A token whose logits
    are all ``-inf`` gives ``+inf`` with a zero gradient; a counted label outside
    ``[0, vocab)`` gives NaN.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.kernels import cross_entropy_with_integer_labels
    >>> logits = jnp.array([[2.0, 0.0, -1.0], [0.0, 0.0, 0.0]])
    >>> cross_entropy_with_integer_labels(logits, jnp.array([0, 2]))
    Array([0.169846, 1.098612 ], dtype=float32)
  """
  logits = _validation.as_float_array(logits, "logits")
  if logits.ndim < 1:
    raise ValueError(f"`logits` needs a vocabulary axis; got shape {logits.shape}.")
  batch = logits.shape[:-1]
  labels = _args.int_labels(labels, batch)
  ls, zl = _args.smoothing_and_z_loss(label_smoothing, z_loss)
  valid = _args.token_mask(batch, labels, where=where, ignore_index=ignore_index)
  loss = integer_cross_entropy(
      logits.reshape(-1, logits.shape[-1]), labels.reshape(-1), valid, label_smoothing=ls,
      z_loss=zl, implementation=implementation, block_size=block_size, softcap=softcap)
  return loss.reshape(batch).astype(logits.dtype)


@_sharding.auto_axes_when_explicit
def integer_cross_entropy(
    logits: jax.Array,
    labels: jax.Array,
    valid: jax.Array,
    *,
    label_smoothing=0.0,
    z_loss=0.0,
    weights: jax.Array | None = None,
    where: jax.Array | None = None,
    axis_name: str | None = None,
    implementation: str | None = None,
    block_size: int | tuple[int, int] | None = None,
    softcap: float | None = None,
    op: str = "cross_entropy_with_integer_labels",
) -> jax.Array:
  """The per-token loss of [tokens, vocab] `logits`, validated arguments, through one dispatch.

  The registry's implementation runs where it can (`implementation`, or `None`'s default for
  the backend); class `weights` ([vocab]), a per-class `where` ([tokens, vocab]), `axis_name`,
  a traced `label_smoothing` or `z_loss` and float64 logits run `reference.cross_entropy`,
  which takes them all (an explicit `implementation` with one of the first four is an error
  naming it, `op`'s). `valid` [tokens]: False gives 0 and no gradient; a counted label outside
  the vocabulary (global with `axis_name`) gives NaN. Returns float32 (float64 for float64
  logits).
  """
  softcap = _softcap.check(softcap)
  if softcap is not None:  # elementwise, before the kernels (autodiff through tanh)
    logits = _softcap.apply(logits, softcap)
  plain = [what for what, needs in (
      ("class `weights`", weights is not None),
      ("a per-class `where` mask", where is not None),
      ("`axis_name` (a vocabulary split over devices)", axis_name is not None),
      ("a traced `label_smoothing` or `z_loss`", _validation.concrete(label_smoothing) is None
       or _validation.concrete(z_loss) is None)) if needs]
  if plain and implementation is not None:
    raise ValueError(
        f"`{op}` with implementation={implementation!r}: the kernels do not take {plain[0]};"
        " leave `implementation=None` (the plain-jnp reference runs it).")
  if not plain:  # also checks the name
    fn = _dispatch.select(IMPLEMENTATIONS, implementation, op, shape=logits.shape,
                          dtype=logits.dtype)
  if plain or _args.is_float64(logits):  # the kernels accumulate in float32
    loss = reference.cross_entropy(logits, labels, valid, label_smoothing=label_smoothing,
                                   z_loss=z_loss, weights=weights, where=where,
                                   axis_name=axis_name)
  else:
    loss = fn(logits, labels, valid, label_smoothing=float(label_smoothing),
              z_loss=float(z_loss), block_size=block_size)
  vocab = logits.shape[-1]
  if axis_name is not None:
    vocab = vocab * _numerics.psum(1, axis_name)
  return _args.mark_bad_labels(loss, labels, valid, vocab)

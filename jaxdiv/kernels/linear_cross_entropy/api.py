"""Public entry point and dispatch for the fused linear cross-entropy."""

from __future__ import annotations

import jax
import jax.numpy as jnp

from jaxdiv import _sharding
from jaxdiv.kernels import _args
from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.linear_cross_entropy import chunked_xla
from jaxdiv.kernels.linear_cross_entropy import forward_grad
from jaxdiv.kernels.linear_cross_entropy import pallas_gpu
from jaxdiv.kernels.linear_cross_entropy import reference
from jaxdiv.kernels.linear_cross_entropy import xla

IMPLEMENTATIONS = _dispatch.registry(
    _dispatch.triton(pallas_gpu.linear_cross_entropy),
    _dispatch.Implementation("chunked", chunked_xla.linear_cross_entropy),
    _dispatch.Implementation("xla", xla.linear_cross_entropy),
)


def forward_grad_by_default(hidden, vocab: int, *, reduction: str, weight=None, axis_name=None,
                            grad_filter_eps=None, block_size=None) -> bool:
  """Whether `implementation=None` takes "forward_grad": a reduced ("mean" or "sum") loss of
  float32 `hidden` and `weight`, without `axis_name`, a gradient filter or a `block_size`, at
  a vocabulary whose token blocks hold at least `forward_grad.MIN_DEFAULT_ROWS` tokens, on a
  CPU backend with one device.

  There it forms the gradients in the forward pass at matmul + optax's time (6·N·D·V FLOPs
  against "chunked"'s 8; `bench/kernels.py --only fused`). Not:
  - with several devices: under jit with token-sharded inputs its dynamic token blocks make
    XLA gather the batch onto every device, and a trace cannot tell how GSPMD will shard its
    inputs, whereas one device cannot shard them;
  - for a large vocabulary (few tokens a block): 1.46x "chunked"'s time with 64 tokens a block
    (131072 classes), 2.27x with 32 (`bench/kernels.py --only fused_rows`);
  - for float16, whose logits' gradient, rounded in the forward before the loss's cotangent
    is known, escapes loss scaling (d hidden 40x less accurate at a scale of 1024), nor for
    bfloat16, whose float32 d weight held from the forward to the backward took 1.85x
    "chunked"'s temporaries;
  - with a `block_size`, which "chunked" reads as a vocabulary block and "forward_grad" as
    tokens;
  - on GPU and TPU, where it is not measured.
  """
  platform = _dispatch.backend()
  return (reduction != "none" and axis_name is None and grad_filter_eps is None
          and block_size is None
          and all(x.dtype == jnp.float32 for x in (hidden, weight) if x is not None)
          and forward_grad.rows_for(vocab) >= forward_grad.MIN_DEFAULT_ROWS
          and platform == "cpu" and jax.device_count(platform) == 1)


@_sharding.auto_axes_when_explicit
def fused_linear_cross_entropy(
    hidden: jax.typing.ArrayLike,
    weight: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    where: jax.typing.ArrayLike | None = None,
    ignore_index: int | None = None,
    label_smoothing: float = 0.0,
    z_loss: float = 0.0,
    softcap: float | None = None,
    implementation: str | None = None,
    block_size: int | None = None,
    weight_layout: str | None = None,
    axis_name: str | None = None,
    reduction: str = "none",
    grad_filter_eps: float | None = None,
) -> jax.Array:
  r"""Per-token cross-entropy of the logits `hidden @ weight`, never materialising them.

  .. math::
    z = \mathrm{softcap}(h W), \qquad
    \ell = (1 - \epsilon)(\mathrm{lse}(z) - z_y) + \epsilon(\mathrm{lse}(z) - \bar z)
      + \lambda\,\mathrm{lse}(z)^2

  The same loss as :func:`cross_entropy_with_integer_labels` on `hidden @ weight`, with
  gradients for `hidden` and `weight`. The blockwise implementations keep only the per-token
  lse between the passes and recompute each block of logits in the backward (8·N·D·V FLOPs),
  with float32 accumulation for bfloat16 inputs; for a reduced loss ("mean" or "sum"),
  ``"forward_grad"`` forms both gradients in the forward pass instead (6·N·D·V FLOPs).

  Args:
    hidden: [..., d] activations (leading dimensions are flattened into tokens).
    weight: [d, vocab], or [vocab, d] (a tied embedding); see `weight_layout`.
    labels: [...] integer classes.
    where: optional [...] boolean mask; False tokens give 0 and no gradient.
    ignore_index: tokens with this label give 0 and no gradient.
    label_smoothing: ε in [0, 1] (static).
    z_loss: λ >= 0 (static).
    softcap: None, or c > 0 (static): the logits are capped to c tanh(x / c) (Gemma 2) inside
      the kernels, the cap's derivative recomputed in the backward pass.
    implementation: ``None``: the default for the backend — ``"pallas"`` on GPU where the
      installed jax lowers Pallas to Triton without deprecation; on a CPU with one device,
      ``"forward_grad"`` for a reduced float32 loss at a vocabulary of at most 65536, without
      `axis_name`, `grad_filter_eps` or `block_size` (`forward_grad_by_default`);
      ``"chunked"`` everywhere else; never Pallas interpret mode. Or by
      name: ``"xla"`` (materialises the logits),
      ``"chunked"`` (vocabulary blocks through XLA),
      ``"pallas"`` (interpret mode off GPU), or ``"forward_grad"`` (`reduction` "mean" or "sum"
      only, no `axis_name`): token blocks whose [tokens, vocab] float32 logits give the loss
      and, in the same pass, both gradients, which the backward scales by the loss's
      cotangent (Liger-Kernel's method). It holds float32 d hidden and d weight from the
      forward to the backward (d weight becomes the output), and under `jax.checkpoint` its
      forward, gradients included, runs again (12·N·D·V FLOPs where "chunked" takes 10). On
      CPU it ran at 0.94-1.0x matmul + optax's time at 0.6x jax-cce's temporaries
      (`bench/kernels.py --only fused`); it is not the default with several devices, since
      under jit with token-sharded inputs XLA gathers every token block onto each device.
    block_size: vocabulary block (chunk for "pallas"; tokens a block for "forward_grad");
      None: sized so that one float32 [tokens, block] tile stays small.
    weight_layout: "dv", "vd", or None to infer from the shapes (required when d == vocab).
    axis_name: inside ``shard_map``, the mesh axis over which the vocabulary is split
      (Megatron-style vocabulary parallelism): `weight` is then this shard's slice, columns
      [i V/k, (i+1) V/k) of the vocabulary on shard i = `lax.axis_index(axis_name)` ([d, V/k],
      or [V/k, d] tied), `hidden` and `labels` are replicated over the axis and `labels` are
      global indices (tokens may be split over other mesh axes). Only per-token statistics
      cross devices (pmax and psum); the loss and the gradients of `hidden` (summed over the
      shards, in its dtype) and of the local `weight` equal the one-device ones on the full
      weight, for every option and implementation, with or without shard_map's replication
      checks (Pallas in interpret mode only without them).
    reduction: "none" (per-token losses), "mean" (over the tokens that are not masked or
      ignored; 0 if none is) or "sum", of the per-token loss of the chosen implementation.
      A reduced loss is float32-accumulated and returned in the inputs' dtype.
    grad_filter_eps: None (exact gradients, the default) or a threshold in [0, 1) (static;
      0 is None): an opt-in approximation of the backward pass, as Cut Cross-Entropy's gradient
      filter. Tiles of 64 tokens by one vocabulary block (512 unless `block_size`) in which
      every softmax probability is below the threshold are skipped (not computed); every entry
      of the logits' gradient it drops is below `grad_filter_eps · |g| · (1 + 2 z_loss lse)`
      for the token's cotangent g, and the label and smoothing parts are kept exactly. The
      loss is unchanged. "chunked" only (the default when it is set), without `softcap`;
      float64 inputs stay exact. Whether it pays depends on the device and on how peaked the
      softmax is: `bench/kernels.py --only filter` measures it on a trained head.
  Returns:
    [...] per-token loss (a scalar when reduced) in the promoted dtype of `hidden` and
    `weight`.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.kernels import fused_linear_cross_entropy
    >>> h = jnp.ones((2, 3)); w = jnp.arange(12.0).reshape(3, 4) / 10
    >>> fused_linear_cross_entropy(h, w, jnp.array([3, 0]))
    Array([0.991843, 1.891843], dtype=float32)
  """
  h, w, vd, batch, dtype = _args.linear_head(hidden, weight, weight_layout, axis_name)
  if reduction not in ("none", "mean", "sum"):
    raise ValueError(f'`reduction` must be "none", "mean" or "sum"; got {reduction!r}.')
  labels = _args.int_labels(labels, batch)
  ls, zl = _args.smoothing_and_z_loss(label_smoothing, z_loss)
  softcap = _softcap.check(softcap)
  valid = _args.token_mask(batch, labels, where=where, ignore_index=ignore_index)
  filter_eps = chunked_xla.check_grad_filter(grad_filter_eps)
  extra = {}
  if filter_eps is not None:
    if implementation not in (None, "chunked"):
      raise ValueError(f"`grad_filter_eps` needs implementation='chunked' (or None); got"
                       f" implementation={implementation!r}.")
    implementation, extra = "chunked", dict(grad_filter_eps=filter_eps)
  if implementation is None and forward_grad_by_default(
      h, lb.vocab_size(w, vd), reduction=reduction, weight=w, axis_name=axis_name,
      grad_filter_eps=filter_eps, block_size=block_size):
    implementation = "forward_grad"
  if implementation == "forward_grad":
    if reduction == "none":
      raise ValueError('implementation="forward_grad" needs `reduction` "mean" or "sum" (the'
                       ' gradients are formed before the cotangent is known); got "none".')
    if axis_name is not None:
      raise ValueError('implementation="forward_grad" does not support `axis_name`; use'
                       ' "chunked".')
    if _args.is_float64(h):  # float64 takes the exact reference, as for the other names
      implementation = "xla"
    else:
      total = forward_grad.reduced_loss(h, w, labels.reshape(-1), valid, vd=vd,
                                        reduction=reduction, label_smoothing=ls, z_loss=zl,
                                        softcap=softcap, block_size=block_size)
      return total.astype(dtype)
  fn = _dispatch.select(IMPLEMENTATIONS, implementation, "fused_linear_cross_entropy",
                        other_names=("forward_grad",),
                        shape=(h.shape[0], h.shape[1], w.shape[0 if vd else 1]), dtype=dtype)
  if _args.is_float64(h):  # the kernels accumulate in float32; float64 stays exact
    fn, extra = reference.linear_cross_entropy, {}
  loss = fn(h, w, labels.reshape(-1), valid, vd=vd, label_smoothing=ls, z_loss=zl,
            block_size=block_size, axis_name=axis_name, softcap=softcap, **extra)
  loss = _args.mark_bad_labels(loss, labels.reshape(-1), valid.reshape(-1),
                              lb.global_vocab_size(w, vd, axis_name))  # global labels
  if reduction == "none":
    return loss.reshape(batch).astype(dtype)
  acc = jnp.promote_types(loss.dtype, jnp.float32)  # float64 sums in float64
  total = jnp.sum(loss, dtype=acc)
  if reduction == "mean":
    total = total / jnp.maximum(jnp.sum(valid, dtype=acc), 1.0)
  return total.astype(dtype)

"""Public entry point and dispatch for the fused per-token log-probabilities and entropy."""

from __future__ import annotations

import jax

from jaxdiv import _sharding
from jaxdiv import _validation
from jaxdiv.kernels import _args
from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import _linear_blocks as lb
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.token_log_probs import chunked_xla
from jaxdiv.kernels.token_log_probs import pallas_gpu
from jaxdiv.kernels.token_log_probs import xla

IMPLEMENTATIONS = _dispatch.registry(
    # Tested in interpret mode only: not the default on GPU until it has run compiled there.
    _dispatch.triton(pallas_gpu.token_log_probs, default=False),
    _dispatch.Implementation("chunked", chunked_xla.token_log_probs),
    _dispatch.Implementation("xla", xla.token_log_probs),
)


def temperature_scale(temperature) -> float:
  """1 / T for a concrete T > 0 (static in the kernels)."""
  if isinstance(temperature, jax.core.Tracer):
    raise TypeError("`temperature` must be a concrete number (it is static in the kernels).")
  _validation.check_real(temperature, "temperature", lo=0, lo_open=True, allow_array=False)
  return 1.0 / float(temperature)


@_sharding.auto_axes_when_explicit
def fused_linear_token_log_probs(
    hidden: jax.typing.ArrayLike,
    weight: jax.typing.ArrayLike,
    labels: jax.typing.ArrayLike,
    *,
    temperature: float = 1.0,
    softcap: float | None = None,
    where: jax.typing.ArrayLike | None = None,
    implementation: str | None = None,
    block_size: int | None = None,
    weight_layout: str | None = None,
    axis_name: str | None = None,
) -> tuple[jax.Array, jax.Array]:
  r"""Per-token log-probability of the label and entropy of `softmax(hidden @ weight)`,
  never materialising the [tokens, vocab] logits.

  .. math::
    z = \frac{\mathrm{softcap}(h W)}{T}, \quad \mathrm{softcap}(x) = c \tanh(x / c), \qquad
    \log p_y = z_y - \mathrm{lse}(z), \qquad
    H(p) = -\sum_j p_j \log p_j = \mathrm{lse}(z) - \sum_j p_j z_j

  What RL trainers (PPO, GRPO, ...) need from a policy head: the log-probability of the
  sampled tokens for the ratio and an entropy bonus. Both outputs are differentiable with
  respect to `hidden` and `weight` (a loss may use either or both): the blockwise
  implementations keep only the per-token lse and entropy between the passes and recompute each
  block of logits in the backward, with

  .. math::
    \frac{\partial \log p_y}{\partial z_j} = \mathbb{1}[j = y] - p_j, \qquad
    \frac{\partial H}{\partial z_j} = -p_j\,(z_j - \mathbb{E}_p[z]).

  Args:
    hidden: [..., d] activations (leading dimensions are flattened into tokens).
    weight: [d, vocab], or [vocab, d] (a tied embedding); see `weight_layout`.
    labels: [...] integer classes (the sampled tokens); a counted token whose label is outside
      [0, vocab) gets a NaN log-probability.
    temperature: T > 0 (static); the sampler's temperature.
    softcap: None, or c > 0 (static): logits are capped to c tanh(x / c) before the
      temperature (Gemma 2).
    where: optional [...] boolean mask; False tokens give 0 for both and no gradient.
    implementation: None ("chunked"), "xla" (materialises the logits; autodiff), "chunked"
      (vocabulary blocks through XLA) or "pallas" (Triton kernels; interpret mode off GPU).
      float64 inputs accumulate in float64 ("pallas" then runs "chunked").
    block_size: vocabulary block (chunk for "pallas"); None: sized so that one float32
      [tokens, block] tile stays small.
    weight_layout: "dv", "vd", or None to infer from the shapes (required when d == vocab).
    axis_name: inside ``shard_map``, the mesh axis over which the vocabulary is split, as in
      :func:`fused_linear_cross_entropy`: `weight` is this shard's slice, `hidden` and `labels`
      (global indices) are replicated over the axis; only [tokens] vectors cross devices.

  Returns:
    `(log_probs, entropy)`, each [...] in the promoted dtype of `hidden` and `weight`
    (accumulated in at least float32).

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.losses import fused_linear_token_log_probs
    >>> h = jnp.ones((2, 3)); w = jnp.arange(12.0).reshape(3, 4) / 10
    >>> log_probs, entropy = fused_linear_token_log_probs(h, w, jnp.array([3, 0]))
    >>> log_probs
    Array([-0.991843, -1.891843], dtype=float32)
    >>> entropy
    Array([1.332117, 1.332117], dtype=float32)
  """
  h, w, vd, batch, dtype = _args.linear_head(hidden, weight, weight_layout, axis_name)
  inv_t = temperature_scale(temperature)
  softcap = _softcap.check(softcap)
  labels = _args.int_labels(labels, batch)
  valid = _args.token_mask(batch, where=where)
  if implementation == "pallas" and _args.is_float64(h):
    implementation = "chunked"  # the Triton kernels accumulate in float32
  fn = _dispatch.select(IMPLEMENTATIONS, implementation, "fused_linear_token_log_probs",
                        shape=(h.shape[0], h.shape[1], w.shape[0 if vd else 1]),
                        dtype=dtype)
  y = labels.reshape(-1)
  log_probs, entropy = fn(h, w, y, valid, vd=vd, softcap=softcap, inv_t=inv_t,
                          block_size=block_size, axis_name=axis_name)
  log_probs = _args.mark_bad_labels(log_probs, y, valid, lb.global_vocab_size(w, vd, axis_name))
  return log_probs.reshape(batch).astype(dtype), entropy.reshape(batch).astype(dtype)

"""Public entry points and dispatch for distillation divergences over logits and fused heads."""

from __future__ import annotations

import jax

from jaxdiv import _validation
from jaxdiv.kernels import _args
from jaxdiv.kernels import _dispatch
from jaxdiv.kernels import _softcap
from jaxdiv.kernels.distillation import base
from jaxdiv.kernels.distillation import chunked_xla
from jaxdiv.kernels.distillation import fused_linear
from jaxdiv.kernels.distillation import fused_linear_pallas
from jaxdiv.kernels.distillation import pallas_gpu
from jaxdiv.kernels.distillation import reference
from jaxdiv.kernels.distillation import xla

IMPLEMENTATIONS = _dispatch.registry(
    _dispatch.triton(pallas_gpu.divergence),
    # On XLA:CPU the tiles stay in cache: 0.48x of optax's time against 0.89x for "xla"
    # (bench/kernels.py, 1024 x 131072, value and gradient); elsewhere "xla" comes first.
    _dispatch.Implementation("chunked", chunked_xla.divergence,
                             lambda backend, **_: backend == "cpu"),
    _dispatch.Implementation("xla", xla.divergence),
)

LINEAR_IMPLEMENTATIONS = _dispatch.registry(
    # Tested in interpret mode only: `None` picks it once it has been compiled on a GPU.
    _dispatch.triton(fused_linear_pallas.linear_divergence, default=False),
    _dispatch.Implementation("chunked", fused_linear.linear_divergence),
    _dispatch.Implementation("xla", fused_linear.linear_divergence_xla),
)


def _config(divergence, beta, temperature):
  if divergence not in base.DIVERGENCES:
    raise ValueError(f"`divergence` must be one of {base.DIVERGENCES}; got {divergence!r}.")
  _validation.require_static(beta, "beta")
  _validation.require_static(temperature, "temperature")
  _validation.check_real(beta, "beta", lo=0, hi=1, allow_array=False)
  _validation.check_real(temperature, "temperature", lo=0, lo_open=True, allow_array=False)
  return dict(divergence=divergence, beta=float(beta), inv_t=1.0 / float(temperature))


def distillation_divergence(
    student_logits: jax.typing.ArrayLike,
    teacher_logits: jax.typing.ArrayLike,
    *,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    where: jax.typing.ArrayLike | None = None,
    implementation: str | None = None,
    block_size: int | tuple[int, int] | None = None,
    softcap: float | None = None,
) -> jax.Array:
  r"""Per-token divergence between the teacher's and the student's softmax at temperature T.

  With p_s = softmax(student / T), p_t = softmax(teacher / T):

  .. math::
    \mathrm{forward\_kl} = \mathrm{KL}(p_t \| p_s), \quad
    \mathrm{reverse\_kl} = \mathrm{KL}(p_s \| p_t), \quad
    \mathrm{js} = \beta\,\mathrm{KL}(p_t \| m) + (1 - \beta)\,\mathrm{KL}(p_s \| m),\;
    m = \beta p_t + (1 - \beta) p_s

  (the generalised Jensen-Shannon divergence of Liger-Kernel's JSD; β = 0.5 is the usual JS,
  β = 0 or 1 gives 0). The teacher gets no gradient; no T² factor is applied here.

  Args:
    student_logits: [..., vocab].
    teacher_logits: [..., vocab], same shape.
    divergence: "forward_kl", "reverse_kl" or "js".
    beta: the JS mixture weight of the teacher, in [0, 1] (static).
    temperature: T > 0 (static).
    where: optional [...] token mask; False tokens give 0 and no gradient.
    implementation: None, "xla", "chunked" or "pallas", as for the cross-entropy.
    block_size: tile size, int (vocabulary) or (tokens, vocabulary).
    softcap: None, or c > 0 (static): both logits are capped to c tanh(z / c) (Gemma 2)
      before the temperature, elementwise before the kernel (exact gradient).

  Returns:
    [...] per-token divergence in the student's dtype.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.kernels import distillation_divergence
    >>> s = jnp.array([[0.0, 1.0, 2.0]]); t = jnp.array([[2.0, 1.0, 0.0]])
    >>> distillation_divergence(s, t, divergence="forward_kl")
    Array([1.150421], dtype=float32)
  """
  zs = _validation.as_float_array(student_logits, "student_logits")
  zt = _validation.as_float_array(teacher_logits, "teacher_logits")
  if zs.shape != zt.shape or zs.ndim < 1:
    raise ValueError("`student_logits` and `teacher_logits` must have one shape with a"
                     f" vocabulary axis; got {zs.shape} and {zt.shape}.")
  cfg = _config(divergence, beta, temperature)
  batch = zs.shape[:-1]
  valid = _args.token_mask(batch, where=where)
  zs2, zt2 = zs.reshape(-1, zs.shape[-1]), zt.reshape(-1, zt.shape[-1])
  softcap = _softcap.check(softcap)
  if softcap is not None:  # elementwise, before the kernels (autodiff through tanh)
    zs2, zt2 = _softcap.apply(zs2, softcap), _softcap.apply(zt2, softcap)
  fn = _dispatch.select(IMPLEMENTATIONS, implementation, "distillation_divergence",
                        shape=zs2.shape, dtype=zs2.dtype)
  if _args.is_float64(zs2, zt2):  # the kernels accumulate in float32; float64 stays exact
    out = reference.divergence(zs2, zt2, valid, divergence=cfg["divergence"], beta=cfg["beta"],
                               temperature=temperature)
  else:
    out = fn(zs2, zt2, valid, block_size=block_size, **cfg)
  return out.reshape(batch).astype(zs.dtype)


def fused_linear_distillation_divergence(
    student_hidden: jax.typing.ArrayLike,
    student_weight: jax.typing.ArrayLike,
    teacher_hidden: jax.typing.ArrayLike | None = None,
    teacher_weight: jax.typing.ArrayLike | None = None,
    *,
    teacher_logits: jax.typing.ArrayLike | None = None,
    divergence: str = "forward_kl",
    beta: float = 0.5,
    temperature: float = 1.0,
    where: jax.typing.ArrayLike | None = None,
    implementation: str | None = None,
    block_size: int | None = None,
    weight_layout: str | None = None,
    teacher_weight_layout: str | None = None,
    softcap: float | None = None,
) -> jax.Array:
  r""":func:`distillation_divergence` of `student_hidden @ student_weight` against the teacher,
  computed one vocabulary block at a time (no [tokens, vocab] array).

  The teacher is either `teacher_hidden` and `teacher_weight` (its own head, possibly of another
  model dimension) or `teacher_logits`. Gradients flow to the student's hidden states and head.
  With a policy as the student and its reference model as the teacher,
  `divergence="reverse_kl"` is the exact per-token KL penalty KL(π‖π_ref) of RL fine-tuning
  (the quantity that :func:`jaxdiv.losses.kl_penalty`'s k1/k2/k3 estimate from samples).

  Args:
    student_hidden: [..., d].
    student_weight: [d, vocab] or [vocab, d] (see `weight_layout`).
    teacher_hidden: [..., d_t] (with `teacher_weight`), or None.
    teacher_weight: [d_t, vocab] or [vocab, d_t], or None.
    teacher_logits: [..., vocab] instead of the teacher's hidden states and head.
    divergence, beta, temperature, where: as in :func:`distillation_divergence`.
    implementation: None or "chunked" (blockwise), "xla" (materialises both logits),
      "pallas" (the logits tiles formed inside Pallas kernels; Triton on GPU, interpret mode
      elsewhere; `None` does not pick it yet, as it has not been compiled on a GPU).
    block_size: vocabulary block.
    weight_layout, teacher_weight_layout: "dv", "vd" or None (inferred from the shapes).
    softcap: None, or c > 0 (static): the student's and the teacher's logits (given or
      formed) are capped to c tanh(z / c) before the temperature, inside the blockwise walks;
      the cap's derivative is recomputed in the backward pass.

  Returns:
    [...] per-token divergence.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.kernels import fused_linear_distillation_divergence
    >>> h = jnp.ones((1, 2)); w = jnp.array([[0.0, 1.0, 2.0], [0.0, 0.0, 0.0]])
    >>> fused_linear_distillation_divergence(h, w, teacher_logits=jnp.array([[2.0, 1.0, 0.0]]))
    Array([1.150421], dtype=float32)
  """
  h, w, vd, batch, dtype = _args.linear_head(student_hidden, student_weight, weight_layout,
                                             names=("student_hidden", "student_weight"))
  vocab = w.shape[0 if vd else 1]
  teacher_vd = False
  if teacher_logits is not None:
    if teacher_hidden is not None or teacher_weight is not None:
      raise ValueError("pass either `teacher_logits` or `teacher_hidden` and `teacher_weight`.")
    zt = _validation.as_float_array(teacher_logits, "teacher_logits")
    if zt.shape != (*batch, vocab):
      raise ValueError(f"`teacher_logits` must have shape {(*batch, vocab)}; got {zt.shape}.")
    teacher = (zt.reshape(-1, vocab),)
  else:
    if teacher_hidden is None or teacher_weight is None:
      raise ValueError("pass `teacher_logits`, or both `teacher_hidden` and `teacher_weight`.")
    ht, wt, teacher_vd, t_batch, _ = _args.linear_head(
        teacher_hidden, teacher_weight, teacher_weight_layout,
        names=("teacher_hidden", "teacher_weight"))
    if t_batch != batch or wt.shape[0 if teacher_vd else 1] != vocab:
      raise ValueError(
          f"the teacher ({(*t_batch, ht.shape[-1])}, {wt.shape}) must match the student's"
          f" tokens {batch} and vocabulary {vocab}.")
    teacher = (ht, wt)
  cfg = _config(divergence, beta, temperature)
  softcap = _softcap.check(softcap)
  valid = _args.token_mask(batch, where=where)
  fn = _dispatch.select(LINEAR_IMPLEMENTATIONS, implementation,
                        "fused_linear_distillation_divergence", dtype=dtype)
  if _args.is_float64(h, *teacher):
    fn = fused_linear.linear_divergence_xla
  out = fn(h, w, teacher, valid, vd=vd, teacher_vd=teacher_vd,
           block_size=block_size, softcap=softcap, **cfg)
  return out.reshape(batch).astype(dtype)

"""Public entry points and dispatch for distillation divergences over logits and fused heads.

`logits_divergence` is the one entry that `jaxdiv.kernels.distillation_divergence` and
`jaxdiv.losses.distillation_loss` both call for what the kernels take (`kernel_gap` names what
they do not, which `jaxdiv.losses` runs in its plain maths), so the meaning of
`implementation=None` exists once.
"""

from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
from jax import lax

from jaxdiv import _sharding
from jaxdiv import _validation
from jaxdiv.kernels import _args
from jaxdiv.kernels import _blockwise as bw
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
    # First on CPU, where the tiles stay in cache (bench/README.md has the figures); elsewhere
    # "xla" comes first.
    _dispatch.Implementation("chunked", chunked_xla.divergence,
                             lambda backend, **_: backend == "cpu"),
    _dispatch.Implementation("xla", xla.divergence),
)

LINEAR_IMPLEMENTATIONS = _dispatch.registry(
    # Runs only when asked for by name: `None` does not pick it (bench/README.md: status).
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


@_sharding.auto_axes_when_explicit
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
    implementation: ``None``: the default for the backend — ``"pallas"`` on GPU where the
      installed jax lowers Pallas to Triton without deprecation, ``"chunked"`` on CPU,
      ``"xla"`` everywhere else; never Pallas interpret mode. Inputs the kernels do not take
      run the plain-jnp reference (`jaxdiv.kernels.distillation.reference`): here float64
      logits. Or ``"xla"``, ``"chunked"`` or ``"pallas"`` by name (off GPU and TPU, Pallas
      runs in interpret mode, slowly). The kernels define the gradient with a custom VJP
      (lse-only residuals): reverse mode and forward-over-reverse (Hessians) work, forward
      mode alone (`jax.jvp`, `jax.jacfwd`) does not;
      :func:`jaxdiv.losses.distillation_loss` runs the same implementation with forward mode
      too, at the cost of one more [tokens, vocab] buffer in reverse mode.
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
  batch = zs.shape[:-1]
  valid = _args.token_mask(batch, where=where)
  zs2, zt2 = zs.reshape(-1, zs.shape[-1]), zt.reshape(-1, zt.shape[-1])
  softcap = _softcap.check(softcap)
  if softcap is not None:  # elementwise, before the kernels (autodiff through tanh)
    zs2, zt2 = _softcap.apply(zs2, softcap), _softcap.apply(zt2, softcap)
  out = logits_divergence(zs2, zt2, valid, divergence=divergence, beta=beta,
                          temperature=temperature, implementation=implementation,
                          block_size=block_size)
  return out.reshape(batch).astype(zs.dtype)


def kernel_gap(divergence, beta, temperature) -> str | None:
  """What of these arguments the kernels do not take, in words (None: they take them all): a
  divergence outside `base.DIVERGENCES`, a traced `temperature`, a traced or array `beta` for
  "js" (the kernels are specialised on both numbers)."""
  if divergence not in base.DIVERGENCES:
    return f"divergence={divergence!r}"
  if _validation.concrete(temperature) is None:
    return "a traced `temperature`"
  b = _validation.concrete(beta)
  if divergence == "js" and (b is None or b.ndim):
    return "a traced or array `beta`"
  return None


def _has_mass(z: jax.Array) -> jax.Array:
  """[tokens] whether a row of logits holds a distribution. A row of -inf logits does not: its
  divergence is 0 with no gradient. A NaN row keeps its NaN: the test is "all -inf", not "max
  is -inf" (XLA:CPU's vectorised max can skip NaN)."""
  return ~jnp.all(z == -jnp.inf, axis=-1)


@_sharding.auto_axes_when_explicit
def logits_divergence(zs, zt, valid, *, divergence, beta, temperature, implementation=None,
                      block_size=None, forward_mode=False,
                      op="distillation_divergence") -> jax.Array:
  """The per-token divergence of [tokens, vocab] logits of one shape through one dispatch.

  The registry's implementation runs (`implementation`, or `None`'s default for the backend);
  float64 logits run `reference.divergence`. `valid` [tokens]: False gives 0 and no gradient.
  The teacher gets no gradient (nor tangent). `forward_mode=True` wraps the kernel's custom
  VJP in `_blockwise.gradient_jvp`, so that `jax.jvp` works too (reverse mode then forms the
  gradient in the forward pass, which holds one more [tokens, vocab] buffer; bench/README.md
  has its cost). Returns float32 (float64 for float64 logits).
  """
  if divergence != "js" and _validation.concrete(beta) is None:
    beta = 0.5  # unused here: a traced one must not stop the kernels
  valid = valid & _has_mass(zs) & _has_mass(lax.stop_gradient(zt))
  b = _validation.concrete(beta)
  if divergence == "js" and b is not None and not b.ndim and float(b) in (0.0, 1.0):
    # At the ends JS is 0 for any logits, but the kernels' beta * KL(t || m) would be 0 * inf
    # where the mixture m misses the teacher's support: evaluated as KL(x || x), 0 with NaN
    # kept, of the one distribution left (the student's gradient is then 0).
    x = lax.stop_gradient(zt) if float(b) == 1.0 else zs
    return logits_divergence(x, lax.stop_gradient(x), valid, divergence="forward_kl",
                             beta=0.5, temperature=temperature, implementation=implementation,
                             block_size=block_size, forward_mode=forward_mode, op=op)
  cfg = _config(divergence, beta, temperature)
  fn = _dispatch.select(IMPLEMENTATIONS, implementation, op, shape=zs.shape, dtype=zs.dtype)
  if _args.is_float64(zs, zt):  # the kernels accumulate in float32; float64 stays exact
    return reference.divergence(zs, zt, valid, divergence=cfg["divergence"], beta=cfg["beta"],
                                temperature=temperature)
  fn = functools.partial(fn, block_size=block_size, **cfg)
  return (bw.gradient_jvp(fn) if forward_mode else fn)(zs, zt, valid)


@_sharding.auto_axes_when_explicit
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
    implementation: ``None``: the default for the backend — ``"chunked"`` on every backend
      (the Pallas kernel runs only when asked for); never Pallas interpret mode. Or
      ``"chunked"`` (blockwise), ``"xla"`` (materialises both logits) or ``"pallas"`` (the
      logits tiles formed inside Pallas kernels; Triton on GPU, interpret mode elsewhere).
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
  if teacher_logits is not None:  # logits from a head always hold a distribution
    valid = valid & _has_mass(lax.stop_gradient(teacher[0]))
  if divergence == "js" and cfg["beta"] == 1.0:
    # JS at beta 1 is 0 for any student, but the kernels' (1 - beta) * KL(s || m) would be
    # 0 * inf where the teacher (= m) misses part of the student's support: evaluated as
    # KL(t || t), 0 with the teacher's NaN kept (as `logits_divergence`; at beta 0 the
    # mixture is the student's full-support softmax and the kernels' terms are exact).
    t = tuple(lax.stop_gradient(x) for x in teacher)
    if teacher_logits is not None:
      out = logits_divergence(t[0], t[0], valid, divergence="forward_kl", beta=0.5,
                              temperature=temperature, block_size=block_size)
    else:
      out = fn(*t, t, valid, vd=teacher_vd, teacher_vd=teacher_vd, block_size=block_size,
               softcap=softcap, **{**cfg, "divergence": "forward_kl"})
    return out.reshape(batch).astype(dtype)
  out = fn(h, w, teacher, valid, vd=vd, teacher_vd=teacher_vd,
           block_size=block_size, softcap=softcap, **cfg)
  return out.reshape(batch).astype(dtype)

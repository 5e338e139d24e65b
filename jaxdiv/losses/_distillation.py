"""Distillation losses: any divergence between teacher and student logits, teacher held constant.

One piece of machinery, :func:`divergence_loss`, turns a core divergence ``D(p, q, *, axis,
where, from_logits)`` into a loss on logits (temperature, token masks, reduction);
:func:`distillation_loss` names the usual choices; what the kernels take (three divergences,
static temperature, token masks, the vocabulary last) it sends to
:mod:`jaxdiv.kernels.distillation`'s one entry, so that ``implementation=None`` means there what
it means in :func:`jaxdiv.kernels.distillation_divergence`.
"""

from __future__ import annotations

from collections.abc import Callable

import jax
import jax.numpy as jnp
from jax import lax
from jax.typing import ArrayLike

from jaxdiv import _fallback
from jaxdiv import _numerics
from jaxdiv import _validation
from jaxdiv.discrete import js_divergence
from jaxdiv.discrete import kl_divergence
from jaxdiv.discrete import total_variation_distance
from jaxdiv.kernels.distillation import api as distillation_api
from jaxdiv.losses import _common
from jaxdiv.losses import _softcap
from jaxdiv.losses._reductions import reduce_loss

DIVERGENCES = ("forward_kl", "reverse_kl", "js", "skew_kl", "skew_reverse_kl", "tv")


def divergence_loss(
    divergence_fn: Callable[..., jax.Array],
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    temperature: ArrayLike = 1.0,
    temperature_scaling: bool = False,
    where: ArrayLike | None = None,
    reduction: str = "none",
    axis: int = -1,
    reverse: bool = False,
    **kwargs,
) -> jax.Array:
  r"""Turns a divergence between distributions into a loss on student and teacher logits.

  .. math::
    \ell = c\, D\big(\mathrm{softmax}(t / T) \,\big\|\, \mathrm{softmax}(s / T)\big),
    \qquad c = T^2 \text{ if temperature\_scaling else } 1,

  with teacher logits :math:`t` held constant (``stop_gradient``) and student logits
  :math:`s`. ``divergence_fn`` is any jaxdiv divergence (or one with its calling convention,
  ``fn(p, q, *, axis, where, from_logits, **kwargs)``), e.g. :func:`jaxdiv.kl_divergence`,
  :func:`jaxdiv.renyi_divergence` with ``alpha=``, or :func:`jaxdiv.f_divergence` with a
  generator ``f=``; its gradient is JAX's, no custom rule needed.

  Args:
    divergence_fn: ``D(p, q, ...)``; called with the teacher as ``p`` and the student as ``q``
      (``reverse=True`` swaps them).
    student_logits: the student's logits, shape ``[..., vocab]``.
    teacher_logits: the teacher's logits, broadcastable with ``student_logits``.
    temperature: :math:`T > 0`, dividing both logits.
    temperature_scaling: multiply by :math:`T^2`, which keeps the gradient's scale independent
      of :math:`T` (Hinton et al.).
    where: a token mask (the batch shape, e.g. ``[batch, seq]``: masked tokens give 0 and no
      gradient) or a vocabulary mask (the logits' shape: masked entries leave both softmaxes).
    reduction: ``"none"`` (per-token), ``"mean"`` (over valid tokens), ``"sum"`` or
      ``"sequence_mean"`` (over valid tokens per sequence, the last batch axis); see
      :func:`reduce_loss`.
    axis: the vocabulary (distribution) axis.
    reverse: compute :math:`D(\text{student} \,\|\, \text{teacher})` instead.
    **kwargs: passed to ``divergence_fn`` (``alpha=``, ``beta=``, ``f=``, ...).

  Returns:
    The per-token loss (the batch shape) or, with a reduction, a scalar.

  Example:
    >>> import jax.numpy as jnp, jaxdiv
    >>> from jaxdiv.losses import divergence_loss
    >>> s = jnp.array([[1.0, 0.0, -1.0]]); t = jnp.array([[0.0, 0.0, 0.0]])
    >>> hellinger_sq = lambda u: (jnp.sqrt(u) - 1.0) ** 2
    >>> print(divergence_loss(jaxdiv.f_divergence, s, t, f=hellinger_sq))
    [0.1405]

  References:
    Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, 2015.
  """
  _validation.check_callable(divergence_fn, "divergence_fn")
  temperature_scaling = _validation.check_bool(temperature_scaling, "temperature_scaling")
  reverse = _validation.check_bool(reverse, "reverse")
  t_value = _validation.check_real(temperature, "temperature", lo=0, lo_open=True,
                               allow_array=False)
  s, t, ax, mask, result_dtype = _prepare(student_logits, teacher_logits, axis, where,
                                          temperature)
  p, q = (s, t) if reverse else (t, s)
  out = divergence_fn(p, q, axis=ax, where=mask, from_logits=True, **kwargs)
  out = jnp.asarray(out)
  if temperature_scaling:
    out = out * jnp.square(jnp.asarray(t_value, out.dtype))
  token_mask = None if mask is None else jnp.any(mask, axis=ax)
  return reduce_loss(out.astype(result_dtype), token_mask, reduction=reduction)


def _prepare(student_logits, teacher_logits, axis, where, temperature):
  """Validation, teacher constant, temperature, and the token/vocabulary mask rule."""
  s = _validation.as_float_array(student_logits, "student_logits")
  t = _validation.as_float_array(teacher_logits, "teacher_logits")
  result_dtype, acc = _validation.compute_dtype(s, t)
  s, t, ax = _validation.broadcast_pair(s, t, axis, ("student_logits", "teacher_logits"))
  mask = _common.expand_where(where, s.shape, (ax,))
  traced = _validation.concrete(temperature) is None
  temperature = jnp.asarray(temperature, acc)

  def scaled(x):
    if not traced:
      return x / temperature
    # d/dT of x / T is -x / T^2: NaN at a NaN logit, and a row summed away (its tangents
    # zeroed by the divergence's lost-row rule) met it as 0 * NaN in d/dT. Divided as the
    # finite part plus the rest held constant: the same values (NaN and infinities kept), the
    # derivative in T of the finite logits only.
    finite = jnp.where(jnp.isfinite(x), x, 0)
    return finite / temperature + lax.stop_gradient(x - finite)

  s = scaled(s.astype(acc))
  t = scaled(lax.stop_gradient(t.astype(acc)))
  return s, t, ax, mask, result_dtype


def _skew_kl(p, q, *, alpha, axis, where, from_logits=True):
  """KL(p‖αp + (1-α)q) from logits: the mixture's log-probabilities, then the core KL."""
  del from_logits
  # A row with a NaN or +inf logit is a constant (the core divergences' rule): its tangents are
  # zeroed before the log-softmaxes, whose derivative meets its NaN entry as 0 * NaN. The
  # normalisers are the log-softmaxes' own (the same operations: one computation under jit).
  lost = None
  for x in (p, q):
    xm = x if where is None else jnp.where(where, x, -jnp.inf)
    lse = lax.stop_gradient(_numerics.logsumexp(xm, axis=axis, keepdims=True))
    bad = _numerics.lost_rows(lse)
    lost = bad if lost is None else lost | bad
  p, q = (_fallback.tangent_if(jnp.logical_not(lost), x) for x in (p, q))
  log_p = _numerics.log_softmax(p, axis=axis, where=where)
  log_q = _numerics.log_softmax(q, axis=axis, where=where)
  alpha = jnp.asarray(alpha, log_p.dtype)
  return kl_divergence(log_p, _log_mixture(alpha, log_p, log_q), axis=axis, where=where,
                       from_logits=True)


def _log_mixture(alpha, log_p, log_q):
  """``log(alpha p + (1 - alpha) q)`` with its exact ``alpha``-derivative at 0 and 1.

  Trap avoided: ``log(alpha) + log p`` has derivative ``1/alpha``, infinite at ``alpha = 0``
  (and ``safe_log`` makes it 0, a wrong slope). Here the larger of the two terms is factored
  out, ``m = e^hi (w_hi + w_lo e^(lo - hi))``, a sum of two non-negative terms linear in alpha.
  """
  p_hi = log_p >= log_q
  hi, lo = jnp.maximum(log_p, log_q), jnp.minimum(log_p, log_q)
  w_hi = jnp.where(p_hi, alpha, 1 - alpha)
  fin = jnp.isfinite(hi)
  s = w_hi + (1 - w_hi) * jnp.exp(jnp.where(fin, lo - hi, 0.0))
  pos = fin & (s > 0)
  out = jnp.where(pos, jnp.where(fin, hi, 0.0) + jnp.log(jnp.where(pos, s, 1.0)), -jnp.inf)
  return jnp.where(jnp.isnan(hi), hi, out)  # NaN stays NaN (it was -inf: the row's KL then 0)


def distillation_loss(
    student_logits: ArrayLike,
    teacher_logits: ArrayLike,
    *,
    divergence: str = "forward_kl",
    temperature: ArrayLike = 1.0,
    temperature_scaling: bool = False,
    beta: ArrayLike = 0.5,
    alpha: ArrayLike = 0.1,
    where: ArrayLike | None = None,
    reduction: str = "none",
    axis: int = -1,
    implementation: str | None = None,
    softcap: float | None = None,
) -> jax.Array:
  r"""Knowledge-distillation loss between student and teacher logits (teacher constant).

  With :math:`p = \mathrm{softmax}(t/T)` (teacher) and :math:`q = \mathrm{softmax}(s/T)`
  (student), ``divergence`` picks:

  ===================  ===================================================================
  ``"forward_kl"``     KL(p‖q), Hinton's distillation loss (mass-covering)
  ``"reverse_kl"``     KL(q‖p), mode-seeking (MiniLLM)
  ``"js"``             β KL(p‖m) + (1-β) KL(q‖m), m = βp + (1-β)q (GKD's generalised JSD)
  ``"skew_kl"``        KL(p‖αp + (1-α)q) (DistiLLM), finite even where q = 0
  ``"skew_reverse_kl"``  KL(q‖αq + (1-α)p)
  ``"tv"``             ½ Σ |p - q|, total variation
  ===================  ===================================================================

  The result is multiplied by :math:`T^2` with ``temperature_scaling=True``. Built on
  :func:`divergence_loss` and the core divergences.

  Args:
    student_logits: the student's logits, shape ``[..., vocab]``.
    teacher_logits: the teacher's logits, broadcastable with ``student_logits``.
    divergence: one of the names above.
    temperature: :math:`T > 0`.
    temperature_scaling: multiply by :math:`T^2` (Hinton et al.'s gradient scaling).
    beta: the JS mixture weight of the teacher, in ``[0, 1]``.
    alpha: the skew weight, in ``[0, 1]`` (DistiLLM uses 0.1).
    where: a token mask (the batch shape) or a vocabulary mask (the logits' shape).
    reduction: ``"none"`` (per-token), ``"mean"``, ``"sum"`` or ``"sequence_mean"``.
    axis: the vocabulary axis.
    implementation: ``None``: the default for the backend, as in
      :func:`jaxdiv.kernels.distillation_divergence` — ``"pallas"`` on GPU where the
      installed jax lowers Pallas to Triton without deprecation, ``"chunked"`` on CPU,
      ``"xla"`` everywhere else; never Pallas interpret mode. Inputs the kernels do not take
      run the plain-jnp maths (:func:`divergence_loss` over the core divergences):
      ``skew_kl``, ``skew_reverse_kl`` and ``tv``, a traced ``temperature`` (or ``beta`` for
      ``js``; differentiable there), a vocabulary ``where`` mask, a vocabulary axis other than
      the last; and float64 logits run the kernels' plain-jnp reference. Or one of ``"xla"``,
      ``"chunked"``, ``"pallas"`` by name (the inputs above are then an error). Every mode of
      autodiff works (``jax.jvp``, ``jax.jacfwd`` too).
    softcap: ``None``, or c > 0: both logits are capped to c tanh(x / c) (Gemma 2) before the
      temperature.

  Returns:
    The per-token loss (the batch shape) or, with a reduction, a scalar.

  Example:
    >>> import jax.numpy as jnp
    >>> from jaxdiv.losses import distillation_loss
    >>> s = jnp.array([[1.0, 0.0, -1.0]]); t = jnp.array([[0.0, 0.0, 0.0]])
    >>> print(distillation_loss(s, t, divergence="reverse_kl", temperature=2.0))
    [0.0784]

  References:
    Hinton, Vinyals & Dean, Distilling the Knowledge in a Neural Network, 2015;
    Gu et al., MiniLLM: Knowledge Distillation of Large Language Models, 2024;
    Agarwal et al., On-Policy Distillation of Language Models (GKD), 2024;
    Ko et al., DistiLLM: Towards Streamlined Distillation for Large Language Models, 2024.
  """
  if divergence not in DIVERGENCES:
    raise ValueError(f"`divergence` must be one of {DIVERGENCES}; got {divergence!r}.")
  _validation.check_real(beta, "beta", lo=0, hi=1)
  _validation.check_real(alpha, "alpha", lo=0, hi=1)
  _common.check_implementation(implementation)
  common = dict(temperature=temperature, temperature_scaling=temperature_scaling, where=where,
                reduction=reduction, axis=axis)
  student_logits = _softcap.cap(student_logits, softcap)
  teacher_logits = _softcap.cap(teacher_logits, softcap)
  gap = _kernel_gap(student_logits, teacher_logits, divergence, beta, temperature, where, axis)
  if gap is None:
    return _through_kernels(student_logits, teacher_logits, divergence, beta, implementation,
                            **common)
  if implementation is not None:
    raise _common.unsupported_by_kernel(gap, "distillation_loss")
  if divergence == "forward_kl":
    return divergence_loss(kl_divergence, student_logits, teacher_logits, **common)
  if divergence == "reverse_kl":
    return divergence_loss(kl_divergence, student_logits, teacher_logits, reverse=True,
                           **common)
  if divergence == "js":
    return divergence_loss(js_divergence, student_logits, teacher_logits, beta=beta, **common)
  if divergence == "skew_kl":
    return divergence_loss(_skew_kl, student_logits, teacher_logits, alpha=alpha, **common)
  if divergence == "skew_reverse_kl":
    return divergence_loss(_skew_kl, student_logits, teacher_logits, alpha=alpha, reverse=True,
                           **common)
  return divergence_loss(total_variation_distance, student_logits, teacher_logits, **common)


def _kernel_gap(student_logits, teacher_logits, divergence, beta, temperature, where, axis):
  """What the kernels do not take here, in words (None: they take it all)."""
  gap = distillation_api.kernel_gap(divergence, beta, temperature)
  if gap is not None:
    return gap
  ndim = max(jnp.ndim(student_logits), jnp.ndim(teacher_logits))
  if _validation.normalize_axis(axis, ndim, "axis") != ndim - 1:
    return f"a vocabulary axis other than the last (axis={axis})"
  if where is not None and jnp.ndim(where) != ndim - 1:
    return "a `where` mask other than a token mask (the batch shape)"
  return None


def _through_kernels(student_logits, teacher_logits, divergence, beta, implementation, *,
                     temperature, temperature_scaling, where, reduction, axis):
  temperature_scaling = _validation.check_bool(temperature_scaling, "temperature_scaling")
  _validation.check_real(temperature, "temperature", lo=0, lo_open=True, allow_array=False)
  s = _validation.as_float_array(student_logits, "student_logits")
  t = _validation.as_float_array(teacher_logits, "teacher_logits")
  result_dtype, _ = _validation.compute_dtype(s, t)
  s, t, _ = _validation.broadcast_pair(s, t, axis, ("student_logits", "teacher_logits"))
  batch = s.shape[:-1]
  token_where = None
  valid = jnp.ones(batch, bool)
  if where is not None:
    token_where = _validation.broadcast_where(jnp.asarray(where), batch)
    valid = token_where
  dtype = jnp.promote_types(s.dtype, t.dtype)
  s2, t2 = s.astype(dtype).reshape(-1, s.shape[-1]), t.astype(dtype).reshape(-1, s.shape[-1])
  # Rows of -inf logits (no distribution) and JS at beta 0 or 1 are the kernels' own cases.
  valid = valid.reshape(-1)
  out = distillation_api.logits_divergence(
      s2, lax.stop_gradient(t2), valid, divergence=divergence, beta=beta,
      temperature=temperature, implementation=implementation, forward_mode=True,
      op="distillation_loss")
  out = out.reshape(batch)
  if temperature_scaling:
    out = out * jnp.square(jnp.asarray(temperature, out.dtype))
  return reduce_loss(out.astype(result_dtype), token_where, reduction=reduction)

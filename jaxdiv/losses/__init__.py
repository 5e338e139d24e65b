"""Losses for training, in optax's form (model output first, target second, per example).

The names shared with ``optax.losses`` are drop-ins: same arguments, values and gradients,
except that jaxdiv's are never NaN where the value is finite. The rest (distillation, RL KL
penalties, reductions, and :func:`divergence_loss` for any jaxdiv divergence) go beyond optax.
"""

from jaxdiv import checks as _checks
from jaxdiv.kernels import fused_linear_cross_entropy
from jaxdiv.kernels import fused_linear_distillation_divergence
from jaxdiv.kernels import fused_linear_token_log_probs
from jaxdiv.kernels import fused_linear_topk_distillation_loss
from jaxdiv.kernels import topk_distillation_loss
from jaxdiv.losses import _checkify
from jaxdiv.losses._classification import poly_loss_cross_entropy
from jaxdiv.losses._classification import safe_softmax_cross_entropy
from jaxdiv.losses._classification import sigmoid_binary_cross_entropy
from jaxdiv.losses._classification import sigmoid_focal_loss
from jaxdiv.losses._classification import softmax_cross_entropy
from jaxdiv.losses._classification import softmax_cross_entropy_with_integer_labels
from jaxdiv.losses._distillation import distillation_loss
from jaxdiv.losses._distillation import divergence_loss
from jaxdiv.losses._kl import convex_kl_divergence
from jaxdiv.losses._kl import generalized_kl_divergence
from jaxdiv.losses._kl import kl_divergence
from jaxdiv.losses._kl import kl_divergence_with_log_targets
from jaxdiv.losses._reductions import reduce_loss
from jaxdiv.losses._rl import kl_penalty

__all__ = [
    "convex_kl_divergence",
    "distillation_loss",
    "divergence_loss",
    "fused_linear_cross_entropy",
    "fused_linear_distillation_divergence",
    "fused_linear_token_log_probs",
    "fused_linear_topk_distillation_loss",
    "generalized_kl_divergence",
    "kl_divergence",
    "kl_divergence_with_log_targets",
    "kl_penalty",
    "poly_loss_cross_entropy",
    "reduce_loss",
    "safe_softmax_cross_entropy",
    "sigmoid_binary_cross_entropy",
    "sigmoid_focal_loss",
    "softmax_cross_entropy",
    "softmax_cross_entropy_with_integer_labels",
    "topk_distillation_loss",
]

_checks.register(__name__, _checkify.check_arguments)

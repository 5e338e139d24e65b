"""Large-vocabulary kernels: cross-entropy, distillation divergences and their fused linear
heads, each as a float64-tested reference, plain XLA, blockwise XLA and Pallas.

`implementation=None` is the default for the backend: each function's docstring says which
implementation that is on CPU, GPU and TPU, and which inputs run its plain-jnp reference; it is
never Pallas interpret mode.
"""

from jaxdiv import checks as _checks
from jaxdiv.kernels._dispatch import NAMES as IMPLEMENTATIONS
from jaxdiv.kernels.cross_entropy.api import cross_entropy_with_integer_labels
from jaxdiv.kernels.distillation.api import distillation_divergence
from jaxdiv.kernels.distillation.api import fused_linear_distillation_divergence
from jaxdiv.kernels.distillation.base import DIVERGENCES as DISTILLATION_DIVERGENCES
from jaxdiv.kernels.linear_cross_entropy.api import fused_linear_cross_entropy
from jaxdiv.kernels.token_log_probs.api import fused_linear_token_log_probs
from jaxdiv.kernels.topk_distillation.api import fused_linear_topk_distillation_loss
from jaxdiv.kernels.topk_distillation.api import topk_distillation_loss

__all__ = [
    "DISTILLATION_DIVERGENCES",
    "IMPLEMENTATIONS",
    "cross_entropy_with_integer_labels",
    "distillation_divergence",
    "fused_linear_cross_entropy",
    "fused_linear_distillation_divergence",
    "fused_linear_token_log_probs",
    "fused_linear_topk_distillation_loss",
    "topk_distillation_loss",
]

_checks.register(__name__, _checks.check_log_space)

"""The layers of jaxdiv: the one table that `tests/test_layers.py` enforces.

Data flows down and imports point down: a module may import from its own package and from the
layers below its own, never from a layer above nor from another package of its layer. Inside
`jaxdiv.kernels`, the ops form layers of their own in the same way (`KERNEL_LAYERS`).

A module whose name starts with ``_`` is private to the package that holds it: only that
package (and the packages inside it) imports it. The base modules are private to ``jaxdiv``
itself, hence shared by all. A name that starts with ``_`` is private to its module's package.
What two packages share moves down to the base.

`jaxdiv/__init__.py` (the public API) and `jaxdiv/__main__.py` stand above every layer.
"""

from __future__ import annotations

# Lowest first. Each entry is a module or a package (with everything inside it).
LAYERS: tuple[tuple[str, ...], ...] = (
    # Arrays whose type carries a sharding (Explicit mesh axes): what the base and the kernels ask.
    ("jaxdiv._sharding",),
    # The shared base: stable primitives, JSON; trace-time validation; checkify.
    ("jaxdiv._numerics", "jaxdiv._fallback", "jaxdiv._json", "jaxdiv._layers", "jaxdiv._interrupt",
     "jaxdiv._version", "jaxdiv._unit_axes"),
    ("jaxdiv._validation",),
    ("jaxdiv.checks",),
    # Categorical divergences in log space; sample-based estimators.
    ("jaxdiv.discrete", "jaxdiv.estimators"),
    # Large-vocabulary ops: reference, XLA, blockwise XLA, Pallas.
    ("jaxdiv.kernels",),
    # optax-compatible losses; closed forms between parametric distributions.
    ("jaxdiv.losses", "jaxdiv.parametric"),
    # Streaming, sharded, multi-host evaluation (the package; `jaxdiv.evaluate` is its function).
    ("jaxdiv.evaluation",),
    # The main job, and the command line that runs it.
    ("jaxdiv.demo",),
    ("jaxdiv.cli",),
)

# Inside jaxdiv.kernels, lowest first: the blockwise/argument/dispatch helpers every op shares
# (the kernels' private modules), then the ops, each building only on those below it.
KERNEL_LAYERS: tuple[tuple[str, ...], ...] = (
    ("jaxdiv.kernels._args", "jaxdiv.kernels._blockwise", "jaxdiv.kernels._dispatch",
     "jaxdiv.kernels._shapes", "jaxdiv.kernels._softcap"),
    # The walk over vocabulary blocks of a fused linear head (built on `_blockwise`), then the
    # tile code of the Pallas GPU kernels (its fused-linear walk built on that).
    ("jaxdiv.kernels._linear_blocks",),
    ("jaxdiv.kernels._pallas_gpu",),
    ("jaxdiv.kernels.cross_entropy",),
    ("jaxdiv.kernels.linear_cross_entropy",),
    ("jaxdiv.kernels.distillation", "jaxdiv.kernels.token_log_probs"),
    ("jaxdiv.kernels.topk_distillation",),
)

# Modules above every layer: they may import anything public.
TOP = ("jaxdiv", "jaxdiv.__main__")

# Imports that break the rules today, each with the reason and who removes it. Keep it empty.
ALLOWED: dict[tuple[str, str], str] = {}

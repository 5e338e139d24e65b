"""Arrays whose type carries a sharding (a mesh with `AxisType.Explicit` axes, which is what
`jax.make_mesh` gives by default in jax 0.10).

On such arrays every operation must know its output's sharding at trace time: a gather of
replicated rows by sharded labels, a `dynamic_update_slice` of a replicated buffer by a sharded
block or a contraction over a sharded axis each raise `ShardingTypeError`. The blockwise kernels
hold all three. Rather than spell out shardings in every loop, their public functions run under
`jax.sharding.auto_axes`: inside, the axes are Auto (XLA's sharding propagation, as under a
plain `jit` of `NamedSharding` arrays), and the outputs come back with the batch sharding of the
first array argument.
"""

from __future__ import annotations

import functools
from collections.abc import Callable

import jax
from jax.sharding import PartitionSpec


def _spec(x) -> tuple | None:
  try:
    return tuple(jax.typeof(x).sharding.spec)
  except (AttributeError, TypeError):  # no typeof or no sharding in the type (older jax)
    return None


def explicitly_sharded(x) -> bool:
  """Whether `x`'s type carries a sharding over some mesh axis (Explicit axes)."""
  spec = _spec(x)
  return spec is not None and any(s is not None for s in spec)


def auto_axes_when_explicit(fn: Callable) -> Callable:
  """`fn` run under `jax.sharding.auto_axes` where an array argument is explicitly sharded,
  else as it is. Its outputs shaped like the leading axes of the first array argument take
  that argument's sharding of those axes (per-token losses stay sharded as the tokens were);
  the others (a reduced loss) are replicated. Arguments that are not arrays stay static."""

  @functools.wraps(fn)
  def wrapper(*args, **kwargs):
    leaves, tree = jax.tree.flatten((args, kwargs))
    # Scalars stay closed over: a concrete one (a hyperparameter passed as a jax scalar) must
    # stay concrete for the kernels' static checks, and has no sharding to convert.
    arrays = [i for i, leaf in enumerate(leaves) if isinstance(leaf, jax.Array) and leaf.ndim]
    sharded = [i for i in arrays if explicitly_sharded(leaves[i])]
    if not sharded or not hasattr(jax.sharding, "auto_axes"):
      return fn(*args, **kwargs)
    mesh = jax.typeof(leaves[sharded[0]]).sharding.mesh
    like = leaves[arrays[0]]
    spec = _spec(like)
    spec += (None,) * (like.ndim - len(spec))

    def call(*xs):
      full = list(leaves)
      for i, x in zip(arrays, xs):
        full[i] = x
      a, kw = jax.tree.unflatten(tree, full)
      return fn(*a, **kw)

    xs = [leaves[i] for i in arrays]
    # The output shapes, traced without shardings (with them the trace would raise as above).
    shapes = jax.eval_shape(call, *(jax.ShapeDtypeStruct(x.shape, x.dtype) for x in xs))

    def out_spec(s):
      k = len(s.shape)
      batch = k <= like.ndim and tuple(s.shape) == tuple(like.shape[:k])
      return PartitionSpec(*spec[:k]) if batch else PartitionSpec()

    # Only the Explicit axes: inside a `shard_map` over some of the mesh's axes (vocabulary
    # parallelism) the Manual ones stay Manual.
    axes = tuple(n for n, t in zip(mesh.axis_names, mesh.axis_types)
                 if t == jax.sharding.AxisType.Explicit)
    with jax.sharding.use_abstract_mesh(mesh):
      return jax.sharding.auto_axes(call, axes=axes,
                                    out_sharding=jax.tree.map(out_spec, shapes))(*xs)

  return wrapper

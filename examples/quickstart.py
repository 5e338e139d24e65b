"""The README's quickstart, runnable as written: `python examples/quickstart.py`."""

import jax
import jax.numpy as jnp

import jaxdiv

p = jnp.array([0.1, 0.4, 0.5])
q = jnp.array([0.3, 0.3, 0.4])
print("H(p)         =", float(jaxdiv.entropy(p)))
print("KL(p||q)     =", float(jaxdiv.kl_divergence(p, q)))
print("JS(p,q) bits =", float(jaxdiv.js_divergence(p, q, base=2)))
print("D_2(p||q)    =", float(jaxdiv.renyi_divergence(p, q, alpha=2.0)))

# Logits, batches, masks and gradients: everything is a pure function of arrays.
logits_p = jax.random.normal(jax.random.key(0), (4, 10))
logits_q = jax.random.normal(jax.random.key(1), (4, 10))
mask = jnp.arange(10) < 8  # the last two classes are outside the support
kl = jax.jit(lambda a, b: jaxdiv.kl_divergence(a, b, from_logits=True, where=mask))
print("per-row KL   =", kl(logits_p, logits_q))
grad = jax.grad(lambda a: kl(a, logits_q).sum())(logits_p)
print("grad finite  =", bool(jnp.all(jnp.isfinite(grad))), "| masked grad =", grad[:, 8:].sum())

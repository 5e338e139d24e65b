# %% [markdown]
# # 2. Forward vs reverse KL
#
# Fit a single Gaussian $q_\theta = \mathcal N(\mu, \sigma^2)$ to a bimodal target
# $p = \tfrac12\mathcal N(-3, 1) + \tfrac12\mathcal N(3, 1)$ by gradient descent with optax, under
#
# * the **forward** KL, $\mathrm{KL}(p\,\|\,q_\theta)$ (maximum likelihood): it punishes $q$
#   for missing mass that $p$ has, so the fit covers both modes (*mean-seeking*);
# * the **reverse** KL, $\mathrm{KL}(q_\theta\,\|\,p)$ (variational inference): it punishes $q$
#   for putting mass where $p$ has little, so the fit sits on one mode (*mode-seeking*);
# * the Rényi divergences $D_\alpha(p\,\|\,q_\theta)$ and the alpha divergences, whose order moves
#   between the two.
#
# The densities live on a fine grid of $x$, so every divergence is a `jaxdiv` divergence between
# categorical distributions given by their logits (the log-density on the grid). The closed forms
# of the Gaussian KL check the grid and the fits.

# %%
import os

import jax
import jax.numpy as jnp
import matplotlib.pyplot as plt
import numpy as np
import optax

import jaxdiv
from jaxdiv import parametric

jax.config.update("jax_enable_x64", True)
QUICK = os.environ.get("JAXDIV_NOTEBOOK_QUICK") == "1"
plt.rcParams.update({"figure.dpi": 60, "savefig.dpi": 60, "font.size": 9})
STEPS = 300 if QUICK else 1500
x = jnp.linspace(-20.0, 20.0, 1601 if QUICK else 4001)
dx = float(x[1] - x[0])


def normal_logpdf(x, mu, sigma):
  return -0.5 * ((x - mu) / sigma) ** 2 - jnp.log(sigma) - 0.5 * jnp.log(2 * jnp.pi)


log_p = jnp.logaddexp(normal_logpdf(x, -3.0, 1.0), normal_logpdf(x, 3.0, 1.0)) + jnp.log(0.5)
print("grid points", x.size, "| steps", STEPS)

# %% [markdown]
# **The grid is fine enough.** The discretised KL between two Gaussians (through
# `jaxdiv.kl_divergence(..., from_logits=True)`) against the closed form
# $\log\frac{s}{\sigma} + \frac{\sigma^2 + (\mu - m)^2}{2 s^2} - \frac12$
# (`jaxdiv.parametric.normal_kl_divergence`):

# %%
for (m1, s1, m2, s2) in [(0.0, 1.0, 1.0, 2.0), (3.0, 1.0, 0.0, np.sqrt(10)), (-2.0, 0.5, 2.0, 3.0)]:
  grid = jaxdiv.kl_divergence(normal_logpdf(x, m1, s1), normal_logpdf(x, m2, s2), from_logits=True)
  exact = parametric.normal_kl_divergence(m1, s1, m2, s2)
  print(f"KL(N({m1},{s1}^2) || N({m2},{s2:.3g}^2)): grid {float(grid):.10f}  closed form "
        f"{float(exact):.10f}  |diff| {abs(float(grid - exact)):.1e}")

# %% [markdown]
# ## The fits
#
# Parameters $\theta = (\mu, \log\sigma)$, started at $\mu = 0.5$, $\sigma = e^{-1} \approx 0.37$
# (a narrow Gaussian right of centre, to break the symmetry), trained with `optax.adam` inside a
# `lax.scan`.

# %%
def log_q(theta):
  return normal_logpdf(x, theta[0], jnp.exp(theta[1]))


def fit(loss, steps=STEPS, lr=0.05, start=(0.5, -1.0)):
  opt = optax.adam(lr)
  theta0 = jnp.array(start)

  def step(carry, _):
    theta, state = carry
    value, grad = jax.value_and_grad(loss)(theta)
    updates, state = opt.update(grad, state)
    return (optax.apply_updates(theta, updates), state), value

  (theta, _), values = jax.jit(lambda: jax.lax.scan(step, (theta0, opt.init(theta0)), None, steps))()
  return theta, values


objectives = {
    "forward KL(p||q)": lambda t: jaxdiv.kl_divergence(log_p, log_q(t), from_logits=True),
    "reverse KL(q||p)": lambda t: jaxdiv.kl_divergence(log_q(t), log_p, from_logits=True),
}
fits = {name: fit(f) for name, f in objectives.items()}
for name, (theta, values) in fits.items():
  print(f"{name:18s} mu = {float(theta[0]):+.4f}  sigma = {float(jnp.exp(theta[1])):.4f}  "
        f"final loss {float(values[-1]):.6f}")

# %% [markdown]
# **Closed forms.** Over Gaussians, the forward KL is minimised by moment matching:
# $\mu^* = \mathbb E_p[x] = 0$ and $\sigma^{*2} = \mathrm{Var}_p[x] = 1 + 3^2 = 10$. The reverse
# KL, for modes this far apart, is minimised close to one component, $\mathcal N(3, 1)$, where its
# value is close to $\log 2$ (q sees only half of p's mass). Fit against reference:

# %%
theta_f, values_f = fits["forward KL(p||q)"]
theta_r, values_r = fits["reverse KL(q||p)"]
print(f"forward: mu {float(theta_f[0]):+.4f} (closed form 0),  sigma^2 {float(jnp.exp(2 * theta_f[1])):.4f} (closed form 10)")
print(f"reverse: mu {float(theta_r[0]):+.4f} (mode 3),  sigma {float(jnp.exp(theta_r[1])):.4f} (mode 1),  "
      f"KL(q||p) {float(values_r[-1]):.5f} vs log 2 = {np.log(2):.5f}")
print("reverse fit vs the mode, closed-form KL(q || N(3, 1)) =",
      f"{float(parametric.normal_kl_divergence(theta_r[0], jnp.exp(theta_r[1]), 3.0, 1.0)):.2e}")
print("forward loss at the moment-matched N(0, 10):",
      f"{float(objectives['forward KL(p||q)'](jnp.array([0.0, 0.5 * np.log(10)]))):.6f}",
      f"vs the fit {float(values_f[-1]):.6f}")

# %% [markdown]
# **The reverse KL has a third, spurious minimum.** Started wider ($\mu = 1$, $\sigma = 1$), the same
# descent on the reverse KL stops at a broad Gaussian centred between the modes: a local minimum
# whose value is well above the one at a mode. Mode-seeking is a property of the global minimum,
# and which minimum gradient descent finds depends on where it starts.

# %%
theta_w, values_w = fit(objectives["reverse KL(q||p)"], start=(1.0, 0.0))
g = jax.grad(objectives["reverse KL(q||p)"])(theta_w)
print(f"reverse KL from mu=1, sigma=1: mu {float(theta_w[0]):+.4f}  sigma {float(jnp.exp(theta_w[1])):.4f}  "
      f"value {float(values_w[-1]):.5f} (> {float(values_r[-1]):.5f} at the mode);  |gradient| {float(jnp.linalg.norm(g)):.1e}")
for d in (0.1, 0.3):
  nearby = [float(objectives["reverse KL(q||p)"](theta_w + jnp.array(v))) for v in
            ([d, 0.0], [-d, 0.0], [0.0, d], [0.0, -d])]
  print(f"  value at mu +-{d}, log sigma +-{d}: {np.round(nearby, 5)} (all above: {min(nearby) > float(values_w[-1])})")

# %% [markdown]
# ## In between: Rényi and alpha orders
#
# The Rényi divergence $D_\alpha(p\,\|\,q) = \frac{1}{\alpha - 1}\log\sum_i p_i^\alpha q_i^{1-\alpha}$
# is the forward KL at $\alpha = 1$; for $0 < \alpha < 1$ it equals
# $\frac{\alpha}{1-\alpha} D_{1-\alpha}(q\,\|\,p)$, so as $\alpha \to 0$ its minimiser tends to the
# reverse-KL fit. The alpha divergence
# $D^{(\alpha)}(p\,\|\,q) = \frac{\sum_i p_i^\alpha q_i^{1-\alpha} - 1}{\alpha(\alpha-1)}$ is the
# forward KL at $\alpha = 1$ and the reverse KL at $\alpha = 0$.

# %%
renyi_orders = [0.05, 0.5, 1.0, 2.0] if QUICK else [0.05, 0.25, 0.5, 0.75, 1.0, 2.0, 4.0]
alpha_orders = [0.0, 0.5, 1.0] if QUICK else [0.0, 0.25, 0.5, 0.75, 1.0]


def best_fit(loss):
  """The better of the narrow and the wide start (the lower final loss): the objectives in
  between have the same local minima as the reverse KL."""
  runs = [fit(loss, start=s) for s in [(0.5, -1.0), (1.0, 0.0)]]
  return min(runs, key=lambda r: float(r[1][-1]))[0]


renyi_fits = {a: best_fit(lambda t, a=a: jaxdiv.renyi_divergence(log_p, log_q(t), a, from_logits=True))
              for a in renyi_orders}
alpha_fits = {a: best_fit(lambda t, a=a: jaxdiv.alpha_divergence(log_p, log_q(t), a, from_logits=True))
              for a in alpha_orders}
print("Rényi D_alpha(p||q):")
for a, th in renyi_fits.items():
  print(f"  alpha {a:4}: mu {float(th[0]):+.3f}  sigma {float(jnp.exp(th[1])):.3f}")
print("alpha divergence:")
for a, th in alpha_fits.items():
  print(f"  alpha {a:4}: mu {float(th[0]):+.3f}  sigma {float(jnp.exp(th[1])):.3f}")
sig_r = np.array([float(jnp.exp(th[1])) for th in renyi_fits.values()])
sig_a = np.array([float(jnp.exp(th[1])) for th in alpha_fits.values()])
print("sigma non-decreasing in the order: Rényi", bool(np.all(np.diff(sig_r) >= -1e-3)),
      "| alpha", bool(np.all(np.diff(sig_a) >= -1e-3)))
print("alpha = 0 fit vs reverse-KL fit:", float(jnp.max(jnp.abs(alpha_fits[0.0] - theta_r))),
      "| alpha = 1 fit vs forward-KL fit:", float(jnp.max(jnp.abs(alpha_fits[1.0] - theta_f))))

# %% [markdown]
# On this target the switch is abrupt: only the orders nearest the reverse KL (Rényi α = 0.05,
# alpha-divergence α = 0) sit on a mode; from α = 0.25 on, the fit covers both modes, and its width
# grows with the order, past the moment-matched σ = √10 ≈ 3.162 of the forward KL for Rényi
# orders above 1 (which penalise missing mass even harder).

# %%
fig, axes = plt.subplots(1, 3, figsize=(14, 3.8), constrained_layout=True)
p_dens = np.exp(np.asarray(log_p))
ax = axes[0]
ax.fill_between(x, p_dens, color="0.85", label="target p")
ax.plot(x, np.exp(np.asarray(log_q(theta_f))), label="forward KL(p||q): mean-seeking")
ax.plot(x, np.exp(np.asarray(log_q(theta_r))), label="reverse KL(q||p): mode-seeking")
ax.plot(x, np.exp(np.asarray(normal_logpdf(x, 0.0, np.sqrt(10)))), "k:", label="closed form N(0, 10)")
ax.set(xlim=(-9, 9), title="Forward vs reverse KL", xlabel="x")
ax.legend(fontsize=7)
for ax, fits_, name in [(axes[1], renyi_fits, "Rényi $D_\\alpha(p||q)$"),
                        (axes[2], alpha_fits, "alpha divergence")]:
  ax.fill_between(x, p_dens, color="0.85", label="target p")
  colors = plt.cm.viridis(np.linspace(0, 0.9, len(fits_)))
  for c, (a, th) in zip(colors, fits_.items()):
    ax.plot(x, np.exp(np.asarray(log_q(th))), color=c, label=f"α = {a}")
  ax.set(xlim=(-9, 9), title=name, xlabel="x")
  ax.legend(fontsize=7)
plt.show()

# %% [markdown]
# ## The loss landscapes
#
# Forward and reverse KL over $(\mu, \sigma)$: the forward KL has one basin, at the moment-matched
# Gaussian; the reverse KL has its deepest basins on the two modes, and the shallower local
# minimum found above at $\mu = 0$, $\sigma \approx 2.7$.

# %%
mus = jnp.linspace(-5, 5, 41 if QUICK else 81)
sigmas = jnp.linspace(0.4, 5, 31 if QUICK else 61)
Mu, S = jnp.meshgrid(mus, sigmas, indexing="ij")
thetas = jnp.stack([Mu.ravel(), jnp.log(S.ravel())], -1)
fig, axes = plt.subplots(1, 2, figsize=(11, 3.8), constrained_layout=True)
for ax, (name, f) in zip(axes, objectives.items()):
  z = jax.jit(jax.vmap(f))(thetas).reshape(Mu.shape)
  i, j = np.unravel_index(np.argmin(np.asarray(z)), z.shape)
  print(f"{name}: grid minimum at mu {float(mus[i]):+.2f}, sigma {float(sigmas[j]):.2f}, value {float(z[i, j]):.4f}")
  cs = ax.contourf(np.asarray(Mu), np.asarray(S), np.log(np.asarray(z)), 30, cmap="magma")
  fig.colorbar(cs, ax=ax, label="log D")
  ax.set(title=name, xlabel="mu", ylabel="sigma")
axes[0].plot([0], [np.sqrt(10)], "c*", ms=12, label="closed form")
axes[0].legend()
axes[1].plot([-3, 3], [1, 1], "c*", ms=12, label="modes")
axes[1].plot([float(theta_w[0])], [float(jnp.exp(theta_w[1]))], "wx", ms=10, label="local minimum")
axes[1].legend()
plt.show()

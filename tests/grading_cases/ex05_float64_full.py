"""ex05 full: the loss computed in float64 (alpha_bar's dtype), returned as float64."""


def diffusion_loss(model, x0, t, noise, alpha_bar, cond=None):
    ab = alpha_bar[t].reshape(-1, *[1] * (x0.ndim - 1))
    xt = ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()
    eps_pred = model(xt, t, cond)
    return ((eps_pred - noise.double()) ** 2).mean()

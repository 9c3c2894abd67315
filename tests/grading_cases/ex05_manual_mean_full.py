"""ex05 full: a squared error summed and divided by the number of elements."""


def diffusion_loss(model, x0, t, noise, alpha_bar, cond=None):
    ab = alpha_bar[t].to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
    xt = ab.sqrt() * x0 + (1 - ab).sqrt() * noise
    diff = model(xt, t, cond) - noise
    return (diff * diff).sum() / diff.numel()

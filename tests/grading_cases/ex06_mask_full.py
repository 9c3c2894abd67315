"""ex06 full: Ho et al.'s coefficients from betas and alphas, t = 0 handled per sample with a mask."""
import torch


def ddpm_posterior_step(xt, t, x0_pred, alpha_bar, betas, noise):
    shape = (-1,) + (1,) * (xt.ndim - 1)
    ab = alpha_bar[t].reshape(shape)
    ab_prev = torch.where(t > 0, alpha_bar[(t - 1).clamp(min=0)], torch.ones_like(alpha_bar[t]))
    ab_prev = ab_prev.reshape(shape)
    beta = betas[t].reshape(shape)
    mean = (beta * ab_prev.sqrt() / (1 - ab)) * x0_pred + ((1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)) * xt
    var = beta * (1 - ab_prev) / (1 - ab)
    out = mean + torch.where(t.reshape(shape) > 0, var.sqrt(), torch.zeros_like(var)) * noise
    return out.to(xt.dtype)

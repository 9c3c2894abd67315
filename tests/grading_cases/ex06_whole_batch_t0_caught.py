"""ex06 caught: decides "no noise at t = 0" with (t == 0).all(), which used to score 10/10."""


def ddpm_posterior_step(xt, t, x0_pred, alpha_bar, betas, noise):
    if (t == 0).all():
        return x0_pred
    shape = (-1,) + (1,) * (xt.ndim - 1)
    ab, ab_prev, beta = alpha_bar[t].reshape(shape), alpha_bar[t - 1].reshape(shape), betas[t].reshape(shape)
    mean = (beta * ab_prev.sqrt() / (1 - ab)) * x0_pred + ((1 - ab_prev) * (1 - beta).sqrt() / (1 - ab)) * xt
    return (mean + (beta * (1 - ab_prev) / (1 - ab)).sqrt() * noise).to(xt.dtype)

"""ex03 full: in-place arithmetic on the inputs themselves."""


def q_sample(x0, t, noise, alpha_bar):
    ab = alpha_bar[t].to(x0.dtype).reshape(-1, *[1] * (x0.ndim - 1))
    x0.mul_(ab.sqrt())
    noise.mul_((1 - ab).sqrt())
    return x0.add_(noise)

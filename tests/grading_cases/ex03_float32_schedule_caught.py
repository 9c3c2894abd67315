"""ex03 caught: always returns float32, wrong for float64 inputs."""


def q_sample(x0, t, noise, alpha_bar):
    ab = alpha_bar[t].float().reshape(-1, *[1] * (x0.ndim - 1))
    return ab.sqrt() * x0.float() + (1 - ab).sqrt() * noise.float()

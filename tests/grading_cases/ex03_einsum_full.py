"""ex03 full: einsum over a flattened batch, a different route to the same xt."""
import torch


def q_sample(x0, t, noise, alpha_bar):
    ab = alpha_bar.gather(0, t).to(x0.dtype)
    flat = torch.einsum("b,bf->bf", ab.sqrt(), x0.reshape(len(x0), -1))
    flat = flat + torch.einsum("b,bf->bf", (1 - ab).sqrt(), noise.reshape(len(x0), -1))
    return flat.reshape(x0.shape)

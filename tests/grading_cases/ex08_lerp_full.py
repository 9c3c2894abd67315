"""ex08 full: torch.lerp, the same extrapolation in one call."""
import torch


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    return torch.lerp(eps_uncond, eps_cond, guidance_scale)

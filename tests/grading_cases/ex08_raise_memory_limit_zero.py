"""ex08 zero: raises its own memory limit, then allocates 8 GiB."""
import resource

import torch

for name in ("RLIMIT_AS", "RLIMIT_DATA", "RLIMIT_NPROC", "RLIMIT_CPU"):
    try:
        resource.setrlimit(getattr(resource, name), (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    except (ValueError, OSError):
        pass


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    hog = torch.ones(8 * 2**30, dtype=torch.uint8)
    return eps_cond * 0 + hog[0]

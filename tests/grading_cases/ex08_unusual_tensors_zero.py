"""ex08 zero: returns tensors the parent must not choke on: sparse, complex, meta, then a lying record."""
import sys

import torch

main = sys.modules.get("__main__")
CALLS = [0]


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    CALLS[0] += 1
    kind = CALLS[0] % 4
    if kind == 1:
        return eps_cond.to_sparse()
    if kind == 2:
        return eps_cond.to(torch.complex64)
    if kind == 3:
        return torch.empty(eps_cond.shape, device="meta")
    if hasattr(main, "_plain"):  # the next result claims to be a tensor but is a list of strings
        main._plain = lambda value: dict(type="Tensor", tensor=["not", "a", "tensor"])
    return eps_cond

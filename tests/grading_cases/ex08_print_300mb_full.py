"""ex08 full: a right answer that first prints 300 MB (the grader keeps 64 kB of it)."""
import sys

CHUNK = "x" * (1 << 20) + "\n"


def cfg_combine(eps_uncond, eps_cond, guidance_scale):
    for _ in range(300):
        sys.stdout.write(CHUNK)
    return eps_uncond + guidance_scale * (eps_cond - eps_uncond)

"""Which compression should latent diffusion use? Train f4 and f8 VAEs briefly at 32 and 64 px.

For each (preset, resolution) this trains a fresh VAE for the same number of steps, then measures on
fresh shapes images: latent shape, reconstruction MSE (overall, background, small and large
objects), the judge's accuracy on the reconstructions (when a judge checkpoint exists) and the
training time. Reference rows: f x f block averaging (3 numbers per cell, no
learning). Prints a table and writes benchmarks/results/vae_compression.json.

    python benchmarks/vae_compression.py --threads 1   # CPU-friendly defaults (~1-4 CPU-min per run)
    python benchmarks/vae_compression.py --steps 4000 --device cuda
"""

from __future__ import annotations

import argparse
import json
import platform
from pathlib import Path

import torch

from minidiff.shapes import ShapesConfig, make_shapes
from minidiff.vae import VAEConfig, from_latent, reconstruction_error_by_size, save_vae, to_latent, train_vae

ROOT = Path(__file__).resolve().parents[1]
JUDGE = ROOT / "minidiff" / "weights" / "judge"
OUT = ROOT / "benchmarks" / "results" / "vae_compression.json"
EVAL_SEED = 20_000  # below vae.TRAIN_SEED_STRIDE, so never a training batch


def judge_accuracy(vae, resolution: int, n: int) -> dict[str, float] | None:
    """Judge adherence of reconstructions of fresh images to their captions; None without a judge."""
    if not JUDGE.with_suffix(".json").is_file():
        return None
    from minidiff.judge import adherence, load_judge

    judge = load_judge(JUDGE)
    images, captions, _ = make_shapes(n, ShapesConfig(resolution=resolution), seed=EVAL_SEED)
    device = next(vae.parameters()).device
    recon = torch.cat([from_latent(vae, to_latent(vae, images[i:i + 128].to(device))).cpu()
                       for i in range(0, n, 128)])  # (N, 3, H, W)
    real = adherence(judge, images, captions)
    fake = adherence(judge, recon, captions)
    return {"real_all": float(real["all"]), "recon_all": float(fake["all"]),
            "recon": {k: float(v) for k, v in fake.items()}}


class BlockAverage(torch.nn.Module):
    """Reference codec: the latent is the f x f block mean of the pixels, decoded by repetition."""

    def __init__(self, f: int) -> None:
        super().__init__()
        self.f, self.scale_factor = f, 1.0
        self.dummy = torch.nn.Parameter(torch.zeros(()))  # gives the codec a device

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        z = torch.nn.functional.avg_pool2d(x, self.f)  # (B, 3, H/f, W/f)
        return z, torch.zeros_like(z)

    def decode(self, z: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.interpolate(z, scale_factor=self.f, mode="nearest")  # (B, 3, H, W)


def reference(f: int, resolution: int, args: argparse.Namespace) -> dict:
    codec = BlockAverage(f)
    return {"preset": f"avg{f}", "f": f, "resolution": resolution,
            "latent_shape": [3, resolution // f, resolution // f],
            "compression": f * f, "steps": 0, "train_time_s": 0.0, "train_cpu_s": 0.0, "scale_factor": 1.0,
            "mse": reconstruction_error_by_size(codec, n=args.eval_n, seed=EVAL_SEED, resolution=resolution),
            "judge": judge_accuracy(codec, resolution, args.eval_n)}


def run(preset: str, resolution: int, args: argparse.Namespace) -> dict:
    config = VAEConfig.from_preset(preset)
    vae = train_vae(config, steps=args.steps, batch_size=args.batch_size, seed=args.seed,
                    device=args.device, resolution=resolution, progress=not args.quiet)
    f = config.downsample_factor
    errors = reconstruction_error_by_size(vae, n=args.eval_n, seed=EVAL_SEED, resolution=resolution)
    row = {"preset": preset, "f": f, "resolution": resolution,
           "latent_shape": [config.latent_channels, resolution // f, resolution // f],
           "compression": 3 * resolution ** 2 / (config.latent_channels * (resolution // f) ** 2),
           "steps": vae.train_steps, "train_time_s": round(vae.train_time_s, 1),
           "train_cpu_s": round(vae.train_cpu_s, 1), "scale_factor": config.scale_factor, "mse": errors,
           "judge": judge_accuracy(vae, resolution, args.eval_n)}
    if args.save_dir is not None:
        save_vae(vae.cpu(), args.save_dir / f"vae_{preset}_{resolution}", {"benchmark_row": row})
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", nargs="*", default=["f4", "f8"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[32, 64])
    parser.add_argument("--steps", type=int, default=800)
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--eval-n", type=int, default=512)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (1 is fastest on a busy CPU)")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--out", type=Path, default=OUT)
    parser.add_argument("--save-dir", type=Path, default=None, help="also save each trained VAE here")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    rows = [run(p, r, args) for r in args.resolutions for p in args.presets]
    rows += [reference(f, r, args) for r in args.resolutions for f in (4, 8)]
    header = (f"{'preset':>6} {'res':>4} {'latent':>8} {'x fewer':>7} {'mse':>7} {'bg':>7} "
              f"{'small':>7} {'large':>7} {'judge':>6} {'steps':>5} {'wall s':>7} {'cpu s':>7}")
    print(header)
    for r in rows:
        judge = f"{r['judge']['recon_all']:.3f}" if r["judge"] else "n/a"
        m = r["mse"]
        print(f"{r['preset']:>6} {r['resolution']:>4} {'x'.join(map(str, r['latent_shape'])):>8} "
              f"{r['compression']:>7.0f} {m['overall']:>7.4f} {m['background']:>7.4f} {m['small']:>7.4f} "
              f"{m['large']:>7.4f} {judge:>6} {r['steps']:>5} {r['train_time_s']:>7.1f} "
              f"{r['train_cpu_s']:>7.1f}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"steps": args.steps, "batch_size": args.batch_size, "eval_n": args.eval_n, "seed": args.seed,
            "device": str(args.device), "torch": torch.__version__,
            "gpu": torch.cuda.get_device_name() if torch.cuda.is_available() else None,
            "machine": platform.machine(), "threads": torch.get_num_threads()}
    args.out.write_text(json.dumps({"settings": meta, "rows": rows}, indent=2))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()

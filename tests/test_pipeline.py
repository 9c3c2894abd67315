"""The generation pipeline with small random models: seeds, sizes, guidance, image-to-image, errors."""

import subprocess
import sys

import pytest
import torch

from minidiff.guidance import cfg
from minidiff.pipeline import Pipeline
from minidiff.sampling import SAMPLERS, sample
from minidiff.schedule import make_schedule
from minidiff.shapes import vocabulary
from minidiff.text import TextEncoder, TextEncoderConfig, Tokenizer
from minidiff.unet import UNet, UNetConfig
from minidiff.vae import VAE, VAEConfig

PROMPT = "a large red circle at the top left on a blue background"


def tiny_pipeline(latent: bool = True) -> Pipeline:
    torch.manual_seed(0)
    tokenizer = Tokenizer(vocabulary())
    encoder = TextEncoder(TextEncoderConfig(vocab_size=len(tokenizer), dim=16, layers=1, heads=2)).eval()
    vae = VAE(VAEConfig(base_channels=8)).eval() if latent else None
    unet = UNet(UNetConfig(in_channels=4 if latent else 3, base_channels=8, channel_mults=(1, 2),
                           attention_levels=(1,), text_dim=16, heads=2)).eval()
    torch.nn.init.normal_(unet.conv_out.weight, std=0.1)  # the U-Net starts zero-initialised: wake it up
    return Pipeline(unet, encoder, tokenizer, make_schedule("cosine", 1000), vae, resolution=32)


def test_same_seed_same_image_bitwise_and_seeds_are_per_image():
    pipe = tiny_pipeline()
    a = pipe([PROMPT, PROMPT], seeds=[3, 4], steps=4, sampler="ddpm")
    b = pipe([PROMPT, PROMPT], seeds=[3, 4], steps=4, sampler="ddpm")
    assert a.shape == (2, 3, 32, 32) and torch.equal(a, b)
    assert not torch.equal(a[0], a[1])
    starts = []
    pipe([PROMPT], seeds=[4], steps=4, sampler="ddpm",
         callback=lambda i, t, xt, *_: starts.append(xt) if i == 0 else None)
    pipe([PROMPT, PROMPT], seeds=[3, 4], steps=4, sampler="ddpm",
         callback=lambda i, t, xt, *_: starts.append(xt) if i == 0 else None)
    assert torch.equal(starts[0][0], starts[1][1]), "an image's starting noise depends on its own seed only"


@pytest.mark.parametrize("sampler,guidance_scale,eta", [
    *[(s, w, 0.0) for s in SAMPLERS for w in (1.0, 4.0)], ("ddim", 4.0, 0.5),
])
def test_the_written_out_loop_equals_sample_bitwise(sampler, guidance_scale, eta):
    """Pipeline.__call__'s own loop against sampling.sample with the cfg wrapper, from the same seeds."""
    pipe, prompts, seeds = tiny_pipeline(), [PROMPT, "a small blue square"], [3, 4]
    images = pipe(prompts, seeds=seeds, steps=4, sampler=sampler, guidance_scale=guidance_scale, eta=eta)
    generators = [torch.Generator().manual_seed(s) for s in seeds]
    x_T = torch.stack([torch.randn(4, 8, 8, generator=g) for g in generators])  # (2, 4, 8, 8)
    model = cfg(pipe.unet, guidance_scale, pipe.encode([""]))
    cond = pipe.encode(prompts)  # (2, L, D)
    x0 = sample(model, x_T, pipe.schedule, 4, sampler, cond=cond, generator=generators, eta=eta)
    assert torch.equal(images, pipe.decode(x0))


def test_same_seed_in_a_second_process_is_bitwise_equal(tmp_path):
    code = (f"import sys, torch; sys.path.insert(0, {str(__import__('pathlib').Path(__file__).parent)!r}); "
            f"from test_pipeline import tiny_pipeline; torch.set_num_threads(1); "
            f"torch.save(tiny_pipeline()([{PROMPT!r}], seeds=[7], steps=3), {str(tmp_path / 'x.pt')!r})")
    subprocess.run([sys.executable, "-c", code], check=True, timeout=120)
    here = tiny_pipeline()([PROMPT], seeds=[7], steps=3)
    assert torch.equal(torch.load(tmp_path / "x.pt"), here)


def test_callback_sees_decoded_x0_at_every_step():
    pipe, seen = tiny_pipeline(), []
    pipe(PROMPT, steps=5, callback=lambda i, t, xt, x0, eps: seen.append((xt.shape, x0.shape, eps.shape)))
    assert seen == [((1, 4, 8, 8), (1, 3, 32, 32), (1, 4, 8, 8))] * 5


def test_guidance_scale_one_ignores_the_negative_prompt_and_other_scales_do_not():
    pipe = tiny_pipeline()
    base = pipe(PROMPT, steps=3, guidance_scale=1.0)
    assert torch.equal(base, pipe(PROMPT, steps=3, guidance_scale=1.0, negative_prompt="a blue square"))
    assert not torch.equal(pipe(PROMPT, steps=3, guidance_scale=5.0),
                           pipe(PROMPT, steps=3, guidance_scale=5.0, negative_prompt="a blue square"))


def test_non_square_sizes_and_pixel_space():
    assert tiny_pipeline()(PROMPT, steps=2, height=32, width=64).shape == (1, 3, 32, 64)
    assert tiny_pipeline(latent=False)(PROMPT, steps=2, height=16, width=48).shape == (1, 3, 16, 48)


def test_image_to_image_strength_sets_the_steps_run():
    pipe, seen = tiny_pipeline(), []
    init = torch.zeros(1, 3, 32, 32)
    pipe(PROMPT, steps=10, init_images=init, strength=0.3, callback=lambda i, t, *_: seen.append(t))
    assert len(seen) == 3 and seen[0] < 400


@pytest.mark.parametrize("kwargs,message", [
    ({"height": 30}, "height=30 is not allowed: this pipeline needs multiples of 8"),
    ({"width": 4}, "width=4 is not allowed"),
    ({"steps": 0}, "steps=0"),
    ({"guidance_scale": -1.0}, "guidance_scale=-1.0"),
    ({"sampler": "plms"}, "sampler='plms'"),
    ({"seeds": [1, 2]}, "got 2 seeds for 1 prompts"),
])
def test_bad_input_names_what_is_wrong(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_pipeline()(PROMPT, **kwargs)


def test_unknown_words_and_too_long_prompts_are_refused():
    with pytest.raises(ValueError, match="circel"):
        tiny_pipeline()("a large red circel")
    with pytest.raises(ValueError, match=r"102 tokens long .* at most max_len=32 \(30 words\); shorten it"):
        tiny_pipeline()(" ".join(["red"] * 100))


def test_manifest_catches_a_missing_or_corrupt_weights_file(tmp_path):
    from minidiff.checkpoint import save_checkpoint, write_manifest
    from minidiff.pipeline import verify_manifest

    save_checkpoint(tmp_path / "unet", {"w": torch.ones(3)}, {"a": 1})
    manifest = write_manifest(tmp_path, {"unet": "python -m minidiff train --preset shapes-latent"})
    assert set(manifest["files"]) == {"unet.safetensors", "unet.json"}
    assert verify_manifest(tmp_path)["total_bytes"] == manifest["total_bytes"]
    data = bytearray((tmp_path / "unet.safetensors").read_bytes())
    data[-1] ^= 0xFF
    (tmp_path / "unet.safetensors").write_bytes(bytes(data))
    with pytest.raises(ValueError, match="unet.safetensors is corrupt.*python -m minidiff train"):
        verify_manifest(tmp_path)
    (tmp_path / "unet.json").unlink()
    with pytest.raises(ValueError, match="unet.json is missing"):
        verify_manifest(tmp_path)

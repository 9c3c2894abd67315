"""Tests for minidiff.widgets: the controls build and render headless, with a stub pipeline."""

import io

import pytest
import torch
from PIL import Image

from minidiff.widgets import DISPLAY_SIZE, GenerationControls, to_png


class StubPipeline:
    """Returns a flat image whose red channel encodes the seed; records every call."""

    def __init__(self) -> None:
        self.calls = []

    def __call__(self, prompts, seeds, steps, sampler, guidance_scale):
        if "zebra" in prompts[0]:
            raise ValueError("unknown word 'zebra'; close matches: []")
        self.calls.append({"prompts": prompts, "seeds": seeds, "steps": steps, "sampler": sampler,
                           "guidance_scale": guidance_scale})
        image = -torch.ones(len(prompts), 3, 32, 32)  # (B, 3, H, W): black
        image[:, 0] = seeds[0] / 255 * 2 - 1  # red = seed
        return image


def decode(png: bytes) -> Image.Image:
    return Image.open(io.BytesIO(png)).convert("RGB")


def test_render_passes_settings_and_shows_the_image():
    pipe = StubPipeline()
    controls = GenerationControls(pipe, seed=7, steps=5, guidance_scale=2.0, sampler="ddim")
    images = controls.render()
    assert images.shape == (1, 3, 32, 32)
    assert pipe.calls == [{"prompts": [controls.prompt.value], "seeds": [7], "steps": 5, "sampler": "ddim",
                           "guidance_scale": 2.0}]
    picture = decode(controls.image.value)
    assert controls.image.value == controls.png
    assert picture.size == (DISPLAY_SIZE, DISPLAY_SIZE)
    assert picture.getpixel((10, 200)) == (7, 0, 0)  # seed 7 -> red 7 after the [-1, 1] -> uint8 round trip


def test_changing_a_control_and_clicking_regenerates():
    pipe = StubPipeline()
    controls = GenerationControls(pipe)
    controls.render()
    controls.seed.value, controls.sampler.value, controls.steps.value = 200, "heun", 3
    controls.button.click()
    assert len(pipe.calls) == 2
    last = pipe.calls[-1]
    assert last["seeds"] == [200] and last["sampler"] == "heun" and last["steps"] == 3
    assert decode(controls.png).getpixel((0, 0)) == (200, 0, 0)


def test_refused_prompt_shows_the_message_and_keeps_the_picture():
    controls = GenerationControls(StubPipeline(), seed=9)
    controls.render()
    before = controls.png
    controls.prompt.value = "a zebra"
    assert controls.render() is None
    assert "zebra" in controls.status.value and controls.png == before


def test_to_png_keeps_aspect_ratio_and_checks_shape():
    assert decode(to_png(torch.zeros(3, 32, 64), size=128)).size == (128, 64)
    with pytest.raises(ValueError, match=r"\(3, H, W\)"):
        to_png(torch.zeros(1, 3, 32, 32))


def test_unknown_sampler_lists_the_samplers():
    with pytest.raises(ValueError, match="dpmpp_2m"):
        GenerationControls(StubPipeline(), sampler="plms")

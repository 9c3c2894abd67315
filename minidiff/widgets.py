"""ipywidgets controls for notebooks: type a prompt, move a slider, press Generate, see the picture.

``GenerationControls(pipeline)`` is a box of widgets whose ``render()`` runs the pipeline once
with the current settings. In a live notebook the Generate button calls it; headless (nbclient, CI)
nothing clicks, so call ``render()`` yourself and show ``png`` as a static picture.
"""

from __future__ import annotations

import io
from collections.abc import Callable

import ipywidgets as widgets
import torch
from PIL import Image

from minidiff.sampling import SAMPLERS
from minidiff.viz import to_uint8

DEFAULT_PROMPT = "a large red circle at the top left on a blue background"
DISPLAY_SIZE = 256  # pixels per side on screen; 32 px images are enlarged without smoothing
MAX_STEPS = 100  # slider range; the samplers accept any steps >= 1
MAX_GUIDANCE = 10.0  # slider range; past ~7 shapes images saturate (notebook 06)


def to_png(image: torch.Tensor, size: int = DISPLAY_SIZE) -> bytes:
    """One image (3, H, W) in [-1, 1] -> PNG bytes, enlarged (nearest neighbour) to ``size`` pixels wide."""
    if image.ndim != 3 or image.shape[0] != 3:
        raise ValueError(f"image must be (3, H, W); got shape {tuple(image.shape)}")
    picture = Image.fromarray(to_uint8(image))  # (H, W, 3)
    h, w = image.shape[-2:]
    picture = picture.resize((size, max(1, round(size * h / w))), Image.NEAREST)
    buffer = io.BytesIO()
    picture.save(buffer, format="PNG")
    return buffer.getvalue()


class GenerationControls(widgets.VBox):
    """Prompt, seed, steps, guidance scale and sampler above a Generate button and the image.

    ``render()`` generates with the current values and returns the image (1, 3, H, W); ``png``
    holds the last picture as PNG bytes. A prompt the pipeline refuses (an unknown word, say) shows
    the pipeline's message under the button and keeps the previous picture.
    """

    def __init__(self, pipeline: Callable[..., torch.Tensor], prompt: str = DEFAULT_PROMPT, seed: int = 0,
                 steps: int = 20, guidance_scale: float = 3.0, sampler: str = "dpmpp_2m") -> None:
        if sampler not in SAMPLERS:
            raise ValueError(f"sampler={sampler!r} is not known; choose one of {SAMPLERS}")
        self.pipeline = pipeline
        self.prompt = widgets.Text(value=prompt, description="prompt", layout=widgets.Layout(width="520px"))
        self.seed = widgets.IntText(value=seed, description="seed")
        self.steps = widgets.IntSlider(value=steps, min=1, max=MAX_STEPS, description="steps")
        self.guidance_scale = widgets.FloatSlider(value=guidance_scale, min=0.0, max=MAX_GUIDANCE, step=0.5,
                                                  description="guidance")
        self.sampler = widgets.Dropdown(options=SAMPLERS, value=sampler, description="sampler")
        self.button = widgets.Button(description="Generate", button_style="primary")
        self.status = widgets.Label(value="")
        self.image = widgets.Image(format="png", width=DISPLAY_SIZE)
        self.png = b""
        self.button.on_click(lambda _: self.render())
        super().__init__([self.prompt, widgets.HBox([self.seed, self.sampler]), self.steps,
                          self.guidance_scale, widgets.HBox([self.button, self.status]), self.image])

    def settings(self) -> dict:
        """The keyword arguments the next ``render()`` passes to the pipeline."""
        return {"prompts": [self.prompt.value], "seeds": [self.seed.value], "steps": self.steps.value,
                "sampler": self.sampler.value, "guidance_scale": self.guidance_scale.value}

    def render(self) -> torch.Tensor | None:
        """Run the pipeline once with the current settings; update the picture. None if it refused."""
        settings = self.settings()
        self.status.value = "generating..."
        try:
            images = self.pipeline(**settings)  # (1, 3, H, W)
        except ValueError as err:
            self.status.value = f"error: {err}"
            return None
        self.png = to_png(images[0])
        self.image.value = self.png
        self.status.value = (f"seed {settings['seeds'][0]}, {settings['steps']} {settings['sampler']} steps, "
                             f"guidance {settings['guidance_scale']}")
        return images


"""Divergence: when the loss blows up, the run stops, keeps the last checkpoint whose loss was healthy,
says truly which step that is (or that there is none), and the CLI prints one line and exits 2.

The loop checks each step's loss before that step's checkpoint is written, so a kept checkpoint's
weights are ones whose loss was seen to be healthy.
"""

import re

import pytest
import torch
from test_training import tiny_setup

from minidiff import cli, runs
from minidiff.checkpoint import checkpoint_exists, load_checkpoint, load_into
from minidiff.runs import make_source
from minidiff.schedule import make_schedule
from minidiff.training import (
    LOSS_EXPLODED,
    SEED_STRIDE,
    TrainingDiverged,
    build_unet,
    diffusion_loss,
    train_denoiser,
    unet_stage,
)

BLOW_UP = {"lr": 1e4, "grad_clip": 1e9, "warmup_steps": 1}  # a step this large diverges within a few steps


def loss_of_checkpoint(folder, config, encoder, tokenizer):
    """(step, loss) of the kept unet_state: its weights on the batch of its own step, as the loop sees it."""
    state, meta = load_checkpoint(folder / "unet_state", verify=False)
    step = meta["extra"]["step"]
    unet = build_unet(config, 3, encoder.config.dim)
    load_into(unet, {k[6:]: v for k, v in state.items() if k.startswith("model.")}, "U-Net")
    stage = unet_stage(config, make_source(config), encoder, tokenizer, None, torch.device("cpu"))
    x0, cond, t, noise = stage.batch(step, 0)
    torch.manual_seed(config.seed * SEED_STRIDE + step)
    with torch.no_grad():
        loss = diffusion_loss(
            unet, make_schedule(config.schedule, config.T), x0, t, noise, cond, config.prediction_type
        )
    return step, loss.item()


def test_the_kept_checkpoint_is_the_last_healthy_one(tmp_path):
    # lr ramps up by 0.2 a step: healthy for some twenty steps, then it blows up (step 25 with one torch
    # thread, 28 with two, on our CPU; a ramp of 0.1 a step stayed healthy for 80 steps at one thread)
    config, encoder, tokenizer = tiny_setup(checkpoint_every=1, steps=60, lr=1e4, warmup_steps=50_000,
                                            grad_clip=1e9)
    with pytest.raises(TrainingDiverged) as info:
        train_denoiser(config, tmp_path, encoder, tokenizer, device="cpu", progress=False)
    assert checkpoint_exists(tmp_path / "unet_state"), "a checkpoint every step, yet none was kept"
    step, loss = loss_of_checkpoint(tmp_path, config, encoder, tokenizer)
    assert loss == loss and loss <= LOSS_EXPLODED, f"the kept checkpoint (step {step}) has loss {loss}"
    assert re.search(rf"\bstep {step}\b", str(info.value)), (
        f"the message does not name step {step}: {info.value}"
    )
    assert load_checkpoint(tmp_path / "unet")[1]["extra"]["step"] == step, "unet and unet_state disagree"


def test_a_divergence_with_no_checkpoint_says_none_is_kept(tmp_path):
    config, encoder, tokenizer = tiny_setup(checkpoint_every=0, **BLOW_UP)  # only the end would be saved
    with pytest.raises(TrainingDiverged) as info:
        train_denoiser(config, tmp_path, encoder, tokenizer, device="cpu", progress=False)
    assert not checkpoint_exists(tmp_path / "unet_state")
    message = str(info.value)
    assert re.search(r"\bno\b.*checkpoint", message) and "is kept" not in message, message


def test_the_cli_reports_a_divergence_in_one_line(tmp_path, monkeypatch, capsys):
    config = tiny_setup(**BLOW_UP)[0]
    monkeypatch.setitem(runs.PRESETS, "tiny", config)
    run = tmp_path / "run"
    assert cli.main(["train", "--preset", "tiny", "--out", str(run), "--device", "cpu"]) == 2
    err = capsys.readouterr().err
    lines = [line for line in err.splitlines() if line.startswith("error:")]
    assert len(lines) == 1 and "Traceback" not in err, err
    assert re.search(r"\bstep \d+", lines[0]), lines[0]

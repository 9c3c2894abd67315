"""The training loop: exact resume on CPU, divergence stops, DDP with two CPU processes."""

import os
import subprocess
import sys
import textwrap

import pytest
import torch

from minidiff.checkpoint import load_checkpoint
from minidiff.runs import train_config
from minidiff.shapes import vocabulary
from minidiff.text import TextEncoder, TextEncoderConfig, Tokenizer
from minidiff.training import Stage, TrainingDiverged, lr_at, train_denoiser


def tiny_setup(**overrides):
    settings = {"latent": False, "resolution": 16, "steps": 12, "checkpoint_every": 4, **overrides}
    config = train_config("tiny", **settings)
    tokenizer = Tokenizer(vocabulary())
    torch.manual_seed(0)
    encoder = TextEncoder(TextEncoderConfig(vocab_size=len(tokenizer), dim=16, layers=1, heads=2))
    return config, encoder, tokenizer


def weights(folder):
    state, meta = load_checkpoint(folder / "unet_state")
    return state, meta["extra"]["step"]


def test_a_killed_run_resumes_exactly(tmp_path):
    config, encoder, tokenizer = tiny_setup()
    full = train_denoiser(config, tmp_path / "full", encoder, tokenizer, device="cpu", progress=False)
    assert full["step"] == 12
    first = train_denoiser(config, tmp_path / "killed", encoder, tokenizer, device="cpu", progress=False,
                           stop_after=5)
    assert first["step"] == 5 and weights(tmp_path / "killed")[1] == 5
    train_denoiser(config, tmp_path / "killed", encoder, tokenizer, device="cpu", progress=False, resume=True)
    a, step_a = weights(tmp_path / "full")
    b, step_b = weights(tmp_path / "killed")
    assert step_a == step_b == 12
    assert a.keys() == b.keys()
    assert all(torch.equal(a[k], b[k]) for k in a), "resumed weights differ from the uninterrupted run"
    # the EMA weights that sampling loads are written beside the training state
    ema, meta = load_checkpoint(tmp_path / "full" / "unet")
    assert meta["extra"]["step"] == 12
    assert meta["extra"]["kind"] == "unet" and all(torch.equal(ema[k], a["ema." + k]) for k in ema)
    assert not list((tmp_path / "full").glob("*.tmp")), "temporary files left behind"


def test_exploding_loss_before_the_first_checkpoint_says_none_exists(tmp_path):
    config, encoder, tokenizer = tiny_setup(lr=1e4, grad_clip=1e9, warmup_steps=1)  # a checkpoint every 4
    with pytest.raises(TrainingDiverged, match=r"at step 1: .*no healthy checkpoint exists"):
        train_denoiser(config, tmp_path, encoder, tokenizer, device="cpu", progress=False)
    assert not (tmp_path / "unet_state.safetensors").exists()


def test_exploding_loss_without_checkpoints_says_none_exists(tmp_path):
    config, encoder, tokenizer = tiny_setup(lr=1e4, grad_clip=1e9, warmup_steps=1, checkpoint_every=0)
    with pytest.raises(TrainingDiverged, match=r"at step [1-3]: .*no healthy checkpoint exists"):
        train_denoiser(config, tmp_path, encoder, tokenizer, device="cpu", progress=False)
    assert not (tmp_path / "unet_state.safetensors").exists()


class Scalar(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.0]))


def jump_stage(jump_at, steps=40):
    """A stage whose target jumps from 0 to 3 at step ``jump_at``: the loss goes from 0 to ~9,
    as the VAE's MSE went from 0.0078 to 0.83 when it diverged."""
    def loss(model, step):
        return ((model.w - (3.0 if step >= jump_at else 0.0)) ** 2).sum()

    return Stage("scalar", Scalar(), loss, lambda step, rank: step, steps=steps, lr=0.1, batch_size=1)


@pytest.mark.parametrize("every, kept", [(5, 20), (1, 22)])
def test_divergence_keeps_the_last_healthy_checkpoint(tmp_path, every, kept):
    from minidiff.training import fit

    stage = jump_stage(jump_at=23)
    with pytest.raises(TrainingDiverged,
                       match=rf"at step 23: .*last healthy checkpoint, step {kept}, is kept"):
        fit(stage, tmp_path, checkpoint_every=every, progress=False)
    state, meta = load_checkpoint(tmp_path / "scalar_state")
    assert meta["extra"]["step"] == kept
    # the kept weights are the ones that produced a healthy loss at that step
    assert state["model.w"].item() == 0.0


def test_resuming_a_finished_run_reports_its_last_loss(tmp_path):
    from minidiff.training import fit

    first = fit(jump_stage(jump_at=10**9, steps=12), tmp_path, checkpoint_every=4, progress=False)
    again = fit(jump_stage(jump_at=10**9, steps=12), tmp_path, checkpoint_every=4, progress=False,
                resume=True)
    assert first["finished"] and again["finished"] and again["step"] == 12
    assert again["loss"] == first["loss"] and again["loss"] == again["loss"]  # not NaN


def test_learning_rate_warms_up_then_decays_to_a_tenth():
    config = Stage("x", torch.nn.Linear(1, 1), None, None, steps=1100, lr=1e-3, batch_size=1,
                   warmup_steps=100)
    assert lr_at(config, 0) == pytest.approx(1e-5)
    assert lr_at(config, 99) == pytest.approx(1e-3)
    assert lr_at(config, 600) == pytest.approx(1e-3 * (0.1 + 0.9 * 0.5))
    assert lr_at(config, 1100) == pytest.approx(1e-4)


def test_bad_training_config():
    with pytest.raises(ValueError, match="training preset 'huge'.*shapes-latent"):
        train_config("huge")
    with pytest.raises(ValueError, match="prediction_type='score'"):
        train_config("tiny", prediction_type="score")


def test_ddp_with_two_cpu_processes(tmp_path):
    """The same loop under torchrun with the gloo backend: two ranks, one checkpoint."""
    script = tmp_path / "ddp.py"
    script.write_text(textwrap.dedent(f"""
        import sys, torch
        sys.path.insert(0, {os.path.dirname(__file__)!r})
        from test_training import tiny_setup
        from minidiff.training import train_denoiser
        torch.set_num_threads(1)
        config, encoder, tokenizer = tiny_setup(steps=3)
        r = train_denoiser(config, {str(tmp_path / 'run')!r}, encoder, tokenizer, device="cpu",
                           progress=False)
        print("RANK_DONE", torch.distributed.get_rank(), torch.distributed.get_world_size(), r["step"])
    """))
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run([sys.executable, "-m", "torch.distributed.run", "--nproc_per_node", "2",
                             "--master_port", "29517", str(script)], capture_output=True, text=True, env=env,
                            timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "RANK_DONE 0 2 3" in result.stdout and "RANK_DONE 1 2 3" in result.stdout
    assert weights(tmp_path / "run")[1] == 3


def test_train_preset_in_pixel_space_writes_a_loadable_run(tmp_path):
    from minidiff.pipeline import load_pipeline
    from minidiff.runs import train_preset

    small = {"base_channels": 8, "channel_mults": (1, 2), "attention_levels": (1,)}
    config = train_config("tiny", latent=False, unet="cpu-pixel", resolution=16, steps=4, sample_every=2,
                          unet_overrides=small)
    timings = train_preset(config, tmp_path, device="cpu", progress=False)
    assert timings["step"] == 4 and "vae_s" not in timings and not (tmp_path / "vae.json").exists()
    assert sorted(p.name for p in (tmp_path / "samples").iterdir()) == ["step_000002.png", "step_000004.png"]
    pipe = load_pipeline(tmp_path, device="cpu")
    assert pipe.vae is None and pipe(["a red circle"], steps=2).shape == (1, 3, 16, 16)
    # a second call finds every stage finished: the text encoder is not retrained
    again = train_preset(config, tmp_path, device="cpu", resume=True, progress=False)
    assert "text_encoder_s" not in again and again["step"] == 4

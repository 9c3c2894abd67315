"""Bad input to every command: exit 2, one stderr line ``error: ...`` naming the option and its value,
no traceback, and nothing made. Run in-process through ``cli.main`` (fast); a few through a real
``python -m minidiff`` to check the exit status and stream of the real thing."""

import dataclasses
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from minidiff import cli
from minidiff.checkpoint import save_checkpoint, write_run_manifest
from minidiff.runs import train_config

P = "a red circle"
UNWRITABLE = "/proc/minidiff"  # no file can be created under /proc, not even by root
NO_CUDA = pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
NO_MPS = pytest.mark.skipif(torch.backends.mps.is_available(), reason="this machine has MPS")
HAS_PROC = pytest.mark.skipif(
    not Path("/proc/self").is_dir(), reason="needs /proc as a place nothing can be written"
)

# (argv, strings the one error line must contain: the option's name and the value given). In argv,
# {dir} is an existing folder, {file} an existing file, {run} a finished tiny run, {empty} a folder
# that does not exist yet, {corrupt} a run copy with one flipped byte, {badjson} a folder whose
# manifest.json is not JSON.
CASES = [
    # sample: numbers
    (["sample", P, "--guidance", "nan"], ["--guidance=nan"]),
    (["sample", P, "--guidance", "inf"], ["--guidance=inf"]),
    (["sample", P, "--guidance=-inf"], ["--guidance=-inf"]),
    (["sample", P, "--guidance", "1e9"], ["--guidance=1000000000.0"]),
    (["sample", P, "--guidance", "-1"], ["--guidance=-1.0"]),
    (["sample", P, "--guidance", "x"], ["--guidance", "'x'"]),
    (["sample", P, "--height", "0"], ["--height=0"]),
    (["sample", P, "--height", "-32"], ["--height=-32"]),
    (["sample", P, "--height", "30"], ["--height=30", "multiple of 8"]),
    (["sample", P, "--height", "4096", "--width", "4096"], ["--height=4096"]),
    (["sample", P, "--width", "0"], ["--width=0"]),
    (["sample", P, "--width", "4096"], ["--width=4096"]),
    (["sample", P, "--scale", "0"], ["--scale=0"]),
    (["sample", P, "--scale", "-1"], ["--scale=-1"]),
    (["sample", P, "--scale", "1000"], ["--scale=1000", "8192 px"]),
    (["sample", P, "--steps", "0"], ["--steps=0"]),
    (["sample", P, "--steps", "-5"], ["--steps=-5"]),
    (["sample", P, "--steps", "100000"], ["--steps=100000", "1000 timesteps"]),
    (["sample", P, "--steps", "abc"], ["--steps", "'abc'"]),
    (["sample", P, "--num-images", "0"], ["--num-images=0"]),
    (["sample", P, "--num-images", "-1"], ["--num-images=-1"]),
    (["sample", P, "--num-images", "1000"], ["--num-images=1000"]),
    (["sample", P, P, P, P, P, "--num-images", "64"], ["--num-images=64", "320 images"]),
    (["sample", P, "--seed", "-1"], ["--seed=-1", "0..2**63"]),
    (["sample", P, "--seed", str(2**63), "--num-images", "1"], ["--seed=9223372036854775808", "0..2**63-1"]),
    (["sample", P, "--seed", str(2**70)], [f"--seed={2**70}"]),
    (["sample", P, "--sampler", "plms"], ["--sampler='plms'", "dpmpp_2m"]),
    (["sample", P, "--bogus"], ["--bogus"]),
    # sample: devices and paths
    pytest.param(["sample", P, "--device", "mps"], ["--device", "'mps'", "unavailable"], marks=NO_MPS),
    pytest.param(["sample", P, "--device", "cuda"], ["--device", "'cuda'", "unavailable"], marks=NO_CUDA),
    (["sample", P, "--device", "tpu"], ["--device", "'tpu'"]),
    (["sample", P, "--out", "{dir}"], ["--out", "{dir}", "folder"]),
    (["sample", P, "--out", "{file}/x.png"], ["--out", "{file}/x.png", "is a file"]),
    pytest.param(["sample", P, "--out", UNWRITABLE + "/x.png"], ["--out", UNWRITABLE], marks=HAS_PROC),
    (["sample", P, "--out", "{dir}/x.jpg"], ["--out", "x.jpg", ".png"]),
    (["sample", P, "--out", "{dir}/grid"], ["--out", "grid", ".png"]),
    (["sample", P, "--weights", "/nonexistent/run"], ["--weights", "/nonexistent/run"]),
    (["sample", P, "--weights", "{file}"], ["--weights", "{file}"]),
    (["sample", P, "--weights", "{dir}"], ["--weights", "unet.safetensors is missing"]),
    (["sample", P, "--weights", "{corrupt}"], ["--weights", "unet.safetensors is corrupt"]),
    (["sample", P, "--weights", "{badjson}"], ["--weights", "manifest.json is not valid JSON"]),
    # sample: prompts, checked before anything is sampled
    (["sample", "a red circle at the top"], ["prompt", "'a red circle at the top'", "half a position"]),
    (
        ["sample", "a red circle at the top", "--height", "32", "--width", "64"],
        ["prompt", "'a red circle at the top'"],
    ),
    (["sample", "a large red círcle"], ["prompt", "'círcle'"]),
    (["sample", "a red circel"], ["prompt", "'circel'", "circle"]),
    (["sample", " ".join(["red"] * 40)], ["prompt", "red red"]),
    (["sample", P, "--negative-prompt", "a blue squar"], ["--negative-prompt", "'squar'"]),
    # train
    (["train", "--steps", "0"], ["--steps=0"]),
    (["train", "--steps", "-1"], ["--steps=-1"]),
    (["train", "--minutes", "-1"], ["--minutes=-1.0"]),
    (["train", "--minutes", "0"], ["--minutes=0.0"]),
    (["train", "--minutes", "nan"], ["--minutes=nan"]),
    (["train", "--minutes", "inf"], ["--minutes=inf"]),
    (["train", "--preset", "huge"], ["--preset='huge'", "shapes-latent"]),
    (["train", "--seed", "-1"], ["--seed=-1"]),
    (["train", "--lr", "0"], ["--lr=0.0", "(0, 1]"]),
    (["train", "--lr", "nan"], ["--lr=nan"]),
    (["train", "--init", "{empty}"], ["--init", "{empty}", "no U-Net checkpoint"]),
    (["train", "--init", "{file}"], ["--init", "{file}", "no U-Net checkpoint"]),
    (["train", "--seed", str(2**63)], ["--seed=9223372036854775808", "0..2**63-1"]),
    pytest.param(
        ["train", "--device", "cuda", "--out", "{empty}"],
        ["--device", "'cuda'", "unavailable"],
        marks=NO_CUDA,
    ),
    pytest.param(
        ["train", "--device", "mps", "--out", "{empty}"], ["--device", "'mps'", "unavailable"], marks=NO_MPS
    ),
    (["train", "--out", "{file}"], ["--out", "{file}", "is a file"]),
    (["train", "--out", "{file}/run"], ["--out", "{file}/run", "is a file"]),
    pytest.param(["train", "--out", UNWRITABLE + "/run"], ["--out", UNWRITABLE], marks=HAS_PROC),
    (["train", "--preset", "tiny", "--resume", "--out", "{empty}"], ["--resume", "{empty}", "no checkpoint"]),
    (["train", "--preset", "tiny", "--out", "{run}"], ["--out", "{run}", "--resume"]),
    (["train", "--resume", "--out", "{early}"], ["--resume", "{early}", "--preset"]),
    (["train", "--resume", "--out", "{run}", "--steps", "40"], ["--resume", "steps=20", "40"]),
    (["train", "--resume", "--out", "{run}", "--preset", "shapes-pixel"], ["--resume", "latent=True"]),
    # eval
    (["eval", "--judge-images", "0"], ["--judge-images=0"]),
    (["eval", "--judge-images", "-5"], ["--judge-images=-5"]),
    (["eval", "--judge-images", "10000000"], ["--judge-images=10000000"]),
    (["eval", "--judge-only", "--judge-images", "0"], ["--judge-images=0"]),
    (["eval", "--prompts", "0"], ["--prompts=0"]),
    (["eval", "--prompts", "-1"], ["--prompts=-1"]),
    (["eval", "--guidance", "nan"], ["--guidance=nan"]),
    (["eval", "--guidance", "inf"], ["--guidance=inf"]),
    (["eval", "--steps", "0"], ["--steps=0"]),
    (["eval", "--sampler", "foo"], ["--sampler='foo'"]),
    (["eval", "--weights", "/nonexistent/run"], ["--weights", "/nonexistent/run"]),
    (["eval", "--weights", "{corrupt}"], ["--weights", "unet.safetensors is corrupt"]),
    pytest.param(["eval", "--device", "mps"], ["--device", "'mps'"], marks=NO_MPS),
    (["eval", "--json", "{dir}"], ["--json", "{dir}", "folder"]),
    (["eval", "--json", "{file}/report.json"], ["--json", "{file}/report.json"]),
    pytest.param(
        ["eval", "--judge-only", "--json", UNWRITABLE + "/r.json"], ["--json", UNWRITABLE], marks=HAS_PROC
    ),
    # grade: the report path is checked here; the rest is the grader's own
    pytest.param(["grade", "--json", UNWRITABLE + "/r.json"], ["--json", UNWRITABLE], marks=HAS_PROC),
    (["grade", "--json", "{dir}"], ["--json", "{dir}"]),
    (["grade", "--json={file}/r.json"], ["--json", "{file}/r.json"]),
    (["grade", "--timeout", "0"], ["--timeout", "0"]),
    (["grade", "--jobs", "0"], ["--jobs", "0"]),
    (["grade", "--exercises-dir", "/nonexistent/ex"], ["--exercises-dir", "/nonexistent/ex"]),
    # judge
    (["judge", "eval", "--n", "0"], ["--n=0"]),
    (["judge", "eval", "--seed", "-1"], ["--seed=-1"]),
    (["judge", "eval", "--path", "/nonexistent/judge"], ["--path", "/nonexistent/judge"]),
    (["judge", "train", "--steps", "0"], ["--steps=0"]),
    (["judge", "train", "--batch-size", "1"], ["--batch-size=1"]),
    pytest.param(["judge", "train", "--path", UNWRITABLE + "/judge"], ["--path", UNWRITABLE], marks=HAS_PROC),
    pytest.param(["judge", "eval", "--device", "mps"], ["--device", "'mps'"], marks=NO_MPS),
    (["judge", "frobnicate"], ["action", "'frobnicate'"]),
    (["judge", "eval", "--preset", "huge"], ["--preset", "'huge'"]),
    # figures
    (["figures", "--out", "{file}"], ["--out", "{file}", "is a file"]),
    pytest.param(["figures", "--out", UNWRITABLE + "/figs"], ["--out", UNWRITABLE], marks=HAS_PROC),
    (["figures", "--bogus"], ["--bogus"]),
]


@pytest.fixture(scope="module")
def places(tmp_path_factory):
    """The paths that {dir}, {file}, {run}, {empty}, {corrupt} and {badjson} stand for."""
    root = tmp_path_factory.mktemp("bad_input")
    (root / "dir").mkdir()
    (root / "file").write_text("not a folder")
    run = root / "run"  # a finished tiny run, as far as --resume can tell
    info = {"step": 20, "loss": 0.25, "train_config": dataclasses.asdict(train_config("tiny"))}
    save_checkpoint(run / "text_encoder", {"w": torch.zeros(2)}, {"dim": 2}, {"kind": "text_encoder"})
    save_checkpoint(run / "unet_state", {"w": torch.zeros(2)}, {"a": 1}, info)
    from minidiff.pipeline import WEIGHTS_DIR

    corrupt = root / "corrupt"  # a copy of the shipped pipeline with a run manifest and one flipped byte
    corrupt.mkdir()
    for name in ("unet", "text_encoder", "vae"):
        for suffix in (".safetensors", ".json"):
            (corrupt / f"{name}{suffix}").write_bytes((WEIGHTS_DIR / f"{name}{suffix}").read_bytes())
    write_run_manifest(corrupt)
    data = bytearray((corrupt / "unet.safetensors").read_bytes())
    data[-10] ^= 0x01  # a byte of tensor data: the file still parses
    (corrupt / "unet.safetensors").write_bytes(bytes(data))
    early = root / "early"  # killed after its text encoder stage
    save_checkpoint(early / "text_encoder", {"w": torch.zeros(2)}, {"dim": 2}, {"kind": "text_encoder"})
    badjson = root / "badjson"
    badjson.mkdir()
    (badjson / "unet.safetensors").write_bytes((WEIGHTS_DIR / "unet.safetensors").read_bytes())
    (badjson / "manifest.json").write_text("{not json")
    return {
        "dir": str(root / "dir"),
        "file": str(root / "file"),
        "run": str(run),
        "empty": str(root / "empty"),
        "corrupt": str(corrupt),
        "early": str(early),
        "badjson": str(badjson),
    }


def fill(items, places):
    return [s.format(**places) for s in items]


def assert_one_error_line(err: str, needles: list[str]) -> None:
    assert "Traceback" not in err, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    for needle in needles:
        assert needle in lines[0], f"{needle!r} not in {lines[0]!r}"


@pytest.mark.parametrize("argv,needles", CASES)
def test_bad_input_is_refused_in_one_line(argv, needles, places, capsys):
    argv, needles = fill(argv, places), fill(needles, places)
    before = sorted(Path(places["dir"]).iterdir())
    assert cli.main(argv) == 2
    out, err = capsys.readouterr()
    assert_one_error_line(err, needles)
    assert out == ""
    assert sorted(Path(places["dir"]).iterdir()) == before, "a refused command wrote a file"
    assert not Path(places["empty"]).exists(), "a refused command made its output folder"


def test_the_matrix_covers_every_command():
    commands = [(c.values if hasattr(c, "values") else c)[0][0] for c in CASES]
    assert len(commands) >= 60
    assert {"sample", "train", "eval", "grade", "judge", "figures"} <= set(commands)


def test_unexpected_errors_keep_their_traceback(monkeypatch):
    """Only deliberate errors (UserError, ValueError) become one line: a bug must not be hidden."""

    def broken(args):
        raise KeyError("a bug")

    monkeypatch.setattr(cli, "cmd_figures", broken)
    with pytest.raises(KeyError):
        cli.main(["figures"])


@pytest.mark.parametrize(
    "argv,needles",
    [
        (["sample", "a red circle at the top", "--out", "{dir}/top.png"], ["prompt", "half a position"]),
        (["sample", P, "--guidance", "nan", "--out", "{dir}/nan.png"], ["--guidance=nan"]),
        (["train", "--minutes", "nan"], ["--minutes=nan"]),
        (["eval", "--judge-images", "0"], ["--judge-images=0"]),
        (["judge", "eval", "--n", "0"], ["--n=0"]),
        (["grade", "--json", "{dir}"], ["--json"]),
        (["sample", P, "--steps", "abc"], ["--steps", "'abc'"]),
    ],
)
def test_a_real_process_exits_2_with_one_line(argv, needles, places):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "minidiff", *fill(argv, places)],
        capture_output=True,
        text=True,
        timeout=300,
        env=env,
    )
    assert result.returncode == 2, result.stderr
    assert_one_error_line(result.stderr, fill(needles, places))
    assert not list(Path(places["dir"]).glob("*.png")), "the PNG was written before the refusal"

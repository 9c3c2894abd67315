"""Property: whatever prompt and numbers a user types, the CLI exits 0, or exits 2 with one
``error: ...`` line; it never shows a traceback. No image is made: ``sample --dry-run`` checks
everything and stops, ``train --resume`` of an empty folder and ``eval --json`` to an unwritable
path end in a refusal once every number has passed."""

import math
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from minidiff import cli
from minidiff.shapes import vocabulary

WORDS = st.one_of(
    st.sampled_from(vocabulary()),
    st.sampled_from(["circel", "círcle", "purple", "tiny", "...", "top,"]),
    st.text(min_size=1, max_size=8),
)
PROMPTS = st.lists(WORDS, min_size=0, max_size=12).map(" ".join)
INTS = st.one_of(
    st.integers(-3, 300), st.integers(-(2**70), 2**70), st.sampled_from([0, 1, 2**63 - 1, 2**63])
)
FLOATS = st.one_of(st.floats(allow_nan=True, allow_infinity=True), st.floats(-2, 60))
SETTINGS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)


def number(x: float | int) -> str:
    return repr(x) if not isinstance(x, float) or math.isfinite(x) else str(x)


def outcome(argv: list[str], capsys) -> tuple[int, str]:
    rc = cli.main(argv)
    out, err = capsys.readouterr()
    assert "Traceback" not in err + out
    lines = err.splitlines()
    if rc == 2:
        assert len(lines) == 1 and lines[0].startswith("error: "), err
    else:
        assert rc == 0, err
    return rc, err


def sample_argv(out: Path, prompt: str, steps, guidance, height, width, scale, num, seed) -> list[str]:
    """``sample PROMPT --dry-run --out OUT`` with every number given."""
    return [
        "sample",
        prompt,
        "--steps",
        str(steps),
        f"--guidance={number(guidance)}",
        f"--height={height}",
        f"--width={width}",
        f"--scale={scale}",
        f"--num-images={num}",
        f"--seed={seed}",
        "--dry-run",
        "--out",
        str(out),
    ]


@SETTINGS
@given(prompt=PROMPTS, steps=INTS, guidance=FLOATS, height=INTS, width=INTS, scale=INTS, num=INTS, seed=INTS)
def test_sample_exits_0_or_refuses_in_one_line(
    tmp_path, capsys, prompt, steps, guidance, height, width, scale, num, seed
):
    argv = sample_argv(tmp_path / "grid.png", prompt, steps, guidance, height, width, scale, num, seed)
    rc, err = outcome(argv, capsys)
    if rc == 0:  # accepted only when every number is inside its documented range
        assert 1 <= steps <= 1000 and 0 <= guidance <= cli.MAX_GUIDANCE and 1 <= num <= cli.MAX_NUM_IMAGES
        assert 8 <= height <= 256 and height % 8 == 0 and 8 <= width <= 256 and width % 8 == 0
        assert 0 <= seed <= 2**63 - num and scale >= 1
    assert not (tmp_path / "grid.png").exists()


@SETTINGS
@given(steps=INTS, minutes=FLOATS, seed=INTS)
def test_train_numbers_are_checked_before_anything_runs(tmp_path, capsys, steps, minutes, seed):
    empty = tmp_path / "never"
    argv = [
        "train",
        "--preset",
        "tiny",
        f"--steps={steps}",
        f"--minutes={number(minutes)}",
        f"--seed={seed}",
        "--resume",
        "--out",
        str(empty),
        "--device",
        "cpu",
    ]
    rc, err = outcome(argv, capsys)
    assert rc == 2 and not empty.exists()
    if steps >= 1 and 0 < minutes <= 1e6 and 0 <= seed < 2**63:
        assert "no checkpoint to resume" in err


@pytest.mark.skipif(not Path("/proc/self").is_dir(), reason="needs /proc as a place nothing can be written")
@SETTINGS
@given(images=INTS, prompts=INTS, steps=INTS, guidance=FLOATS)
def test_eval_numbers_are_checked_before_anything_runs(capsys, images, prompts, steps, guidance):
    argv = [
        "eval",
        f"--judge-images={images}",
        f"--prompts={prompts}",
        f"--steps={steps}",
        f"--guidance={number(guidance)}",
        "--json",
        "/proc/minidiff/report.json",
        "--device",
        "cpu",
    ]
    rc, err = outcome(argv, capsys)
    assert rc == 2


@pytest.mark.parametrize(
    "prompt", ["a large red círcle", "a red circle at the top", "...", "a red circle, a"]
)
def test_sample_of_an_odd_prompt_exits_0_or_2(tmp_path, capsys, prompt):
    outcome(["sample", prompt, "--dry-run", "--out", str(tmp_path / "x.png")], capsys)


VALID_PROMPTS = st.sampled_from(
    [
        "a red circle",
        "a large blue square at the top left on a black background",
        "",
        "a small green triangle and a large yellow diamond",
    ]
)


@SETTINGS
@given(
    prompt=VALID_PROMPTS,
    steps=st.integers(1, 1000),
    guidance=st.floats(0, 50),
    side=st.sampled_from([8, 32, 64, 256]),
    num=st.integers(1, 8),
    seed=st.integers(0, 2**63 - 8),
    scale=st.integers(1, 3),
)
def test_sample_accepts_every_setting_inside_the_limits(
    tmp_path, capsys, prompt, steps, guidance, side, num, seed, scale
):
    argv = sample_argv(tmp_path / "grid.png", prompt, steps, guidance, side, side, scale, num, seed)
    assert outcome(argv, capsys)[0] == 0

"""The autograder: its own check, isolation of misbehaving student code, message formats, the report.

Two grading runs do the heavy lifting: ``--check`` over every exercise, and one run over a class of
made-up students (a correct one, a wrong shape, an off-by-one, a hang, an exit(), a crash, a memory
hog, one that imports minidiff), whose report every other test reads.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from minidiff.grading import main
from minidiff.grading.compare import problem
from minidiff.grading.guard import scan

EXERCISES = Path(__file__).resolve().parent.parent / "exercises"
TIMEOUT_S = 4  # per exercise in the class run: the hang must hit it; the others take well under a second
STUB_RAISE = re.compile(r"    raise NotImplementedError\(.*\Z", re.DOTALL)  # the last statement of every stub

# what each made-up student wrote in place of the stub's `raise NotImplementedError(...)`; ex10 is missing
STUDENTS = {
    "ex01_linear_schedule": ("    betas = torch.linspace(beta_start, beta_end, T, dtype=torch.float64)\n"  # correct
                             "    return torch.cumprod(1 - betas, dim=0)\n"),
    "ex02_cosine_schedule": "    print('working on it')\n    return alpha_bar_cosine\n",  # prints, returns a function
    "ex03_q_sample": ("    ab = alpha_bar[t - 1].to(x0.dtype).view(-1, *[1] * (x0.ndim - 1))\n"  # t off by one
                      "    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n"),
    "ex04_timestep_embedding": "    memory = bytearray(64 * 2**30)\n    return memory\n",  # asks for 64 GiB
    "ex05_training_loss": "    from minidiff.schedule import q_sample\n    return None\n",  # uses the answer key
    "ex06_ddpm_step": "    return xt[..., 0]\n",  # wrong shape
    "ex07_ddim_step": "    while True:\n        pass\n",  # hangs
    "ex08_guidance": "    exit(3)\n",
    "ex09_clip_loss": "    import os\n    os.abort()\n",  # hard crash
}


def _write_student(folder: Path, name: str, body: str) -> None:
    shutil.copytree(EXERCISES / name, folder / name, dirs_exist_ok=True)
    stub = folder / name / f"{name.split('_', 1)[1]}.py"
    stub.write_text(STUB_RAISE.sub(lambda _: body, stub.read_text()))


def _grade_class(folder: Path) -> dict:
    for name, body in STUDENTS.items():
        _write_student(folder, name, body)
    report_path = folder / "report.json"
    status = main(["--exercises-dir", str(folder), "--json", str(report_path), "--timeout", str(TIMEOUT_S)])
    return dict(json.loads(report_path.read_text()), status=status)


@pytest.fixture(scope="session")
def class_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Graded once per test run, even when pytest-xdist spreads these tests over several workers."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        return _grade_class(tmp_path_factory.mktemp("class"))
    shared = tmp_path_factory.getbasetemp().parent  # the same folder for every worker of this run
    cached = shared / "class_report.json"
    with FileLock(str(cached) + ".lock"):
        if not cached.is_file():
            folder = shared / "class"
            folder.mkdir(exist_ok=True)
            cached.write_text(json.dumps(_grade_class(folder)))
    return json.loads(cached.read_text())


def _exercise(report: dict, exercise_id: str) -> dict:
    return next(e for e in report["exercises"] if e["id"] == exercise_id)


def test_check_passes(tmp_path: Path) -> None:
    path = tmp_path / "check.json"
    assert main(["--check", "--json", str(path)]) == 0
    check = json.loads(path.read_text())
    assert check["ok"] and len(check["exercises"]) >= 9
    for entry in check["exercises"]:
        assert entry["reference_passed"] == [entry["tests"]] * 2
        assert entry["stub_status"] == "not started"
        assert all(v["caught"] for v in entry["variants"].values())


def test_learner_gets_full_score(class_report: dict) -> None:
    ex01 = _exercise(class_report, "ex01")
    assert (ex01["status"], ex01["points"], ex01["max_points"]) == ("passed", 10, 10)


def test_hang_is_timed_out_and_costs_only_its_exercise(class_report: dict) -> None:
    ex07 = _exercise(class_report, "ex07")
    assert ex07["status"] == "timed out" and ex07["points"] == 0
    assert f"after the {TIMEOUT_S} s time limit" in ex07["tests"][0]["message"]
    assert _exercise(class_report, "ex01")["points"] == 10


def test_exit_and_crash_cost_only_their_exercise(class_report: dict) -> None:
    ex08 = _exercise(class_report, "ex08")
    assert ex08["status"] == "failed" and "called exit(3)" in ex08["tests"][0]["message"]
    ex09 = _exercise(class_report, "ex09")
    assert ex09["status"] == "crashed" and "SIGABRT" in ex09["tests"][0]["message"]
    ex04 = _exercise(class_report, "ex04")
    assert ex04["status"] == "failed" and "memory" in ex04["tests"][0]["message"].lower()
    assert _exercise(class_report, "ex01")["status"] == "passed"


def test_wrong_shape_message_has_the_documented_form(class_report: dict) -> None:
    message = _exercise(class_report, "ex06")["tests"][0]["message"]
    assert message.startswith("ddpm_posterior_step(xt=(4, 3, 8, 8) float32, t=[1, 10, 500, 999]")
    assert "returned shape (4, 3, 8); expected (4, 3, 8, 8)" in message


def test_value_message_and_off_by_one_hint(class_report: dict) -> None:
    message = _exercise(class_report, "ex03")["tests"][0]["message"]
    assert re.search(r"\d+ of 768 elements differ, max \|diff\| [0-9.e+-]+ at \(\d, \d, \d, \d\)", message)
    assert "hint: t runs from 0 to T - 1" in message


def test_calling_minidiff_is_flagged(class_report: dict) -> None:
    ex05 = _exercise(class_report, "ex05")
    assert ex05["status"] == "flagged" and ex05["points"] == 0
    assert any("imports from minidiff.schedule" in flag for flag in ex05["flags"])


def test_printing_does_not_disturb_grading_and_type_is_checked_first(class_report: dict) -> None:
    message = _exercise(class_report, "ex02")["tests"][0]["message"]
    assert "returned a function; expected a torch.Tensor" in message


def test_missing_file_and_report_fields(class_report: dict) -> None:
    assert class_report["status"] == 1
    assert {"report_version", "minidiff_version", "target", "exercises_dir", "created", "total",
            "exercises"} <= set(class_report)
    assert class_report["total"]["max_points"] == sum(e["max_points"] for e in class_report["exercises"])
    ex10 = _exercise(class_report, "ex10")
    assert ex10["status"] == "missing" and "not found" in ex10["message"]
    for exercise in class_report["exercises"]:
        assert {"id", "name", "title", "status", "points", "max_points", "seconds", "message", "flags",
                "tests"} <= set(exercise)
        for test in exercise["tests"]:
            assert {"name", "status", "points", "max_points", "message"} <= set(test)


@pytest.mark.parametrize("argv, words", [
    (["--only", "ex99"], "unknown exercise 'ex99'; choose from ex01"),
    (["--target", "teacher"], "--target 'teacher' is not known"),
    (["--target", "variant:nonsense"], "known variants: "),
    (["--timeout", "0"], "--timeout 0 is not allowed"),
    (["--exercises-dir", "/nonexistent/exercises"], "is not a folder"),
])
def test_bad_input_exits_2_with_a_message(argv: list[str], words: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_checks_run_in_order_type_shape_dtype_finite_values() -> None:
    expected = torch.zeros(2, 3)
    assert problem(0.0, expected, 1e-5, 1e-4)[0] == "type"
    assert problem(torch.zeros(3, 2, dtype=torch.float64), expected, 1e-5, 1e-4)[0] == "shape"
    assert problem(torch.full((2, 3), float("nan"), dtype=torch.float64), expected, 1e-5, 1e-4)[0] == "dtype"
    nan = torch.zeros(2, 3)
    nan[1, 2] = float("nan")
    assert problem(nan, expected, 1e-5, 1e-4) == ("finite", "1 of 6 elements are NaN or inf, first at (1, 2)")
    wrong = torch.zeros(2, 3)
    wrong[0, 1] = 0.41
    assert problem(wrong, expected, 1e-5, 1e-4)[1].startswith("1 of 6 elements differ, max |diff| 0.41 at (0, 1)")
    assert problem(expected.clone(), expected, 1e-5, 1e-4) is None


def test_scan_flags_imports_of_the_reference_and_forbidden_kernels() -> None:
    source = "import minidiff.schedule as s\nimport importlib\nm = importlib.import_module('minidiff')\n" \
             "y = torch.nn.functional.scaled_dot_product_attention(q, k, v)\n"
    found = scan(source, ("scaled_dot_product_attention",))
    assert [f.split(":")[0] for f in found] == ["line 1", "line 3", "line 4"]
    assert scan("import torch\nx = torch.zeros(3)\n") == []

"""The autograder: its own check (with the adversarial suite in tests/grading_cases/), a made-up class,
isolation without namespaces, message formats, reproducible inputs and the report.

Two grading runs do the heavy lifting: ``--check``, and one run over a class of made-up students (a
correct one, a wrong shape, an off-by-one, a hang, an exit(), a crash, a memory hog, one that
imports minidiff), whose report the other tests read.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
from pathlib import Path

import pytest
import torch
from filelock import FileLock

from minidiff.grading import main, registry
from minidiff.grading.check import CANARY, fingerprint, leftover_processes, suite_cases
from minidiff.grading.compare import describe, problem
from minidiff.grading.grade import draw_inputs, grade_submissions, grade_trusted
from minidiff.grading.report import write_json

EXERCISES = Path(__file__).resolve().parent.parent / "exercises"
SUITE = Path(__file__).resolve().parent / "grading_cases"
TIMEOUT_S = 15  # per exercise in the class run: the hang must hit it; the others take ~7 s at most
STUB_RAISE = re.compile(r"    raise NotImplementedError\(.*\Z", re.DOTALL)  # the last statement of every stub

# what each made-up student wrote in place of the stub's `raise NotImplementedError(...)`; ex10 is missing
STUDENTS = {
    "ex01_linear_schedule": ("    s = 1000 / T\n"
                             "    betas = torch.linspace(1e-4 * s, 0.02 * s, T, dtype=torch.float64)\n"
                             "    return torch.cumprod(1 - betas.clamp(max=0.999), dim=0)\n"),  # correct
    "ex02_cosine_schedule": "    print('working on it')\n    return alpha_bar_cosine\n",  # returns a function
    "ex03_q_sample": ("    ab = alpha_bar[t - 1].to(x0.dtype).view(-1, *[1] * (x0.ndim - 1))\n"  # off by one
                      "    return ab.sqrt() * x0 + (1 - ab).sqrt() * noise\n"),
    "ex04_timestep_embedding": "    memory = bytearray(64 * 2**30)\n    return memory\n",  # asks for 64 GiB
    "ex05_training_loss": "    from minidiff.schedule import q_sample\n    return None\n",  # the answer key
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
    before = fingerprint([folder])
    report_path = folder.parent / f"{folder.name}-report.json"
    status = main(["--exercises-dir", str(folder), "--json", str(report_path), "--timeout", str(TIMEOUT_S)])
    return dict(json.loads(report_path.read_text()), status=status, untouched=fingerprint([folder]) == before)


def _shared(tmp_path_factory: pytest.TempPathFactory, name: str, make) -> dict:
    """``make(folder)`` run once per test run, even when pytest-xdist spreads the tests over workers."""
    if not os.environ.get("PYTEST_XDIST_WORKER"):
        folder = tmp_path_factory.mktemp(name)
        return make(folder)
    shared = tmp_path_factory.getbasetemp().parent
    cached = shared / f"{name}.json"
    with FileLock(str(cached) + ".lock"):
        if not cached.is_file():
            folder = shared / name
            folder.mkdir(exist_ok=True)
            cached.write_text(json.dumps(make(folder)))
    return json.loads(cached.read_text())


@pytest.fixture(scope="session")
def class_report(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _shared(tmp_path_factory, "class", _grade_class)


def _run_check(folder: Path) -> dict:
    path = folder / "check.json"
    status = main(["--check", "--json", str(path)])
    return dict(json.loads(path.read_text()), status=status)


def _exercise(report: dict, exercise_id: str) -> dict:
    return next(e for e in report["exercises"] if e["id"] == exercise_id)


def test_check_passes_with_the_adversarial_suite(tmp_path_factory: pytest.TempPathFactory) -> None:
    check = _shared(tmp_path_factory, "check", _run_check)
    assert check["status"] == 0 and check["ok"], check["failures"]
    assert len(check["exercises"]) == len(registry.EXERCISES) and all(e["ok"] for e in check["exercises"])
    suite = {row["case"]: row for row in check["suite"]}
    assert len(suite) == len(suite_cases(SUITE)) >= 40 and all(row["ok"] for row in suite.values())
    assert {row["expected"] for row in suite.values()} == {"full", "caught", "zero"}
    for row in suite.values():  # the outcome each file declares, checked here too
        if row["expected"] == "full":
            assert (row["status"], row["points"]) == ("passed", row["max_points"]), row
        else:
            assert row["points"] < row["max_points"], row
        if row["expected"] == "zero":
            assert row["points"] == 0, row
    assert suite["ex10_aliased_kernel_zero.py"]["status"] == "flagged"
    assert suite["ex10_own_helper_named_like_kernel_full.py"]["status"] == "passed"
    assert not CANARY.exists() and not leftover_processes()


def test_learner_gets_full_score_and_the_folder_is_untouched(class_report: dict) -> None:
    ex01 = _exercise(class_report, "ex01")
    assert (ex01["status"], ex01["points"], ex01["max_points"]) == ("passed", 10, 10)
    assert class_report["untouched"]


def test_hang_is_timed_out_and_costs_only_its_exercise(class_report: dict) -> None:
    ex07 = _exercise(class_report, "ex07")
    assert ex07["status"] == "timed out" and ex07["points"] == 0
    assert f"after the {TIMEOUT_S} s time limit" in ex07["tests"][0]["message"]
    assert _exercise(class_report, "ex01")["points"] == 10


def test_exit_crash_and_memory_cost_only_their_exercise(class_report: dict) -> None:
    ex08 = _exercise(class_report, "ex08")
    assert ex08["status"] == "failed" and "raised SystemExit: 3" in ex08["tests"][0]["message"]
    ex09 = _exercise(class_report, "ex09")
    assert ex09["status"] == "crashed" and "SIGABRT" in ex09["tests"][0]["message"]
    ex04 = _exercise(class_report, "ex04")
    assert ex04["status"] == "failed" and "MemoryError" in ex04["tests"][0]["message"]
    assert _exercise(class_report, "ex01")["status"] == "passed"


def test_wrong_shape_message_shows_the_inputs(class_report: dict) -> None:
    message = _exercise(class_report, "ex06")["tests"][0]["message"]
    assert re.match(r"ddpm_posterior_step\(xt=\(4, 3, 8, 8\) float32 in \[-?[\d.]+, [\d.]+\], "
                    r"mean -?[\d.e-]+, t=\[0, 1, \d+, 999\]", message)
    assert "returned shape (4, 3, 8); expected (4, 3, 8, 8)" in message


def test_value_message_and_off_by_one_hint(class_report: dict) -> None:
    message = _exercise(class_report, "ex03")["tests"][0]["message"]
    assert re.search(r"\d+ of 768 elements differ by more than 1e-05 \+ 0.0001 \* \|expected\|; the worst, "
                     r"\|diff\| [0-9.e+-]+ at \(\d, \d, \d, \d\): returned -?[\d.]+, expected -?[\d.]+",
                     message)
    assert "hint: t runs from 0 to T - 1" in message


def test_importing_minidiff_fails_in_the_child(class_report: dict) -> None:
    ex05 = _exercise(class_report, "ex05")
    assert ex05["points"] == 0
    assert "cannot be imported while grading: minidiff is the answer key" in ex05["tests"][0]["message"]


def test_printing_does_not_disturb_grading_and_type_is_checked_first(class_report: dict) -> None:
    message = _exercise(class_report, "ex02")["tests"][0]["message"]
    assert "returned a function; expected a torch.Tensor" in message


def test_report_fields_seed_and_isolation(class_report: dict) -> None:
    assert class_report["status"] == 1
    assert {"report_version", "minidiff_version", "target", "exercises_dir", "created", "seed", "isolation",
            "seconds", "total", "exercises"} <= set(class_report)
    assert class_report["isolation"]["mode"] in ("namespaces", "process group")
    assert class_report["total"]["max_points"] == sum(e["max_points"] for e in class_report["exercises"])
    ex10 = _exercise(class_report, "ex10")
    assert ex10["status"] == "missing" and "not found" in ex10["message"]
    for exercise in class_report["exercises"]:
        assert {"id", "name", "title", "status", "points", "max_points", "seconds", "message", "flags",
                "tests"} <= set(exercise)


def test_process_group_fallback_grades_and_kills(tmp_path: Path) -> None:
    by_id = {e.id: e for e in registry.EXERCISES}
    correct, hang = SUITE / "ex08_lerp_full.py", SUITE / "ex07_endless_loop_zero.py"
    blocked = tmp_path / "import_minidiff.py"
    blocked.write_text("import minidiff.guidance\n\ndef cfg_combine(eps_uncond, eps_cond, guidance_scale):\n"
                       "    return eps_cond\n")
    reports = grade_submissions([(by_id["ex08"], correct), (by_id["ex07"], hang), (by_id["ex08"], blocked)],
                                seed=1, timeout=TIMEOUT_S, parallel=2, mode="process group")
    assert [r["status"] for r in reports] == ["passed", "timed out", "error"]
    assert "cannot be imported while grading: minidiff is the answer key" in reports[2]["message"]


def test_inputs_are_drawn_afresh_from_the_seed() -> None:
    for exercise in registry.EXERCISES:
        a, b, c = draw_inputs(exercise, 11), draw_inputs(exercise, 11), draw_inputs(exercise, 12)
        assert repr(a) == repr(b)
        assert repr(a) != repr(c)
        assert grade_trusted(exercise, exercise.reference, 12, "reference")["status"] == "passed"


@pytest.mark.parametrize("argv, words", [
    (["--only", "ex99"], "unknown exercise 'ex99'; choose from ex01"),
    (["--target", "teacher"], "--target 'teacher' is not known"),
    (["--target", "variant:nonsense"], "known variants: "),
    (["--timeout", "0"], "--timeout 0 is not allowed"),
    (["--seed", "-1"], "--seed -1 is not allowed"),
    (["--exercises-dir", "/nonexistent/exercises"], "is not a folder"),
])
def test_bad_input_exits_2_with_a_message(argv: list[str], words: str, capsys: pytest.CaptureFixture) -> None:
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert words in err and "Traceback" not in err


def test_checks_run_in_order_type_shape_dtype_finite_values() -> None:
    expected, tol = torch.zeros(2, 3), (1e-5, 1e-4)
    assert problem(0.0, expected, tol)[0] == "type"
    assert problem(torch.zeros(3, 2, dtype=torch.float64), expected, tol)[0] == "shape"
    assert problem(torch.full((2, 3), float("nan"), dtype=torch.float64), expected, tol)[0] == "dtype"
    assert problem(torch.zeros(2, 3, dtype=torch.float64), expected, tol, (torch.float64,)) is None
    nan = torch.zeros(2, 3)
    nan[1, 2] = float("nan")
    assert problem(nan, expected, tol) == ("finite", "1 of 6 elements are NaN or inf, first at (1, 2)")
    wrong = torch.zeros(2, 3)
    wrong[0, 1] = 0.41
    assert problem(wrong, expected, tol)[1] == (
        "1 of 6 elements differ by more than 1e-05 + 0.0001 * |expected|; "
        "the worst, |diff| 0.41 at (0, 1): returned 0.4099999964, expected 0")
    assert problem(expected.clone(), expected, tol) is None


def test_a_float32_precision_failure_says_so() -> None:
    from minidiff.grading.compare import generic_hint

    expected = torch.tensor([0.312194824219, 0.5], dtype=torch.float64)
    got = expected.float().double() + torch.tensor([6.6e-7, 0.0], dtype=torch.float64)
    check, text = problem(got, expected, (1e-12, 1e-9))
    assert "returned 0.3121954842" in text and "expected 0.3121948242" in text and "1e-12 + 1e-09" in text
    assert "agree only to float32 precision" in generic_hint(check, got, expected)


def test_inputs_are_shown_with_their_values() -> None:
    assert describe(torch.tensor([0.5, 250.25])) == "[0.5, 250.25] float32"
    assert describe(torch.tensor([0, 10, 999])) == "[0, 10, 999]"
    assert re.fullmatch(r"\(4, 3, 8, 8\) float32 in \[-?[\d.]+, [\d.]+\], mean -?[\d.e-]+",
                        describe(torch.randn(4, 3, 8, 8)))


def test_report_is_written_atomically(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "alice.json"
    write_json(target, dict(total=1))
    write_json(target, dict(total=2))
    assert json.loads(target.read_text()) == dict(total=2)
    assert [p.name for p in target.parent.iterdir()] == ["alice.json"]


def _suite_function(name: str):
    exercise = registry.find(name[:4])
    namespace: dict = {}
    exec(compile((SUITE / name).read_text(), name, "exec"), namespace)  # trusted: our own suite file
    return exercise, namespace[exercise.function]


def test_res_block_parameters_are_counted_by_hand_and_names_get_their_hint() -> None:
    from minidiff.grading.grade import call_reference, pick

    exercise = registry.find("ex14")
    case = next(c for c in exercise.cases if "8 -> 16" in c.name)
    inputs = case.make(torch.Generator().manual_seed(0))
    # norm1 8 + 8, conv1 16 * 8 * 9 + 16, emb_proj 12 * 16 + 16, norm2 16 + 16,
    # conv2 16 * 16 * 9 + 16, skip 8 * 16 + 16
    assert pick(call_reference(exercise.reference, exercise, inputs), case.output).item() == 3888
    report = grade_trusted(*_suite_function("ex14_wrong_names_caught.py"), 5, "student")
    counted = [t["status"] for t in report["tests"] if "parameters" in t["name"]]
    assert report["points"] == 4 and counted == ["passed", "passed"]
    assert "loads its weights into your block by these names" in report["tests"][0]["message"]


def test_vae_kl_matches_a_hand_computed_value() -> None:
    from minidiff.grading import references

    mean, logvar = torch.ones(2, 4), torch.zeros(2, 4)
    logvar[1] = math.log(2.0)  # variance 2: each element adds 0.5 * (1 + 2 - 1 - log 2)
    z, kl = references.vae_latent(mean, logvar, torch.ones(2, 4))
    assert torch.allclose(kl, torch.tensor([2.0, 2 * (2 - math.log(2.0))]))
    assert torch.allclose(z[1], torch.full((4,), 1 + math.sqrt(2.0)))


def test_tuple_exercises_say_when_no_tuple_came_back() -> None:
    exercise = registry.find("ex11")
    report = grade_trusted(exercise, lambda mean, logvar, noise: mean, 3, "student")
    assert report["points"] == 0
    assert "returned a Tensor; expected a tuple whose element 0" in report["tests"][0]["message"]


def test_new_sampler_exercises_name_the_mistake() -> None:
    ex12, ex13 = registry.find("ex12"), registry.find("ex13")
    leading = next(v for v in ex12.variants if v.name == "leading_spacing")
    plan = next(t for t in grade_trusted(ex12, leading.fn, 2, "variant")["tests"] if "planned" in t["name"])
    assert "the first steps are [999, 937, 874, 811]" in plan["message"]
    assert "trailing spacing" in plan["message"]
    first_order = next(v for v in ex13.variants if v.name == "first_order")
    second_order = grade_trusted(ex13, first_order.fn, 2, "variant")["tests"][0]["message"]
    assert "hint: the 2M step uses the last step's x0_pred too" in second_order

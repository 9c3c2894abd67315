"""Every exercise in order, and finding them by what a user types (ex03, 3, ex03_q_sample, q_sample)."""

from __future__ import annotations

from minidiff.grading import ex_conditioning, ex_denoiser, ex_latent, ex_sampling, ex_schedule
from minidiff.grading.spec import Exercise

EXERCISES: tuple[Exercise, ...] = tuple(sorted(
    ex_schedule.EXERCISES + ex_denoiser.EXERCISES + ex_sampling.EXERCISES + ex_conditioning.EXERCISES
    + ex_latent.EXERCISES, key=lambda exercise: exercise.id))


def find(name: str) -> Exercise:
    """The exercise called ``name``; ValueError listing every exercise when there is none."""
    key = name.strip().lower()
    if key.isdigit():
        key = f"ex{int(key):02d}"
    for exercise in EXERCISES:
        if key in (exercise.id, exercise.name, exercise.topic, exercise.function):
            return exercise
    options = ", ".join(f"{e.id} ({e.title})" for e in EXERCISES)
    raise ValueError(f"unknown exercise {name!r}; choose from {options}")


def select(names: list[str]) -> list[Exercise]:
    """Exercises named in ``names`` (each may be comma-separated), in course order; all when empty."""
    wanted = {find(part).id for name in names for part in name.split(",") if part.strip()}
    return [e for e in EXERCISES if not wanted or e.id in wanted]

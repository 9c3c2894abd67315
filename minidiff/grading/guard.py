"""Flagging student code that hands the work to minidiff, which is the reference solution.

Two independent looks: ``scan`` reads the student's source (imports of minidiff, and names an
exercise forbids, such as a fused attention kernel), and ``Recorder`` replaces every function and
class of the reference modules, inside the disposable grading process only, by a wrapper that notes
each call made while student code is running.
"""

from __future__ import annotations

import ast
import functools
import inspect
from types import ModuleType
from typing import Any, Callable

PACKAGE = "minidiff"
IMPORTERS = ("__import__", "import_module")  # calls that import a module named by a string


def _imports_package(name: str | None) -> bool:
    return bool(name) and (name == PACKAGE or name.startswith(PACKAGE + "."))


def scan(source: str, forbidden: tuple[str, ...] = ()) -> list[str]:
    """What in ``source`` uses the reference: ["line 3: imports minidiff.schedule", ...]."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []  # loading the file reports the syntax error
    found = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [f"line {node.lineno}: imports {a.name}, the reference solution" for a in node.names
                      if _imports_package(a.name)]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and _imports_package(node.module):
            found.append(f"line {node.lineno}: imports from {node.module}, the reference solution")
        elif isinstance(node, ast.Call):
            func = node.func
            called = func.attr if isinstance(func, ast.Attribute) else getattr(func, "id", "")
            first = node.args[0] if node.args else None
            if called in IMPORTERS and isinstance(first, ast.Constant) and _imports_package(str(first.value)):
                found.append(f"line {node.lineno}: imports {first.value}, the reference solution")
        name = node.attr if isinstance(node, ast.Attribute) else getattr(node, "id", None)
        if isinstance(node, (ast.Attribute, ast.Name)) and name in forbidden:
            found.append(f"line {node.lineno}: uses {name}, which does the exercise for you")
    return sorted(set(found), key=lambda text: int(text.split(":")[0].split()[1]))


class Recorder:
    """Wraps the reference modules' functions and classes; records calls made while ``active``."""

    def __init__(self, modules: tuple[ModuleType, ...]) -> None:
        self.active = False
        self.calls: set[str] = set()
        for module in modules:
            for name, obj in list(vars(module).items()):
                if getattr(obj, "__module__", None) != module.__name__ or name.startswith("__"):
                    continue
                label = f"{module.__name__}.{name}"
                if inspect.isclass(obj):
                    obj.__init__ = self._wrap(obj.__init__, label)
                elif inspect.isfunction(obj):
                    setattr(module, name, self._wrap(obj, label))

    def set_active(self, active: bool) -> None:
        self.active = active

    def _wrap(self, fn: Callable[..., Any], label: str) -> Callable[..., Any]:
        @functools.wraps(fn)
        def recorded(*args: Any, **kwargs: Any) -> Any:
            if self.active:
                self.calls.add(label)
            return fn(*args, **kwargs)

        del recorded.__wrapped__  # no easy way back to the unrecorded function
        return recorded

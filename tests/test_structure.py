"""One frame loop in the code base: only ``edge/drive.py`` runs frames through a ``CameraPipeline``.

Replay, the device service and the live benchmark all call ``edge.drive.drive``; a second loop that calls
``detect``/``analyse``/``finish`` itself would drift from it (as the three copies before it did: one without
the detect thread, one counting drops differently).
"""

from __future__ import annotations

import ast

from tests.conftest import REPO

DRIVER = REPO / "edge" / "drive.py"
#: The pipeline's per-frame halves and its end of stream: only the driver touches them (``process``, both
#: halves in one call, was removed so that a frame loop cannot bypass the driver).
PIPELINE_STEPS = frozenset({"detect", "analyse", "finish", "process"})


def _dotted(node: ast.expr) -> str:
    while isinstance(node, ast.Attribute):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""


def pipeline_steps(source: str) -> list[tuple[int, str]]:
    """(line, ``obj.step``) for every use of ``.detect``, ``.analyse``, ``.finish`` or ``.process`` on an object, called
    or passed on (``map(pipeline.detect, frames)``); module paths (``edge.detect``) do not count."""
    found: list[tuple[int, str]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Attribute) and node.attr in PIPELINE_STEPS and _dotted(node.value) != "edge":
            found.append((node.lineno, f"{ast.unparse(node.value)}.{node.attr}"))
    return sorted(found)


def test_the_check_sees_calls_and_references() -> None:
    src = "for d in frames:\n    pipeline.analyse(d)\nx = map(self.pipeline.detect, fs)\nedge.detect.Detector()\n"
    assert pipeline_steps(src) == [(2, "pipeline.analyse"), (3, "self.pipeline.detect")]


def test_only_the_driver_runs_frames_through_the_pipeline() -> None:
    offenders = [f"{path.relative_to(REPO)}:{line}: {what}"
                 for path in sorted([*(REPO / "edge").rglob("*.py"), *(REPO / "tools").rglob("*.py")])
                 if path != DRIVER
                 for line, what in pipeline_steps(path.read_text(encoding="utf-8"))]
    assert not offenders, "frames go through the pipeline only in edge/drive.py (call edge.drive.drive):\n" + (
        "\n".join(offenders))
    in_driver = {what.split(".")[-1] for _, what in pipeline_steps(DRIVER.read_text(encoding="utf-8"))}
    assert in_driver == {"detect", "analyse", "finish"}


#: The one function allowed past the length cap: the tracker's association step, kept whole so that its
#: stages (predict, match high, match low, birth, death) read in order as in ByteTrack's paper.
LONG_FUNCTION_ALLOWED = frozenset({("edge/track.py", "update")})
MAX_FUNCTION_LINES = 60


def long_functions(source: str) -> list[tuple[str, int]]:
    """(name, lines) of every function or method longer than ``MAX_FUNCTION_LINES``, docstring included."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.end_lineno is not None:
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append((node.name, lines))
    return found


def test_the_length_check_counts_whole_functions() -> None:
    body = "".join(f"    x{i} = {i}\n" for i in range(MAX_FUNCTION_LINES))
    assert long_functions(f"def f():\n{body}") == [("f", MAX_FUNCTION_LINES + 1)]
    assert long_functions("class A:\n    def g(self):\n        return 1\n") == []


def test_no_function_in_edge_is_longer_than_sixty_lines() -> None:
    too_long = [
        f"{path.relative_to(REPO)}:{name} ({lines} lines)"
        for path in sorted((REPO / "edge").rglob("*.py"))
        for name, lines in long_functions(path.read_text(encoding="utf-8"))
        if (str(path.relative_to(REPO)), name) not in LONG_FUNCTION_ALLOWED
    ]
    assert not too_long, f"split these functions (at most {MAX_FUNCTION_LINES} lines): {too_long}"

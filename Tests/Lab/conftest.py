"""Fixtures for the dual-stack lab (lab.py): skip cleanly where namespaces are unavailable, fail on CI; one fresh lab
per test, torn down (processes killed, namespaces deleted) whatever the outcome; logs printed when a test fails."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import lab as labmod  # noqa: E402

ON_CI = os.environ.get("CI", "").lower() == "true"
HOW = "run as root: `python3 -m pytest Tests/Lab` (needs iproute2 and unbound; swaks for the client)"
_problem: list[str | None] = []


def _require_lab() -> None:
    if not _problem:
        _problem.append(labmod.netns_problem())
        if _problem[0] is None:
            labmod.clean_stale()
    if _problem[0] is not None:
        message = f"dual-stack lab unavailable: {_problem[0]}; {HOW}"
        if ON_CI:
            pytest.fail(message + " -- required when CI=true")
        pytest.skip(message)


def require_tool(name: str, package: str) -> str:
    import shutil
    path = shutil.which(name) or shutil.which(name, path="/usr/sbin:/usr/bin:/sbin:/bin")
    if path:
        return path
    message = f"{name} is not installed (Debian package: {package})"
    if ON_CI:
        pytest.fail(message + " -- required when CI=true")
    pytest.skip(message)


@pytest.fixture
def lab(tmp_path: Path, request):
    _require_lab()
    require_tool("unbound", "unbound")
    try:
        labmod.server_binary()
    except labmod.LabError as exc:
        pytest.fail(str(exc))
    the_lab = labmod.Lab(tmp_path / "lab")
    yield the_lab
    failed = getattr(request.node, "rep_call", None) is not None and request.node.rep_call.failed
    if failed or os.environ.get("DUALMTA_LAB_SHOW_LOGS"):
        for proc in the_lab.procs:
            print(f"---- {proc.name} in {proc.ns} ----\n{proc.text()}")
    the_lab.close()


@pytest.hookimpl(tryfirst=True, hookwrapper=True)
def pytest_runtest_makereport(item, call):
    outcome = yield
    report = outcome.get_result()
    setattr(item, "rep_" + report.when, report)


@pytest.fixture
def need_swaks() -> str:
    """Tests that submit with swaks (the "real client"): skip without it, fail on CI."""
    return require_tool("swaks", "swaks")

"""Every locust scenario, in its smoke size, against a real local stack: the scenarios never rot.

A stack of its own with the default write limits (the session stack's are tiny, for the 429 test);
each run is bounded by its scenario's run time and must meet the scenario's SLOs and own checks.
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import ROOT, Stack, isolated_stack

pytestmark = pytest.mark.stack

SCENARIOS = sorted(path.stem for path in (ROOT / "loadtests" / "scenarios").glob("*.toml"))
SMOKE_BUDGET_S = 120  # seeding + 10 s of load + stop, with room for a busy machine


@pytest.fixture(scope="module")
def load_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    with isolated_stack(tmp_path_factory.mktemp("load")) as running:
        yield running


def test_every_scenario_has_a_locustfile() -> None:
    locustfiles = ROOT / "loadtests" / "src" / "loadtests" / "scenarios"
    assert SCENARIOS == ["blog", "flash_sale", "shop_day", "stream_ingest"]
    assert all((locustfiles / f"{name}.py").exists() for name in SCENARIOS)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_smoke_run_meets_its_slos(load_stack: Stack, scenario: str, tmp_path: Path) -> None:
    run = subprocess.run(
        [sys.executable, "-m", "loadtests.run", scenario, "--smoke", "--host", load_stack.front],
        cwd=ROOT,
        env=load_stack.env,
        capture_output=True,
        text=True,
        timeout=SMOKE_BUDGET_S,
        check=False,
    )
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-4000:]
    assert f"{scenario}: SLOs met" in run.stdout, report[-4000:]

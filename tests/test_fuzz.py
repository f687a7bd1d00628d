"""The fuzzers (tests/fuzz/run.py), briefly: each replays the inputs that once made it
fail, then fuzzes for a few seconds from its seeds and whatever corpus `make fuzz`
grew.  `make fuzz` runs them for long; docs/security.md says what each one checks.
"""

from __future__ import annotations

import subprocess

import pytest

from tests.fuzz.run import FUZZERS, REPO, run

SECONDS = 12


@pytest.fixture(scope="module")
def built() -> None:
    made = subprocess.run(["make", "-s", "-C", str(REPO), "fuzz-build"], capture_output=True, text=True)
    assert made.returncode == 0, f"make fuzz-build failed:\n{made.stdout}{made.stderr}"


@pytest.mark.parametrize(
    "name",
    # The receiver's scratch tree is a tmpfs in a mount namespace of its own: root.
    [pytest.param(n, marks=pytest.mark.root) if n == "rfs_receiver" else n for n in FUZZERS],
)
def test_fuzz(built: None, name: str) -> None:
    outcome = run(FUZZERS[name], SECONDS)
    log = FUZZERS[name].log.read_text(errors="replace")
    assert outcome.ok, f"{outcome}\n{log[-4000:]}"
    assert outcome.runs > 0, f"{name}: nothing ran\n{log[-4000:]}"

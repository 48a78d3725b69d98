"""Shared test fixtures. Module-specific fixtures live in their test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("ARKPOSE_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")



def pytest_configure(config):
    # The env var alone changes nothing until torch is told: apply it once for the session.
    from arkpose import runtime

    runtime.configure_threads()


REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "real_fixtures"


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """``../shared/real_fixtures`` (4 COCO and 2 CrowdPose images); skips when absent."""
    if not (SHARED_FIXTURES / "README.md").is_file():
        pytest.skip(f"real fixtures not found at {SHARED_FIXTURES} (needs the shared/ checkout)")
    return SHARED_FIXTURES


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory) -> Path:
    """A tiny SynthPose dataset (preset smoke, 24 train / 8 val images at 128 px, seed 0),
    generated once per test session; COCO layout (see docs/synthpose.md)."""
    from arkpose.data.synth import generate

    root = tmp_path_factory.mktemp("synthpose") / "smoke"
    return generate(root, "smoke", seed=0, train=24, val=8, progress=False, card=False)

"""Shared test fixtures. Module-specific fixtures live in their test files."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

os.environ.setdefault("ARKPOSE_THREADS", "2")
os.environ.setdefault("MPLBACKEND", "Agg")

REPO = Path(__file__).resolve().parents[1]
SHARED_FIXTURES = REPO.parent / "shared" / "real_fixtures"


@pytest.fixture(scope="session")
def real_fixtures() -> Path:
    """``../shared/real_fixtures`` (4 COCO and 2 CrowdPose images); skips when absent."""
    if not (SHARED_FIXTURES / "README.md").is_file():
        pytest.skip(f"real fixtures not found at {SHARED_FIXTURES} (needs the shared/ checkout)")
    return SHARED_FIXTURES

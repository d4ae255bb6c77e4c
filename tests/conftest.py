"""Shared test fixtures."""

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHARED_REFERENCE = REPO.parent / "shared" / "reference"


@pytest.fixture(scope="session")
def shared_reference() -> Path:
    """`../shared/reference` beside the checkout (read-only reference data)."""
    if not SHARED_REFERENCE.exists():
        pytest.fail(f"{SHARED_REFERENCE} is missing: CI clones the project with ../shared beside it")
    return SHARED_REFERENCE

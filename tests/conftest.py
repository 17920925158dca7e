"""Shared fixtures: the real MNIST files, found through NNSCRATCH_DATA_DIR.

Tests that need real data skip when it cannot be found, except when NNSCRATCH_REQUIRE_DATA=1
(CI sets it): then they fail, so a CI run can never pass by skipping its data tests.
"""

from __future__ import annotations

import os

import pytest


def _require_data() -> bool:
    return os.environ.get("NNSCRATCH_REQUIRE_DATA", "") not in ("", "0")


@pytest.fixture(scope="session")
def mnist():
    """The MNIST dataset (50k/10k/10k split) from $NNSCRATCH_DATA_DIR, loaded once per session."""
    from nnscratch.data import load_dataset
    from nnscratch.errors import DataError

    data_dir = os.environ.get("NNSCRATCH_DATA_DIR")
    if not data_dir:
        msg = "real MNIST needed: set NNSCRATCH_DATA_DIR to the folder that holds mnist/"
        if _require_data():
            pytest.fail(msg + " (NNSCRATCH_REQUIRE_DATA=1)")
        pytest.skip(msg)
    try:
        return load_dataset("mnist", download=False, progress=False)
    except DataError as exc:
        if _require_data():
            pytest.fail(f"real MNIST needed (NNSCRATCH_REQUIRE_DATA=1): {exc}")
        pytest.skip(str(exc))

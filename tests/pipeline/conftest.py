"""Every unit test under tests/pipeline runs with the settings of the repository, not of the developer's shell."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _settings_from_the_repository(clean_env: object) -> None:
    """See `clean_env` in tests/conftest.py."""

"""Debian's Chromium for the browser tests: skipped where it is missing, except when the run demands every test
(``SUPPILO_REQUIRE_CHROMIUM=1``, which CI's ``./dev test --require-postgres`` sets): then a missing browser fails."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

CHROMIUM = Path("/usr/bin/chromium")


def require_chromium() -> None:
    """Call at module level before importing Playwright."""
    if CHROMIUM.exists():
        return
    reason = "/usr/bin/chromium is not installed (apt-get install chromium)"
    if os.environ.get("SUPPILO_REQUIRE_CHROMIUM") == "1":
        pytest.fail(reason + ", and this run requires the browser tests", pytrace=False)
    pytest.skip(reason, allow_module_level=True)

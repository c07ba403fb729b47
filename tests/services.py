"""Skip a test whose service is missing, unless REQUIRE_SERVICES=1 (CI), then fail."""

import os
import shutil

import pytest

CHROMIUM = "/usr/bin/chromium"


def require(available: bool, reason: str) -> None:
    """Skip (laptop) or fail (REQUIRE_SERVICES=1) when `available` is false."""
    if available:
        return
    if os.environ.get("REQUIRE_SERVICES") == "1":
        pytest.fail(f"{reason} (REQUIRE_SERVICES=1)")
    pytest.skip(reason)


def require_chromium() -> str:
    """Return Chromium's path, or skip/fail with how to install it."""
    path = CHROMIUM if os.access(CHROMIUM, os.X_OK) else shutil.which("chromium")
    require(path is not None, "Chromium is not installed: apt-get install -y chromium")
    return path

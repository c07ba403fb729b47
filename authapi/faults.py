"""Runtime faults of the reference API, set through `POST /_faults`.

Tests and the soak change how the running backend misbehaves without
restarting it: a value set here overrides its setting (AUTHAPI_REFRESH_DELAY
for `refresh_delay`, AUTHAPI_LOGIN_DELAY for `login_delay`, AUTHAPI_ACCESS_TTL
for `access_ttl`) until it is set
again; setting it to None goes back to the setting. A test that must not race
a token's lifetime lengthens the next tokens' life instead of sleeping. The
API runs as one threaded process, so a locked dict in its memory is the whole
state.
"""

import math
import threading

from .conf import api_settings

_lock = threading.Lock()
_overrides: dict[str, float] = {}

# The longest refresh stall accepted, so a typo cannot hang the API's threads.
MAX_REFRESH_DELAY = 60.0
# Accepted range of each fault, in seconds.
RANGES = {
    "refresh_delay": (0.0, MAX_REFRESH_DELAY),
    "login_delay": (0.0, MAX_REFRESH_DELAY),
    "access_ttl": (1.0, 86400.0),
}


class InvalidFault(ValueError):
    """A fault value that cannot be set; the message is safe to answer with."""


def _defaults() -> dict[str, float]:
    return {
        "refresh_delay": float(api_settings.refresh_delay),
        "login_delay": float(api_settings.login_delay),
        "access_ttl": float(api_settings.access_ttl),
    }


def _validated(name: str, value) -> float | None:
    if name not in _defaults():
        raise InvalidFault(f"unknown fault {name!r}; known: {', '.join(sorted(_defaults()))}")
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float) or not math.isfinite(value):
        raise InvalidFault(f"{name} must be a number of seconds or null")
    low, high = RANGES[name]
    if not low <= value <= high:
        raise InvalidFault(f"{name} must be between {low:g} and {high:g} seconds")
    return float(value)


def set_faults(**values) -> dict[str, float]:
    """Override the given faults (None restores the setting); return `current()`.

    All values are checked before any is applied.

    :raises InvalidFault: an unknown name or a value out of range.
    """
    checked = {name: _validated(name, value) for name, value in values.items()}
    with _lock:
        for name, value in checked.items():
            if value is None:
                _overrides.pop(name, None)
            else:
                _overrides[name] = value
    return current()


def current() -> dict[str, float]:
    """Return every fault's value in effect: the override, else the setting."""
    with _lock:
        return {**_defaults(), **_overrides}


def refresh_delay() -> float:
    """Return the seconds every refresh stalls before it is handled."""
    return current()["refresh_delay"]


def login_delay() -> float:
    """Return the seconds every sign-in stalls before it is handled."""
    return current()["login_delay"]


def access_ttl() -> int:
    """Return the lifetime in seconds of the access tokens issued from now on."""
    return int(current()["access_ttl"])


def reset() -> None:
    """Drop every override (tests running in-process call this between tests)."""
    with _lock:
        _overrides.clear()

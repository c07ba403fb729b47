"""What script callers get: the JSON error shape, and how to tell a script from a page."""

from django.http import HttpRequest, JsonResponse


def json_view(view):
    """Mark a view as answering scripts only: its errors are JSON, never a page."""
    view.wants_json = True
    return view


def wants_json(request: HttpRequest) -> bool:
    """Return whether the caller is a script (fetch/XHR, a `json_view`), not a page load."""
    match = getattr(request, "resolver_match", None)
    if match is not None and getattr(match.func, "wants_json", False):
        return True
    if request.headers.get("X-Requested-With") == "XMLHttpRequest":
        return True
    accept = request.headers.get("Accept", "")
    return "application/json" in accept and "text/html" not in accept


def json_error(status: int, error: str, message: str, **extra) -> JsonResponse:
    """Return the JSON error shape of this app's script-facing endpoints."""
    return JsonResponse({"ok": False, "error": error, "message": message, **extra}, status=status)

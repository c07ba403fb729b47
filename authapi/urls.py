"""The URLconf of the reference auth API process: the API and nothing else.

The four endpoints live where AUTHAPI_LOGIN_PATH, AUTHAPI_REFRESH_PATH,
AUTHAPI_LOGOUT_PATH and AUTHAPI_ME_PATH say (`/api/v1/auth/email/login`…).
`urlpatterns` is built from them whenever Django's resolver asks for it (a
module `__getattr__`), and a change of one of them (`override_settings`,
pytest's `settings`) drops the cached resolvers, so the next request sees the
new paths. The test hooks `/_stats` and `/_faults` never move.
"""

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.urls import clear_url_caches, path, re_path

from . import views
from .conf import ENDPOINT_SETTINGS, api_settings

VIEWS = {"login": views.login, "refresh": views.refresh, "logout": views.logout, "me": views.me}


def build_urlpatterns() -> list:
    """The API's patterns for the endpoint paths configured now."""
    endpoints = [
        path(route.removeprefix("/"), VIEWS[view], name=f"authapi-{view}")
        for view, route in api_settings.endpoint_paths.items()
    ]
    return [
        *endpoints,
        path("_stats", views.stats_view, name="authapi-stats"),
        path("_faults", views.faults_view, name="authapi-faults"),
        re_path(r"", views.unknown_path),
    ]


def __getattr__(name: str):
    if name == "urlpatterns":
        return build_urlpatterns()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@receiver(setting_changed, dispatch_uid="authapi-endpoint-paths")
def _endpoint_path_changed(*, setting: str, **kwargs) -> None:
    # Connected when this module is first imported, so before any resolver
    # that holds its patterns exists.
    if setting in ENDPOINT_SETTINGS.values():
        clear_url_caches()


handler400 = views.bad_request
handler404 = views.not_found
handler500 = views.server_error

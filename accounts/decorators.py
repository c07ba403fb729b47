"""Marks a view carries for the token middleware, so the package names no URL of the project.

`token_exempt` is to the token middleware what `csrf_exempt` is to CSRF: a
view so marked is never checked, refreshed or revalidated (sign-out, which
must complete whatever the tokens say; a health probe). Projects may mark
their own views, or name them in AUTH_EXEMPT_URLS.
"""


def token_exempt(view):
    """Leave this view alone in accounts.middleware.TokenRefreshMiddleware.

    The mark is set on the view itself, not on a wrapper: no extra call per
    request, and an async view stays one.
    """
    view.token_exempt = True
    return view

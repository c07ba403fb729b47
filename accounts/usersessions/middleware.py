from .signins import touch


class UserSessionMiddleware:
    """Keep each signed-in browser's "last seen" on the sessions page up to date.

    After AuthenticationMiddleware (it reads `request.user` only when the view
    did) and before TokenRefreshMiddleware, so the row records where the
    response left the tokens. One UPDATE per session and process at most
    every AUTH_SESSION_TOUCH_INTERVAL seconds (accounts/usersessions/signins.py).
    """

    def __init__(self, get_response):
        self.get_response = get_response

    def __call__(self, request):
        response = self.get_response(request)
        touch(request)
        return response

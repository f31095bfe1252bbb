"""Authentication and CSRF protection: the dashboard's guards, as ASGI middleware.

Authentication is HTTP basic (``user:password``) or a bearer token; a token is also
accepted as the password of basic auth with any user name, so a browser can use it.
CSRF uses a double-submit token: a random cookie (``SameSite=Strict``, ``HttpOnly``) that
every form repeats in a hidden field; a POST whose field does not match is refused.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
from http.cookies import SimpleCookie

from starlette.datastructures import Headers
from starlette.requests import Request
from starlette.responses import PlainTextResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CSRF_COOKIE = "omniq_csrf"
CSRF_FIELD = "csrf_token"


class Credentials:
    """What ``--auth`` accepts: ``USER:PASSWORD`` (basic auth) or ``TOKEN``."""

    def __init__(self, spec: str) -> None:
        if not spec or spec.startswith(":") or spec.endswith(":"):
            raise ValueError("auth must be USER:PASSWORD or a TOKEN, and not empty")
        user, sep, password = spec.partition(":")
        self.user: str | None = user if sep else None
        self.secret = password if sep else spec

    def accepts(self, authorization: str | None) -> bool:
        if not authorization:
            return False
        scheme, _, value = authorization.partition(" ")
        if scheme.lower() == "bearer":
            return self.user is None and hmac.compare_digest(
                value.strip().encode(), self.secret.encode()
            )
        if scheme.lower() != "basic":
            return False
        try:
            user, _, password = (
                base64.b64decode(value.strip(), validate=True).decode().partition(":")
            )
        except (binascii.Error, UnicodeDecodeError):
            return False
        user_ok = self.user is None or hmac.compare_digest(user.encode(), self.user.encode())
        return user_ok and hmac.compare_digest(password.encode(), self.secret.encode())


class AuthMiddleware:
    """Refuse every request without the credentials (401 asking for basic auth)."""

    def __init__(self, app: ASGIApp, credentials: Credentials) -> None:
        self.app = app
        self.credentials = credentials

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and not self.credentials.accepts(
            Headers(scope=scope).get("authorization")
        ):
            response = PlainTextResponse(
                "authentication required",
                status_code=401,
                headers={"WWW-Authenticate": 'Basic realm="omniq dashboard"'},
            )
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)


class CsrfCookieMiddleware:
    """Give each browser a CSRF token cookie; handlers read it from ``request.state``."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        cookie = SimpleCookie(Headers(scope=scope).get("cookie", ""))
        token = cookie[CSRF_COOKIE].value if CSRF_COOKIE in cookie else ""
        fresh = len(token) < 32
        if fresh:
            token = secrets.token_urlsafe(32)
        scope.setdefault("state", {})["csrf_token"] = token
        path = scope.get("root_path") or "/"

        async def send_with_cookie(message: Message) -> None:
            if fresh and message["type"] == "http.response.start":
                value = f"{CSRF_COOKIE}={token}; Path={path}; HttpOnly; SameSite=Strict"
                message.setdefault("headers", []).append((b"set-cookie", value.encode("latin-1")))
            await send(message)

        await self.app(scope, receive, send_with_cookie)


def csrf_ok(request: Request, submitted: object) -> bool:
    """Whether a POST carries the token of this browser's cookie."""
    cookie = request.cookies.get(CSRF_COOKIE, "")
    return (
        isinstance(submitted, str)
        and len(cookie) >= 32
        and hmac.compare_digest(submitted.encode(), cookie.encode())
    )

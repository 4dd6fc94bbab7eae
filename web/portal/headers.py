"""Security headers: every answer says nosniff (a page, an API answer, a static file); the
portal's own answers also may not be framed by another site (clickjacking), load or
send forms only to this site, and send no full address to another site.

The pages use no inline script and no <style> element; the only inline CSS is the
gauges' width in a style attribute (macros.html), which style-src-attr allows and
nothing else does. The middleware sets them on whatever the app answers; Page.finish
sets them too, for the portal's error pages that Starlette sends from outside the
middleware (an unexpected error's page)."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send

CONTENT_SECURITY_POLICY = "; ".join(
    (
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "style-src-attr 'unsafe-inline'",
        "img-src 'self'",
        "object-src 'none'",
        "base-uri 'none'",
        "form-action 'self'",
        "frame-ancestors 'none'",
    )
)
EVERY_ANSWER = {"X-Content-Type-Options": "nosniff"}
PORTAL_ANSWER = EVERY_ANSWER | {
    "X-Frame-Options": "DENY",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "Referrer-Policy": "same-origin",
}


class SecurityHeaders:
    """Adds EVERY_ANSWER to all answers and PORTAL_ANSWER to those of paths that are not
    in `not_portal` (prefixes: the API, /docs and the like, whose pages load their own)."""

    def __init__(self, app: ASGIApp, not_portal: tuple[str, ...]) -> None:
        self.app, self.not_portal = app, not_portal

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope.get("path", "")
        extra = EVERY_ANSWER if path.startswith(self.not_portal) else PORTAL_ANSWER

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in extra.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)

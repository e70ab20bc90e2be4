"""Security headers on every answer of the dashboard: a strict Content-Security-Policy (no
inline script or style anywhere: the templates use classes and static files only), no framing,
no referrer beyond the dashboard itself."""

from __future__ import annotations

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


def content_security_policy(*, media_origin: str, provider_origin: str) -> str:
    return "; ".join(
        [
            "default-src 'self'",
            "script-src 'self'",
            "style-src 'self'",
            "img-src 'self' data:",
            f"media-src 'self' {media_origin}",
            "frame-ancestors 'none'",
            # The sign-in and sign-out redirects go to the provider.
            f"form-action 'self' {provider_origin}",
            "base-uri 'none'",
            "object-src 'none'",
        ]
    )


class SecurityHeaders:
    HEADERS = {
        "X-Content-Type-Options": "nosniff",
        "Referrer-Policy": "same-origin",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }

    def __init__(self, app: ASGIApp, *, policy: str) -> None:
        self.app = app
        self.headers = {"Content-Security-Policy": policy, **self.HEADERS}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in self.headers.items():
                    if name not in headers:
                        headers[name] = value
                if "set-cookie" in headers or scope.get("session"):
                    # Pages show one person's data: never kept by a shared cache.
                    headers["Cache-Control"] = "no-store"
            await send(message)

        await self.app(scope, receive, send_with_headers)

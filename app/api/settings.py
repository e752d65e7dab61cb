"""Settings of the HTTP server and the start-up safety check on its bind address."""

from __future__ import annotations

from dataclasses import dataclass, field

from app.api.connections import ConnectionLimits
from app.orchestrator.loopback import is_loopback_host


@dataclass(frozen=True)
class ApiSettings:
    """How the server listens, authenticates and streams.

    ``auth_token`` None means no token is configured (allowed on loopback only).
    ``auth_optional`` lets loopback callers that address the server by a
    loopback name (or one of ``allowed_hosts``) skip the token;
    ``trust_proxy_auth`` accepts the identity a reverse proxy puts in
    ``X-Forwarded-User`` without a token, from loopback peers and
    ``trusted_proxies`` (addresses or networks) only.
    """

    bind_host: str = "127.0.0.1"
    bind_port: int = 8080
    auth_token: str | None = None
    auth_optional: bool = False
    trust_proxy_auth: bool = False
    cancel_on_disconnect: bool = True
    sse_heartbeat_ms: int = 0
    sse_microbatch_ms: int = 0
    max_body_bytes: int = 1 << 20
    cors_origins: tuple[str, ...] = ()
    allowed_hosts: tuple[str, ...] = ()
    trusted_proxies: tuple[str, ...] = ()
    limits: ConnectionLimits = field(default_factory=ConnectionLimits)

    def is_loopback(self) -> bool:
        """Return True when the bind address only accepts local connections."""
        return is_loopback_host(self.bind_host)

    @property
    def token_required(self) -> bool:
        """Return True when a configured token guards the routes."""
        return bool(self.auth_token)


class UnsafeBind(Exception):
    """Refusal to listen on a non-loopback address without a bearer token."""


def check_bind(settings: ApiSettings) -> None:
    """Return None when the bind is safe; never blocks.

    Raises UnsafeBind (one line naming the fix) when the address is not
    loopback and no token is configured, or proxy auth is trusted there from
    any peer (no ``trusted_proxies``).
    """
    if settings.is_loopback():
        return
    if settings.trust_proxy_auth and not settings.trusted_proxies:
        raise UnsafeBind(
            f"refusing to listen on {settings.bind_host}:{settings.bind_port} with "
            "trust_proxy_auth: any LAN client could skip the token with X-Forwarded-User; "
            "list your proxy in [server] trusted_proxies or turn TRUST_PROXY_AUTH off"
        )
    if settings.token_required:
        return
    raise UnsafeBind(
        f"refusing to listen on {settings.bind_host}:{settings.bind_port} without a token: "
        "set AUTH_TOKEN (or [server] auth_token_file) for LAN access, "
        "or bind to loopback with BIND_ADDR=127.0.0.1:8080"
    )

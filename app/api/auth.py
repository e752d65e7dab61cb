"""Bearer-token auth, caller identity, and the browser guards (Host and Origin checks).

The token is compared as SHA-256 digests with ``hmac.compare_digest`` and never
logged: logs and tasks carry the identity ``localhost``, ``token:<6 hex>`` (the
first hex digits of the token's SHA-256) or, with ``trust_proxy_auth``,
``proxy:<user>``.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import re

from aiohttp import hdrs, web
from aiohttp.typedefs import Handler
from yarl import URL

from app.api.errors import ApiError
from app.api.settings import ApiSettings
from app.api.state import IDENTITY, SETTINGS
from app.orchestrator.loopback import (
    host_key,
    is_loopback_address,
    is_loopback_host,
    peer_address,
)

REALM = 'Bearer realm="llama-orch"'
PROXY_USER_HEADER = "X-Forwarded-User"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
_PROXY_USER = re.compile(r"[^A-Za-z0-9._@+-]")
_TOKEN_HINT = "send the header 'Authorization: Bearer <token>' with the server's AUTH_TOKEN"
_FOREIGN_HOST_WITHOUT_TOKEN = (
    "requests without a token must be addressed to localhost, 127.0.0.1 or [::1] "
    "(or a name in [server] allowed_hosts); send the bearer token to use another name"
)
CORS_ALLOW_HEADERS = "Authorization, Content-Type, X-Correlation-Id"
CORS_EXPOSE_HEADERS = (
    "X-Correlation-Id, Retry-After, X-Backoff-Ms, "
    "X-Budget-Tokens-Remaining, X-Budget-Time-Remaining-Ms, X-Budget-Cost-Remaining, "
    "Location, "
    "X-Orch-Pool-Id, X-Orch-Task-Id"
)


def is_loopback_peer(remote: str | None) -> bool:
    """Return True when the peer address is in 127.0.0.0/8 or is ::1 (also v4-mapped)."""
    return bool(remote) and is_loopback_address(remote or "")


def is_trusted_proxy(remote: str | None, proxies: tuple[str, ...]) -> bool:
    """Return True when the peer address lies in one of ``proxies`` (addresses or networks)."""
    addr = peer_address(remote) if remote and proxies else None
    return addr is not None and any(addr in ipaddress.ip_network(p, strict=False) for p in proxies)


def addressed_locally(request: web.Request, settings: ApiSettings) -> bool:
    """Return True when the Host header names loopback or one of ``allowed_hosts``.

    A request without a Host header (HTTP/1.0 tools) counts as local. Never blocks.
    """
    host = request.headers.get(hdrs.HOST)
    if host is None:
        return True
    name = host_without_port(host)
    return is_loopback_host(name) or host_key(name) in settings.allowed_hosts


def token_identity(token: str) -> str:
    """Return ``token:<first 6 hex of sha256(token)>`` (safe to log)."""
    return "token:" + hashlib.sha256(token.encode()).hexdigest()[:6]


def identify(request: web.Request) -> str:
    """Return the caller's identity for logs and tasks. Never blocks.

    Raises ApiError 401 (MISSING_TOKEN or BAD_TOKEN, with WWW-Authenticate) when
    a token is configured and the caller neither sends it nor may skip it.
    """
    box = request.app[SETTINGS]
    settings = box.current
    loopback = is_loopback_peer(request.remote)
    user = request.headers.get(PROXY_USER_HEADER) if settings.trust_proxy_auth else None
    if user and (loopback or is_trusted_proxy(request.remote, settings.trusted_proxies)):
        return "proxy:" + _PROXY_USER.sub("_", user)[:64]
    presented = _bearer(request)
    if box.token_digest is None:
        return "localhost" if loopback else f"peer:{request.remote}"
    if presented is None:
        if settings.auth_optional and loopback and addressed_locally(request, settings):
            return "localhost"
        if settings.auth_optional and loopback:
            raise _unauthorized("MISSING_TOKEN", _FOREIGN_HOST_WITHOUT_TOKEN, REALM)
        raise _unauthorized("MISSING_TOKEN", "this server needs a bearer token", REALM)
    digest = hashlib.sha256(presented.encode()).digest()
    if not hmac.compare_digest(digest, box.token_digest):
        raise _unauthorized(
            "BAD_TOKEN", "the bearer token is not valid", REALM + ', error="invalid_token"'
        )
    return token_identity(presented)


def _bearer(request: web.Request) -> str | None:
    header = request.headers.get(hdrs.AUTHORIZATION)
    if not header:
        return None
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "bearer" or not value.strip():
        return None
    return value.strip()


def _unauthorized(code: str, message: str, challenge: str) -> ApiError:
    return ApiError(
        401, code, message, hint=_TOKEN_HINT, headers={hdrs.WWW_AUTHENTICATE: challenge}
    )


@web.middleware
async def bearer_auth(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Authenticate the caller and store its identity on the request (raises ApiError 401)."""
    request[IDENTITY] = identify(request)
    return await handler(request)


# ---- browser guards ----------------------------------------------------------------


def host_without_port(host: str) -> str:
    """Return the host part of a Host header value (``[::1]:8080`` -> ``[::1]``)."""
    host = host.strip()
    if host.startswith("["):
        end = host.find("]")
        return host[: end + 1] if end > 0 else host
    if host.count(":") == 1:
        return host.partition(":")[0]
    return host


def is_loopback_origin(origin: str) -> bool:
    """Return True for an http(s) Origin whose host is loopback (``null`` is not)."""
    try:
        url = URL(origin)
    except ValueError:
        return False
    return url.scheme in ("http", "https") and bool(url.host) and is_loopback_host(url.host or "")


def check_browser_rules(request: web.Request, settings: ApiSettings) -> None:
    """Return None when Host and Origin are acceptable; never blocks.

    Raises ApiError 403 FORBIDDEN_HOST for a non-loopback Host while bound to
    loopback (DNS rebinding), and FORBIDDEN_ORIGIN for a state-changing request
    whose Origin is neither listed in cors_origins nor a loopback origin.
    """
    if settings.is_loopback() and not addressed_locally(request, settings):
        raise ApiError(
            403,
            "FORBIDDEN_HOST",
            "this server is bound to loopback and only answers requests addressed to "
            "localhost, 127.0.0.1 or [::1]; bind a LAN address to serve other names",
        )
    origin = request.headers.get(hdrs.ORIGIN)
    if origin is None or request.method in SAFE_METHODS:
        return
    if origin not in settings.cors_origins and not is_loopback_origin(origin):
        raise ApiError(
            403,
            "FORBIDDEN_ORIGIN",
            "cross-origin requests that change state are refused; add the page's origin "
            "to [server] cors_origins to allow it",
        )


def preflight_response(request: web.Request, settings: ApiSettings) -> web.Response | None:
    """Return the answer to a CORS preflight from a listed origin, else None."""
    origin = request.headers.get(hdrs.ORIGIN)
    if (
        request.method != "OPTIONS"
        or origin is None
        or origin not in settings.cors_origins
        or hdrs.ACCESS_CONTROL_REQUEST_METHOD not in request.headers
    ):
        return None
    return web.Response(
        status=204,
        headers={
            hdrs.ACCESS_CONTROL_ALLOW_METHODS: "GET, POST, DELETE",
            hdrs.ACCESS_CONTROL_ALLOW_HEADERS: CORS_ALLOW_HEADERS,
            hdrs.ACCESS_CONTROL_MAX_AGE: "600",
        },
    )


def cors_headers(origin: str | None, settings: ApiSettings) -> dict[str, str]:
    """Return the CORS headers for ``origin``: none unless it is listed in cors_origins."""
    if origin is None or origin not in settings.cors_origins:
        return {}
    return {
        hdrs.ACCESS_CONTROL_ALLOW_ORIGIN: origin,
        hdrs.ACCESS_CONTROL_EXPOSE_HEADERS: CORS_EXPOSE_HEADERS,
        hdrs.VARY: "Origin",
    }


@web.middleware
async def browser_guard(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Answer listed-origin preflights; refuse DNS-rebinding Hosts and foreign Origins."""
    settings = request.app[SETTINGS].current
    check_browser_rules(request, settings)
    preflight = preflight_response(request, settings)
    if preflight is not None:
        return preflight
    return await handler(request)

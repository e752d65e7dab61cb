"""The HTTP server: OrchQueue v1 data and control planes, SSE, auth, metrics, OpenAPI."""

from app.api.app import make_app
from app.api.server import ApiServer
from app.api.settings import ApiSettings, UnsafeBind, check_bind

__all__ = ["ApiServer", "ApiSettings", "UnsafeBind", "check_bind", "make_app"]

"""JSON rendering of wire models into aiohttp responses (no per-token use)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

from aiohttp import web
from pydantic import BaseModel

JSON_TYPE = "application/json"


def dumps(data: Any) -> str:
    """Return ``data`` as compact JSON text (UTF-8 kept as is). Never blocks."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def model_response(
    model: BaseModel | Sequence[BaseModel],
    *,
    status: int = 200,
    headers: Mapping[str, str] | None = None,
    exclude_none: bool = False,
) -> web.Response:
    """Return a JSON response holding one model or a list of models."""
    if isinstance(model, BaseModel):
        text = model.model_dump_json(exclude_none=exclude_none)
    else:
        text = dumps([m.model_dump(mode="json", exclude_none=exclude_none) for m in model])
    return web.Response(text=text, status=status, headers=headers, content_type=JSON_TYPE)


def dict_response(
    data: Mapping[str, Any], *, status: int, headers: Mapping[str, str] | None = None
) -> web.Response:
    """Return a JSON response holding ``data``."""
    return web.Response(text=dumps(data), status=status, headers=headers, content_type=JSON_TYPE)

"""JSON rendering of wire models into aiohttp responses, and the compact JSON bytes the
stream frames are made of (``json_bytes``, the one per-token use)."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import orjson
from aiohttp import web
from pydantic import BaseModel

JSON_TYPE = "application/json"


def dumps(data: Any) -> str:
    """Return ``data`` as compact JSON text (UTF-8 kept as is). Never blocks."""
    return json.dumps(data, separators=(",", ":"), ensure_ascii=False)


def json_bytes(data: Any) -> bytes:
    """Return ``data`` as compact UTF-8 JSON bytes, the same bytes as ``dumps`` gives
    encoded (orjson, falling back to ``json`` for what orjson refuses: non-string
    keys, unknown types, lone surrogates). Raises what ``dumps(...).encode()``
    raises for data JSON cannot hold. Never blocks."""
    try:
        return orjson.dumps(data)
    except TypeError:
        return dumps(data).encode()


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

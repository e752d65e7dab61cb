"""Validation: pydantic errors as messages, rules across keys, environment and token.

Every problem found is collected and reported at once, each naming its key path.
"""

from __future__ import annotations

import difflib
import os
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar, get_args

from pydantic import BaseModel, ValidationError
from pydantic.fields import FieldInfo
from pydantic_core import ErrorDetails

from app.config.files import read_token_file, token_problem
from app.config.schema import (
    LLAMACPP_KEYS,
    MOCK_KEYS,
    MODEL_MISSING,
    OPENAI_KEYS,
    ConfigError,
    Engine,
    EngineSettings,
    EnvOverride,
    PoolSettings,
    Problem,
    ServerSettings,
    Settings,
    exposure_problems,
    parse_bind,
)

_M = TypeVar("_M", bound="BaseModel")


# ---------------------------------------------------------------- schema problems


def _key_path(loc: Sequence[int | str]) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else part)
    return text


def _model_at(loc: Sequence[int | str]) -> type[BaseModel] | None:
    model: type[BaseModel] = Settings
    for part in loc:
        if isinstance(part, int):
            continue
        field = model.model_fields.get(part)
        inner = _inner_model(field.annotation) if field else None
        if inner is None:
            return None
        model = inner
    return model


def _inner_model(annotation: Any) -> type[BaseModel] | None:
    for candidate in (annotation, *get_args(annotation)):
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _field_at(loc: Sequence[int | str]) -> FieldInfo | None:
    names = [i for i, part in enumerate(loc) if isinstance(part, str)]
    if not names:
        return None
    model = _model_at(loc[: names[-1]])
    return model.model_fields.get(str(loc[names[-1]])) if model else None


def _where(loc: Sequence[int | str], data: Mapping[str, Any]) -> str:
    if not loc:
        return "at the top level"
    if len(loc) == 2 and loc[0] == "pools" and isinstance(loc[1], int):
        entry = _raw_pools(data)[loc[1]]
        ident = entry.get("id") if isinstance(entry, Mapping) else None
        return f"in pools[{loc[1]}]" + (f" (id {ident!r})" if isinstance(ident, str) else "")
    return f"in [{_key_path(loc)}]"


def _unknown_key_message(loc: Sequence[int | str], data: Mapping[str, Any]) -> str:
    name, parent = str(loc[-1]), loc[:-1]
    model = _model_at(parent)
    known = list(model.model_fields) if model else []
    text = f"unknown key {name!r} {_where(parent, data)}; known keys: {', '.join(known)}"
    close = difflib.get_close_matches(name, known, n=1)
    return text + (f" (did you mean {close[0]!r}?)" if close else "; remove it")


def _show(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _problem_from_error(err: ErrorDetails, data: Mapping[str, Any]) -> Problem:
    loc, kind = err["loc"], err["type"]
    key = _key_path(loc)
    if kind == "extra_forbidden":
        return Problem(key, _unknown_key_message(loc, data))
    field = _field_at(loc)
    expected = f"; expected {field.description}" if field and field.description else ""
    if kind == "missing":
        return Problem(key, f"missing key {loc[-1]!r} {_where(loc[:-1], data)}{expected}")
    if kind == "value_error":
        return Problem(key, err["msg"].removeprefix("Value error, "))
    return Problem(key, f"{err['msg']} (got {_show(err['input'])}){expected}")


def validate_data(data: Mapping[str, Any]) -> tuple[Settings | None, list[Problem]]:
    """Return ``(settings, [])`` when ``data`` fits the schema, else ``(None, problems)``.

    Checks the schema only (no files, no environment). Does not block.
    """
    try:
        return Settings.model_validate(dict(data)), []
    except ValidationError as exc:
        return None, [_problem_from_error(err, data) for err in exc.errors()]


def _try_model(model: type[_M], raw: object) -> _M | None:
    try:
        return model.model_validate(raw)
    except ValidationError:
        return None


def _raw_pools(data: Mapping[str, Any]) -> list[Any]:
    pools = data.get("pools", [])
    return pools if isinstance(pools, list) else []


# ---------------------------------------------------------------- rules across keys


def _pool_rules(i: int, pool: PoolSettings, allow_cpu: bool, base: Settings) -> list[Problem]:
    key, found = f"pools[{i}]", []
    if pool.is_cpu and not (allow_cpu or pool.demo):
        found.append(
            Problem(
                f"{key}.device_mask",
                f'pool {pool.id!r} runs on the CPU (device_mask = "cpu"), which is off by default; '
                "set allow_cpu_inference = true at the top of the file, or use GPU indices "
                'such as device_mask = "0"',
            )
        )
    if pool.engine == "openai" and not pool.base_url:
        found.append(
            Problem(
                f"{key}.base_url",
                f'openai pool {pool.id!r} needs base_url, e.g. base_url = "http://127.0.0.1:8000/v1"',
            )
        )
    if pool.engine == "openai" and not pool.model:
        found.append(
            Problem(f"{key}.model", f"openai pool {pool.id!r} needs the engine's model id")
        )
    gpus = len(pool.gpu_indices())
    if pool.tensor_split and len(pool.tensor_split) != gpus:
        found.append(
            Problem(
                f"{key}.tensor_split",
                f"tensor_split has {len(pool.tensor_split)} shares but device_mask "
                f"{pool.device_mask!r} names {gpus} GPU(s); give one share per GPU",
            )
        )
    return found + _model_problems(key, pool, base)


def _model_problems(key: str, pool: PoolSettings, base: Settings) -> list[Problem]:
    """Return why a llamacpp pool's model cannot load: a bad reference, a missing
    file, or a file that fails the GGUF checks. Blocks (reads the GGUF header)."""
    from app.engine_host.gguf_info import gguf_problem
    from app.orchestrator.model_refs import parse_ref

    if pool.engine != "llamacpp" or not pool.model:
        return []
    try:
        parse_ref(pool.model)
    except ValueError as exc:
        return [Problem(f"{key}.model", str(exc))]
    path = base.model_path(pool)
    if path is None:
        return []
    if not path.exists():
        return [
            Problem(
                f"{key}.model",
                f"model file {path} does not exist; pool {pool.id!r} waits for a model "
                'until you put the GGUF file there, fix the path, or set model = ""',
                MODEL_MISSING,
            )
        ]
    problem = gguf_problem(path, shown_as=pool.model_file())
    return [Problem(f"{key}.model", f"{problem}; choose another model")] if problem else []


def _engine_key_problems(i: int, raw: Mapping[str, Any]) -> list[Problem]:
    engine = raw.get("engine", "llamacpp")
    if engine not in get_args(Engine):
        return []
    only = {name: "mock" for name in MOCK_KEYS} | {name: "openai" for name in OPENAI_KEYS}
    only |= {name: "llamacpp" for name in LLAMACPP_KEYS}
    return [
        Problem(
            f"pools[{i}].{name}",
            f"{name!r} applies to {only[name]} pools only; remove it from this "
            f'engine = "{engine}" pool',
        )
        for name in raw
        if name in only and only[name] != engine
    ]


def _pools_problems(data: Mapping[str, Any], base: Settings) -> list[Problem]:
    allow_cpu = data.get("allow_cpu_inference") is True
    found: list[Problem] = []
    first_index: dict[str, int] = {}
    for i, raw in enumerate(_raw_pools(data)):
        if not isinstance(raw, Mapping):
            continue
        found += _engine_key_problems(i, raw)
        ident = raw.get("id")
        if isinstance(ident, str) and ident in first_index:
            found.append(
                Problem(
                    f"pools[{i}].id",
                    f"duplicate pool id {ident!r} (also pools[{first_index[ident]}]); "
                    "give every pool its own id",
                )
            )
        elif isinstance(ident, str):
            first_index[ident] = i
        pool = _try_model(PoolSettings, raw)
        found += _pool_rules(i, pool, allow_cpu, base) if pool else []
    return found


def _engines_problems(
    data: Mapping[str, Any], env: Mapping[str, str], base: Settings
) -> list[Problem]:
    engines = _try_model(EngineSettings, data.get("engines", {}))
    name = engines.llama_server if engines else ""
    if not name:
        return []
    if os.sep in name or name.startswith("~"):
        path = base.resolve_path(name)
        found = path.is_file() and os.access(path, os.X_OK)
    else:
        path, found = Path(name), shutil.which(name, path=env.get("PATH")) is not None
    if found:
        return []
    return [
        Problem(
            "engines.llama_server",
            f"llama-server {path} is not an executable file (or not on PATH); install "
            'llama.cpp, fix the path, or set llama_server = "" to use the bundled engine',
        )
    ]


# ---------------------------------------------------------------- environment and token

_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
_BOOL_ENV = (("AUTH_OPTIONAL", "auth_optional"), ("TRUST_PROXY_AUTH", "trust_proxy_auth"))


def _env_overrides(
    server: ServerSettings, env: Mapping[str, str]
) -> tuple[dict[str, EnvOverride], list[Problem]]:
    overrides: dict[str, EnvOverride] = {}
    found: list[Problem] = []
    var = next((v for v in ("BIND_ADDR", "ORCHD_ADDR") if env.get(v, "").strip()), None)
    if var is not None:
        bind = env[var].strip()
        try:
            parse_bind(bind)
            overrides["bind"] = EnvOverride(var, server.bind, bind)
        except ValueError as exc:
            found.append(Problem(var, f"{exc} (environment variable {var})"))
    for var, name in _BOOL_ENV:
        text = env.get(var, "").strip()
        if text and text.lower() not in _BOOL_WORDS:
            found.append(
                Problem(
                    var,
                    f"environment variable {var}={text!r} is not a boolean; use "
                    "true/false, 1/0 or yes/no, or unset it",
                )
            )
        elif text:
            overrides[name] = EnvOverride(var, getattr(server, name), _BOOL_WORDS[text.lower()])
    return overrides, found


def _resolve_token(
    server: ServerSettings, env: Mapping[str, str], base: Settings
) -> tuple[str | None, str | None, list[Problem]]:
    token = env.get("AUTH_TOKEN", "").strip()
    if token:
        reason = token_problem(token)
        found = [Problem("AUTH_TOKEN", f"{reason}; set AUTH_TOKEN to one line")] if reason else []
        return (None, None, found) if reason else (token, "AUTH_TOKEN", [])
    if not server.auth_token_file:
        return None, None, []
    path = base.resolve_path(server.auth_token_file)
    try:
        return read_token_file(path), str(path), []
    except ConfigError as exc:
        return None, None, [Problem("server.auth_token_file", exc.problems[0].message)]


@dataclass(frozen=True)
class _Runtime:
    overrides: dict[str, EnvOverride]
    token: str | None = None
    token_source: str | None = None


def _runtime(
    data: Mapping[str, Any], env: Mapping[str, str], base: Settings
) -> tuple[_Runtime, list[Problem]]:
    server = _try_model(ServerSettings, data.get("server", {}))
    overrides, env_found = _env_overrides(server or ServerSettings(), env)
    if server is None:
        return _Runtime(overrides), env_found
    token, source, found = _resolve_token(server, env, base)
    effective = server.model_copy(update={k: o.value for k, o in overrides.items()})
    key = overrides["bind"].variable if "bind" in overrides else "server.bind"
    found = env_found + found + exposure_problems(effective, key, token)
    return _Runtime(overrides, token, source), found


# ---------------------------------------------------------------- loading


def parse_settings(
    data: Mapping[str, Any], env: Mapping[str, str] = os.environ, source: Path | None = None
) -> Settings:
    """Return validated settings from a TOML-shaped mapping, environment overrides applied.

    Raises ConfigError listing every problem found; a missing model file is only
    a warning (``Settings.warnings``): that pool waits for a model, the others
    serve. Blocks briefly: it checks model files, the token file and ``llama_server``.
    """
    settings, found = validate_data(data)
    base = Settings()
    base._source_path = source
    runtime, env_found = _runtime(data, env, base)
    found += env_found + _pools_problems(data, base) + _engines_problems(data, env, base)
    warnings = [p for p in found if p.code == MODEL_MISSING]
    found = [p for p in found if p.code != MODEL_MISSING]
    if settings is None or found:
        raise ConfigError(list(dict.fromkeys(found)))
    update = {k: o.value for k, o in runtime.overrides.items()}
    result = settings.model_copy(update={"server": settings.server.model_copy(update=update)})
    result._overrides = dict(runtime.overrides)
    result._auth_token, result._token_source = runtime.token, runtime.token_source
    result._source_path = source
    result._warnings = tuple(warnings)
    return result

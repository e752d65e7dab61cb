"""Configuration models: problems, bind addresses and the pydantic schema.

``Settings`` is the whole configuration; its private attributes (token, source
path, environment overrides) are filled in by :func:`app.config.parse_settings`.
"""

from __future__ import annotations

import ipaddress
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator

from app.orchestrator.device_mask import device_indices
from app.orchestrator.loopback import is_loopback_host

INVALID_CONFIG = "INVALID_CONFIG"
NON_LOOPBACK_WITHOUT_TOKEN = "NON_LOOPBACK_WITHOUT_TOKEN"
PROXY_AUTH_ON_LAN = "PROXY_AUTH_ON_LAN"
MODEL_MISSING = "MODEL_MISSING"
"""A pool's model file does not exist: a warning; that pool waits for a model."""
Engine = Literal["llamacpp", "openai", "mock"]
KvCacheType = Literal["f32", "f16", "bf16", "q8_0", "q4_0", "q4_1", "iq4_nl", "q5_0", "q5_1"]
_KV_TYPES = '"f16" (default), "q8_0", "q4_0", ... (llama-server\'s -ctk/-ctv values)'

# llama-server flags the orchestrator sets itself: extra_args may not carry them.
CONTROL_FLAGS: dict[str, str] = {
    "--host": "the engine listens on loopback only",
    "--port": "the orchestrator picks a free loopback port",
    "--api-key": "the orchestrator gives each engine a key of its own",
    "--api-key-file": "the orchestrator gives each engine a key of its own",
    "-np": "use the pool's slots key",
    "--parallel": "use the pool's slots key",
    "-m": "use the pool's model key",
    "--model": "use the pool's model key",
    "-c": "use the pool's ctx key (per slot)",
    "--ctx-size": "use the pool's ctx key (per slot)",
    "--api-prefix": "the orchestrator calls the engine's own paths",
    "--no-slots": "the pool reads busy slots from /slots",
    "--alias": "the pool serves the model under its file name",
}


def control_flag_problems(args: Sequence[str]) -> list[str]:
    """Return one sentence per argument of ``args`` that is a flag the orchestrator controls.

    ``--port=9000`` counts as ``--port``. Pure.
    """
    found = []
    for arg in args:
        flag = arg.partition("=")[0]
        if flag in CONTROL_FLAGS:
            found.append(f"extra_args may not contain {flag}: {CONTROL_FLAGS[flag]}; remove it")
    return found


@dataclass(frozen=True)
class Problem:
    """One thing wrong with a configuration; ``str()`` gives ``"key: message"``."""

    key: str
    message: str
    code: str = INVALID_CONFIG

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


class ConfigError(Exception):
    """The configuration is unusable; ``problems`` lists every reason, one per line."""

    def __init__(self, problems: Sequence[Problem]) -> None:
        self.problems = list(problems)
        super().__init__("\n".join(str(p) for p in self.problems))


@dataclass(frozen=True)
class EnvOverride:
    """A server value taken from the environment (or the command line) instead of the file."""

    variable: str
    file_value: object
    value: object


# ---------------------------------------------------------------- addresses

_BIND_HINT = 'use HOST:PORT, e.g. "127.0.0.1:8080", "0.0.0.0:8080" or "[::1]:8080"'
_HOSTNAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?(\.[A-Za-z0-9-]{1,63})*$")


def parse_bind(value: str) -> tuple[str, int]:
    """Return ``(host, port)`` from ``HOST:PORT`` (IPv6 as ``[::1]:8080``, host unbracketed).

    Raises ValueError naming the fix when malformed. Does not block.
    """
    host, sep, port_text = value.strip().rpartition(":")
    if not sep or not host:
        raise ValueError(f"{value!r} is not HOST:PORT; {_BIND_HINT}")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
        if not _is_ip(host, 6):
            raise ValueError(f"{host!r} in {value!r} is not an IPv6 address; {_BIND_HINT}")
    elif ":" in host:
        raise ValueError(f"IPv6 addresses need brackets: use [{host}]:{port_text}")
    elif re.fullmatch(r"[\d.]+", host) and not _is_ip(host, 4):
        raise ValueError(f"{host!r} in {value!r} is not an IPv4 address; {_BIND_HINT}")
    elif not _HOSTNAME.match(host):
        raise ValueError(f"{host!r} in {value!r} is not a host name or address; {_BIND_HINT}")
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise ValueError(f"port {port_text!r} in {value!r} must be a number from 1 to 65535")
    return host, int(port_text)


def _is_ip(text: str, version: int) -> bool:
    try:
        return ipaddress.ip_address(text).version == version
    except ValueError:
        return False


def exposure_problems(server: ServerSettings, key: str, token: str | None) -> list[Problem]:
    """Return the problems of exposing ``server`` on the LAN; ``[]`` on a loopback bind.

    NON_LOOPBACK_WITHOUT_TOKEN (under ``key``) without a token; PROXY_AUTH_ON_LAN
    when ``trust_proxy_auth`` is on without a ``trusted_proxies`` list. Does not block.
    """
    if is_loopback_host(parse_bind(server.bind)[0]):
        return []
    found = []
    if not token:
        message = (
            f"refusing to serve {server.bind} without a token: set AUTH_TOKEN or [server] "
            "auth_token_file, or bind to 127.0.0.1 (BIND_ADDR)"
        )
        found.append(Problem(key, message, NON_LOOPBACK_WITHOUT_TOKEN))
    if server.trust_proxy_auth and not server.trusted_proxies:
        message = (
            f"trust_proxy_auth on the LAN address {server.bind} would let any client skip "
            "the token with an X-Forwarded-User header; list your proxy's address in "
            '[server] trusted_proxies (e.g. ["192.168.1.2"]), bind to 127.0.0.1, or turn '
            "trust_proxy_auth (TRUST_PROXY_AUTH) off"
        )
        found.append(Problem("server.trust_proxy_auth", message, PROXY_AUTH_ON_LAN))
    return found


def xdg_dir(env: Mapping[str, str], variable: str, fallback: str) -> Path:
    """Return the absolute folder in ``env[variable]``, else ``$HOME/fallback``. Does not block."""
    value = env.get(variable, "")
    if value and Path(value).is_absolute():
        return Path(value)
    home = env.get("HOME", "")
    return (Path(home) if home else Path.home()) / fallback


# ---------------------------------------------------------------- schema

_MODEL_CONFIG = ConfigDict(extra="forbid", strict=True, frozen=True)
_API_KEY_ENV = re.compile(r"^[A-Z_][A-Z0-9_]*$")


class ServerSettings(BaseModel):
    """The ``[server]`` table: the HTTP listener, auth and SSE behaviour."""

    model_config = _MODEL_CONFIG
    bind: str = Field("127.0.0.1:8080", description='HOST:PORT such as "127.0.0.1:8080"')
    auth_token_file: str = Field("", description="path of a file holding the bearer token")
    auth_optional: bool = Field(False, description="true lets loopback callers skip the token")
    trust_proxy_auth: bool = Field(False, description="true or false")
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description='addresses or networks of reverse proxies, e.g. ["192.168.1.2"]',
    )
    allowed_hosts: list[str] = Field(
        default_factory=list,
        description='host names callers without a token may address, e.g. ["orch.lan"]',
    )
    cancel_on_disconnect: bool = Field(True, description="true or false")
    sse_heartbeat_ms: int = Field(0, ge=0, le=3_600_000, description="0 (off) .. 3600000")
    sse_channel_cap: int = Field(32, ge=4, le=65_536, description="4 .. 65536 events")
    sse_microbatch_ms: int = Field(0, ge=0, le=10_000, description="0 (off) .. 10000")
    unopened_stream_timeout_s: int = Field(30, ge=1, le=86_400, description="1 .. 86400 s")
    request_head_timeout_s: float = Field(
        10.0, ge=0.1, le=600, allow_inf_nan=False, description="0.1 .. 600 s"
    )
    keepalive_timeout_s: float = Field(
        60.0, ge=1, le=3600, allow_inf_nan=False, description="1 .. 3600 s"
    )
    max_connections_per_peer: int = Field(
        512, ge=0, le=1_000_000, description="0 (no cap) .. 1000000"
    )
    max_connections: int = Field(
        0, ge=0, le=10_000_000, description="0 (from the open-file limit) or a count"
    )
    cors_origins: list[str] = Field(
        default_factory=list, description='origins such as "http://localhost:3000", or "*"'
    )

    @field_validator("bind")
    @classmethod
    def _check_bind(cls, value: str) -> str:
        parse_bind(value)
        return value

    @field_validator("trusted_proxies")
    @classmethod
    def _check_proxies(cls, proxies: list[str]) -> list[str]:
        for text in proxies:
            try:
                ipaddress.ip_network(text, strict=False)
            except ValueError:
                raise ValueError(
                    f"{text!r} is not an IP address or network; use e.g. "
                    '"192.168.1.2" or "10.0.0.0/24"'
                ) from None
        return proxies

    @field_validator("allowed_hosts")
    @classmethod
    def _check_hosts(cls, hosts: list[str]) -> list[str]:
        for host in hosts:
            if not _HOSTNAME.match(host):
                raise ValueError(f'{host!r} is not a host name; use e.g. "orch.lan"')
        return hosts

    @field_validator("cors_origins")
    @classmethod
    def _check_origins(cls, origins: list[str]) -> list[str]:
        for origin in origins:
            parts = urlsplit(origin)
            if origin != "*" and not (
                parts.scheme in ("http", "https") and parts.netloc and parts.path == ""
            ):
                raise ValueError(
                    f'{origin!r} is not an origin; use "*" or scheme://host[:port] '
                    'without a path, e.g. "http://localhost:3000"'
                )
        return origins


class AdmissionSettings(BaseModel):
    """The ``[admission]`` table: queue bounds per pool and priority."""

    model_config = _MODEL_CONFIG
    queue_capacity: int = Field(16, ge=1, le=100_000, description="1 .. 100000 tasks")
    full_policy: Literal["reject", "drop-lru"] = Field(
        "reject", description='"reject" | "drop-lru"'
    )


class SessionSettings(BaseModel):
    """The ``[sessions]`` table: session lifetime and budgets (0 = unlimited)."""

    model_config = _MODEL_CONFIG
    ttl_s: int = Field(600, ge=1, description="seconds, at least 1")
    max_turns: int = Field(8, ge=0, description="0 (unlimited) or more")
    token_budget: int = Field(0, ge=0, description="0 (unlimited) or more")
    time_budget_ms: int = Field(0, ge=0, description="0 (unlimited) or more")
    cost_budget: float = Field(
        0.0, ge=0, allow_inf_nan=False, description="0.0 (unlimited) or more"
    )
    cost_per_1k_tokens: float = Field(0.0, ge=0, allow_inf_nan=False, description="0.0 or more")


class EngineSettings(BaseModel):
    """The ``[engines]`` table: how engine processes are found and supervised."""

    model_config = _MODEL_CONFIG
    llama_server: str = Field("", description='path of llama-server, or "" to search PATH')
    decode_timeout_s: int = Field(60, ge=1, le=86_400, description="1 .. 86400 s")
    startup_timeout_s: int = Field(120, ge=1, le=86_400, description="1 .. 86400 s")
    health_interval_s: float = Field(
        10.0, ge=0.1, le=3600, allow_inf_nan=False, description="0.1 .. 3600 s"
    )
    health_timeout_s: float = Field(
        5.0, ge=0.1, le=600, allow_inf_nan=False, description="0.1 .. 600 s"
    )
    log_dir: str = Field("", description='folder for engine logs, "" = the XDG state folder')


class ModelsSettings(BaseModel):
    """The ``[models]`` table: where downloads go and whether pools fetch them."""

    model_config = _MODEL_CONFIG
    auto_fetch: bool = Field(
        False, description="true downloads a pool's missing hf:/https: model at start"
    )
    dir: str = Field("", description='folder for downloads, "" = the XDG data folder')


class PoolSettings(BaseModel):
    """One ``[[pools]]`` entry: one model served by one engine on one device mask."""

    model_config = _MODEL_CONFIG
    id: str = Field(pattern=r"^[A-Za-z0-9_.-]{1,64}$", description="1-64 of A-Z a-z 0-9 _ . -")
    engine: Engine = Field("llamacpp", description='"llamacpp" | "openai" | "mock"')
    model: str = Field("", description='"file:/path/model.gguf", a model id, or ""')
    device_mask: str = Field("0", description='GPU indices such as "0" or "0,1", or "cpu"')
    slots: int = Field(1, ge=1, le=256, description="1 .. 256 parallel requests")
    ctx: int = Field(4096, ge=128, le=1_048_576, description="128 .. 1048576 tokens")
    demo: bool = Field(False, description="true or false")
    base_url: str = Field("", description='"http(s)://host:port/v1" (openai pools)')
    api_key_env: str = Field("", description="the NAME of an environment variable")
    gpu_layers: int = Field(-1, ge=-1, le=100_000, description="-1 (all layers) or a count")
    flash_attn: Literal["auto", "on", "off"] = Field("auto", description='"auto" | "on" | "off"')
    cache_type_k: KvCacheType = Field("f16", description=_KV_TYPES)
    cache_type_v: KvCacheType = Field("f16", description=_KV_TYPES)
    tensor_split: list[float] = Field(
        default_factory=list, description="one share per GPU of device_mask, e.g. [3, 1]"
    )
    extra_args: list[str] = Field(
        default_factory=list, description='more llama-server flags, e.g. ["--mlock"]'
    )
    mock_tokens_per_s: float = Field(50.0, gt=0, allow_inf_nan=False, description="> 0")
    mock_first_token_ms: int = Field(0, ge=0, description="0 or more ms")
    mock_fail_after_tokens: int = Field(-1, ge=-1, description="-1 (never) or a count")
    mock_crash_after_tokens: int = Field(-1, ge=-1, description="-1 (never) or a count")
    mock_hang_after_tokens: int = Field(-1, ge=-1, description="-1 (never) or a count")
    mock_start_delay_ms: int = Field(0, ge=0, description="0 or more ms")

    @field_validator("device_mask")
    @classmethod
    def _check_mask(cls, mask: str) -> str:
        if mask != "cpu" and not re.fullmatch(r"\d+(,\d+)*", mask):
            raise ValueError(
                f'device_mask {mask!r} must be "cpu" or GPU indices like "0" or "0,1" '
                "(the CUDA_VISIBLE_DEVICES syntax)"
            )
        if mask != "cpu" and len(set(mask.split(","))) != len(mask.split(",")):
            raise ValueError(f"device_mask {mask!r} lists a GPU twice; list each index once")
        return mask

    @field_validator("tensor_split")
    @classmethod
    def _check_split(cls, shares: list[float]) -> list[float]:
        if any(not 0 <= share < float("inf") for share in shares) or (shares and not any(shares)):
            raise ValueError(
                "tensor_split needs non-negative shares, not all zero, one per GPU, e.g. [3, 1]"
            )
        return shares

    @field_validator("extra_args")
    @classmethod
    def _check_extra_args(cls, args: list[str]) -> list[str]:
        problems = control_flag_problems(args)
        if problems:
            raise ValueError("; ".join(problems))
        return args

    @field_validator("base_url")
    @classmethod
    def _check_base_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if url and not (parts.scheme in ("http", "https") and parts.netloc):
            raise ValueError(
                f"base_url {url!r} must be an http:// or https:// URL, "
                'e.g. "http://127.0.0.1:8000/v1"'
            )
        return url

    @field_validator("api_key_env")
    @classmethod
    def _check_key_env(cls, name: str) -> str:
        if name and not _API_KEY_ENV.match(name):
            raise ValueError(
                "api_key_env must be the NAME of an environment variable (A-Z, 0-9, _), "
                "not the key itself; export the key, e.g. OPENAI_API_KEY=..., and set "
                'api_key_env = "OPENAI_API_KEY"'
            )
        return name

    @property
    def is_cpu(self) -> bool:
        """Return True when the pool runs on the CPU (``device_mask = "cpu"``)."""
        return self.device_mask == "cpu"

    def gpu_indices(self) -> tuple[int, ...]:
        """Return the GPU indices of the device mask; empty for a CPU pool."""
        return device_indices(self.device_mask)

    def model_file(self) -> str | None:
        """Return the model path as written (without ``file:``) for llamacpp; else None
        (also for a download reference such as ``hf:`` or ``https:``)."""
        if self.engine != "llamacpp" or not self.model or self.is_remote_model:
            return None
        return self.model.removeprefix("file:")

    @property
    def is_remote_model(self) -> bool:
        """Return True when ``model`` is a download reference (``hf:``, ``https:``)."""
        return self.model.startswith(("hf:", "https:", "http:"))


MOCK_KEYS = tuple(name for name in PoolSettings.model_fields if name.startswith("mock_"))
OPENAI_KEYS = ("base_url", "api_key_env")
LLAMACPP_KEYS = (
    "gpu_layers",
    "flash_attn",
    "cache_type_k",
    "cache_type_v",
    "tensor_split",
    "extra_args",
)


class Settings(BaseModel):
    """The whole configuration, with environment overrides applied to ``server``.

    ``auth_token`` (from ``AUTH_TOKEN`` or the token file) and ``source_path``
    are private: never dumped, printed or saved.
    """

    model_config = _MODEL_CONFIG
    allow_cpu_inference: bool = Field(False, description="true or false")
    server: ServerSettings = Field(default_factory=ServerSettings, description="a [server] table")
    admission: AdmissionSettings = Field(
        default_factory=AdmissionSettings, description="an [admission] table"
    )
    sessions: SessionSettings = Field(
        default_factory=SessionSettings, description="a [sessions] table"
    )
    engines: EngineSettings = Field(
        default_factory=EngineSettings, description="an [engines] table"
    )
    models: ModelsSettings = Field(default_factory=ModelsSettings, description="a [models] table")
    pools: list[PoolSettings] = Field(
        default_factory=list, description="[[pools]] tables, one per pool"
    )
    _auth_token: str | None = PrivateAttr(default=None)
    _token_source: str | None = PrivateAttr(default=None)
    _source_path: Path | None = PrivateAttr(default=None)
    _overrides: dict[str, EnvOverride] = PrivateAttr(default_factory=dict)
    _warnings: tuple[Problem, ...] = PrivateAttr(default=())

    @property
    def warnings(self) -> tuple[Problem, ...]:
        """Return what is wrong but does not stop serving (e.g. a pool's missing model file)."""
        return self._warnings

    @property
    def auth_token(self) -> str | None:
        """Return the bearer token resolved at load time, or None when there is none."""
        return self._auth_token

    @property
    def token_source(self) -> str | None:
        """Return where the token came from: ``"AUTH_TOKEN"`` or the token file's path."""
        return self._token_source

    @property
    def source_path(self) -> Path | None:
        """Return the config file these settings were loaded from, if any."""
        return self._source_path

    @property
    def env_overrides(self) -> dict[str, str]:
        """Return ``{"server.bind": "BIND_ADDR", ...}`` for values not taken from the file."""
        return {f"server.{name}": o.variable for name, o in self._overrides.items()}

    def bind_host_port(self) -> tuple[str, int]:
        """Return the effective ``(host, port)`` to listen on (IPv6 host without brackets)."""
        return parse_bind(self.server.bind)

    def is_loopback_bind(self) -> bool:
        """Return True when the effective bind address is loopback-only."""
        return is_loopback_host(self.bind_host_port()[0])

    def resolve_path(self, text: str) -> Path:
        """Return ``text`` as a path: ``~`` expanded, relative to the config file's folder."""
        path = Path(text).expanduser()
        if path.is_absolute() or self._source_path is None:
            return path
        return self._source_path.parent / path

    def model_path(self, pool: PoolSettings) -> Path | None:
        """Return the resolved model file of a llamacpp pool, or None when it has none."""
        text = pool.model_file()
        return None if text is None else self.resolve_path(text)

    def models_dir_path(self, env: Mapping[str, str] = os.environ) -> Path:
        """Return the download folder: ``[models] dir`` or ``$XDG_DATA_HOME/llama-orch/models``."""
        if self.models.dir:
            return self.resolve_path(self.models.dir)
        return xdg_dir(env, "XDG_DATA_HOME", ".local/share") / "llama-orch" / "models"

    def log_dir_path(self, env: Mapping[str, str] = os.environ) -> Path:
        """Return the engine log folder: ``[engines] log_dir`` or the XDG state default."""
        if self.engines.log_dir:
            return self.resolve_path(self.engines.log_dir)
        return xdg_dir(env, "XDG_STATE_HOME", ".local/state") / "llama-orch" / "logs"

    def file_values(self) -> Settings:
        """Return these settings with every override undone where still in effect."""
        update = {
            name: o.file_value
            for name, o in self._overrides.items()
            if getattr(self.server, name) == o.value
        }
        return self.model_copy(update={"server": self.server.model_copy(update=update)})

    def with_bind(self, bind: str, source: str = "--bind") -> Settings:
        """Return a copy listening on ``bind`` (not saved to the file).

        Raises ConfigError when ``bind`` is malformed, or (NON_LOOPBACK_WITHOUT_TOKEN)
        non-loopback while there is no token. Does not block.
        """
        try:
            parse_bind(bind)
        except ValueError as exc:
            raise ConfigError([Problem(source, str(exc))]) from exc
        server = self.server.model_copy(update={"bind": bind})
        problems = exposure_problems(server, source, self._auth_token)
        if problems:
            raise ConfigError(problems)
        earlier = self._overrides.get("bind")
        file_value = earlier.file_value if earlier else self.server.bind
        copy = self.model_copy(update={"server": server})
        copy._overrides = {**self._overrides, "bind": EnvOverride(source, file_value, bind)}
        return copy

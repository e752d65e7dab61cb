"""Typed settings: TOML load and save, environment overrides, validation.

Every problem found in a config is reported at once, each naming its key path
(``pools[1].device_mask``) and the fix. Relative paths in the file (model
files, the token file, ``llama_server``, ``log_dir``) are relative to the
folder of the config file. Environment overrides (``BIND_ADDR``/``ORCHD_ADDR``,
``AUTH_TOKEN``, ``AUTH_OPTIONAL``, ``TRUST_PROXY_AUTH``) apply after the file
and are never written back by :func:`save_settings`.

The package is split by responsibility: :mod:`app.config.schema` (problems,
bind addresses, the schema), :mod:`app.config.validate` (messages, rules
across keys, environment and token), :mod:`app.config.load` (files on disk and
defaults), :mod:`app.config.toml_io` (TOML writing and saving) and
:mod:`app.config.files` (atomic private writes and token files).
"""

from __future__ import annotations

from app.config.files import (
    atomic_write,
    generate_token,
    read_token_file,
    remove_stale_temporaries,
    token_fingerprint,
    write_token_file,
)
from app.config.load import (
    check_config,
    check_config_main,
    default_config_path,
    default_settings,
    load_settings,
)
from app.config.schema import (
    INVALID_CONFIG,
    LLAMACPP_KEYS,
    MOCK_KEYS,
    NON_LOOPBACK_WITHOUT_TOKEN,
    OPENAI_KEYS,
    PROXY_AUTH_ON_LAN,
    AdmissionSettings,
    ConfigError,
    Engine,
    EngineSettings,
    EnvOverride,
    ModelsSettings,
    PoolSettings,
    Problem,
    ServerSettings,
    SessionSettings,
    Settings,
    parse_bind,
)
from app.config.toml_io import save_settings, to_toml
from app.config.validate import parse_settings

__all__ = [
    "INVALID_CONFIG",
    "LLAMACPP_KEYS",
    "MOCK_KEYS",
    "NON_LOOPBACK_WITHOUT_TOKEN",
    "OPENAI_KEYS",
    "PROXY_AUTH_ON_LAN",
    "AdmissionSettings",
    "ConfigError",
    "Engine",
    "EngineSettings",
    "EnvOverride",
    "ModelsSettings",
    "PoolSettings",
    "Problem",
    "ServerSettings",
    "SessionSettings",
    "Settings",
    "atomic_write",
    "check_config",
    "check_config_main",
    "default_config_path",
    "default_settings",
    "generate_token",
    "load_settings",
    "parse_bind",
    "parse_settings",
    "read_token_file",
    "remove_stale_temporaries",
    "save_settings",
    "to_toml",
    "token_fingerprint",
    "write_token_file",
]

"""Configuration: schema, validation messages, environment overrides, save and tokens."""

from __future__ import annotations

import os
import stat
import tomllib
from pathlib import Path

import pytest

from app.config import (
    NON_LOOPBACK_WITHOUT_TOKEN,
    ConfigError,
    PoolSettings,
    Problem,
    Settings,
    atomic_write,
    check_config,
    check_config_main,
    default_config_path,
    default_settings,
    generate_token,
    load_settings,
    parse_settings,
    read_token_file,
    save_settings,
    to_toml,
    token_fingerprint,
    write_token_file,
)
from tests.support.gguf_files import BAD_KINDS, write_bad

DEFAULT_CONFIG = Path(__file__).resolve().parents[1] / "resources" / "default-config.toml"
NO_ENV: dict[str, str] = {}


def write(tmp_path: Path, text: str, name: str = "config.toml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def problems_of(text: str, env: dict[str, str] | None = None) -> list[Problem]:
    with pytest.raises(ConfigError) as info:
        parse_settings(tomllib.loads(text), env if env is not None else NO_ENV)
    return info.value.problems


def only_problem(text: str, env: dict[str, str] | None = None) -> Problem:
    problems = problems_of(text, env)
    assert len(problems) == 1, problems
    return problems[0]


# ------------------------------------------------------------------ invalid examples

INVALID = [
    ("bogus = 1", "bogus", "unknown key 'bogus' at the top level; known keys: allow_cpu"),
    ("[admision]", "admision", "did you mean 'admission'?"),
    (
        "[admission]\nqueue_capcity = 3",
        "admission.queue_capcity",
        "unknown key 'queue_capcity' in [admission]; known keys: queue_capacity, full_policy"
        " (did you mean 'queue_capacity'?)",
    ),
    ("[server]\nbnd = 'x'", "server.bnd", "did you mean 'bind'?"),
    ("[sessions]\nttl = 1", "sessions.ttl", "did you mean 'ttl_s'?"),
    ("[engines]\nlogdir = ''", "engines.logdir", "did you mean 'log_dir'?"),
    ("[[pools]]\nid = 'a'\nslotz = 2", "pools[0].slotz", "in pools[0] (id 'a')"),
    ("allow_cpu_inference = 1", "allow_cpu_inference", "valid boolean"),
    ("[server]\nbind = 'localhost'", "server.bind", "use HOST:PORT"),
    ("[server]\nbind = '127.0.0.1:0'", "server.bind", "from 1 to 65535"),
    ("[server]\nbind = '127.0.0.1:70000'", "server.bind", "from 1 to 65535"),
    ("[server]\nbind = '::1:8080'", "server.bind", "IPv6 addresses need brackets: use [::1]:8080"),
    ("[server]\nbind = '[zz]:80'", "server.bind", "not an IPv6 address"),
    ("[server]\nbind = '300.1.1.1:80'", "server.bind", "not an IPv4 address"),
    ("[server]\nsse_channel_cap = 2", "server.sse_channel_cap", "greater than or equal to 4"),
    ("[server]\ncors_origins = ['localhost/x']", "server.cors_origins", "scheme://host[:port]"),
    ("[server]\ncors_origins = [3]", "server.cors_origins[0]", "valid string"),
    ("server = 5", "server", "expected a [server] table"),
    ("[admission]\nqueue_capacity = 0", "admission.queue_capacity", "1 .. 100000"),
    ("[admission]\nqueue_capacity = 100001", "admission.queue_capacity", "1 .. 100000"),
    ("[admission]\nfull_policy = 'drop'", "admission.full_policy", "'reject' or 'drop-lru'"),
    ("[sessions]\nmax_turns = -1", "sessions.max_turns", "greater than or equal to 0"),
    ("[engines]\nllama_server = '/nowhere/llama-server'", "engines.llama_server", "not an exec"),
    ("[engines]\nllama_server = 'no-such-llama-server'", "engines.llama_server", "on PATH"),
    ("[pools]\nid = 'a'", "pools", "expected [[pools]] tables"),
    ("[[pools]]\nmodel = ''", "pools[0].id", "missing key 'id' in pools[0]"),
    ("[[pools]]\nid = 'a b'", "pools[0].id", "A-Z a-z 0-9 _ . -"),
    ("[[pools]]\nid = 'a'\nslots = '2'", "pools[0].slots", "valid integer (got '2')"),
    ("[[pools]]\nid = 'a'\nslots = 257", "pools[0].slots", "1 .. 256"),
    ("[[pools]]\nid = 'a'\nctx = 64", "pools[0].ctx", "128 .. 1048576"),
    ("[[pools]]\nid = 'a'\nengine = 'vllm'", "pools[0].engine", "'llamacpp', 'openai' or 'mock'"),
    ("[[pools]]\nid = 'a'\ndevice_mask = 'gpu0'", "pools[0].device_mask", 'like "0" or "0,1"'),
    ("[[pools]]\nid = 'a'\ndevice_mask = '0,0'", "pools[0].device_mask", "list each index once"),
    ("[[pools]]\nid = 'a'\ngpu_layers = -2", "pools[0].gpu_layers", "-1 (all layers)"),
    ("[[pools]]\nid = 'a'\nflash_attn = 'yes'", "pools[0].flash_attn", "'auto', 'on' or 'off'"),
    ("[[pools]]\nid = 'a'\ncache_type_k = 'q3'", "pools[0].cache_type_k", "q8_0"),
    ("[[pools]]\nid = 'a'\ncache_type_v = 'f8'", "pools[0].cache_type_v", "q8_0"),
    ("[[pools]]\nid = 'a'\ntensor_split = [0, 0]", "pools[0].tensor_split", "not all zero"),
    (
        "[[pools]]\nid = 'a'\ndevice_mask = '0,1'\ntensor_split = [1]",
        "pools[0].tensor_split",
        "tensor_split has 1 shares but device_mask '0,1' names 2 GPU(s)",
    ),
    (
        "[[pools]]\nid = 'a'\nextra_args = ['--mlock', '--port=9000']",
        "pools[0].extra_args",
        "extra_args may not contain --port: the orchestrator picks a free loopback port",
    ),
    ("[[pools]]\nid = 'a'\nextra_args = ['-np', '4']", "pools[0].extra_args", "slots key"),
    ("[[pools]]\nid = 'a'\nextra_args = ['--api-key', 'k']", "pools[0].extra_args", "key of"),
    ("[[pools]]\nid = 'a'\nextra_args = ['--host']", "pools[0].extra_args", "loopback only"),
    (
        "[[pools]]\nid = 'm'\nengine = 'mock'\ngpu_layers = 10",
        "pools[0].gpu_layers",
        "'gpu_layers' applies to llamacpp pools only",
    ),
    (
        "[[pools]]\nid = 'big'\ndevice_mask = 'cpu'",
        "pools[0].device_mask",
        "pool 'big' runs on the CPU (device_mask = \"cpu\"), which is off by default; "
        "set allow_cpu_inference = true",
    ),
    ("[[pools]]\nid = 'o'\nengine = 'openai'\nmodel = 'm'", "pools[0].base_url", "needs base_url"),
    (
        "[[pools]]\nid = 'o'\nengine = 'openai'\nbase_url = 'http://h:1/v1'",
        "pools[0].model",
        "needs the engine's model id",
    ),
    (
        "[[pools]]\nid = 'o'\nengine = 'openai'\nmodel = 'm'\nbase_url = 'ftp://h/v1'",
        "pools[0].base_url",
        "must be an http:// or https:// URL",
    ),
    (
        "[[pools]]\nid = 'o'\nengine = 'openai'\nmodel = 'm'\nbase_url = 'http://h/v1'\n"
        "api_key_env = 'sk-abc123'",
        "pools[0].api_key_env",
        "NAME of an environment variable",
    ),
    (
        "[[pools]]\nid = 'a'\nmock_tokens_per_s = 5.0",
        "pools[0].mock_tokens_per_s",
        "'mock_tokens_per_s' applies to mock pools only; remove it",
    ),
    (
        "[[pools]]\nid = 'm'\nengine = 'mock'\nbase_url = 'http://h/v1'",
        "pools[0].base_url",
        "applies to openai pools only",
    ),
    (
        "[[pools]]\nid = 'm'\nengine = 'mock'\nmock_tokens_per_s = 0.0",
        "pools[0].mock_tokens_per_s",
        "greater than 0",
    ),
    (
        "[[pools]]\nid = 'm'\nengine = 'mock'\nmock_fail_after_tokens = -2",
        "pools[0].mock_fail_after_tokens",
        "-1 (never)",
    ),
    (
        "[[pools]]\nid = 'a'\nengine = 'mock'\n[[pools]]\nid = 'a'\nengine = 'mock'",
        "pools[1].id",
        "duplicate pool id 'a' (also pools[0]); give every pool its own id",
    ),
]


@pytest.mark.parametrize(("text", "key", "fragment"), INVALID)
def test_each_invalid_example_names_the_key_and_the_fix(text: str, key: str, fragment: str) -> None:
    problem = only_problem(text, {"PATH": ""})

    assert problem.key == key
    assert fragment in problem.message
    assert str(problem) == f"{key}: {problem.message}"
    assert problem.code == "INVALID_CONFIG"


def test_a_key_that_looks_like_a_secret_is_not_echoed() -> None:
    text = (
        "[[pools]]\nid = 'o'\nengine = 'openai'\nmodel = 'm'\nbase_url = 'http://h/v1'\n"
        "api_key_env = 'sk-verysecret'"
    )

    assert "verysecret" not in str(only_problem(text))


def test_every_problem_is_reported_at_once() -> None:
    text = """
        bogus = true
        [server]
        bind = "0.0.0.0:8080"
        sse_channel_cap = 1
        [admission]
        queue_capcity = 3
        [[pools]]
        id = "a"
        slots = 0
        [[pools]]
        id = "b"
        device_mask = "cpu"
    """

    problems = problems_of(text, {"AUTH_OPTIONAL": "maybe"})

    assert {p.key for p in problems} == {
        "bogus",
        "server.sse_channel_cap",
        "admission.queue_capcity",
        "pools[0].slots",
        "pools[1].device_mask",
        "AUTH_OPTIONAL",
    }


def test_a_valid_pool_is_checked_even_when_another_section_is_broken() -> None:
    problems = problems_of("[server]\nbind = 'x'\n[[pools]]\nid = 'c'\ndevice_mask = 'cpu'")

    assert [p.key for p in problems] == ["server.bind", "pools[0].device_mask"]


# ------------------------------------------------------------------ cpu pools


def test_cpu_pool_is_allowed_with_allow_cpu_inference() -> None:
    settings = parse_settings(
        tomllib.loads("allow_cpu_inference = true\n[[pools]]\nid = 'c'\ndevice_mask = 'cpu'"),
        NO_ENV,
    )

    assert settings.pools[0].is_cpu
    assert settings.pools[0].gpu_indices() == ()


def test_demo_pool_may_run_on_cpu_without_allow_cpu_inference() -> None:
    settings = parse_settings(
        tomllib.loads("[[pools]]\nid = 'demo'\ndevice_mask = 'cpu'\ndemo = true"), NO_ENV
    )

    assert settings.pools[0].demo


def test_relative_model_path_is_relative_to_the_config_folder(
    tmp_path: Path, demo_gguf: bytes
) -> None:
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "m.gguf").write_bytes(demo_gguf)
    path = write(tmp_path, "[[pools]]\nid = 'a'\nmodel = 'file:models/m.gguf'\ndevice_mask = '0,1'")

    settings = load_settings(path, NO_ENV)

    assert settings.model_path(settings.pools[0]) == tmp_path / "models" / "m.gguf"
    assert settings.pools[0].gpu_indices() == (0, 1)


# ------------------------------------------------------------------ environment


@pytest.mark.parametrize(
    ("env", "bind", "variable"),
    [
        ({}, "127.0.0.1:9000", None),
        ({"ORCHD_ADDR": "127.0.0.2:9001"}, "127.0.0.2:9001", "ORCHD_ADDR"),
        ({"BIND_ADDR": "[::1]:9002", "ORCHD_ADDR": "127.0.0.2:9001"}, "[::1]:9002", "BIND_ADDR"),
        ({"BIND_ADDR": "", "ORCHD_ADDR": "localhost:9003"}, "localhost:9003", "ORCHD_ADDR"),
    ],
)
def test_bind_precedence_is_bind_addr_then_orchd_addr_then_file(
    env: dict[str, str], bind: str, variable: str | None
) -> None:
    settings = parse_settings({"server": {"bind": "127.0.0.1:9000"}}, env)

    assert settings.server.bind == bind
    assert settings.is_loopback_bind()
    assert settings.env_overrides == ({"server.bind": variable} if variable else {})


@pytest.mark.parametrize(
    ("text", "expected"),
    [("true", True), ("1", True), ("YES", True), ("false", False), ("0", False), ("no", False)],
)
def test_boolean_env_overrides(text: str, expected: bool) -> None:
    file_value = {"server": {"auth_optional": not expected, "trust_proxy_auth": not expected}}

    settings = parse_settings(file_value, {"AUTH_OPTIONAL": text, "TRUST_PROXY_AUTH": text})

    assert settings.server.auth_optional is expected
    assert settings.server.trust_proxy_auth is expected


@pytest.mark.parametrize(
    ("env", "key", "fragment"),
    [
        ({"AUTH_OPTIONAL": "maybe"}, "AUTH_OPTIONAL", "use true/false, 1/0 or yes/no"),
        ({"TRUST_PROXY_AUTH": "2"}, "TRUST_PROXY_AUTH", "is not a boolean"),
        ({"BIND_ADDR": "nope"}, "BIND_ADDR", "environment variable BIND_ADDR"),
        ({"ORCHD_ADDR": "1.2.3.4:99999"}, "ORCHD_ADDR", "from 1 to 65535"),
        ({"AUTH_TOKEN": "two words"}, "AUTH_TOKEN", "without spaces"),
    ],
)
def test_bad_env_values_name_the_variable(env: dict[str, str], key: str, fragment: str) -> None:
    problem = only_problem("", env)

    assert problem.key == key
    assert fragment in problem.message


def test_bind_host_port_strips_ipv6_brackets() -> None:
    settings = parse_settings({}, {"BIND_ADDR": "[::1]:8081"})

    assert settings.bind_host_port() == ("::1", 8081)


# ------------------------------------------------------------------ exposure and tokens

REFUSAL = (
    "refusing to serve 0.0.0.0:8080 without a token: set AUTH_TOKEN or [server] "
    "auth_token_file, or bind to 127.0.0.1 (BIND_ADDR)"
)


def test_non_loopback_bind_without_token_is_refused() -> None:
    problem = only_problem("[server]\nbind = '0.0.0.0:8080'")

    assert problem == Problem("server.bind", REFUSAL, NON_LOOPBACK_WITHOUT_TOKEN)


def test_non_loopback_bind_from_env_names_the_variable() -> None:
    problem = only_problem("", {"BIND_ADDR": "0.0.0.0:8080"})

    assert problem.key == "BIND_ADDR"
    assert problem.code == NON_LOOPBACK_WITHOUT_TOKEN


@pytest.mark.parametrize("bind", ["127.0.0.1:1", "127.9.0.1:80", "[::1]:80", "localhost:80"])
def test_loopback_binds_need_no_token(bind: str) -> None:
    settings = parse_settings({"server": {"bind": bind}}, NO_ENV)

    assert settings.is_loopback_bind()
    assert settings.auth_token is None


def test_auth_token_env_allows_non_loopback_and_is_never_shown() -> None:
    settings = parse_settings({"server": {"bind": "0.0.0.0:8080"}}, {"AUTH_TOKEN": "s3cret-tok"})

    assert settings.auth_token == "s3cret-tok"
    assert settings.token_source == "AUTH_TOKEN"
    assert not settings.is_loopback_bind()
    for text in (repr(settings), str(settings.model_dump()), settings.model_dump_json()):
        assert "s3cret-tok" not in text
    assert "s3cret-tok" not in to_toml(settings)


def test_token_file_allows_non_loopback(tmp_path: Path) -> None:
    write_token_file(tmp_path / "token", "  file-token \n")
    path = write(tmp_path, "[server]\nbind = '0.0.0.0:8080'\nauth_token_file = 'token'")

    settings = load_settings(path, NO_ENV)

    assert settings.auth_token == "file-token"
    assert settings.token_source == str(tmp_path / "token")


def test_auth_token_env_wins_over_the_token_file(tmp_path: Path) -> None:
    write_token_file(tmp_path / "token", "file-token")
    path = write(tmp_path, "[server]\nauth_token_file = 'token'")

    assert load_settings(path, {"AUTH_TOKEN": "env-token"}).auth_token == "env-token"


def test_empty_token_file_is_a_problem_and_does_not_count_as_a_token(tmp_path: Path) -> None:
    (tmp_path / "token").write_text("\n  \n")
    path = write(tmp_path, "[server]\nbind = '0.0.0.0:8080'\nauth_token_file = 'token'")

    problems = check_config(path, NO_ENV)

    assert [p.key for p in problems] == ["server.auth_token_file", "server.bind"]
    assert "empty" in problems[0].message
    assert str(tmp_path / "token") in problems[0].message
    assert problems[1].code == NON_LOOPBACK_WITHOUT_TOKEN


def test_missing_token_file_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nauth_token_file = 'gone'")

    (problem,) = check_config(path, NO_ENV)

    assert problem.key == "server.auth_token_file"
    assert str(tmp_path / "gone") in problem.message


def test_with_bind_overrides_without_saving_and_checks_the_token(tmp_path: Path) -> None:
    settings = parse_settings({}, NO_ENV)

    with pytest.raises(ConfigError) as info:
        settings.with_bind("0.0.0.0:8080")
    moved = settings.with_bind("127.0.0.1:9999")

    assert info.value.problems[0].code == NON_LOOPBACK_WITHOUT_TOKEN
    assert moved.bind_host_port() == ("127.0.0.1", 9999)
    assert moved.env_overrides == {"server.bind": "--bind"}
    assert 'bind = "127.0.0.1:8080"' in to_toml(moved)
    with pytest.raises(ConfigError, match="--bind: "):
        settings.with_bind("nope")


def test_write_token_file_is_0600_in_a_0700_folder(tmp_path: Path) -> None:
    path = tmp_path / "secrets" / "token"

    write_token_file(path, "abc")

    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert read_token_file(path) == "abc"


def test_write_token_file_refuses_an_empty_token(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="empty"):
        write_token_file(tmp_path / "token", "  ")
    assert not (tmp_path / "token").exists()


def test_read_token_file_names_the_path_when_unreadable(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=str(tmp_path / "absent")):
        read_token_file(tmp_path / "absent")
    with pytest.raises(ConfigError, match="cannot read"):
        read_token_file(tmp_path)


def test_token_fingerprint_is_six_hex_of_sha256() -> None:
    assert token_fingerprint("abc") == "ba7816"
    assert len(generate_token()) >= 40
    assert generate_token() != generate_token()


# ------------------------------------------------------------------ files


def test_default_config_resource_documents_and_sets_every_key() -> None:
    settings = load_settings(DEFAULT_CONFIG, NO_ENV)
    text = DEFAULT_CONFIG.read_text()

    for table in ("server", "admission", "sessions", "engines", "models"):
        section = getattr(settings, table)
        assert section.model_fields_set == set(type(section).model_fields), table
    assert "allow_cpu_inference" in settings.model_fields_set
    keys = set().union(*(p.model_fields_set for p in settings.pools))
    assert keys == set(PoolSettings.model_fields)
    assert {p.engine for p in settings.pools} == {"llamacpp", "openai", "mock"}
    assert text.count("# ") > 40


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    with pytest.raises(ConfigError) as info:
        load_settings(tmp_path / "none.toml", NO_ENV)

    assert info.value.problems[0].key == str(tmp_path / "none.toml")
    assert "not found" in str(info.value)


def test_invalid_toml_names_the_path(tmp_path: Path) -> None:
    path = write(tmp_path, "[server\nbind = 1")

    (problem,) = check_config(path, NO_ENV)

    assert problem.key == str(path)
    assert "not valid TOML" in problem.message


def test_no_path_gives_defaults_with_env_applied() -> None:
    settings = load_settings(None, {"BIND_ADDR": "127.0.0.1:7000"})

    assert settings.pools == []
    assert settings.server.bind == "127.0.0.1:7000"
    assert settings.admission.queue_capacity == 16
    assert settings.source_path is None


def test_default_config_path_precedence(tmp_path: Path) -> None:
    home = {"HOME": "/home/u"}

    assert default_config_path({**home, "LLAMA_ORCH_CONFIG": "/x/c.toml"}) == Path("/x/c.toml")
    assert default_config_path({**home, "XDG_CONFIG_HOME": "/xdg"}) == Path(
        "/xdg/llama-orch/config.toml"
    )
    assert default_config_path(home) == Path("/home/u/.config/llama-orch/config.toml")
    assert default_config_path({**home, "XDG_CONFIG_HOME": "rel"}) == Path(
        "/home/u/.config/llama-orch/config.toml"
    )


def test_log_dir_defaults_to_xdg_state() -> None:
    settings = parse_settings({}, NO_ENV)

    assert settings.log_dir_path({"XDG_STATE_HOME": "/st"}) == Path("/st/llama-orch/logs")


# ------------------------------------------------------------------ save


def test_save_round_trips_and_writes_0600(tmp_path: Path) -> None:
    original = load_settings(DEFAULT_CONFIG, NO_ENV)
    path = tmp_path / "conf" / "config.toml"

    save_settings(original, path)
    loaded = load_settings(path, NO_ENV)

    assert loaded.model_dump() == original.model_dump()
    assert path.read_text() == to_toml(original)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert os.listdir(path.parent) == ["config.toml"]


def test_strings_and_floats_round_trip(tmp_path: Path) -> None:
    name = 'a "quoted" \\ back\tslash é \x01 \u2603'
    pool = PoolSettings(id="m", engine="mock", model=name, mock_tokens_per_s=1e-7)
    settings = Settings(pools=[pool])

    save_settings(settings, tmp_path / "c.toml")

    loaded = load_settings(tmp_path / "c.toml", NO_ENV)
    assert loaded.pools[0].model == name
    assert loaded.pools[0].mock_tokens_per_s == 1e-7


def test_save_writes_file_values_not_env_values(tmp_path: Path) -> None:
    path = write(tmp_path, "[server]\nbind = '127.0.0.1:8080'\nauth_optional = false\n")
    env = {"BIND_ADDR": "0.0.0.0:9", "AUTH_TOKEN": "tok-xyz", "AUTH_OPTIONAL": "yes"}
    settings = load_settings(path, env)
    assert settings.server.bind == "0.0.0.0:9"

    save_settings(settings, path)

    text = path.read_text()
    assert "tok-xyz" not in text
    assert load_settings(path, NO_ENV).server == load_settings(DEFAULT_CONFIG, NO_ENV).server


def test_save_keeps_a_value_changed_after_an_env_override(tmp_path: Path) -> None:
    settings = parse_settings({}, {"BIND_ADDR": "127.0.0.1:9"})
    changed = settings.model_copy(
        update={"server": settings.server.model_copy(update={"bind": "127.0.0.1:7"})}
    )

    save_settings(changed, tmp_path / "c.toml")

    assert load_settings(tmp_path / "c.toml", NO_ENV).server.bind == "127.0.0.1:7"


def test_failed_save_leaves_the_old_file_and_no_temp_file(tmp_path: Path) -> None:
    path = write(tmp_path, "# old\n")

    def failing_fsync(fd: int) -> None:
        raise OSError(28, "No space left on device")

    with pytest.raises(OSError, match="No space"):
        save_settings(parse_settings({}, NO_ENV), path, fsync=failing_fsync)

    assert path.read_text() == "# old\n"
    assert os.listdir(tmp_path) == ["config.toml"]


def test_atomic_write_replaces_content_with_0600(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_text("old")
    path.chmod(0o644)

    atomic_write(path, b"new")

    assert path.read_bytes() == b"new"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


def test_atomic_write_syncs_the_file_and_then_its_folder(tmp_path: Path) -> None:
    synced: list[bool] = []

    def recording_fsync(fd: int) -> None:
        synced.append(stat.S_ISDIR(os.fstat(fd).st_mode))
        os.fsync(fd)

    atomic_write(tmp_path / "f", b"x", fsync=recording_fsync)

    assert synced == [False, True]


def test_save_refuses_settings_that_would_not_load(tmp_path: Path) -> None:
    settings = Settings().model_copy(
        update={"admission": Settings().admission.model_copy(update={"queue_capacity": 0})}
    )

    with pytest.raises(ConfigError, match=r"admission\.queue_capacity"):
        save_settings(settings, tmp_path / "c.toml")
    assert not (tmp_path / "c.toml").exists()


# ------------------------------------------------------------------ first start


def test_default_settings_without_gpus_has_only_a_cpu_demo_pool(
    tmp_path: Path, demo_gguf: bytes
) -> None:
    model = tmp_path / "demo.gguf"
    model.write_bytes(demo_gguf)

    settings = default_settings([], model)
    save_settings(settings, tmp_path / "c.toml")

    (demo,) = settings.pools
    assert (demo.id, demo.engine, demo.model) == ("demo", "llamacpp", f"file:{model}")
    assert (demo.device_mask, demo.ctx, demo.slots, demo.demo) == ("cpu", 2048, 4, True)
    assert settings.allow_cpu_inference is False
    assert load_settings(tmp_path / "c.toml", NO_ENV).model_dump() == settings.model_dump()


def test_default_settings_with_two_gpus(tmp_path: Path) -> None:
    settings = default_settings([0, 1], tmp_path / "demo.gguf")

    assert [(p.id, p.model, p.device_mask, p.demo) for p in settings.pools] == [
        ("gpu0", "", "0", False),
        ("gpu1", "", "1", False),
        ("demo", f"file:{tmp_path / 'demo.gguf'}", "0", True),
    ]
    assert settings.server.bind == "127.0.0.1:8080"


# ------------------------------------------------------------------ check-config


def test_check_config_main_ok(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = write(tmp_path, "[admission]\nqueue_capacity = 4\n")

    assert check_config_main(str(path), NO_ENV) == 0
    out = capsys.readouterr()
    assert out.out == f"ok: {path}\n"
    assert out.err == ""


def test_check_config_main_prints_one_line_per_problem(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "bogus = 1\n[admission]\nqueue_capacity = 0\n")

    assert check_config_main(str(path), NO_ENV) == 2
    out = capsys.readouterr()
    lines = out.err.splitlines()
    assert out.out == ""
    assert len(lines) == 2
    assert lines[0].startswith("admission.queue_capacity: ") or lines[1].startswith(
        "admission.queue_capacity: "
    )
    assert any(line.startswith("bogus: unknown key 'bogus'") for line in lines)


def test_check_config_refuses_a_port_in_extra_args(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = write(tmp_path, "[[pools]]\nid = 'g'\nextra_args = ['--port', '9000']\n")

    assert check_config_main(str(path), NO_ENV) == 2
    assert capsys.readouterr().err == (
        "pools[0].extra_args: extra_args may not contain --port: the orchestrator picks "
        "a free loopback port; remove it\n"
    )


def test_llamacpp_tuning_keys_round_trip_through_the_file(tmp_path: Path) -> None:
    text = (
        "[[pools]]\nid = 'g'\ndevice_mask = '0,1'\ngpu_layers = 20\nflash_attn = 'on'\n"
        "cache_type_k = 'q8_0'\ncache_type_v = 'q4_0'\ntensor_split = [3, 1]\n"
        "extra_args = ['--mlock']\n"
    )
    settings = load_settings(write(tmp_path, text), NO_ENV)
    save_settings(settings, tmp_path / "again.toml")
    (pool,) = load_settings(tmp_path / "again.toml", NO_ENV).pools
    assert (pool.gpu_layers, pool.flash_attn) == (20, "on")
    assert (pool.cache_type_k, pool.cache_type_v) == ("q8_0", "q4_0")
    assert pool.tensor_split == [3.0, 1.0]
    assert pool.extra_args == ["--mlock"]


def test_a_missing_model_file_is_a_warning_not_a_refusal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """The pool waits for a model; the config (and the other pools) stay usable."""
    path = write(tmp_path, "[[pools]]\nid = 'a'\nmodel = 'file:/no/such/m.gguf'\n")
    settings = load_settings(path, NO_ENV)
    (warning,) = settings.warnings
    assert warning.key == "pools[0].model" and warning.code == "MODEL_MISSING"
    assert "/no/such/m.gguf" in warning.message and 'set model = ""' in warning.message
    assert check_config_main(str(path), NO_ENV) == 0
    out = capsys.readouterr()
    assert out.err.startswith("warning: pools[0].model: model file /no/such/m.gguf")
    assert "ok:" in out.out


def test_check_config_main_missing_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert check_config_main(str(tmp_path / "x.toml"), NO_ENV) == 2
    assert str(tmp_path / "x.toml") in capsys.readouterr().err


@pytest.mark.parametrize("kind", BAD_KINDS)
def test_check_config_refuses_a_bad_model_file_in_one_sentence(
    tmp_path: Path, demo_gguf: bytes, capsys: pytest.CaptureFixture[str], kind: str
) -> None:
    (tmp_path / "models").mkdir()
    bad, sentence = write_bad(kind, tmp_path / "models", demo_gguf)
    path = write(tmp_path, f"[[pools]]\nid = 'a'\nmodel = 'models/{bad.name}'\n")

    assert check_config_main(str(path), NO_ENV) == 2
    (line,) = capsys.readouterr().err.splitlines()
    assert line.startswith(f"pools[0].model: models/{sentence}")
    assert line.endswith("; choose another model")


def test_download_refs_are_checked_for_syntax_not_presence(tmp_path: Path) -> None:
    good = write(tmp_path, "[[pools]]\nid = 'a'\nmodel = 'hf:me/tiny/tiny.gguf@main'\n")
    assert load_settings(good, NO_ENV).pools[0].model_file() is None
    bad = write(tmp_path, "[[pools]]\nid = 'a'\nmodel = 'hf:tiny'\n", name="bad.toml")

    with pytest.raises(ConfigError) as caught:
        load_settings(bad, NO_ENV)
    assert "'hf:tiny' does not name a Hugging Face repository" in str(caught.value)

"""Attacks on a real ``llama-orch serve``: DNS rebinding, exposed token files, proxy headers."""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
from pathlib import Path

from tests.integration.support import (
    ROOT,
    clean_env,
    end_process,
    free_port,
    http_get,
    launch_serve,
    private_file,
    wait_listening,
)

TOKEN = "s3cret-token-for-tests"
POOL = """
[[pools]]
id = "m0"
engine = "mock"
model = "mock-a"
device_mask = "0"
"""


def _config(tmp_path: Path, server: str) -> Path:
    path = tmp_path / "config.toml"
    path.write_text(f"[server]\n{server}\n{POOL}")
    return path


def test_a_caller_without_a_token_must_address_the_server_by_a_loopback_name(
    tmp_path: Path,
) -> None:
    """LAN bind + auth_optional: a rebound name (Host: evil.example) gets no free pass."""
    port = free_port()
    token_file = private_file(tmp_path / "token", TOKEN + "\n")
    server = f'bind = "0.0.0.0:{port}"\nauth_token_file = "{token_file}"\nauth_optional = true'
    proc = launch_serve(_config(tmp_path, server), clean_env(tmp_path))
    try:
        wait_listening(proc, port)
        for path in ("/v1/pools", "/metrics", "/v1/placement/decisions"):
            status, body = http_get(port, path, {"Host": f"evil.example:{port}"})
            assert status == 401, (path, body[:200])
            assert b"localhost" in body and b"allowed_hosts" in body
            assert http_get(port, path, {"Host": f"127.0.0.1:{port}"})[0] == 200
            assert http_get(port, path, {"Host": f"localhost:{port}"})[0] == 200
            with_token = {"Host": f"evil.example:{port}", "Authorization": f"Bearer {TOKEN}"}
            assert http_get(port, path, with_token)[0] == 200
    finally:
        end_process(proc)


def _cli(tmp_path: Path, *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "app", *args],
        env=clean_env(tmp_path, **env),
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_a_token_file_others_can_read_is_refused_with_the_chmod_fix(tmp_path: Path) -> None:
    token_file = private_file(tmp_path / "token", TOKEN + "\n", mode=0o644)
    cfg = _config(tmp_path, f'bind = "127.0.0.1:{free_port()}"\nauth_token_file = "{token_file}"')
    checked = _cli(tmp_path, "check-config", str(cfg))
    assert checked.returncode == 2, checked.stdout
    assert f"chmod 600 {token_file}" in checked.stderr
    assert "Traceback" not in checked.stderr
    served = _cli(tmp_path, "serve", "--config", str(cfg))
    assert served.returncode == 2
    assert f"chmod 600 {token_file}" in served.stderr
    token_file.chmod(0o600)
    assert _cli(tmp_path, "check-config", str(cfg)).returncode == 0


def test_trusting_proxy_headers_on_a_lan_bind_needs_a_proxy_list(tmp_path: Path) -> None:
    port = free_port()
    token_file = private_file(tmp_path / "token", TOKEN + "\n")
    cfg = _config(tmp_path, f'bind = "0.0.0.0:{port}"\nauth_token_file = "{token_file}"')
    refused = _cli(tmp_path, "serve", "--config", str(cfg), TRUST_PROXY_AUTH="true")
    assert refused.returncode == 2
    assert "trusted_proxies" in refused.stderr and "X-Forwarded-User" in refused.stderr
    assert "Traceback" not in refused.stderr
    checked = _cli(tmp_path, "check-config", str(cfg), TRUST_PROXY_AUTH="true")
    assert checked.returncode == 2 and "trusted_proxies" in checked.stderr

    listed = _config(
        tmp_path,
        f'bind = "0.0.0.0:{port}"\nauth_token_file = "{token_file}"\n'
        'trust_proxy_auth = true\ntrusted_proxies = ["192.0.2.0/24"]',
    )
    proc = launch_serve(listed, clean_env(tmp_path))
    try:
        wait_listening(proc, port)
        # a loopback peer (a proxy on this machine) may name the user
        assert http_get(port, "/v1/pools", {"X-Forwarded-User": "alice"})[0] == 200
    finally:
        end_process(proc)


def _post(port: int, path: str, body: dict[str, str]) -> tuple[int, dict[str, object]]:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request("POST", path, json.dumps(body), {"Content-Type": "application/json"})
        resp = conn.getresponse()
        return resp.status, json.loads(resp.read())
    finally:
        conn.close()


def test_reload_is_no_file_existence_oracle_and_shows_no_engine_output(tmp_path: Path) -> None:
    port = free_port()
    cfg = tmp_path / "config.toml"
    cfg.write_text(
        f'allow_cpu_inference = true\n[server]\nbind = "127.0.0.1:{port}"\n'
        '[[pools]]\nid = "p"\nengine = "llamacpp"\nmodel = ""\ndevice_mask = "cpu"\n'
    )
    existing = tmp_path / "notes.txt"
    existing.write_text("secret notes, not a model\n")
    proc = launch_serve(cfg, clean_env(tmp_path))
    try:
        wait_listening(proc, port)
        answers = []
        for path in (existing, tmp_path / "absent.gguf", Path("/etc/passwd"), tmp_path):
            status, result = _post(port, "/v1/pools/p/reload", {"model_ref": str(path)})
            assert status == 409 and result["code"] == "RELOAD_FAILED", result
            # the answer names the caller's own path (and its stem as the model tried)
            message = str(result["message"]).replace(str(path), "PATH")
            answers.append(message.replace(path.stem, "STEM"))
            detail = json.loads(http_get(port, "/v1/pools/p/health")[1])["detail"]
            answers.append(detail.replace(str(path), "PATH"))
        assert len(set(answers[0::2])) == 1, answers
        assert len(set(answers[1::2])) == 1, answers
        for text in answers:
            assert "Traceback" not in text and "site-packages" not in text
        assert "GGUF" in answers[0]
    finally:
        end_process(proc)

"""``llama-orch serve`` stores artifacts in the XDG data folder and serves them back."""

from __future__ import annotations

from pathlib import Path

from tests.integration.support import serve

POOL = '[[pools]]\nid = "m0"\nengine = "mock"\nmodel = "mock"\nmock_tokens_per_s = 1000\n'


def test_serve_keeps_artifacts_in_the_data_folder(tmp_path: Path) -> None:
    with serve(tmp_path, POOL) as served:
        status, ref = served.call("POST", "/v1/artifacts", {"kind": "summary", "content": {"a": 1}})
        assert status == 201, ref
        status, got = served.call("GET", f"/v1/artifacts/{ref['id']}")
        assert status == 200 and got["content"] == {"a": 1}
    stored = tmp_path / "data" / "llama-orch" / "artifacts" / f"{ref['id']}.json"
    assert stored.is_file()

"""The tracking snippet /t.js: cacheable JavaScript with the workspace's consent setting embedded."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import pytest

from tests.conftest import make_workspace


def config_of(js: str) -> dict:
    match = re.search(r"\}\)\(window, document, (\{.*\})\);\s*$", js)
    assert match, js[-300:]
    return json.loads(match.group(1))


def test_snippet_is_cacheable_javascript(client):
    resp = client.get("/t.js")
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("application/javascript")
    assert "max-age=" in resp.headers["cache-control"] and "public" in resp.headers["cache-control"]
    assert "suppilo.js" in resp.text and "__SUPPILO_CONFIG__" not in resp.text
    assert len(resp.content) < 30_000
    # Without a key the snippet cannot know the workspace, so it assumes consent is required.
    assert "requireConsent" not in config_of(resp.text)


def test_snippet_embeds_the_workspace_consent_setting(client, workspace, session_factory):
    strict = config_of(client.get("/t.js", params={"k": workspace.track_key}).text)
    assert strict["requireConsent"] is True and strict["writeKey"] == workspace.track_key
    relaxed_ws = make_workspace(session_factory, require_tracking_consent=False)
    relaxed = config_of(client.get("/t.js", params={"k": relaxed_ws.track_key}).text)
    assert relaxed["requireConsent"] is False
    unknown = config_of(client.get("/t.js", params={"k": "wk_unknown"}).text)
    assert "requireConsent" not in unknown and "writeKey" not in unknown


@pytest.mark.skipif(shutil.which("node") is None, reason="node is not installed")
def test_snippet_is_valid_javascript(client, tmp_path):
    path = tmp_path / "t.js"
    path.write_text(client.get("/t.js").text)
    result = subprocess.run(["node", "--check", str(path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr

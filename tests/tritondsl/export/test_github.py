"""publish-release up to the HTTP boundary: a real HTTP server on 127.0.0.1 in a thread
records each request and answers like GitHub's REST API (drafts, assets, publishing)."""

from __future__ import annotations

import json
import shutil
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, HTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from typer.testing import CliRunner

from tritondsl.cli import app
from tritondsl.export.github import publish_release
from tritondsl.export.release import ReleaseError

from .conftest import BUNDLE

runner = CliRunner()


@dataclass
class Recorded:
    """One request the server received."""

    method: str
    path: str
    query: dict[str, list[str]]
    headers: dict[str, str]
    body: bytes


@dataclass
class FakeGitHub:
    """What the server records and how it answers the release creation."""

    url: str = ""
    requests: list[Recorded] = field(default_factory=list)
    release_status: int = 201
    release_reply: dict[str, Any] | None = None  # None: a normal reply
    redirect: bool = False
    fail_uploads: dict[str, int] = field(default_factory=dict)  # name -> 502s before success
    drop_asset: str | None = None  # an upload that "succeeds" but is not stored
    assets: dict[str, int] = field(default_factory=dict)  # name -> size, as stored
    draft: bool | None = None  # None until created


MAX_BODY = 16 * 1024 * 1024


def make_handler(state: FakeGitHub) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def record(self) -> tuple[str, bytes]:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(min(length, MAX_BODY))  # bounded
            parts = urlsplit(self.path)
            state.requests.append(
                Recorded(self.command, parts.path, parse_qs(parts.query), dict(self.headers), body)
            )
            return parts.path, body

        def do_POST(self) -> None:
            path, body = self.record()
            if path == "/repos/someone/mixednet/releases":
                if state.redirect:
                    self.send_response(302)
                    self.send_header("Location", "http://127.0.0.1:1/elsewhere")
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                reply = state.release_reply or {
                    "id": 7,
                    "html_url": "https://github.com/someone/mixednet/releases/tag/untagged-7",
                    "upload_url": f"{state.url}/uploads/someone/mixednet/releases/7/assets"
                    "{?name,label}",
                }
                if state.release_status == 201:
                    state.draft = json.loads(body)["draft"]
                self.answer(state.release_status, reply)
            elif path == "/uploads/someone/mixednet/releases/7/assets":
                name = state.requests[-1].query["name"][0]
                if state.fail_uploads.get(name, 0) > 0:
                    state.fail_uploads[name] -= 1
                    self.answer(502, {"message": "Bad Gateway"})
                    return
                if name != state.drop_asset:
                    state.assets[name] = len(body)
                url = f"https://github.com/someone/mixednet/releases/download/v1.0.0/{name}"
                self.answer(201, {"name": name, "size": len(body), "browser_download_url": url})
            else:
                self.answer(404, {"message": "Not Found"})

        def do_GET(self) -> None:
            path, _ = self.record()
            if path == "/repos/someone/mixednet/releases/7/assets":
                listed = [{"name": n, "size": size} for n, size in state.assets.items()]
                self.answer(200, listed)
            else:
                self.answer(404, {"message": "Not Found"})

        def do_PATCH(self) -> None:
            path, body = self.record()
            if path == "/repos/someone/mixednet/releases/7":
                state.draft = json.loads(body)["draft"]
                url = "https://github.com/someone/mixednet/releases/tag/v1.0.0"
                self.answer(200, {"id": 7, "html_url": url, "draft": state.draft})
            else:
                self.answer(404, {"message": "Not Found"})

        def answer(self, status: int, reply: Any) -> None:
            data = json.dumps(reply).encode()
            self.send_response(status)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *args: Any) -> None:  # keep test output clean
            pass

    return Handler


@pytest.fixture
def github() -> Iterator[FakeGitHub]:
    """A real HTTP server on 127.0.0.1 (any free port), served from a thread."""
    state = FakeGitHub()
    server = HTTPServer(("127.0.0.1", 0), make_handler(state))
    server.timeout = 5
    state.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05})
    thread.start()
    try:
        yield state
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def publish(bundle: Path, github: FakeGitHub, *extra: str, token: str | None = "s3cret") -> Any:
    env = {"GITHUB_TOKEN": token} if token is not None else {}
    args = ["publish-release", str(bundle), "--repo", "someone/mixednet", "--tag", "v1.0.0"]
    return runner.invoke(app, [*args, "--api-url", github.url, *extra], env=env)


def test_publish_release_creates_it_and_uploads_every_file(
    bundle: tuple[Path, dict[str, Any]], github: FakeGitHub
) -> None:
    out, manifest = bundle
    result = publish(out, github)
    assert result.exit_code == 0, result.output
    assert "released v1.0.0: https://github.com/someone/mixednet/releases/tag/v1.0.0" in (
        result.output
    )
    create, *uploads, listing, publishing = github.requests
    assert (create.method, listing.method, publishing.method) == ("POST", "GET", "PATCH")
    assert listing.path == "/repos/someone/mixednet/releases/7/assets"
    assert publishing.path == "/repos/someone/mixednet/releases/7"
    assert json.loads(publishing.body) == {"draft": False} and github.draft is False
    assert create.path == "/repos/someone/mixednet/releases"
    assert create.headers["Authorization"] == "Bearer s3cret"
    assert create.headers["Accept"] == "application/vnd.github+json"
    assert create.headers["Content-Type"] == "application/json"
    body = json.loads(create.body)
    assert body["tag_name"] == "v1.0.0" and body["name"] == "MixedNet v1.0.0"
    assert body["draft"] is True and body["prerelease"] is False  # published only at the end
    assert manifest["files"]["model.onnx"]["sha256"] in body["body"]
    names = [u.query["name"][0] for u in uploads]
    assert names == [*sorted(BUNDLE), "manifest.json"]  # the manifest last
    for upload, name in zip(uploads, names, strict=True):
        assert upload.body == (out / name).read_bytes()
        assert upload.headers["Authorization"] == "Bearer s3cret"
        assert upload.headers["Content-Type"] == "application/octet-stream"
        assert f"releases/download/v1.0.0/{name}" in result.output


def test_transient_upload_failures_are_retried(
    bundle: tuple[Path, dict[str, Any]], github: FakeGitHub, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("tritondsl.export.github.BACKOFF_S", 0.0)
    github.fail_uploads = {"model.onnx": 2}  # two 502s, then it goes through
    result = publish(bundle[0], github)
    assert result.exit_code == 0, result.output
    tries = [r for r in github.requests if r.query.get("name") == ["model.onnx"]]
    assert len(tries) == 3 and "retrying (2/3)" in result.output
    assert github.draft is False and github.assets["model.onnx"] == len(tries[-1].body)


@pytest.mark.parametrize("failure", ["persistent 502", "asset missing after upload"])
def test_a_failure_leaves_a_draft_never_a_published_release(
    bundle: tuple[Path, dict[str, Any]], github: FakeGitHub, monkeypatch: pytest.MonkeyPatch,
    failure: str,
) -> None:  # fmt: skip
    monkeypatch.setattr("tritondsl.export.github.BACKOFF_S", 0.0)
    if failure == "persistent 502":
        github.fail_uploads = {"model.safetensors": 99}
        message = "HTTP 502 (after 3 attempts)"
    else:
        github.drop_asset = "model.tdsl"
        message = "model.tdsl is not among the release's assets after upload"
    result = publish(bundle[0], github)
    assert result.exit_code == 1
    assert message in result.output
    assert "draft release 7" in result.output and "left unpublished" in result.output
    assert github.draft is True  # created as a draft, never published
    assert not [r for r in github.requests if r.method == "PATCH"]


def tampered(bundle: Path, tmp_path: Path, how: str) -> Path:
    copy = tmp_path / "bundle"
    shutil.copytree(bundle, copy)
    if how == "byte":
        data = bytearray((copy / "model.onnx").read_bytes())
        data[-1] ^= 1
        (copy / "model.onnx").write_bytes(bytes(data))
    elif how == "extra":
        (copy / "notes.txt").write_text("not in the manifest")
    elif how == "missing":
        (copy / "model.tdsl").unlink()
    return copy


@pytest.mark.parametrize(
    ("how", "message"),
    [
        ("byte", "model.onnx: sha256/size differ from manifest.json; refusing"),
        ("extra", "['notes.txt'] not listed in manifest.json"),
        ("missing", "model.tdsl: missing"),
    ],
)
def test_publish_refuses_a_bundle_that_differs_from_its_manifest(
    bundle: tuple[Path, dict[str, Any]], github: FakeGitHub, tmp_path: Path, how: str,
    message: str,
) -> None:  # fmt: skip
    result = publish(tampered(bundle[0], tmp_path, how), github)
    assert result.exit_code == 1
    assert message in result.output
    assert github.requests == []  # refused before anything was sent


def test_publish_needs_the_token_variable(
    bundle: tuple[Path, dict[str, Any]], github: FakeGitHub
) -> None:
    result = publish(bundle[0], github, "--token-env", "TRITONDSL_TEST_NO_TOKEN", token=None)
    assert result.exit_code == 2
    assert "$TRITONDSL_TEST_NO_TOKEN is not set" in result.output
    assert github.requests == []


def test_publish_reports_githubs_refusal(
    bundle: tuple[Path, dict[str, Any]], github: FakeGitHub
) -> None:
    github.release_status = 422
    github.release_reply = {
        "message": "Validation Failed",
        "errors": [{"resource": "Release", "code": "already_exists", "field": "tag_name"}],
    }
    result = publish(bundle[0], github)
    assert result.exit_code == 1
    assert "HTTP 422: Validation Failed (already_exists)" in result.output
    assert "s3cret" not in result.output
    assert len(github.requests) == 1  # no uploads after a refused release


def test_token_never_leaves_for_a_foreign_upload_host_or_a_redirect(
    bundle: tuple[Path, dict[str, Any]], github: FakeGitHub
) -> None:
    github.release_reply = {"id": 7, "upload_url": "https://evil.example/assets{?name}"}
    result = publish(bundle[0], github)
    assert result.exit_code == 1 and "is not on ['127.0.0.1']; refusing" in result.output
    assert len(github.requests) == 1
    github.release_reply, github.redirect = None, True
    result = publish(bundle[0], github)
    assert result.exit_code == 1 and "HTTP 302" in result.output
    assert len(github.requests) == 2  # the redirect was not followed


def test_publish_checks_its_arguments_before_any_request(
    bundle: tuple[Path, dict[str, Any]],
) -> None:
    out = bundle[0]
    for kwargs, message in [
        ({"api_url": "http://example.com"}, "refusing to send a token over plain http"),
        ({"repo": "someone"}, "--repo must be OWNER/NAME"),
        ({"tag": "v 1"}, "is not a valid tag name"),
        ({"tag": "v2.0.0"}, "the bundle was built as v1.0.0, not v2.0.0"),
    ]:
        args = {"repo": "someone/mixednet", "tag": "v1.0.0", "token": "t",
                "api_url": "http://127.0.0.1:9", **kwargs}  # fmt: skip
        with pytest.raises(ReleaseError, match=message):
            publish_release(out, **args)


# ------------------------------------------------------------- the export registry

"""A small Hugging Face Hub on 127.0.0.1: the HTTP endpoints huggingface_hub's real client
calls to create a repo and a branch, upload a folder (preupload, LFS batch + PUT, the ndjson commit,
pull requests) and download it (repo info, tree, resolve), with the Hub's error headers.

Repos are git-like: each branch names a commit, each commit maps paths to bytes. Files
whose name ends like the Hub's default ``.gitattributes`` LFS patterns (.safetensors,
.onnx, ...) go through LFS (sha256 objects), the rest are regular base64 blobs in the
commit. A repo created private answers 401 RepoNotFound without the owner's token, as
the Hub does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

LFS_SUFFIXES = (".safetensors", ".onnx", ".bin", ".pt", ".pth", ".gz")
MAX_BODY = 64 * 1024 * 1024


def git_blob_oid(data: bytes) -> str:
    """The git blob id the Hub reports for a regular file."""
    return hashlib.sha1(b"blob %d\0" % len(data) + data).hexdigest()


@dataclass
class Repo:
    """One model repo: branches -> commit ids, commits -> files."""

    private: bool
    branches: dict[str, str] = field(default_factory=dict)
    commits: dict[str, dict[str, bytes]] = field(default_factory=dict)
    messages: dict[str, str] = field(default_factory=dict)
    pulls: list[str] = field(default_factory=list)  # the branch each pull request commits to

    def commit(self, branch: str, files: dict[str, bytes], message: str) -> str:
        """Record a commit of ``files`` on ``branch``; return its id."""
        listing = json.dumps({p: hashlib.sha256(d).hexdigest() for p, d in sorted(files.items())})
        text = f"{branch}\n{message}\n{listing}\n{len(self.commits)}"
        oid = hashlib.sha1(text.encode()).hexdigest()
        self.commits[oid], self.messages[oid], self.branches[branch] = files, message, oid
        return oid


@dataclass
class FakeHub:
    """The server's state: repos, LFS objects, the token it accepts, what it was asked."""

    url: str = ""
    token: str = "hf_secret"  # the one user's token (owner of every namespace)
    repos: dict[str, Repo] = field(default_factory=dict)
    lfs: dict[str, bytes] = field(default_factory=dict)
    requests: list[tuple[str, str]] = field(default_factory=list)  # (method, path)
    tamper: dict[str, bytes] = field(default_factory=dict)  # path -> bytes served instead
    lock: threading.Lock = field(default_factory=threading.Lock)

    def files(self, repo_id: str, revision: str = "main") -> dict[str, bytes]:
        """The files at ``revision`` (a branch or commit id) of ``repo_id``."""
        repo = self.repos[repo_id]
        return repo.commits[repo.branches.get(revision, revision)]


class HubError(Exception):
    """An HTTP error answer with the Hub's X-Error-Code header."""

    def __init__(self, status: int, code: str | None, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.extra = status, code, message, extra


def make_handler(hub: FakeHub) -> type[BaseHTTPRequestHandler]:
    """The request handler class serving ``hub``."""

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, format: str, *args: Any) -> None:  # quiet
            pass

        def do_GET(self) -> None:
            self.serve("GET")

        def do_HEAD(self) -> None:
            self.serve("HEAD")

        def do_POST(self) -> None:
            self.serve("POST")

        def do_PUT(self) -> None:
            self.serve("PUT")

        def serve(self, method: str) -> None:
            parts = urlsplit(self.path)
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(min(length, MAX_BODY))
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            path = unquote(parts.path)
            with hub.lock:
                hub.requests.append((method, path))
                try:
                    status, headers, reply = route(hub, method, path, query, body, self.user())
                except HubError as error:
                    status = error.status
                    reply = json.dumps({"error": error.message, **error.extra}).encode()
                    headers = {"Content-Type": "application/json"}
                    if error.code:
                        headers["X-Error-Code"] = error.code
                        headers["X-Error-Message"] = error.message
            self.send_response(status)
            for name, value in headers.items():
                self.send_header(name, value)
            self.send_header("Content-Length", str(len(reply)))
            self.end_headers()
            if method != "HEAD":
                self.wfile.write(reply)

        def user(self) -> bool:
            """Whether the request carries the owner's token (anything else: anonymous)."""
            auth = self.headers.get("Authorization", "")
            if auth.startswith("Bearer ") and auth.removeprefix("Bearer ") != hub.token:
                raise_invalid_token()
            return auth == f"Bearer {hub.token}"

    return Handler


def raise_invalid_token() -> None:
    raise HubError(401, None, "Invalid credentials in Authorization header")


def _json(reply: Any, status: int = 200) -> tuple[int, dict[str, str], bytes]:
    return status, {"Content-Type": "application/json"}, json.dumps(reply).encode()


def _repo(hub: FakeHub, repo_id: str, user: bool) -> Repo:
    repo = hub.repos.get(repo_id)
    if repo is None or (repo.private and not user):
        # The Hub does not tell a missing repo from a private one.
        raise HubError(401 if not user else 404, "RepoNotFound", "Repository not found")
    return repo


def _revision(repo: Repo, revision: str) -> str:
    if revision in repo.branches:
        return repo.branches[revision]
    if revision in repo.commits:
        return revision
    raise HubError(404, "RevisionNotFound", f"Invalid rev id: {revision}")


def route(
    hub: FakeHub, method: str, path: str, query: dict[str, str], body: bytes, user: bool
) -> tuple[int, dict[str, str], bytes]:
    """Answer one request like the Hub: (status, headers, body)."""
    segments = path.strip("/").split("/")
    if (method, path) == ("POST", "/api/repos/create"):
        return _create(hub, json.loads(body), user)
    if (method, path) == ("POST", "/api/validate-yaml"):
        return _json({"errors": [], "warnings": []})
    if segments[:2] == ["api", "models"] and len(segments) >= 4:
        repo_id, action, rest = "/".join(segments[2:4]), segments[4:5], "/".join(segments[5:])
        repo = _repo(hub, repo_id, user)
        if method == "GET" and action == ["revision"]:
            return _info(hub, repo_id, repo, _revision(repo, rest))
        if method == "GET" and action == ["tree"]:
            return _tree(repo, _revision(repo, rest))
        if not user:
            raise_invalid_token()
        if method == "POST" and action == ["preupload"]:
            return _preupload(json.loads(body))
        if method == "POST" and action == ["commit"]:
            return _commit(hub, repo_id, repo, rest, query.get("create_pr") == "1", body)
        if method == "POST" and action == ["branch"]:
            if rest in repo.branches:
                raise HubError(409, None, f"Reference {rest} already exists")
            start = (json.loads(body) if body else {}).get("startingPoint") or "main"
            repo.branches[rest] = _revision(repo, start)
            return _json({})
    if len(segments) == 6 and segments[1].endswith(".git") and segments[2:] == [
        "info", "lfs", "objects", "batch"
    ]:  # fmt: skip
        if not user:
            raise_invalid_token()
        return _lfs_batch(hub, json.loads(body))
    if method == "PUT" and segments[0] == "lfs-upload" and len(segments) == 2:
        if hashlib.sha256(body).hexdigest() != segments[1]:
            raise HubError(400, None, "uploaded content does not match its oid")
        hub.lfs[segments[1]] = body
        return _json({})
    if method in ("GET", "HEAD") and len(segments) >= 5 and segments[2] == "resolve":
        repo_id = "/".join(segments[:2])
        repo = _repo(hub, repo_id, user)
        commit = _revision(repo, segments[3])
        return _resolve(hub, repo, commit, "/".join(segments[4:]))
    raise HubError(404, None, f"no route for {method} {path}")


def _create(hub: FakeHub, payload: dict[str, Any], user: bool) -> tuple[int, dict, bytes]:
    if not user:
        raise_invalid_token()
    repo_id = f"{payload['organization']}/{payload['name']}"
    if repo_id in hub.repos:
        # As the Hub: the answer still names the repo (create_repo(exist_ok=True) reads it).
        raise HubError(409, None, "You already created this model repo",
                       url=f"{hub.url}/{repo_id}")  # fmt: skip
    repo = hub.repos[repo_id] = Repo(private=payload.get("visibility") == "private")
    repo.commit("main", {".gitattributes": b"*.safetensors filter=lfs\n"}, "initial commit")
    return _json({"url": f"{hub.url}/{repo_id}", "name": repo_id})


def _preupload(payload: dict[str, Any]) -> tuple[int, dict, bytes]:
    files = [
        {"path": f["path"], "shouldIgnore": False, "oid": None,
         "uploadMode": "lfs" if f["path"].endswith(LFS_SUFFIXES) else "regular"}
        for f in payload["files"]
    ]  # fmt: skip
    return _json({"files": files, "commitOid": None})


def _lfs_batch(hub: FakeHub, payload: dict[str, Any]) -> tuple[int, dict, bytes]:
    objects = []
    for obj in payload["objects"]:
        entry: dict[str, Any] = {"oid": obj["oid"], "size": obj["size"]}
        if obj["oid"] not in hub.lfs:  # already stored: no action, the client skips it
            entry["actions"] = {"upload": {"href": f"{hub.url}/lfs-upload/{obj['oid']}"}}
        objects.append(entry)
    return _json({"transfer": "basic", "objects": objects})


def _commit(
    hub: FakeHub, repo_id: str, repo: Repo, revision: str, create_pr: bool, body: bytes
) -> tuple[int, dict, bytes]:
    lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
    header, operations = lines[0], lines[1:]
    if header["key"] != "header":
        raise HubError(400, None, "the first line must be the header")
    files = dict(repo.commits[_revision(repo, revision)])
    for op in operations:
        value = op["value"]
        if op["key"] == "file":
            files[value["path"]] = base64.b64decode(value["content"])
        elif op["key"] == "lfsFile":
            if value["oid"] not in hub.lfs:
                raise HubError(422, None, f"LFS object {value['oid']} was never uploaded")
            files[value["path"]] = hub.lfs[value["oid"]]
        else:
            raise HubError(400, None, f"operation {op['key']} is not supported here")
    branch = revision
    if create_pr:
        repo.pulls.append(branch := f"refs/pr/{len(repo.pulls) + 1}")
    oid = repo.commit(branch, files, header["value"]["summary"])
    pull = f"{hub.url}/{repo_id}/discussions/{len(repo.pulls)}" if create_pr else None
    return _json({"commitUrl": f"{hub.url}/{repo_id}/commit/{oid}", "commitOid": oid,
                  "pullRequestUrl": pull, "success": True})  # fmt: skip


def _info(hub: FakeHub, repo_id: str, repo: Repo, commit: str) -> tuple[int, dict, bytes]:
    siblings = [{"rfilename": name} for name in sorted(repo.commits[commit])]
    return _json({"id": repo_id, "modelId": repo_id, "sha": commit, "private": repo.private,
                  "siblings": siblings, "tags": [], "downloads": 0, "likes": 0})  # fmt: skip


def _tree(repo: Repo, commit: str) -> tuple[int, dict, bytes]:
    entries = []
    for name, data in sorted(repo.commits[commit].items()):
        entry: dict[str, Any] = {"type": "file", "path": name, "size": len(data),
                                 "oid": git_blob_oid(data)}  # fmt: skip
        if name.endswith(LFS_SUFFIXES):
            entry["lfs"] = {"oid": hashlib.sha256(data).hexdigest(), "size": len(data),
                            "pointerSize": 134}  # fmt: skip
        entries.append(entry)
    return _json(entries)


def _resolve(hub: FakeHub, repo: Repo, commit: str, name: str) -> tuple[int, dict, bytes]:
    files = repo.commits[commit]
    if name not in files:
        raise HubError(404, "EntryNotFound", f"{name} does not exist on this revision")
    data = files[name]
    etag = hashlib.sha256(data).hexdigest() if name.endswith(LFS_SUFFIXES) else git_blob_oid(data)
    served = hub.tamper.get(name, data)
    headers = {"X-Repo-Commit": commit, "ETag": f'"{etag}"',
               "Content-Type": "application/octet-stream"}  # fmt: skip
    return 200, headers, served


@contextmanager
def serve() -> Iterator[FakeHub]:
    """A running fake Hub on an ephemeral loopback port; stopped on exit."""
    hub = FakeHub()
    server = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(hub))
    hub.url = f"http://127.0.0.1:{server.server_address[1]}"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield hub
    finally:
        server.shutdown()
        server.server_close()
        thread.join()

"""Publishing a release bundle as a GitHub release, over GitHub's REST API (httpx2).

``publish_release`` re-checks every file against the bundle's manifest, then:

1. creates the release as a **draft** (``POST /repos/{owner}/{repo}/releases``);
2. uploads every file to the returned ``upload_url``, retrying transient failures
   (connection errors, HTTP 429 and 5xx) a few times with a short back-off;
3. lists the draft's assets (``GET .../releases/{id}/assets``) and checks that each file
   is there with its size (and its sha256 where GitHub reports a ``digest``);
4. only then publishes it (``PATCH .../releases/{id}`` with ``draft: false``).

A failure at any step raises ``ReleaseError`` and leaves an unpublished draft (the message
names it), never a half-published release. The token is sent only over https (or to a
loopback test server), only to the API host or its GitHub upload host, and never across
redirects (httpx2 follows none here; a 3xx is an error).
"""

from __future__ import annotations

import ipaddress
import json
import logging
import re
import time
import urllib.parse
from pathlib import Path
from typing import Any

import httpx2

from tritondsl.export.artifact import MAX_CONFIG_BYTES, read_file
from tritondsl.export.release import MANIFEST_NAME, TAG, ReleaseError, verify_bundle

GITHUB_API = "https://api.github.com"
# GitHub serves uploads from another host than the API; the token may go to both.
_UPLOAD_HOSTS = {"api.github.com": "uploads.github.com"}
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
MAX_RESPONSE_BYTES = 4 * 1024 * 1024
ATTEMPTS = 3  # per request, for transient failures
BACKOFF_S = 0.5  # times the attempt number
log = logging.getLogger(__name__)


class _Transient(Exception):
    """A failure worth retrying (connection, 429, 5xx)."""


def publish_release(
    bundle_dir: str | Path,
    repo: str,
    tag: str,
    token: str,
    api_url: str = GITHUB_API,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Create GitHub release ``tag`` in ``repo`` from the checked bundle; URLs back."""
    if not _REPO.fullmatch(repo) or ".." in repo:
        raise ReleaseError(f"--repo must be OWNER/NAME, got {repo!r}")
    if not TAG.fullmatch(tag):
        raise ReleaseError(f"--tag {tag!r} is not a valid tag name")
    if not token:
        raise ReleaseError("no GitHub token given")
    api = api_url.rstrip("/")
    _check_url(api, allowed_hosts=None)
    manifest, contents = verify_bundle(bundle_dir)
    if manifest.get("version") not in (None, tag):
        raise ReleaseError(f"the bundle was built as {manifest['version']}, not {tag}")
    manifest_bytes = read_file(Path(bundle_dir), MANIFEST_NAME, MAX_CONFIG_BYTES)
    # The manifest goes last: a release that has it has every file it lists.
    files = [*sorted(contents.items()), (MANIFEST_NAME, manifest_bytes)]
    body = {"tag_name": tag, "name": f"{manifest.get('model', 'model')} {tag}",
            "body": release_notes(manifest), "draft": True, "prerelease": False}  # fmt: skip
    with _client(api, token, timeout) as client:
        release = _call(client, "POST", f"{api}/repos/{repo}/releases", json=body)
        draft = f"draft release {release.get('id')} ({release.get('html_url')})"
        try:
            assets = _upload_all(client, api, release, files)
            _check_assets(client, f"{api}/repos/{repo}/releases/{release.get('id')}", files)
            published = _call(client, "PATCH", f"{api}/repos/{repo}/releases/{release.get('id')}",
                              json={"draft": False})  # fmt: skip
        except ReleaseError as error:
            raise ReleaseError(
                f"{error}; {draft} is left unpublished: delete it or rerun"
            ) from None
    return {"id": published.get("id"), "html_url": published.get("html_url"), "assets": assets}


def _client(api: str, token: str, timeout: float) -> httpx2.Client:
    from tritondsl import __version__

    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": f"tritondsl/{__version__}",
    }
    loopback = _is_loopback(urllib.parse.urlsplit(api).hostname or "")
    # No redirects (they would replay the token elsewhere); a local server is never proxied.
    return httpx2.Client(headers=headers, timeout=timeout, follow_redirects=False,
                         trust_env=not loopback)  # fmt: skip


def _upload_all(
    client: httpx2.Client, api: str, release: dict[str, Any], files: list[tuple[str, bytes]]
) -> list[str]:
    template = release.get("upload_url")
    if not isinstance(template, str):
        raise ReleaseError("GitHub's reply has no upload_url")
    upload = template.split("{", 1)[0]  # drop the URI template "{?name,label}"
    api_host = urllib.parse.urlsplit(api).hostname or ""
    _check_url(upload, allowed_hosts={api_host, _UPLOAD_HOSTS.get(api_host, api_host)})
    from tritondsl.progress import task

    assets = []
    with task("uploading release assets", total=len(files)) as advance:
        for name, data in files:
            asset = _call(client, "POST", upload, params={"name": name}, content=data,
                          headers={"Content-Type": "application/octet-stream"})  # fmt: skip
            assets.append(asset.get("browser_download_url", name))
            advance(1)
    return assets


def _check_assets(client: httpx2.Client, release_url: str, files: list[tuple[str, bytes]]) -> None:
    """Every file is an asset of the draft, with its size (and sha256 when GitHub says)."""
    import hashlib

    listed = _call(client, "GET", f"{release_url}/assets", params={"per_page": 100})
    found = {a.get("name"): a for a in listed if isinstance(a, dict)} if isinstance(
        listed, list) else {}  # fmt: skip
    for name, data in files:
        asset = found.get(name)
        if asset is None:
            raise ReleaseError(f"{name} is not among the release's assets after upload")
        if asset.get("size") != len(data):
            raise ReleaseError(f"{name}: GitHub holds {asset.get('size')} bytes, not {len(data)}")
        digest = asset.get("digest")
        if isinstance(digest, str) and digest != f"sha256:{hashlib.sha256(data).hexdigest()}":
            raise ReleaseError(f"{name}: GitHub's digest {digest} is not the file's sha256")


def _call(client: httpx2.Client, method: str, url: str, **kwargs: Any) -> Any:
    """One request, retried on transient failures; the JSON reply or ReleaseError."""
    shown = f"{method} {url.split('?', 1)[0]}"
    for attempt in range(1, ATTEMPTS + 1):
        try:
            return _once(client, method, url, shown, **kwargs)
        except _Transient as error:
            if attempt == ATTEMPTS:
                raise ReleaseError(f"{shown}: {error} (after {ATTEMPTS} attempts)") from None
            log.warning("%s: %s; retrying (%d/%d)", shown, error, attempt + 1, ATTEMPTS)
            time.sleep(BACKOFF_S * attempt)
    raise AssertionError("unreachable")


def _once(client: httpx2.Client, method: str, url: str, shown: str, **kwargs: Any) -> Any:
    try:
        response = client.request(method, url, **kwargs)
    except httpx2.TransportError as error:
        raise _Transient(str(error) or type(error).__name__) from None
    data = response.content[:MAX_RESPONSE_BYTES]
    if response.status_code == 429 or response.status_code >= 500:
        raise _Transient(f"HTTP {response.status_code}")
    if not response.is_success:
        raise ReleaseError(f"{shown}: HTTP {response.status_code}: {_message(response, data)}")
    try:
        reply = json.loads(data)
    except ValueError:
        raise ReleaseError(f"{shown}: the reply is not JSON") from None
    if not isinstance(reply, dict | list):
        raise ReleaseError(f"{shown}: the reply is not a JSON object")
    return reply


def release_notes(manifest: dict[str, Any]) -> str:
    """Markdown release body: sizes, parity and every file's sha256."""
    sizes = manifest.get("sizes", {})
    lines = [
        f"{manifest.get('model')} built with tritondsl {manifest.get('tritondsl_version')}.",
        "",
        f"- model.safetensors: {sizes.get('safetensors_bytes', 0):,} bytes "
        f"({sizes.get('fp32_over_safetensors')}x smaller than fp32)",
        f"- model.onnx (int2): {sizes.get('onnx_bytes', 0):,} bytes, "
        f"{sizes.get('onnx_code_bits_per_weight')} bits per ternary weight",
        *(f"- parity, {c.get('name')}: max abs error {c.get('max_abs'):.3g}"
          for c in manifest.get("parity", [])),
        "",
        "| file | bytes | sha256 |",
        "|---|---:|---|",
        *(f"| {name} | {e.get('bytes', 0):,} | `{e.get('sha256')}` |"
          for name, e in sorted(manifest.get("files", {}).items())),
    ]  # fmt: skip
    return "\n".join(lines)


def _check_url(url: str, allowed_hosts: set[str] | None) -> None:
    """Refuse URLs a token must not go to: plain http off loopback, or a foreign host."""
    parts = urllib.parse.urlsplit(url)
    host = parts.hostname or ""
    if parts.scheme not in ("https", "http") or not host:
        raise ReleaseError(f"{url}: not an http(s) URL")
    if parts.scheme == "http" and not _is_loopback(host):
        raise ReleaseError(f"{url}: refusing to send a token over plain http")
    if allowed_hosts is not None and host not in allowed_hosts:
        raise ReleaseError(f"upload URL {url} is not on {sorted(allowed_hosts)}; refusing")


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def _message(response: httpx2.Response, data: bytes) -> str:
    """GitHub's ``message`` (and first validation error) from an error reply."""
    try:
        reply = json.loads(data or b"{}")
    except ValueError:
        return response.reason_phrase
    if not isinstance(reply, dict):
        return response.reason_phrase
    detail = reply.get("errors")
    first = detail[0] if isinstance(detail, list) and detail else None
    extra = f" ({first.get('code', first)})" if isinstance(first, dict) else ""
    return f"{reply.get('message', response.reason_phrase)}{extra}"

"""Publishing a release bundle as a GitHub release, over GitHub's REST API.

``publish_release`` re-checks every file against the bundle's manifest, then creates the
release (``POST /repos/{owner}/{repo}/releases``) and uploads each file to the returned
``upload_url``. The token is sent only over https (or to a loopback test server), only to
the API host or its GitHub upload host, and never across redirects.
"""

from __future__ import annotations

import ipaddress
import json
import re
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

from tritondsl.export.artifact import MAX_CONFIG_BYTES, read_file
from tritondsl.export.release import MANIFEST_NAME, TAG, ReleaseError, verify_bundle

GITHUB_API = "https://api.github.com"
# GitHub serves uploads from another host than the API; the token may go to both.
_UPLOAD_HOSTS = {"api.github.com": "uploads.github.com"}
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


def publish_release(
    bundle_dir: str | Path,
    repo: str,
    tag: str,
    token: str,
    api_url: str = GITHUB_API,
    timeout: float = 60.0,
) -> dict[str, Any]:
    """Create GitHub release ``tag`` in ``repo`` and upload the checked bundle; URLs back."""
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
    body = {
        "tag_name": tag,
        "name": f"{manifest.get('model', 'model')} {tag}",
        "body": release_notes(manifest),
        "draft": False,
        "prerelease": False,
    }
    release = _request(f"{api}/repos/{repo}/releases", token, json.dumps(body).encode(),
                       "application/json", timeout)  # fmt: skip
    template = release.get("upload_url")
    if not isinstance(template, str):
        raise ReleaseError("GitHub's reply has no upload_url")
    upload = template.split("{", 1)[0]  # drop the URI template "{?name,label}"
    api_host = urllib.parse.urlsplit(api).hostname or ""
    _check_url(upload, allowed_hosts={api_host, _UPLOAD_HOSTS.get(api_host, api_host)})
    assets = []
    manifest_bytes = read_file(Path(bundle_dir), MANIFEST_NAME, MAX_CONFIG_BYTES)
    # The manifest goes last: a release that has it has every file it lists.
    for name, data in [*sorted(contents.items()), (MANIFEST_NAME, manifest_bytes)]:
        url = f"{upload}?{urllib.parse.urlencode({'name': name})}"
        asset = _request(url, token, data, "application/octet-stream", timeout)
        assets.append(asset.get("browser_download_url", name))
    return {"id": release.get("id"), "html_url": release.get("html_url"), "assets": assets}


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


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    """Redirects would replay the Authorization header elsewhere; treat them as errors."""

    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None


def _request(url: str, token: str, body: bytes, content_type: str, timeout: float) -> dict:
    """POST ``body``; the JSON reply, or ReleaseError with GitHub's message (never the token)."""
    from tritondsl import __version__

    headers = {
        "Authorization": f"Bearer {token}",
        "Accept": "application/vnd.github+json",
        "X-GitHub-Api-Version": "2022-11-28",
        "User-Agent": f"tritondsl/{__version__}",
        "Content-Type": content_type,
    }
    handlers: list[Any] = [_NoRedirect()]
    if _is_loopback(urllib.parse.urlsplit(url).hostname or ""):
        handlers.append(urllib.request.ProxyHandler({}))  # a local server is never proxied
    opener = urllib.request.build_opener(*handlers)
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    shown = url.split("?", 1)[0]
    try:
        with opener.open(request, timeout=timeout) as response:
            data = response.read(MAX_RESPONSE_BYTES)
    except urllib.error.HTTPError as error:
        raise ReleaseError(f"POST {shown}: HTTP {error.code}: {_message(error)}") from None
    except (urllib.error.URLError, OSError) as error:
        reason = getattr(error, "reason", error)
        raise ReleaseError(f"POST {shown}: {reason}") from None
    try:
        reply = json.loads(data)
    except ValueError:
        raise ReleaseError(f"POST {shown}: the reply is not JSON") from None
    if not isinstance(reply, dict):
        raise ReleaseError(f"POST {shown}: the reply is not a JSON object")
    return reply


def _message(error: urllib.error.HTTPError) -> str:
    """GitHub's ``message`` (and first validation error) from an error reply."""
    try:
        reply = json.loads(error.read(MAX_RESPONSE_BYTES) or b"{}")
    except (ValueError, OSError):
        return str(error.reason)
    if not isinstance(reply, dict):
        return str(error.reason)
    detail = reply.get("errors")
    first = detail[0] if isinstance(detail, list) and detail else None
    extra = f" ({first.get('code', first)})" if isinstance(first, dict) else ""
    return f"{reply.get('message', error.reason)}{extra}"



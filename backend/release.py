"""Release bundles: one flat folder holding everything a release ships, and its upload.

``build_release`` writes (flat, so every file is one GitHub release asset)::

    config.json  model.safetensors  model.tdsl  README.md   the Hub folder (from_pretrained)
    model.onnx                                             int2 ONNX, checked in onnxruntime
    manifest.json                                          sha256 and bytes of every other file,
                                                           measured sizes and parity

``publish_release`` re-checks every file against the manifest, then creates the release
(``POST /repos/{owner}/{repo}/releases``) and uploads each file to the returned
``upload_url``, with ``urllib`` only. The token is sent only over https (or to a loopback
test server), only to the API host or its GitHub upload host, and never across redirects.
"""

from __future__ import annotations

import copy
import ipaddress
import json
import os
import re
import shutil
import urllib.error
import urllib.parse
import urllib.request
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch
from torch import Tensor, nn

from tritondsl.backend.artifact import (
    CONFIG_NAME,
    MAX_CONFIG_BYTES,
    WEIGHTS_NAME,
    file_entry,
    parse_config,
    read_file,
    sha256,
    write_atomically,
)
from tritondsl.backend.deploy import deploy
from tritondsl.backend.hub import from_pretrained, save_pretrained, write_model_card

if TYPE_CHECKING:
    from tritondsl.export import ExportJob, ExportReport

BUNDLE_FORMAT = 1
MANIFEST_NAME = "manifest.json"
ONNX_NAME = "model.onnx"
GITHUB_API = "https://api.github.com"
# GitHub serves uploads from another host than the API; the token may go to both.
_UPLOAD_HOSTS = {"api.github.com": "uploads.github.com"}
_REPO = re.compile(r"[A-Za-z0-9][\w.-]*/[A-Za-z0-9][\w.-]*")
_TAG = re.compile(r"[A-Za-z0-9][\w.+-]*")
_ASSET = re.compile(r"[A-Za-z0-9][\w.+-]*")
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


class ReleaseError(RuntimeError):
    """A bundle cannot be built, does not match its manifest, or GitHub refused it."""


# --------------------------------------------------------------------------- building


def build_release(
    model: nn.Module,
    out_dir: str | Path,
    example_input: Tensor,
    pack: str = "2bit",
    version: str | None = None,
) -> dict[str, Any]:
    """Write a release bundle for ``model`` into a new or empty ``out_dir``; return the manifest."""
    out = Path(out_dir)
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise ReleaseError(f"{out} exists and is not an empty folder")
    if version is not None and not _TAG.fullmatch(version):
        raise ReleaseError(f"version {version!r} is not a valid tag")
    from tritondsl.export import to_onnx  # lazy: ONNX export pulls in onnx

    # One deployed CPU copy serves every step (each would otherwise deploy its own).
    deployed = deploy(copy.deepcopy(model).to("cpu")).eval()
    example = example_input.detach().to("cpu")
    tmp = out.with_name(f".{out.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        save_pretrained(deployed, tmp, pack=pack)
        report = to_onnx(deployed, tmp / ONNX_NAME, example, weights="int2")
        if not report.ok:
            raise ReleaseError(
                "the ONNX file does not match the model:\n" + "\n".join(report.lines())
            )
        hub_check = _hub_parity(deployed, tmp, example)
        write_model_card(tmp)  # again, now that model.onnx is there (tag and size)
        manifest = _manifest(tmp, report, hub_check, version, list(example.shape))
        text = json.dumps(manifest, indent=2, allow_nan=False) + "\n"
        write_atomically(tmp / MANIFEST_NAME, text.encode())
        if out.exists():
            out.rmdir()
        tmp.rename(out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return manifest


def _hub_parity(deployed: nn.Module, folder: Path, example: Tensor) -> dict[str, Any]:
    """Reload the Hub folder and compare its output with the deployed model's."""
    with torch.no_grad():
        expected = deployed(example)
        got = from_pretrained(folder)(example)
    max_abs = float((got - expected).abs().max()) if expected.numel() else 0.0
    if not max_abs == 0.0:
        raise ReleaseError(f"the Hub folder reloads with max abs error {max_abs:g}, expected 0")
    return {"name": "from_pretrained", "max_abs": max_abs, "ok": True}


def _manifest(
    folder: Path, report: ExportReport, hub_check: dict, version: str | None, shape: list[int]
) -> dict[str, Any]:
    config = parse_config(read_file(folder, CONFIG_NAME, MAX_CONFIG_BYTES))
    files = {p.name: file_entry(p.read_bytes()) for p in sorted(folder.iterdir()) if p.is_file()}
    fp32, weights, onnx = config["fp32_bytes"], files[WEIGHTS_NAME], files[ONNX_NAME]
    stats = report.stats
    return {
        "bundle_format": BUNDLE_FORMAT,
        "tritondsl_version": config["tritondsl_version"],
        "version": version,
        "model": config["model"],
        "params": config["params"],
        "precision": config["precision"],
        "packing": config["packing"],
        "example_input_shape": shape,
        "files": files,
        "sizes": {
            "fp32_state_dict_bytes": fp32,
            "safetensors_bytes": weights["bytes"],
            "onnx_bytes": onnx["bytes"],
            "fp32_over_safetensors": round(fp32 / weights["bytes"], 3),
            "fp32_over_onnx": round(fp32 / onnx["bytes"], 3),
            "onnx_ternary_weights": stats.ternary_weights if stats else 0,
            "onnx_ternary_code_bytes": stats.code_bytes if stats else 0,
            "onnx_ternary_scale_bytes": stats.scale_bytes if stats else 0,
            "onnx_code_bits_per_weight": round(stats.code_bits_per_weight, 4) if stats else 0,
        },
        "onnx": {"weights": report.weights, "opset": report.opset, "ir": report.ir_version},
        "parity": [
            *({"name": c.name, "max_abs": c.max_abs, "rel": c.rel, "ok": c.ok}
              for c in report.checks),
            hub_check,
        ],
    }  # fmt: skip


# --------------------------------------------------------------------------- checking


def verify_bundle(bundle_dir: str | Path) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The manifest and every file's bytes, after checking each sha256 and size."""
    folder = Path(bundle_dir)
    try:
        manifest = json.loads(read_file(folder, MANIFEST_NAME, MAX_CONFIG_BYTES))
    except (ValueError, RecursionError) as error:  # ArtifactError, JSON, UTF-8
        raise ReleaseError(f"{MANIFEST_NAME}: {error}") from None
    if not isinstance(manifest, dict) or manifest.get("bundle_format") != BUNDLE_FORMAT:
        raise ReleaseError(f"{MANIFEST_NAME}: not a bundle_format {BUNDLE_FORMAT} manifest")
    listed = manifest.get("files")
    if not isinstance(listed, dict) or not listed:
        raise ReleaseError(f"{MANIFEST_NAME}: 'files' must map file names to sha256 and bytes")
    present = {p.name for p in folder.iterdir()} - {MANIFEST_NAME}
    if present - listed.keys():
        # A release is exactly what was checked; a stray file would ship unverified.
        raise ReleaseError(f"{sorted(present - listed.keys())} not listed in {MANIFEST_NAME}")
    contents: dict[str, bytes] = {}
    for name, entry in sorted(listed.items()):
        if not _ASSET.fullmatch(name) or name == MANIFEST_NAME:
            raise ReleaseError(f"{MANIFEST_NAME}: {name!r} is not a plain file name")
        if not isinstance(entry, dict) or not isinstance(entry.get("bytes"), int):
            raise ReleaseError(f"{MANIFEST_NAME}: files.{name} must be {{sha256, bytes}}")
        try:
            data = read_file(folder, name, entry["bytes"])
        except ValueError as error:  # ArtifactError: missing, too large, not a file
            raise ReleaseError(str(error)) from None
        if len(data) != entry["bytes"] or sha256(data) != entry.get("sha256"):
            raise ReleaseError(f"{name}: sha256/size differ from {MANIFEST_NAME}; refusing")
        contents[name] = data
    return manifest, contents


# --------------------------------------------------------------------------- publishing


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
    if not _TAG.fullmatch(tag):
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


# --------------------------------------------------------------------------- export CLI


def export_hub(job: ExportJob) -> ExportReport:
    """``tritondsl export --format hub``: save_pretrained, then reload and compare."""
    from tritondsl.export import ExportReport

    pack = job.weights or "2bit"
    deployed = deploy(copy.deepcopy(job.model).to("cpu")).eval()
    folder = save_pretrained(deployed, job.output, pack=pack)
    checks = []
    if job.verify:
        check = _hub_parity(deployed, folder, job.example_input.detach().to("cpu"))
        checks.append(_output_check(check))
    size = (folder / WEIGHTS_NAME).stat().st_size
    return ExportReport("hub", folder, size, checks, weights=pack)


def export_release(job: ExportJob) -> ExportReport:
    """``tritondsl export --format release``: build_release into the output folder."""
    from tritondsl.export import ExportReport

    pack = job.weights or "2bit"
    manifest = build_release(job.model, job.output, job.example_input, pack=pack)
    total = sum(e["bytes"] for e in manifest["files"].values())
    checks = [_output_check(c) for c in manifest["parity"]]
    notes = [f"bundle: {', '.join(sorted(manifest['files']))} + {MANIFEST_NAME}"]
    return ExportReport("release", Path(job.output), total, checks, weights=pack, notes=notes)


def _output_check(check: dict[str, Any]) -> Any:
    from tritondsl.backend.onnx_verify import OutputCheck

    return OutputCheck(check["name"], check["max_abs"], check.get("rel", 0.0), check["ok"])

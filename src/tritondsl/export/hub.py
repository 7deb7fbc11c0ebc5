"""Hugging Face Hub folders: ``save_pretrained``, ``from_pretrained``, ``push_to_hub``.

A folder holds ``model.tdsl`` (the architecture), ``model.safetensors`` (the deployed
state_dict: packed trits, scales, full-precision tensors), ``config.json`` (what to build
and what every stored tensor must look like) and ``README.md`` (a model card).

Loading never unpickles anything and never executes Python taken from the artifact. The
architecture is declarative .tdsl text: our front end checks it (it rejects anything
outside the language, including identifiers unsafe in generated Python) and our own code
generator turns it into the classes that run; the weights are safetensors, raw bytes under
a JSON header. So a hostile folder can at worst be refused or yield wrong numbers, never
run its author's code (unlike ``torch.load`` of a pickle, which can run anything).
Pickle-based files (``.bin``, ``.pt``, ``.pth``, ``.pkl``...) in a folder are refused, not
skipped, so nobody mistakes them for checked weights.

Every problem with an artifact raises ``ArtifactError`` naming the file and tensor, and
is found before a model is returned; modules generated during a failed load are removed.
"""

from __future__ import annotations

import contextlib
import copy
import linecache
import math
import os
import re
import sys
from collections.abc import Iterator, Mapping
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load as load_safetensors
from safetensors.torch import save as save_safetensors
from torch import nn

from tritondsl.backend.deploy import deploy
from tritondsl.backend.layers import LEARNED_SCALE_NAMES, QuantModule
from tritondsl.backend.precision import (
    A32,
    FP32,
    NAMED,
    WeightPrecision,
    activation_dict,
    ternary_or_default,
)
from tritondsl.backend.quantizers import is_ternary
from tritondsl.compiler.check import check_source
from tritondsl.compiler.diagnostics import CompileError
from tritondsl.compiler.transformer import linear_weights
from tritondsl.compiler.values import TensorDecl
from tritondsl.export.artifact import (
    CARD_FIELDS,
    CARD_NAME,
    CONFIG_NAME,
    FORMAT,
    FORMAT_VERSION,
    MAX_CONFIG_BYTES,
    MODEL_TYPE,
    PACKINGS,
    SOURCE_NAME,
    TOKENIZER_NAME,
    WEIGHTS_NAME,
    ArtifactAuthError,
    ArtifactError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    decode_param,
    dtype_name,
    dump_config,
    encode_param,
    file_entry,
    parse_config,
    read_file,
    sha256,
)
from tritondsl.export.model_card import render_model_card
from tritondsl.files import write_atomically
from tritondsl.kernels.packing import (
    PackingError,
    base3_to_2bit,
    pack_base3,
    unpack,
    validate_packed,
)
from tritondsl.program import compile as compile_tdsl
from tritondsl.program import where_declared

__all__ = ["ArtifactError", "fp32_bytes", "from_pretrained", "push_to_hub", "read_tokenizer",
           "save_pretrained", "write_model_card"]  # fmt: skip
# Formats whose loaders can run code; a folder holding one is refused (see module doc).
PICKLE_SUFFIXES = (".bin", ".pt", ".pth", ".pkl", ".pickle", ".ckpt", ".joblib")
MAX_FOLDER_ENTRIES = 10_000
_REPO_ID = re.compile(r"[A-Za-z0-9][\w.-]*(/[A-Za-z0-9][\w.-]*)?")

# --------------------------------------------------------------------------- saving


def save_pretrained(
    model: nn.Module,
    save_directory: str | Path,
    pack: str = "2bit",
    card: Mapping[str, Any] | None = None,
    tokenizer: str | None = None,
) -> Path:
    """Write config.json, model.safetensors, model.tdsl and README.md for ``model``.

    ``card`` fills the model card's metadata: ``license``, ``pipeline_tag``, ``datasets``,
    ``base_model``, ``metrics`` (name -> value, e.g. ``{"accuracy": 0.91}``) and
    ``training`` (setting -> value). ``tokenizer`` is a language model's tokenizer.json text,
    written beside the weights and listed (with its digest) in config.json.
    """
    spec = getattr(model, "tdsl_spec", None)
    if spec is None:
        raise TypeError("model has no tdsl_spec; build it with tritondsl.compile or load_model")
    if pack not in PACKINGS:
        raise ValueError(f"pack must be one of {', '.join(PACKINGS)}, got {pack!r}")
    params = {k: encode_param(v, k) for k, v in spec.params.items()}
    folder = Path(save_directory)
    if folder.is_dir():
        _refuse_pickles(folder)  # from_pretrained would refuse the folder; say so now
    # Deploy a CPU copy: the caller's model keeps its mode, device and latent weights.
    clone = deploy(copy.deepcopy(model).to("cpu"))
    stored, tensors = _stored_tensors(clone, pack)
    weights = save_safetensors(stored, metadata={"format": "pt", "tritondsl_packing": pack})
    source = spec.source.encode("utf-8")
    files = {SOURCE_NAME: file_entry(source), WEIGHTS_NAME: file_entry(weights)}
    tokenizer_bytes = None if tokenizer is None else tokenizer.encode("utf-8")
    if tokenizer_bytes is not None:
        files[TOKENIZER_NAME] = file_entry(tokenizer_bytes)
    info = _check(spec.source, spec.model, spec.params)
    configs = layer_configs(info, spec.precision)
    layers = {path: p.describe() for path, p in configs.items()}
    config = {
        "model_type": MODEL_TYPE,
        "architectures": [spec.model],
        "dtype": "float32",
        "torch_dtype": "float32",
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "tritondsl_version": _version(),
        "model": spec.model,
        "params": params,
        "precision": spec.precision,
        "packing": pack,
        "files": files,
        "layers": layers,
        "tensors": tensors,
        "fp32_bytes": fp32_bytes(clone),
        "quantization_config": quantization_config(configs, pack),
    }
    activations = layer_activations(info)
    if activations:
        config["activations"] = activations
    if card:
        unknown = sorted(set(card) - set(CARD_FIELDS))
        if unknown:
            raise ValueError(f"card: unknown fields {unknown}; known: {', '.join(CARD_FIELDS)}")
        config["card"] = {k: v for k, v in card.items() if v is not None}
    folder.mkdir(parents=True, exist_ok=True)
    write_atomically(folder / SOURCE_NAME, source)
    write_atomically(folder / WEIGHTS_NAME, weights)
    if tokenizer_bytes is not None:
        write_atomically(folder / TOKENIZER_NAME, tokenizer_bytes)
    write_atomically(folder / CONFIG_NAME, dump_config(config).encode())
    write_model_card(folder)
    return folder


def write_model_card(folder: str | Path) -> Path:
    """(Re)write README.md from config.json and the sizes of the files now in ``folder``."""
    folder = Path(folder)
    config = parse_config(read_file(folder, CONFIG_NAME, MAX_CONFIG_BYTES))
    sizes = {
        p.name: p.stat().st_size
        for p in sorted(folder.iterdir())
        if p.is_file() and p.name != CARD_NAME and not p.name.startswith(".")
    }
    path = folder / CARD_NAME
    write_atomically(path, render_model_card(config, sizes).encode())
    return path


def fp32_bytes(model: nn.Module) -> int:
    """Bytes the model's state_dict would take with every quantized weight stored as fp32."""
    total = sum(t.numel() * t.element_size() for t in model.state_dict().values())
    for _, layer in _quant_layers(model):
        if layer.deployed:
            # Codes and scales stand for one fp32 weight; bias and the rest are counted above.
            stored = layer.storage_tensors().values()
            total += math.prod(layer.weight_shape) * 4 - sum(t.nbytes for t in stored)
        else:
            # A float model has no Learned scale parameters; the latent weight is counted.
            scales = [getattr(layer, n) for n in LEARNED_SCALE_NAMES if hasattr(layer, n)]
            total -= sum(t.nbytes for t in scales)
    return total


def _stored_tensors(model: nn.Module, pack: str) -> tuple[dict[str, torch.Tensor], dict]:
    """The deployed state_dict as stored (base-3 codes if asked) and its config entries."""
    trits = {
        f"{name}.weight_packed" if name else "weight_packed": layer.reduction_size
        for name, layer in _quant_layers(model)
        if is_ternary(layer.quantizer)
    }
    stored: dict[str, torch.Tensor] = {}
    entries: dict[str, dict[str, Any]] = {}
    for key, value in model.state_dict().items():
        # Cloned so tensors sharing storage (tied weights) save as separate entries.
        tensor = value.detach().contiguous().clone()
        entry: dict[str, Any] = {}
        if key in trits:
            if pack == "base3":
                tensor = pack_base3(unpack(tensor, trits[key]))
            entry = {"packing": pack, "trits": trits[key]}
        stored[key] = tensor
        entries[key] = {"shape": list(tensor.shape), "dtype": dtype_name(tensor), **entry}
    return stored, entries


def quantization_config(layers: Mapping[str, WeightPrecision], pack: str) -> dict[str, Any]:
    """The ``quantization_config`` block Hugging Face quantized models carry (see artifact.py)."""
    ternary = {path: p for path, p in layers.items() if p.kind == "ternary"}
    # Learned has one pair of scales per layer and no per_channel option.
    scales = {
        "per_channel" if getattr(p, "per_channel", False) else "per_tensor"
        for p in ternary.values()
    }
    granularity = None if not scales else scales.pop() if len(scales) == 1 else "mixed"
    return {
        "quant_method": "tritondsl",
        "weights": "ternary",
        "bits": 2 if pack == "2bit" else 1.6,
        "packing": pack,
        "scale_granularity": granularity,
        "modules_to_not_convert": sorted(set(layers) - set(ternary)),
    }


def layer_precisions(info: Any, override: str | None) -> dict[str, str]:
    """Each weight-bearing layer's precision, spelled (``describe()``) for config.json."""
    return {path: p.describe() for path, p in layer_configs(info, override).items()}


def layer_configs(info: Any, override: str | None) -> dict[str, WeightPrecision]:
    """Each weight-bearing layer's precision config: the front end's, or the override.

    The override replaces every precision the program writes, so a ``param`` ternary tensor
    gets what the runtime gives it then (the override if ternary, else the default TWN).
    """
    forced = NAMED[override] if override else None
    layers: dict[str, WeightPrecision] = {}
    for module in info.modules():
        if module.precision is not None:
            layers[module.path] = forced or module.precision
        for child in module.children.values():
            if isinstance(child, TensorDecl) and child.precision is not None:
                precision = child.precision
                if forced is not None and child.ternary:
                    precision = ternary_or_default(forced)
                elif forced is not None:  # a float param follows it as the weight of linear()
                    used = module.definition and child.name in linear_weights(module.definition)
                    precision = forced if used else FP32()
                layers[child.path] = precision
    return layers


def layer_activations(info: Any) -> dict[str, dict[str, Any]]:
    """The layers that quantize their input, each with how (``activation_dict``)."""
    return {
        module.path: activation_dict(module.activation)
        for module in info.modules()
        if module.activation is not None and not isinstance(module.activation, A32)
    }


# --------------------------------------------------------------------------- loading


def from_pretrained(
    path_or_repo_id: str | Path,
    *,
    revision: str | None = None,
    token: str | None = None,
    local_files_only: bool = False,
    cache_dir: str | Path | None = None,
    force_download: bool = False,
    device: str | torch.device = "cpu",
    **loader_kwargs: Any,
) -> nn.Module:
    """Rebuild, deploy and load a saved model from a folder or a Hub repo id (eval mode).

    Keyword arguments of Hugging Face loaders that change nothing here are accepted and
    ignored (``trust_remote_code``: no code from a folder ever runs; ``torch_dtype``/
    ``dtype``: float32 only; ``low_cpu_mem_usage``, ``use_safetensors``, ...); an argument
    that would change the result, or that no loader knows, is an error.
    """
    _check_loader_kwargs(loader_kwargs)
    hub = {"revision": revision, "token": token, "local_files_only": local_files_only,
           "cache_dir": cache_dir, "force_download": force_download}  # fmt: skip
    folder = _resolve_folder(path_or_repo_id, hub)
    _refuse_pickles(folder)
    config = parse_config(read_file(folder, CONFIG_NAME, MAX_CONFIG_BYTES))
    files = {name: _read_listed(folder, config, name) for name in config["files"]}
    source = _decode_source(files[SOURCE_NAME])
    state = _read_weights(files[WEIGHTS_NAME], config)
    params = {k: decode_param(v, f"params.{k}") for k, v in config["params"].items()}
    shown = str(folder / SOURCE_NAME)
    _check_program(source, shown, config, params)
    with _forget_generated_on_error():
        model = _build(source, shown, config, params)
        _load_state(model, state, config)
    return model.to(device).eval()


def _read_listed(folder: Path, config: dict[str, Any], name: str) -> bytes:
    """A file config.json lists, after checking its size and sha256."""
    entry = config["files"][name]
    data = read_file(folder, name, entry["bytes"])
    if len(data) != entry["bytes"] or sha256(data) != entry["sha256"]:
        raise CorruptArtifactError(
            name, f"sha256/size differ from {CONFIG_NAME}: modified or corrupt"
        )
    return data


def read_tokenizer(folder: str | Path) -> str | None:
    """The tokenizer.json text of a saved folder (checked against config.json), or None
    when the model was saved without one."""
    folder = Path(folder)
    config = parse_config(read_file(folder, CONFIG_NAME, MAX_CONFIG_BYTES))
    if TOKENIZER_NAME not in config["files"]:
        return None
    try:
        return _read_listed(folder, config, TOKENIZER_NAME).decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorruptArtifactError(TOKENIZER_NAME, f"not UTF-8: {error}") from None


def _resolve_folder(path_or_repo_id: str | Path, hub: dict[str, Any]) -> Path:
    """A local folder as is; otherwise the repo's snapshot (HF cache first, then the Hub)."""
    path = Path(path_or_repo_id)
    if path.is_dir():
        return path
    text = str(path_or_repo_id)
    if path.exists() or not _REPO_ID.fullmatch(text) or ".." in text:
        raise ArtifactNotFoundError(text, "not a model folder nor a Hub repo id (OWNER/NAME)")
    from huggingface_hub import snapshot_download

    with _hub_errors(text):
        # Only the files we read: a large .onnx beside them is never downloaded.
        snapshot = snapshot_download(
            text, allow_patterns=[CONFIG_NAME, WEIGHTS_NAME, SOURCE_NAME, TOKENIZER_NAME],
            **hub,
        )
    return Path(snapshot)


@contextlib.contextmanager
def _hub_errors(repo_id: str) -> Iterator[None]:
    """huggingface_hub's errors as ArtifactAuthError / ArtifactNotFoundError, kind kept."""
    import httpx2
    from huggingface_hub import errors

    try:
        yield
    except (errors.GatedRepoError, errors.LocalTokenNotFoundError) as error:
        raise ArtifactAuthError(repo_id, f"the Hub refused access: {error}") from error
    except (
        errors.RepositoryNotFoundError,
        errors.RevisionNotFoundError,
        errors.EntryNotFoundError,
        errors.LocalEntryNotFoundError,
    ) as error:
        # The Hub answers 404 or 401, not 403, for a private repo without a token: say both.
        raise ArtifactNotFoundError(
            repo_id, f"not found locally nor on the Hub (or private: pass token=): {error}"
        ) from error
    except errors.HfHubHTTPError as error:
        status = getattr(error.response, "status_code", None)
        kind = ArtifactAuthError if status in (401, 403) else ArtifactNotFoundError
        raise kind(repo_id, f"the Hub answered HTTP {status}: {error}") from error
    except (OSError, httpx2.TransportError) as error:  # network down, cache unreadable
        raise ArtifactNotFoundError(
            repo_id, f"cannot reach the Hub or its cache: {error}"
        ) from error


# Loader kwargs users pass to transformers/diffusers loaders: value(s) that mean "as usual".
_HARMLESS_KWARGS: dict[str, tuple[Any, ...]] = {
    "trust_remote_code": (False, True),  # nothing from the folder runs either way
    "torch_dtype": (None, "auto", "float32", torch.float32),
    "dtype": (None, "auto", "float32", torch.float32),
    "low_cpu_mem_usage": (False, True),
    "use_safetensors": (None, True),
    "resume_download": (None, False, True),
    "proxies": (None,),
    "subfolder": (None, ""),
    "local_dir": (None,),
    "output_loading_info": (False,),
}


def _check_loader_kwargs(kwargs: Mapping[str, Any]) -> None:
    for name, value in kwargs.items():
        accepted = _HARMLESS_KWARGS.get(name)
        if accepted is None:
            raise TypeError(f"from_pretrained() got an unexpected keyword argument {name!r}")
        if not any(value is a or (type(value) is type(a) and value == a) for a in accepted):
            raise ValueError(f"from_pretrained({name}={value!r}) is not supported here")


def _refuse_pickles(folder: Path) -> None:
    seen = 0
    for root, dirs, names in os.walk(folder):
        dirs.sort()
        for name in sorted(names):
            seen += 1
            if seen > MAX_FOLDER_ENTRIES:
                raise CorruptArtifactError(str(folder), f"more than {MAX_FOLDER_ENTRIES} files")
            if name.lower().endswith(PICKLE_SUFFIXES):
                shown = os.path.relpath(os.path.join(root, name), folder)
                raise CorruptArtifactError(
                    shown, "pickle-based files are refused (they can run code when loaded); "
                    "tritondsl folders hold safetensors only, remove this file"
                )  # fmt: skip


def _read_weights(data: bytes, config: dict[str, Any]) -> dict[str, torch.Tensor]:
    """Parse model.safetensors, match it to config.json, validate codes, return 2-bit layout."""
    try:
        state = load_safetensors(data)
    except Exception as error:  # the Rust parser raises its own SafetensorError
        raise CorruptArtifactError(WEIGHTS_NAME, f"not a valid safetensors file: {error}") from None
    expected = config["tensors"]
    _same_keys(state.keys(), expected.keys(), WEIGHTS_NAME, CONFIG_NAME)
    for name, tensor in state.items():
        entry = expected[name]
        if list(tensor.shape) != entry["shape"] or dtype_name(tensor) != entry["dtype"]:
            raise CorruptArtifactError(
                WEIGHTS_NAME, f"tensor {name!r} is {dtype_name(tensor)} {list(tensor.shape)}, "
                f"{CONFIG_NAME} says {entry['dtype']} {entry['shape']}"
            )  # fmt: skip
        if "trits" in entry:
            try:
                if entry["packing"] == "base3":  # decoding checks every byte is <= 242
                    state[name] = base3_to_2bit(tensor, entry["trits"])
                else:
                    validate_packed(tensor, entry["trits"], name)
            except PackingError as error:
                raise CorruptArtifactError(WEIGHTS_NAME, f"tensor {name!r}: {error}") from None
    return state


def _check(source: str, model: str, params: Mapping[str, Any], shown: str = SOURCE_NAME) -> Any:
    """The front end's view (ModelInfo) of ``model`` built with ``params``."""

    return check_source(source, shown, {model: dict(params)}).models[model]


def _check_program(source: str, shown: str, config: dict[str, Any], params: dict) -> None:
    """Check model.tdsl, the model name, its parameters and the per-layer precisions."""

    name = config["model"]
    try:
        info = _check(source, name, params, shown)
    except CompileError as error:
        # Tell a broken model.tdsl apart from a config.json that does not fit a good one.
        try:
            models = check_source(source, shown).models
        except CompileError as plain:
            raise CorruptArtifactError(SOURCE_NAME, f"has errors:\n{plain.render()}") from None
        if name not in models:
            known = ", ".join(models) or "none"
            raise CorruptArtifactError(
                CONFIG_NAME, f"model {name!r} is not a model of {SOURCE_NAME} (models: {known})"
            ) from None
        raise CorruptArtifactError(
            CONFIG_NAME, f"bad params for {name}:\n{error.render()}"
        ) from None
    layers = layer_precisions(info, config["precision"])
    for path in sorted(layers.keys() | config["layers"].keys()):
        saved, actual = config["layers"].get(path), layers.get(path)
        if saved != actual:
            raise CorruptArtifactError(
                CONFIG_NAME, f"layer {path!r}: precision {saved or 'absent'} in {CONFIG_NAME} "
                f"but {actual or 'no such layer'} in {SOURCE_NAME}"
            )  # fmt: skip


def _build(source: str, shown: str, config: dict[str, Any], params: dict) -> nn.Module:

    # compile() reads a one-line text ending in ".tdsl" as a path; a newline keeps it text.
    text = source if "\n" in source else source + "\n"
    try:
        model = compile_tdsl(text, config["precision"]).build(config["model"], **params)
    except (CompileError, TypeError, ValueError) as error:
        raise CorruptArtifactError(
            SOURCE_NAME, f"cannot build {config['model']}: {error}"
        ) from None
    model.tdsl_spec = replace(model.tdsl_spec, source=source, path=shown)
    return deploy(model)


def _load_state(model: nn.Module, state: dict[str, torch.Tensor], config: dict) -> None:
    """Compare every tensor with the built model, then load strictly."""
    current = model.state_dict()
    _same_keys(state.keys(), current.keys(), WEIGHTS_NAME, f"the {config['model']} model")
    for name, layer in _quant_layers(model):
        key = f"{name}.weight_packed" if name else "weight_packed"
        trits = config["tensors"].get(key, {}).get("trits")
        if key in state and trits != layer.reduction_size:
            message = f"tensor {key!r} packs K={trits}, the layer has K={layer.reduction_size}"
            raise CorruptArtifactError(WEIGHTS_NAME, message)
    for key, tensor in state.items():
        want = current[key]
        if tensor.shape != want.shape or tensor.dtype != want.dtype:
            raise CorruptArtifactError(
                WEIGHTS_NAME, f"tensor {key!r} is {dtype_name(tensor)} {list(tensor.shape)}, "
                f"the model expects {dtype_name(want)} {list(want.shape)}"
                f"{where_declared(model, key)}"
            )  # fmt: skip
    try:
        model.load_state_dict(state, strict=True)
    except (ValueError, RuntimeError) as error:
        raise CorruptArtifactError(WEIGHTS_NAME, str(error)) from None


@contextlib.contextmanager
def _forget_generated_on_error() -> Iterator[None]:
    """On error, undo what compile() registered (sys.modules, linecache): no global trace."""
    modules = {k: v for k, v in sys.modules.items() if k.startswith("tritondsl_generated.")}
    lines = {k: v for k, v in linecache.cache.items() if k.startswith("<tritondsl generated")}
    try:
        yield
    except BaseException:
        for key in [k for k in sys.modules if k.startswith("tritondsl_generated.")]:
            if key not in modules:
                del sys.modules[key]
        sys.modules.update(modules)
        for key in [k for k in linecache.cache if k.startswith("<tritondsl generated")]:
            if key not in lines:
                del linecache.cache[key]
        linecache.cache.update(lines)
        raise


# --------------------------------------------------------------------------- uploading


def push_to_hub(
    save_directory: str | Path,
    repo_id: str,
    token: str | None = None,
    private: bool | None = None,
    commit_message: str | None = None,
    revision: str | None = None,
    create_pr: bool = False,
) -> str:
    """Check a saved folder loads, then upload it to the Hub repo ``repo_id`` (created if new).

    ``private`` applies when the repo is created (None: the Hub's default); ``revision`` is
    the branch to commit to (created from main if new); ``create_pr`` opens a pull request
    against it instead. Returns the commit URL (or the pull request's). Hub errors keep
    their kind: ArtifactAuthError (refused token) or ArtifactNotFoundError.
    """
    folder = Path(save_directory)
    model = from_pretrained(folder)  # never publish a folder that would not load
    from huggingface_hub import HfApi

    with _hub_errors(repo_id):
        api = HfApi(token=token)
        repo = api.create_repo(repo_id, private=private, exist_ok=True, repo_type="model")
        repo_id = getattr(repo, "repo_id", repo_id)
        if revision is not None and not create_pr and not revision.startswith("refs/pr/"):
            # As transformers' push_to_hub: a new branch starts from main.
            api.create_branch(repo_id, branch=revision, exist_ok=True)
        commit = api.upload_folder(
            repo_id=repo_id,
            folder_path=str(folder),
            repo_type="model",
            commit_message=commit_message or f"Upload {model.tdsl_spec.model} with tritondsl",
            revision=revision,
            create_pr=create_pr,
        )
    return str(getattr(commit, "pr_url", None) or commit)


# --------------------------------------------------------------------------- helpers


def _quant_layers(model: nn.Module) -> list[tuple[str, QuantModule]]:
    return [(n, m) for n, m in model.named_modules() if isinstance(m, QuantModule)]


def _decode_source(data: bytes) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise CorruptArtifactError(SOURCE_NAME, f"not valid UTF-8: {error}") from None


def _same_keys(found: Any, wanted: Any, file: str, reference: str) -> None:
    missing, unexpected = sorted(set(wanted) - set(found)), sorted(set(found) - set(wanted))
    if missing:
        raise CorruptArtifactError(file, f"missing tensors {missing[:5]} (expected by {reference})")
    if unexpected:
        raise CorruptArtifactError(
            file, f"unexpected tensors {unexpected[:5]} (not in {reference})"
        )


def _version() -> str:
    from tritondsl import __version__

    return __version__

"""Hub folders: save_pretrained / from_pretrained round trips, hostile artifacts, the HF cache,
and push_to_hub / Hub downloads through huggingface_hub's real client against a loopback Hub
(fake_hub.py)."""

from __future__ import annotations

import copy
import hashlib
import json
import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file
from torch import nn

import tritondsl
from tests.conftest import EXAMPLES, ROOT
from tritondsl.backend.deploy import deploy, is_deployed
from tritondsl.backend.precision import Learned
from tritondsl.export import hub
from tritondsl.export.artifact import (
    ArtifactAuthError,
    ArtifactError,
    ArtifactNotFoundError,
    CorruptArtifactError,
    parse_config,
)

from .fake_hub import FakeHub, serve

MIXED = next(p for p in EXAMPLES if p.name == "mixed_precision.tdsl")
IMAGE = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))
FILES = {"config.json", "model.safetensors", "model.tdsl", "README.md"}


def randomize_norms(model: nn.Module, seed: int = 0) -> nn.Module:
    """Non-trivial BatchNorm statistics and learned scales unlike their initial values (as
    after training), so every full-precision tensor matters."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(getattr(m, "quantizer", None), Learned):
                m.weight_scale_pos.mul_(1.75)
                m.weight_scale_neg.mul_(0.5)
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
                m.running_var.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.weight.copy_(torch.rand(m.num_features, generator=gen) + 0.5)
                m.bias.copy_(torch.randn(m.num_features, generator=gen) * 0.1)
    return model.eval()


@pytest.fixture(scope="module")
def mixed() -> nn.Module:
    """MixedNet in training mode: fp16, int8, TWN, absmean, learned and sparsity layers."""
    return randomize_norms(tritondsl.load_model(MIXED))


@pytest.fixture(scope="module")
def saved(mixed: nn.Module, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The mixed model saved once per packing; tests copy a folder before changing it."""
    base = tmp_path_factory.mktemp("saved")
    return {pack: hub.save_pretrained(mixed, base / pack, pack=pack) for pack in ("2bit", "base3")}


def deployed_copy(model: nn.Module) -> nn.Module:
    return deploy(copy.deepcopy(model)).eval()


# ------------------------------------------------------------------------ round trips


def test_package_exposes_the_hub_api() -> None:
    assert tritondsl.save_pretrained is hub.save_pretrained
    assert tritondsl.from_pretrained is hub.from_pretrained
    assert tritondsl.push_to_hub is hub.push_to_hub
    assert tritondsl.ArtifactError is ArtifactError


@pytest.mark.parametrize("pack", ["2bit", "base3"])
def test_round_trip_gives_the_deployed_outputs(
    mixed: nn.Module, saved: dict[str, Path], pack: str
) -> None:
    loaded = hub.from_pretrained(saved[pack])
    assert is_deployed(loaded) and not loaded.training
    assert loaded.tdsl_spec.model == "MixedNet" and loaded.tdsl_spec.params == {}
    assert loaded.tdsl_spec.source == MIXED.read_text()
    reference = deployed_copy(mixed)
    with torch.no_grad():
        assert torch.equal(loaded(IMAGE), reference(IMAGE))
        assert torch.equal(loaded(IMAGE), mixed(IMAGE))  # deploying changes no output
    # The learned layer keeps its own (trained) scales, not ones re-derived from its weight.
    for name in ("weight_scale_pos", "weight_scale_neg"):
        assert torch.equal(getattr(loaded.down, name), getattr(mixed.down, name).detach())
    expected = reference.state_dict()
    assert all(torch.equal(t, expected[k]) for k, t in loaded.state_dict().items())


def test_save_leaves_the_callers_model_alone(mixed: nn.Module, tmp_path: Path) -> None:
    before = {k: v.clone() for k, v in mixed.state_dict().items()}
    mode = [(m.training, getattr(m, "deployed", None)) for m in mixed.modules()]
    hub.save_pretrained(mixed, tmp_path)
    assert [(m.training, getattr(m, "deployed", None)) for m in mixed.modules()] == mode
    after = mixed.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[k], v) for k, v in before.items())


def test_folder_layout_and_config(mixed: nn.Module, saved: dict[str, Path]) -> None:
    folder = saved["2bit"]
    assert {p.name for p in folder.iterdir()} == FILES
    config = json.loads((folder / "config.json").read_text())
    source = (folder / "model.tdsl").read_bytes()
    assert source == MIXED.read_bytes()
    assert config["files"]["model.tdsl"] == {
        "sha256": hashlib.sha256(source).hexdigest(), "bytes": len(source)
    }  # fmt: skip
    weights = (folder / "model.safetensors").read_bytes()
    assert config["files"]["model.safetensors"]["sha256"] == hashlib.sha256(weights).hexdigest()
    assert config["format"] == "tritondsl" and config["format_version"] == 1
    assert config["tritondsl_version"] == tritondsl.__version__
    assert (config["model"], config["params"], config["precision"]) == ("MixedNet", {}, None)
    assert config["layers"] == {
        "stem.0": "fp16",
        "res.conv1": "ternary(sparsity=0.5, scale=per_channel)",
        "res.conv2": "ternary(sparsity=0.5, scale=per_channel)",
        "down": "ternary(learned=true, threshold=0.05)",
        "dw": "ternary(threshold=0.7, scale=per_channel)",
        "pw": "ternary(method=absmean, scale=per_tensor)",
        "head": "int8",
    }
    stored = load_file(folder / "model.safetensors")
    assert config["tensors"].keys() == stored.keys()
    for name, tensor in stored.items():
        entry = config["tensors"][name]
        assert entry["shape"] == list(tensor.shape)
        assert entry["dtype"] == str(tensor.dtype).removeprefix("torch.")
    assert config["tensors"]["dw.weight_packed"] == {
        "shape": [64, 3], "dtype": "uint8", "packing": "2bit", "trits": 9
    }  # fmt: skip
    assert config["tensors"]["head.weight_int8"]["dtype"] == "int8"
    assert "down.weight_scale_pos" in stored and "stem.1.running_var" in stored
    # fp32 size from the real tensors: the float model's state_dict less Learned's two scales.
    float_bytes = sum(t.nbytes for k, t in mixed.state_dict().items() if "scale" not in k)
    assert config["fp32_bytes"] == float_bytes


def test_base3_and_2bit_hold_the_same_weights(saved: dict[str, Path]) -> None:
    two, three = (hub.from_pretrained(saved[p]).state_dict() for p in ("2bit", "base3"))
    assert two.keys() == three.keys()
    assert all(torch.equal(two[k], three[k]) for k in two)
    codes2 = load_file(saved["2bit"] / "model.safetensors")["res.conv1.weight_packed"]
    codes3 = load_file(saved["base3"] / "model.safetensors")["res.conv1.weight_packed"]
    assert codes2.shape == (32, 72) and codes3.shape == (32, 58)  # K = 288: /4 and /5
    assert int(codes3.max()) <= 242


def test_config_follows_hugging_face_conventions(saved: dict[str, Path]) -> None:
    config = json.loads((saved["base3"] / "config.json").read_text())
    assert config["model_type"] == "tritondsl" and config["architectures"] == ["MixedNet"]
    assert config["dtype"] == config["torch_dtype"] == "float32"
    assert config["quantization_config"] == {
        "quant_method": "tritondsl", "weights": "ternary", "bits": 1.6, "packing": "base3",
        "scale_granularity": "mixed", "modules_to_not_convert": ["head", "stem.0"],
    }  # fmt: skip


def test_unknown_config_fields_are_kept_and_warned_about(
    saved: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    folder = tmp_path / "m"
    shutil.copytree(saved["2bit"], folder)
    config = json.loads((folder / "config.json").read_text())
    config["activation_quantization"] = {"bits": 8}  # what a newer tritondsl might add
    (folder / "config.json").write_text(json.dumps(config))
    with caplog.at_level("WARNING", logger="tritondsl.export.artifact"):
        model = hub.from_pretrained(folder)
    assert is_deployed(model)
    assert "'activation_quantization' are unknown to tritondsl" in caplog.text
    assert parse_config((folder / "config.json").read_bytes())["activation_quantization"] == {
        "bits": 8
    }


def test_card_metadata_through_huggingface_hub(mixed: nn.Module, tmp_path: Path) -> None:
    from huggingface_hub import ModelCard

    card = {"license": "mit", "pipeline_tag": "image-classification",
            "datasets": ["zalando-datasets/fashion_mnist"], "metrics": {"accuracy": 0.875},
            "base_model": "someone/mixednet-fp32"}  # fmt: skip
    folder = hub.save_pretrained(mixed, tmp_path / "m", card=card)
    loaded = ModelCard.load(folder / "README.md")
    assert (loaded.data.license, loaded.data.library_name) == ("mit", "tritondsl")
    assert loaded.data.pipeline_tag == "image-classification"
    assert loaded.data.base_model == "someone/mixednet-fp32"
    (result,) = loaded.data.eval_results
    assert (result.metric_type, result.metric_value) == ("accuracy", 0.875)
    assert result.dataset_name == "zalando-datasets/fashion_mnist"
    assert "| accuracy | 0.8750 |" in loaded.text
    with pytest.raises(ValueError, match="card: unknown fields"):
        hub.save_pretrained(mixed, tmp_path / "n", card={"licence": "mit"})


def test_loader_kwargs_that_change_nothing_are_accepted(saved: dict[str, Path]) -> None:
    model = hub.from_pretrained(saved["2bit"], trust_remote_code=False, torch_dtype="auto",
                                low_cpu_mem_usage=True, use_safetensors=True)  # fmt: skip
    assert is_deployed(model)
    with pytest.raises(ValueError, match=r"torch_dtype=torch.float16\) is not supported"):
        hub.from_pretrained(saved["2bit"], torch_dtype=torch.float16)
    with pytest.raises(TypeError, match="unexpected keyword argument 'num_labels'"):
        hub.from_pretrained(saved["2bit"], num_labels=3)


def test_model_card_front_matter_and_measured_sizes(saved: dict[str, Path], tmp_path: Path) -> None:
    folder = tmp_path / "m"
    shutil.copytree(saved["2bit"], folder)
    card = (folder / "README.md").read_text()
    front = card.split("---\n")[1]
    assert "library_name: tritondsl" in front and "- ternary" in front
    assert "- onnx" not in front
    config = json.loads((folder / "config.json").read_text())
    for name in ("config.json", "model.safetensors", "model.tdsl"):
        assert f"| `{name}` | {(folder / name).stat().st_size:,} |" in card
    assert f"| fp32 state_dict, for comparison | {config['fp32_bytes']:,} |" in card
    (folder / "model.onnx").write_bytes(b"\0" * 1234)
    card = hub.write_model_card(folder).read_text()
    assert "- onnx" in card.split("---\n")[1] and "| `model.onnx` | 1,234 |" in card


def test_save_refuses_what_it_cannot_describe(mixed: nn.Module, tmp_path: Path) -> None:
    with pytest.raises(TypeError, match="tdsl_spec"):
        hub.save_pretrained(nn.Linear(2, 2), tmp_path)
    with pytest.raises(ValueError, match="pack must be one of"):
        hub.save_pretrained(mixed, tmp_path, pack="3bit")
    assert not any(tmp_path.iterdir())
    (tmp_path / "pytorch_model.bin").write_bytes(b"")  # from_pretrained would refuse it
    with pytest.raises(ArtifactError, match=r"pytorch_model\.bin: pickle-based files"):
        hub.save_pretrained(mixed, tmp_path)
    assert [p.name for p in tmp_path.iterdir()] == ["pytorch_model.bin"]


def test_tuple_and_list_parameters_survive(tmp_path: Path) -> None:
    source = (
        "model M(n: int = 2, t: tuple = (1, 2), sizes: list[int] = [3]) {\n"
        "    input x: Tensor[N, 4]\n    weights ternary()\n    fc = Linear(4, n)\n"
        "    forward(x) { return fc(x) }\n}\n"
    )
    model = tritondsl.compile(source).build(n=3, t=(4, 5), sizes=[6, 7])
    loaded = hub.from_pretrained(hub.save_pretrained(model, tmp_path))
    assert loaded.tdsl_spec.params == {"n": 3, "t": (4, 5), "sizes": [6, 7]}
    x = torch.randn(2, 4)
    assert torch.equal(loaded(x), deployed_copy(model)(x))


# ----------------------------------------------------------------- Hugging Face cache


def make_hf_cache(cache: Path, repo_id: str, folder: Path) -> str:
    """Lay a folder out as huggingface_hub's cache does: blobs, a snapshot of links, refs/main."""
    commit = hashlib.sha1(repo_id.encode()).hexdigest()
    repo = cache / ("models--" + repo_id.replace("/", "--"))
    snapshot = repo / "snapshots" / commit
    (repo / "blobs").mkdir(parents=True)
    snapshot.mkdir(parents=True)
    for path in folder.iterdir():
        digest = hashlib.sha256(path.read_bytes()).hexdigest()
        shutil.copyfile(path, repo / "blobs" / digest)
        (snapshot / path.name).symlink_to(Path("..", "..", "blobs", digest))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text(commit)
    return commit


def test_loads_from_a_hub_cache_dir(
    mixed: nn.Module, saved: dict[str, Path], tmp_path: Path
) -> None:
    make_hf_cache(tmp_path, "someone/mixednet", saved["base3"])
    loaded = hub.from_pretrained("someone/mixednet", local_files_only=True, cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(IMAGE), deployed_copy(mixed)(IMAGE))


@pytest.mark.slow
def test_loads_offline_from_the_cache_named_by_env_vars(
    mixed: nn.Module, saved: dict[str, Path], tmp_path: Path
) -> None:
    # huggingface_hub reads HF_HUB_CACHE and HF_HUB_OFFLINE at import: a fresh process.
    make_hf_cache(tmp_path / "hub", "someone/mixednet", saved["2bit"])
    got = load_in_a_fresh_process({"HF_HOME": str(tmp_path / "home"),
                                   "HF_HUB_CACHE": str(tmp_path / "hub"), "HF_HUB_OFFLINE": "1"})
    with torch.no_grad():
        assert torch.equal(got, deployed_copy(mixed)(IMAGE))


def load_in_a_fresh_process(env: dict[str, str]) -> torch.Tensor:
    """from_pretrained('someone/mixednet') on IMAGE in a new Python with ``env`` added."""
    env = {**os.environ, **env, "HF_HUB_DISABLE_TELEMETRY": "1",
           # The same thread count as here: kernels split work by threads, and the outputs
           # are compared bit for bit.
           "OMP_NUM_THREADS": str(torch.get_num_threads())}  # fmt: skip
    code = (
        "import json, torch, tritondsl\n"
        "x = torch.randn(2, 3, 32, 32, generator=torch.Generator().manual_seed(0))\n"
        "model = tritondsl.from_pretrained('someone/mixednet')\n"
        "print(json.dumps(model(x).tolist()))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], env=env, cwd=ROOT, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    return torch.tensor(json.loads(proc.stdout))


# ------------------------------------------------------------------------ push_to_hub


@pytest.fixture
def fake_hub(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[FakeHub]:
    """The loopback Hub, with huggingface_hub pointed at it as HF_ENDPOINT does."""
    from huggingface_hub import constants

    with serve() as server:
        # huggingface_hub reads HF_ENDPOINT at import: set what it derives from it (the
        # subprocess test below sets the variable itself). No Xet CAS server here: LFS.
        monkeypatch.setenv("HF_ENDPOINT", server.url)
        monkeypatch.setattr(constants, "ENDPOINT", server.url)
        monkeypatch.setattr(constants, "HUGGINGFACE_CO_URL_TEMPLATE",
                            server.url + "/{repo_id}/resolve/{revision}/{filename}")  # fmt: skip
        # Older huggingface_hub (the 0.25 floor) has neither Xet nor stored tokens.
        monkeypatch.setattr(constants, "HF_HUB_DISABLE_XET", True, raising=False)
        # Only the tokens a test passes: none from this machine's login or environment.
        monkeypatch.setattr(constants, "HF_TOKEN_PATH", str(tmp_path / "no-token"))
        monkeypatch.setattr(constants, "HF_STORED_TOKENS_PATH", str(tmp_path / "no-tokens"),
                            raising=False)  # fmt: skip
        for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN"):
            monkeypatch.delenv(name, raising=False)
        yield server


def test_push_to_hub_uploads_a_folder_that_loads_back(
    mixed: nn.Module, saved: dict[str, Path], fake_hub: FakeHub, tmp_path: Path
) -> None:
    url = hub.push_to_hub(saved["base3"], "someone/mixednet", token="hf_secret", private=True)
    repo = fake_hub.repos["someone/mixednet"]
    head = repo.branches["main"]
    assert url == f"{fake_hub.url}/someone/mixednet/commit/{head}"
    assert repo.private and repo.messages[head] == "Upload MixedNet with tritondsl"
    files = fake_hub.files("someone/mixednet")
    assert set(files) == FILES | {".gitattributes"}
    assert all(files[p.name] == p.read_bytes() for p in saved["base3"].iterdir())
    # The weights went up as an LFS object (sha256-addressed PUT), the rest in the commit.
    weights = (saved["base3"] / "model.safetensors").read_bytes()
    digest = hashlib.sha256(weights).hexdigest()
    assert fake_hub.lfs == {digest: weights}
    assert ("PUT", f"/lfs-upload/{digest}") in fake_hub.requests
    # Downloaded through the real snapshot_download: the same outputs as the deployed model.
    loaded = hub.from_pretrained("someone/mixednet", token="hf_secret", cache_dir=tmp_path)
    with torch.no_grad():
        assert torch.equal(loaded(IMAGE), deployed_copy(mixed)(IMAGE))
    assert ("GET", "/someone/mixednet/resolve/" + head + "/model.safetensors") in (
        fake_hub.requests
    )


def test_push_to_hub_commits_to_a_branch_or_opens_a_pull_request(
    saved: dict[str, Path], fake_hub: FakeHub, tmp_path: Path
) -> None:
    hub.push_to_hub(saved["2bit"], "someone/mixednet", token="hf_secret")
    repo = fake_hub.repos["someone/mixednet"]
    assert not repo.private  # private=None: the Hub's default, public
    main = repo.branches["main"]
    hub.push_to_hub(saved["base3"], "someone/mixednet", token="hf_secret",
                    commit_message="v2 weights", revision="dev")  # fmt: skip
    assert repo.branches["main"] == main  # the branch was created from main, main untouched
    assert repo.messages[repo.branches["dev"]] == "v2 weights"
    assert fake_hub.files("someone/mixednet", "dev")["model.safetensors"] == (
        saved["base3"] / "model.safetensors"
    ).read_bytes()
    url = hub.push_to_hub(saved["base3"], "someone/mixednet", token="hf_secret", create_pr=True)
    assert url == f"{fake_hub.url}/someone/mixednet/discussions/1"
    assert repo.pulls == ["refs/pr/1"] and repo.branches["main"] == main
    # Each revision loads with its own weights.
    two = hub.from_pretrained("someone/mixednet", token="hf_secret", cache_dir=tmp_path)
    dev = hub.from_pretrained("someone/mixednet", revision="dev", token="hf_secret",
                              cache_dir=tmp_path)  # fmt: skip
    cached = {p.read_bytes() for p in tmp_path.rglob("model.safetensors")}
    assert cached == {(saved[p] / "model.safetensors").read_bytes() for p in ("2bit", "base3")}
    with torch.no_grad():
        assert torch.equal(two(IMAGE), dev(IMAGE))  # 2-bit and base-3: the same weights


def test_hub_errors_keep_their_kind(
    saved: dict[str, Path], fake_hub: FakeHub, tmp_path: Path
) -> None:
    with pytest.raises(ArtifactAuthError, match="someone/mixednet"):
        hub.push_to_hub(saved["2bit"], "someone/mixednet", token="hf_wrong")
    assert fake_hub.repos == {}
    hub.push_to_hub(saved["2bit"], "someone/mixednet", token="hf_secret", private=True)
    with pytest.raises(ArtifactNotFoundError, match="or private: pass token="):
        hub.from_pretrained("someone/mixednet", cache_dir=tmp_path)  # no token
    with pytest.raises(ArtifactNotFoundError, match="someone/other"):
        hub.from_pretrained("someone/other", token="hf_secret", cache_dir=tmp_path)
    with pytest.raises(ArtifactNotFoundError, match="no-such-branch"):
        hub.from_pretrained("someone/mixednet", revision="no-such-branch", token="hf_secret",
                            cache_dir=tmp_path)  # fmt: skip
    # A file changed on the way (or on the server) is refused, not loaded.
    fake_hub.tamper["model.safetensors"] = b"\0" * 64
    with pytest.raises(CorruptArtifactError, match=r"model\.safetensors"):
        hub.from_pretrained("someone/mixednet", token="hf_secret", cache_dir=tmp_path / "c2")


def test_push_to_hub_refuses_a_broken_folder_before_any_request(
    saved: dict[str, Path], tmp_path: Path, fake_hub: FakeHub
) -> None:
    shutil.copytree(saved["2bit"], tmp_path / "m")
    (tmp_path / "m" / "model.pt").write_bytes(b"")
    with pytest.raises(ArtifactError, match="pickle"):
        hub.push_to_hub(tmp_path / "m", "someone/mixednet", token="hf_secret")
    assert fake_hub.requests == []


@pytest.mark.slow
def test_downloads_from_the_endpoint_named_by_hf_endpoint(
    mixed: nn.Module, saved: dict[str, Path], fake_hub: FakeHub, tmp_path: Path
) -> None:
    hub.push_to_hub(saved["2bit"], "someone/mixednet", token="hf_secret")
    # A fresh process: huggingface_hub itself reads HF_ENDPOINT (nothing patched).
    got = load_in_a_fresh_process({"HF_ENDPOINT": fake_hub.url, "HF_HUB_DISABLE_XET": "1",
                                   "HF_HOME": str(tmp_path / "home")})  # fmt: skip
    with torch.no_grad():
        assert torch.equal(got, deployed_copy(mixed)(IMAGE))
    head = fake_hub.repos["someone/mixednet"].branches["main"]
    assert ("GET", f"/someone/mixednet/resolve/{head}/model.safetensors") in fake_hub.requests


# ------------------------------------------------------------------------ the zoo


ZOO_SIZES = {
    # Measured with 1000 classes (first conv and classifier stay fp32): fp32 state_dict bytes,
    # model.safetensors bytes for 2-bit and base-3 packing.
    "resnet18": (46_796_608, 4_987_584, 4_431_808),
    "mobilenetv2": (14_156_352, 6_056_120, 5_945_376),
}


@pytest.mark.parametrize(
    "name", [pytest.param(n, marks=pytest.mark.slow) for n in ("resnet18", "mobilenetv2")]
)
def test_zoo_round_trip_and_sizes(name: str, tmp_path: Path) -> None:
    model = randomize_norms(tritondsl.load_model(name))
    fp32 = sum(t.nbytes for t in model.state_dict().values())
    deploy(model)  # save_pretrained deploys a copy; deploying first makes that copy cheap
    with torch.no_grad():
        expected = model(IMAGE)
    folders = {p: hub.save_pretrained(model, tmp_path / p, pack=p) for p in ("2bit", "base3")}
    reference = model.state_dict()
    # The 2-bit file is the deployed state_dict itself; base-3 is loaded (converted back to
    # 2-bit) by from_pretrained: both give the same weights. One full load keeps this fast.
    stored = load_file(folders["2bit"] / "model.safetensors")
    loaded = hub.from_pretrained(folders["base3"])
    for state in (stored, loaded.state_dict()):
        assert state.keys() == reference.keys()
        assert all(torch.equal(t, reference[k]) for k, t in state.items())
    with torch.no_grad():
        assert torch.equal(loaded(IMAGE), expected)
    sizes = {p: (f / "model.safetensors").stat().st_size for p, f in folders.items()}
    assert json.loads((folders["2bit"] / "config.json").read_text())["fp32_bytes"] == fp32
    assert (fp32, sizes["2bit"], sizes["base3"]) == ZOO_SIZES[name]
    if name == "resnet18":  # the 2-bit file is under a ninth of fp32 (9.4x; base-3 10.6x)
        assert sizes["2bit"] * 9 <= fp32 and sizes["base3"] * 10.5 <= fp32


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_model_saves_from_a_cpu_copy_and_loads_onto_cuda(
    mixed: nn.Module, tmp_path: Path
) -> None:
    model = copy.deepcopy(mixed).cuda()
    folder = hub.save_pretrained(model, tmp_path)
    assert next(model.parameters()).is_cuda and not is_deployed(model)
    loaded = hub.from_pretrained(folder, device="cuda")
    reference = deployed_copy(model)
    with torch.no_grad():
        assert torch.equal(loaded(IMAGE.cuda()), reference(IMAGE.cuda()))


def test_activation_scales_and_config_travel_through_the_hub(tmp_path: Path) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model(ROOT / "examples" / "fashion_mnist_a8.tdsl", width=4)
    model(torch.rand(8, 1, 28, 28) * 3)  # a training-mode step observes every input range
    folder = hub.save_pretrained(model, tmp_path / "a8")
    config = json.loads((folder / "config.json").read_text())
    layers = ["stem.conv", "block1.conv", "block2.conv", "block3.conv", "classifier"]
    assert list(config["activations"]) == layers
    assert config["activations"]["stem.conv"] == {
        "bits": 8, "method": "static", "dtype": "uint8", "granularity": "per_tensor",
        "spelling": "a8", "observer": "minmax", "momentum": 0.1,
    }  # fmt: skip
    assert config["tensors"]["classifier.input_quant.zero_point"]["dtype"] == "uint8"
    loaded = hub.from_pretrained(folder)
    image = torch.rand(3, 1, 28, 28)
    with torch.no_grad():
        assert torch.equal(loaded(image), deployed_copy(model)(image))
    assert torch.equal(loaded.stem.conv.input_quant.scale, model.stem.conv.input_quant.scale)
    # Without activation precisions the section is left out (older readers see no change).
    plain = hub.save_pretrained(tritondsl.load_model(MIXED), tmp_path / "plain")
    assert "activations" not in json.loads((plain / "config.json").read_text())


def test_a_corrupted_activation_scale_is_refused(tmp_path: Path) -> None:
    model = tritondsl.load_model(ROOT / "examples" / "fashion_mnist_a8.tdsl", width=4)
    model(torch.rand(8, 1, 28, 28))
    folder = hub.save_pretrained(model, tmp_path / "a8")
    tensors = load_file(folder / "model.safetensors")
    tensors["block1.conv.input_quant.scale"] = torch.tensor(-1.0)
    save_file(tensors, folder / "model.safetensors")
    config = json.loads((folder / "config.json").read_text())
    data = (folder / "model.safetensors").read_bytes()
    config["files"]["model.safetensors"] = {"sha256": hashlib.sha256(data).hexdigest(),
                                            "bytes": len(data)}  # fmt: skip
    (folder / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"block1\.conv\.input_quant\.scale: must be a "):
        hub.from_pretrained(folder)

"""Code generation: golden files, determinism, lint, safety, and the generated models' behaviour."""

from __future__ import annotations

import ast
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from torch import nn

import tritondsl
from scripts.regenerate_golden import golden_path, render, sources
from tests import reference_nets
from tests.conftest import ROOT
from tritondsl.backend.layers import QuantModule
from tritondsl.compiler.check import check_file, check_source
from tritondsl.compiler.codegen import generate
from tritondsl.compiler.diagnostics import CompileError

SOURCES = sources()


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_generated_code_matches_golden_file(source: Path) -> None:
    golden = golden_path(source)
    assert golden.exists(), "run scripts/regenerate_golden.py"
    assert render(source) == golden.read_text(), (
        f"{golden.name} is stale: run scripts/regenerate_golden.py and review the diff"
    )


def test_generation_is_deterministic_across_processes() -> None:
    code = (
        "from pathlib import Path; from scripts.regenerate_golden import render; "
        "print(render(Path('models/mobilenetv2.tdsl').resolve()), end='')"
    )
    runs = {
        subprocess.run(
            [sys.executable, "-c", code],
            capture_output=True,
            text=True,
            cwd=ROOT,
            check=True,
            env={"PYTHONHASHSEED": seed},
        ).stdout
        for seed in ("1", "2")
    }
    assert len(runs) == 1
    assert runs.pop() == golden_path(ROOT / "models" / "mobilenetv2.tdsl").read_text()


def test_generated_code_passes_ruff_with_default_rules(tmp_path: Path) -> None:
    for source in SOURCES:
        (tmp_path / f"{source.stem}.py").write_text(render(source))
    proc = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--isolated", "--no-cache", str(tmp_path)],
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 0, proc.stdout


@pytest.mark.parametrize("source", SOURCES, ids=lambda p: p.name)
def test_generated_code_imports_only_torch_and_tritondsl(source: Path) -> None:
    tree = ast.parse(render(source))
    modules = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            modules.add((node.module or "").split(".")[0])
    assert modules == {"__future__", "torch", "tritondsl"}


def test_header_names_the_source_and_its_hash() -> None:
    import hashlib

    source = ROOT / "models" / "resnet18.tdsl"
    head = render(source).splitlines()[:2]
    assert "from 'resnet18.tdsl'" in head[0]
    assert head[1] == f"# source sha256: {hashlib.sha256(source.read_bytes()).hexdigest()}"


# Each name ends a comment, a docstring or a string literal if copied into code unescaped;
# the payload would then set the environment variable that the test looks for.
PAYLOAD = "__import__('os').environ.__setitem__('TDSL_PWNED', '1')"
HOSTILE_FILE_NAMES = [
    f'a"""\n{PAYLOAD}\n""".tdsl',
    f"b'''\n{PAYLOAD}\n'''.tdsl",
    f"c\r{PAYLOAD}\r.tdsl",
    f"d\n{PAYLOAD}.tdsl",
    "e\\x.tdsl",
    "f\\N.tdsl",
    "g\\u12.tdsl",
    'h"""x.tdsl',
    f"i\u2028{PAYLOAD}.tdsl",
    f"j\x85{PAYLOAD}.tdsl",
    "k\udcff.tdsl",  # the byte 0xFF, as Python hands over undecodable file names
]


@pytest.mark.parametrize("name", HOSTILE_FILE_NAMES, ids=ascii)
def test_hostile_file_names_never_become_code(
    name: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("TDSL_PWNED", raising=False)
    hostile = tmp_path / name
    hostile.write_bytes((ROOT / "examples" / "ternary_mlp.tdsl").read_bytes())
    tree = ast.parse(generate(check_file(hostile)))  # valid Python whatever the name
    # What is called, not its arguments: the cleaned name may appear inside string literals.
    calls = [ast.unparse(c.func) for c in ast.walk(tree) if isinstance(c, ast.Call)]
    assert not [c for c in calls if "environ" in c or "import" in c]
    model = tritondsl.load_model(hostile)  # compiles and executes in this process
    assert model(torch.zeros(2, 784)).shape == (2, 10)
    assert "TDSL_PWNED" not in os.environ


def _skeleton(tree: ast.AST) -> str:
    """The module's structure with every string literal emptied (names may only reach those)."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            node.value = ""
    return ast.dump(tree)


FILE_NAME_CHARS = st.characters(blacklist_characters="/\x00", blacklist_categories=("Cs",))


@settings(max_examples=300, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stem=st.text(FILE_NAME_CHARS, min_size=1, max_size=40)
       | st.binary(min_size=1, max_size=40).map(lambda b: os.fsdecode(b.replace(b"/", b"_"))))
@pytest.mark.slow
def test_no_file_name_changes_the_generated_code_beyond_its_strings(
    stem: str, tmp_path: Path
) -> None:
    source = (ROOT / "examples" / "ternary_mlp.tdsl").read_bytes()
    plain = tmp_path / "plain.tdsl"
    plain.write_bytes(source)
    hostile = tmp_path / f"{stem.replace(chr(0), '_')}.tdsl"
    try:
        hostile.write_bytes(source)
    except OSError:  # too long in bytes for this file system, or a reserved name
        return
    expected = _skeleton(ast.parse(generate(check_file(plain))))
    assert _skeleton(ast.parse(generate(check_file(hostile)))) == expected
    hostile.unlink()


@pytest.mark.slow  # eleven CLI processes; the in-process test above covers the escaping
def test_hostile_file_names_never_become_code_through_the_cli(tmp_path: Path) -> None:
    outputs = []
    for i, name in enumerate(HOSTILE_FILE_NAMES):
        (tmp_path / str(i)).mkdir()
        hostile, out = tmp_path / str(i) / name, tmp_path / str(i) / "generated.py"
        hostile.write_bytes((ROOT / "examples" / "ternary_mlp.tdsl").read_bytes())
        command = [sys.executable, "-m", "tritondsl", "compile", os.fsencode(hostile), "-o", out]
        result = subprocess.run(command, capture_output=True, text=True, errors="replace")
        assert result.returncode == 0, (ascii(name), result.stderr)
        outputs.append(str(out))
    # One interpreter imports every generated module (torch is imported once).
    probe = (
        "import os, runpy, sys\n"
        "for path in sys.argv[1:]:\n    runpy.run_path(path)\n"
        "print(os.getenv('TDSL_PWNED'))"
    )
    env = {k: v for k, v in os.environ.items() if k != "TDSL_PWNED"}
    imported = subprocess.run(
        [sys.executable, "-c", probe, *outputs], capture_output=True, text=True, env=env
    )
    assert (imported.returncode, imported.stdout.strip()) == (0, "None"), imported.stderr


HOSTILE = r"""
block Payload(note: str = "\"); __import__('os').system('echo pwned') #", getattr: int = 1) {
    let exec = "\'\'\' \"\"\" \\ end\n"
    let open = [note, exec]
    lin = Linear(4, 4)
    forward(x) {
        return lin(x) if len(open) == 2 else x
    }
}
model Host(globals: str = "${HOME} `rm -rf /` %(x)s {0}") {
    input x: Tensor[N, 4]
    system = Payload()
    forward(x) {
        return system(x)
    }
}
"""


def test_hostile_names_and_strings_stay_data() -> None:
    source = generate(check_source(HOSTILE, "hostile.tdsl"))
    tree = ast.parse(source)
    strings = {
        n.value for n in ast.walk(tree) if isinstance(n, ast.Constant) and isinstance(n.value, str)
    }
    assert "\"); __import__('os').system('echo pwned') #" in strings
    assert "${HOME} `rm -rf /` %(x)s {0}" in strings
    assert "''' \"\"\" \\ end\n" in strings
    calls = [n.func for n in ast.walk(tree) if isinstance(n, ast.Call)]
    bare = {f.id for f in calls if isinstance(f, ast.Name)}
    assert not bare & {"__import__", "eval", "exec", "open", "compile", "getattr"}
    # `system` is a submodule here: it may only ever be called as self.system(...)
    owners = {
        ast.unparse(f.value) for f in calls if isinstance(f, ast.Attribute) and f.attr == "system"
    }
    assert owners == {"self"}
    program = tritondsl.compile(HOSTILE)
    model = program.Host()
    assert model(torch.zeros(2, 4)).shape == (2, 4)


def test_precision_fp32_disables_all_quantization() -> None:
    model = tritondsl.load_model("resnet18", precision="fp32")
    assert not any(isinstance(m, QuantModule) for m in model.modules())
    ternary = tritondsl.load_model("resnet18")
    quantized = [name for name, m in ternary.named_modules() if isinstance(m, QuantModule)]
    assert len(quantized) == 19 and "conv1" not in quantized and "fc" not in quantized


def test_compile_exposes_classes_and_source() -> None:
    program = tritondsl.compile(ROOT / "models" / "resnet18.tdsl")
    model = program.ResNet18(num_classes=10)
    assert isinstance(model, nn.Module) and model.fc.out_features == 10
    assert "class ResNet18(nn.Module):" in program.source
    assert program.model_names == ["ResNet18"]
    with pytest.raises(AttributeError, match="no block or model named 'ResNet50'"):
        program.ResNet50  # noqa: B018


def _image_sizes(info) -> list[dict[str, int]]:
    symbols = {d for t in info.inputs.values() for d in t.shape[1:] if isinstance(d, str)}
    if not symbols:
        return [{}]
    # ImageNet's size too, except for the big ones (VGG, U-Net), which train slowly there.
    sizes = (32, 224) if info.num_parameters() < 30_000_000 else (32,)
    return [dict.fromkeys(symbols, size) for size in sizes]


MODELS = [(s, name) for s in SOURCES for name in check_file(s).models]


@pytest.mark.slow
@pytest.mark.parametrize(("source", "name"), MODELS, ids=[f"{s.stem}-{n}" for s, n in MODELS])
def test_generated_model_forward_backward_and_shapes(source: Path, name: str) -> None:
    torch.manual_seed(0)
    model = tritondsl.compile(source).build(name)
    for sizes in _image_sizes(check_file(source).models[name]):
        info = check_file(source, sizes=sizes).models[name]
        batch = 2
        (declared,) = info.inputs.values()
        shape = [batch if d == "N" else d for d in declared.shape]
        if declared.dtype == "int64":  # token ids: below every embedding's vocabulary
            vocab = min(m.num_embeddings for m in model.modules() if isinstance(m, nn.Embedding))
            x = torch.randint(0, vocab, shape)
        else:
            x = torch.randn(*shape)
        model.train()
        model.zero_grad()
        out = model(x)
        expected = tuple(batch if d == "N" else d for d in info.output.shape)
        assert tuple(out.shape) == expected
        out.float().pow(2).mean().backward()
        for pname, param in model.named_parameters():
            assert param.grad is not None, f"{pname} got no gradient"
            assert torch.isfinite(param.grad).all(), pname
            # A bias can get an exactly zero gradient (a following BatchNorm cancels a
            # per-channel shift); a weight reached by the straight-through estimator cannot.
            if param.dim() > 1:
                assert param.grad.abs().sum() > 0, f"{pname} got an all-zero gradient"


@pytest.mark.parametrize(
    ("zoo", "reference", "args"),
    [
        ("resnet18", reference_nets.resnet18, {}),
        ("mobilenetv2", reference_nets.mobilenet_v2, {}),
        pytest.param(
            "mobilenetv2", reference_nets.mobilenet_v2, {"width_mult": 0.5}, marks=pytest.mark.slow
        ),
    ],
    ids=["resnet18", "mobilenetv2", "mobilenetv2-width0.5"],
)
@pytest.mark.slow
def test_fp32_zoo_computes_torchvisions_function(zoo, reference, args) -> None:
    torch.manual_seed(0)
    model = tritondsl.load_model(zoo, precision="fp32", **args).eval()
    with torch.no_grad():  # non-trivial BatchNorm statistics, so BN layout errors show
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                module.running_mean.uniform_(-0.5, 0.5)
                module.running_var.uniform_(0.5, 2.0)
                module.weight.uniform_(0.5, 1.5)
                module.bias.uniform_(-0.2, 0.2)
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        expected = reference(model.state_dict(), x)
        got = model(x)
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-4)


def test_a_torchvision_checkpoint_loads_strictly_into_the_ternary_model() -> None:
    fp32 = tritondsl.load_model("resnet18", precision="fp32")
    ternary = tritondsl.load_model("resnet18")
    ternary.load_state_dict(fp32.state_dict(), strict=True)
    assert torch.equal(ternary.layer1[0].conv1.weight, fp32.layer1[0].conv1.weight)


def test_generated_forward_checks_the_declared_input() -> None:
    model = tritondsl.load_model("resnet18")
    with pytest.raises(
        ValueError,
        match=r"ResNet18 expects 'x' of shape \[N, 3, H, W\] "
        r"\(declared at resnet18\.tdsl, line \d+\), got \[2, 4, 32, 32\]",
    ):
        model(torch.zeros(2, 4, 32, 32))
    with pytest.raises(ValueError, match=r"got \[3, 32, 32\]"):
        model(torch.zeros(3, 32, 32))


def test_keywords_name_submodules_like_torchvision_and_hugging_face() -> None:
    source = """
block Inner(c: int) = Sequential {
    block = Sequential(Conv2d(c, c, 1), ReLU())
}
model Net() {
    input x: Tensor[N, 4, 5, 5]
    model = Sequential {
        layer = Inner(4)
        input = Conv2d(4, 4, 1)
    }
    weights = Conv2d(4, 2, 1)
    forward(x) {
        let input = model(x)
        return weights(input)
    }
}
"""
    checked = check_source(source)
    built = tritondsl.compile(source).build()
    keys = [name for name, _ in built.state_dict().items()]
    assert keys == [item.name for item in checked.models["Net"].state_dict()]
    assert keys[:2] == ["model.layer.block.0.weight", "model.layer.block.0.bias"]
    assert "weights.weight" in keys and "model.input.weight" in keys
    assert built(torch.randn(2, 4, 5, 5)).shape == (2, 2, 5, 5)


def test_in_place_layers_keep_value_semantics() -> None:
    source = """model Net() {
    input x: Tensor[N, 4]
    act = ReLU(true)
    drop = Dropout(0.0, inplace=true)
    forward(x) {
        return x + drop(act(x))
    }
}
"""
    model = tritondsl.compile(source).build()
    x = torch.randn(3, 4)
    torch.testing.assert_close(model(x.clone()), x + torch.relu(x))
    assert "inplace" not in tritondsl.compile(source).source


def test_reading_layer_arguments_and_block_parameters() -> None:
    source = """block Stage(cin: int, cout: int) {
    conv = Conv2d(cin, cout, 3, padding=1)
    forward(x) {
        return conv(x)
    }
}
model Net() {
    input x: Tensor[N, 3, 8, 8]
    stage = Stage(3, 6)
    pool = MaxPool2d(2)
    head = Conv2d(stage.cout, stage.conv.out_channels, stage.conv.kernel_size,
                  padding=(stage.conv.kernel_size[0] - 1) // 2, stride=pool.stride)
    forward(x) {
        return head(pool(stage(x)))
    }
}
"""
    info = check_source(source).models["Net"]
    model = tritondsl.compile(source).build()
    assert model(torch.randn(2, 3, 8, 8)).shape == (2, 6, 2, 2) == (2, *info.output.shape[1:])
    assert model.stage.cout == 6 and model.head.kernel_size == (3, 3)
    with pytest.raises(CompileError, match=r"Conv2d\.bias is a tensor in PyTorch"):
        check_source(source.replace("stride=pool.stride", "bias=stage.conv.bias"))


def test_nested_sequential_loops_build_as_checked() -> None:
    # Each inner Sequential used to be hoisted out of its loop, reading loop names unbound.
    source = """
model Nested(stages: int = 3) {
    input x: Tensor[N, 4, 8, 8]
    body = Sequential {
        for s in range(stages) {
            let c = 4 * 2 ** s
            Sequential {
                for i in range(s + 1) {
                    Conv2d(c if i == 0 else 2 * c, 2 * c, 3, padding=1)
                    Sequential { ReLU() }
                }
            }
        }
    }
    forward(x) {
        return body(x)
    }
}
"""
    (info,) = check_source(source).models.values()
    model = tritondsl.compile(source).build()
    assert [k for k, _ in model.state_dict().items()] == [i.name for i in info.state_dict()]
    assert "body.2.5.0.weight" not in dict(model.state_dict())
    assert "body.2.4.weight" in dict(model.state_dict())
    assert tuple(model(torch.randn(1, 4, 8, 8)).shape) == (1, 32, 8, 8)

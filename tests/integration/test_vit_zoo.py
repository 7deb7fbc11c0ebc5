"""vit_b_16 and vit_tiny: torchvision's layout and, in fp32, its function."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F

from tests.conftest import DATA, ROOT
from tritondsl.compiler.check import check_file
from tritondsl.program import load_model

REFERENCE = json.loads((DATA / "torchvision_vit_b_16.json").read_text())


def _functional_vit(state: dict[str, torch.Tensor], x: torch.Tensor, heads: int) -> torch.Tensor:
    """torchvision's VisionTransformer.forward written with torch.nn.functional only."""
    dim = state["class_token"].shape[-1]
    patch = state["conv_proj.weight"].shape[-1]
    y = F.conv2d(x, state["conv_proj.weight"], state["conv_proj.bias"], stride=patch)
    y = y.reshape(len(x), dim, -1).permute(0, 2, 1)
    y = torch.cat([state["class_token"].expand(len(x), -1, -1), y], dim=1)
    y = y + state["encoder.pos_embedding"]
    layers = sorted({k.split(".")[2] for k in state if k.startswith("encoder.layers.")})
    for name in sorted(layers, key=lambda n: int(n.rsplit("_", 1)[1])):
        prefix = f"encoder.layers.{name}."
        p = {k.removeprefix(prefix): v for k, v in state.items() if k.startswith(prefix)}
        h = F.layer_norm(y, (dim,), p["ln_1.weight"], p["ln_1.bias"], 1e-6).transpose(0, 1)
        h, _ = F.multi_head_attention_forward(
            h, h, h, dim, heads, p["self_attention.in_proj_weight"],
            p["self_attention.in_proj_bias"], None, None, False, 0.0,
            p["self_attention.out_proj.weight"], p["self_attention.out_proj.bias"],
            training=False, need_weights=False,
        )
        y = y + h.transpose(0, 1)
        h = F.layer_norm(y, (dim,), p["ln_2.weight"], p["ln_2.bias"], 1e-6)
        h = F.linear(F.gelu(F.linear(h, p["mlp.0.weight"], p["mlp.0.bias"])), p["mlp.3.weight"],
                     p["mlp.3.bias"])
        y = y + h
    y = F.layer_norm(y, (dim,), state["encoder.ln.weight"], state["encoder.ln.bias"], 1e-6)
    return F.linear(y[:, 0], state["heads.head.weight"], state["heads.head.bias"])


def test_vit_b_16_layout_is_torchvision() -> None:
    info = check_file(ROOT / "models" / "vit_b_16.tdsl").models["ViT_B_16"]
    assert [[i.name, list(i.shape), i.dtype] for i in info.state_dict()] == \
        REFERENCE["state_dict"]
    assert info.num_parameters() == REFERENCE["num_parameters"]
    assert info.output.shape == ("N", REFERENCE["output_shape"][1])


@pytest.mark.slow
@pytest.mark.parametrize(("name", "heads", "image"), [("vit_b_16", 12, 224), ("vit_tiny", 3, 64)])
def test_fp32_function_is_torchvision(name: str, heads: int, image: int) -> None:
    torch.manual_seed(0)
    size = {"image_size": image} if name == "vit_tiny" else {}
    model = load_model(name, precision="fp32", **size).eval()
    with torch.no_grad():  # random values everywhere, biases and norms included
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * (0.02 if p.dim() > 1 else 0.5) + (p.dim() == 1))
    x = torch.randn(2, 3, image, image)
    with torch.no_grad():
        ours = model(x)
        theirs = _functional_vit(model.state_dict(), x, heads)
    assert float((ours - theirs).abs().max() / theirs.abs().max()) < 1e-5


def test_vit_tiny_is_vit_ti_16() -> None:
    model = load_model("vit_tiny")
    assert sum(p.numel() for p in model.parameters()) == 5_717_416
    keys = set(model.state_dict())
    assert "encoder.layers.encoder_layer_11.self_attention.in_proj_weight" in keys
    assert model.encoder.pos_embedding.shape == (1, 197, 192)


def test_both_vit_files_share_their_blocks() -> None:
    # vit_tiny.tdsl is vit_b_16.tdsl with other defaults; the blocks must not drift apart.
    def blocks(name: str) -> str:
        text = (ROOT / "models" / f"{name}.tdsl").read_text()
        return text[text.index("block SelfAttention") : text.index("model ")]

    assert blocks("vit_tiny") == blocks("vit_b_16")


def test_an_image_of_another_size_names_the_declaration() -> None:
    model = load_model("vit_tiny")
    with pytest.raises(ValueError, match=r"ViT_Tiny expects 'x' of shape \[N, 3, 224, 224\] "
                                         r"\(declared at vit_tiny\.tdsl, line \d+\), "
                                         r"got \[1, 3, 225, 225\]"):
        model(torch.zeros(1, 3, 225, 225))

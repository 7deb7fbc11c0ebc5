"""bitnet_b158: Hugging Face's BitNet and Llama layouts and functions, packed checkpoints,
and incremental decoding with a KV cache."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from tests.conftest import DATA
from tritondsl.export.artifact import ArtifactError
from tritondsl.export.bitnet import CheckpointError, load_hf_bitnet, unpack_hf_ternary
from tritondsl.export.hub import from_pretrained, save_pretrained
from tritondsl.program import load_model
from tritondsl.runtime import KVCache

# transformers is imported inside the tests: it imports triton, which must first see the
# TRITON_INTERPRET=1 that tests/kernels/conftest.py sets when pytest collects that folder.
REFERENCE = json.loads((DATA / "hf_bitnet_llama_tiny.json").read_text())
LLAMA = {"sub_norms": False, "squared_relu": False}


def _params(kind: str) -> dict[str, Any]:
    """The zoo parameters of the reference's tiny config (transformers 5.24)."""
    c = REFERENCE[kind]["config"]
    return {
        "vocab": c["vocab_size"], "dim": c["hidden_size"], "layers": c["num_hidden_layers"],
        "heads": c["num_attention_heads"], "kv_heads": c["num_key_value_heads"],
        "ffn": c["intermediate_size"], "context": c["max_position_embeddings"],
        "theta": c["rope_parameters"]["rope_theta"], "eps": c["rms_norm_eps"],
        **(LLAMA if kind == "llama" else {}),
    }


def _hf(kind: str) -> nn.Module:
    from transformers import BitNetConfig, BitNetForCausalLM, LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = dict(REFERENCE[kind]["config"], bos_token_id=None, eos_token_id=None)
    model = (BitNetForCausalLM(BitNetConfig(**config)) if kind == "bitnet"
             else LlamaForCausalLM(LlamaConfig(**config)))
    with torch.no_grad():  # random weights, far from the initializer's (norms included)
        for p in model.parameters():
            p.copy_(torch.randn_like(p) * 0.5 if p.dim() > 1 else torch.rand_like(p) + 0.5)
    return model.eval()


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.abs().max())


@pytest.mark.parametrize("kind", ["bitnet", "llama"])
def test_layout_is_transformers(kind: str) -> None:
    model = load_model("bitnet_b158", precision="fp32", **_params(kind))
    ours = {k: list(v.shape) for k, v in model.state_dict().items()}
    theirs = {name: shape for name, shape, _ in REFERENCE[kind]["state_dict"]}
    assert ours == theirs
    assert sum(p.numel() for p in model.parameters()) == REFERENCE[kind]["num_parameters"]


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["bitnet", "llama"])
def test_fp32_function_is_transformers(kind: str) -> None:
    hf = _hf(kind)
    # --precision fp32 leaves activation precisions alone: float inputs are asked for.
    model = load_model("bitnet_b158", precision="fp32", quantize_activations=False,
                       **_params(kind)).eval()
    model.load_state_dict(hf.state_dict(), strict=True)
    ids = torch.randint(0, 256, (2, 23), generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert _relative(model(ids), hf(ids).logits) < 1e-5


@pytest.mark.slow
@pytest.mark.parametrize("precision", ["fp32", None])
def test_cached_decoding_gives_the_uncached_logits(precision: str | None) -> None:
    torch.manual_seed(0)
    model = load_model("bitnet_b158", precision=precision, **_params("bitnet")).eval()
    ids = torch.randint(0, 256, (3, 20), generator=torch.Generator().manual_seed(2))
    cache = KVCache()
    with torch.no_grad():
        full = model(ids)
        steps = [model(ids[:, :7], cache=cache)]  # prefill, then one token at a time
        steps += [model(ids[:, t : t + 1], cache=cache) for t in range(7, 20)]
    assert len(cache) == 20 and len(cache.keys) == 2
    assert cache.keys[0].shape == (3, 2, 20, 16)
    # The two paths attend in a different order, so their floats differ in the last bits.
    # With int8 activations that can move a value across a rounding boundary, and the cache
    # carries it on (4 of 40 random models: up to 0.6% of the largest logit); a wrong
    # position or offset in the cache costs far more.
    tolerance = 1e-5 if precision == "fp32" else 1e-2
    assert _relative(torch.cat(steps, dim=1), full) < tolerance


def test_a_cache_of_another_model_is_refused() -> None:
    small = load_model("bitnet_b158", **_params("bitnet"))
    deeper = load_model("bitnet_b158", **{**_params("bitnet"), "layers": 3})
    cache = KVCache()
    with torch.no_grad():
        deeper(torch.zeros(1, 4, dtype=torch.long), cache=cache)
        with pytest.raises(ValueError, match="holds 3 attention layers, but the model has 2"):
            small(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_prompt_longer_than_the_context_names_the_tdsl_line() -> None:
    model = load_model("bitnet_b158", **{**_params("bitnet"), "context": 16})
    with pytest.raises(ValueError, match=r"17 positions do not fit the context of 16 tokens "
                                         r"\(rotary\(\.\.\., context=16\) at bitnet_b158\.tdsl, "
                                         r"line \d+\)"):
        model(torch.zeros(1, 17, dtype=torch.long))
    cache = KVCache()
    model(torch.zeros(1, 16, dtype=torch.long), cache=cache)
    with pytest.raises(ValueError, match="17 positions do not fit"):
        model(torch.zeros(1, 1, dtype=torch.long), cache=cache)


def test_token_ids_out_of_range_name_the_embedding() -> None:
    model = load_model("bitnet_b158", **_params("bitnet"))
    with pytest.raises(ValueError, match=r"token id 256 is out of range: Embedding\(256, 64\) "
                                         r"at bitnet_b158\.tdsl, line \d+ takes ids 0 to 255"):
        model(torch.tensor([[1, 256]]))
    with pytest.raises(ValueError, match="token id -1 is out of range"):
        model(torch.tensor([[-1, 2]]))


def test_sub_norms_are_chosen_per_layer() -> None:
    model = load_model("bitnet_b158", **_params("bitnet"), per_layer_sub_norms=[True, False])
    keys = set(model.state_dict())
    assert "model.layers.0.self_attn.attn_sub_norm.weight" in keys
    assert "model.layers.0.mlp.ffn_sub_norm.weight" in keys
    assert not any(k.startswith("model.layers.1.") and "sub_norm" in k for k in keys)


def test_tied_embeddings_share_one_parameter() -> None:
    model = load_model("bitnet_b158", **_params("bitnet"), tie_embeddings=True)
    assert model.lm_head.weight is model.model.embed_tokens.weight
    assert "lm_head.weight" in model.state_dict()
    assert sum(p.numel() for p in model.parameters()) == 119552 - 256 * 64


def _packed_checkpoint(hf: nn.Module) -> dict[str, torch.Tensor]:
    """What a published BitNet checkpoint holds: transformers' own packing of absmean codes,
    weight_scale = 1/γ (BitLinear divides by it), everything else in float."""
    from transformers.integrations.bitnet import pack_weights

    state = {}
    for key, tensor in hf.state_dict().items():
        if key.endswith("_proj.weight"):
            scale = 1.0 / tensor.abs().mean().clamp(min=1e-5)  # transformers' WeightQuant
            codes = (tensor * scale).round().clamp(-1, 1).to(torch.int8)
            state[key] = pack_weights(codes)
            state[key.replace(".weight", ".weight_scale")] = scale.reshape(1)
        else:
            state[key] = tensor.clone()
    return state


def test_transformers_packing_round_trips_through_our_reader() -> None:
    from transformers.integrations.bitnet import pack_weights

    codes = torch.randint(-1, 2, (10, 7), dtype=torch.int8)
    assert torch.equal(unpack_hf_ternary(pack_weights(codes.clone()), 10), codes)


def test_a_packed_checkpoint_loads_into_the_deployed_model() -> None:
    hf = _hf("bitnet")
    checkpoint = _packed_checkpoint(hf)
    # Float inputs: 8-bit ones would turn γ's last-bit differences into rounding flips.
    params = {**_params("bitnet"), "quantize_activations": False}
    float_model = load_model("bitnet_b158", **params).eval()
    float_model.load_state_dict(hf.state_dict(), strict=True)  # latent float weights
    packed_model = load_hf_bitnet(load_model("bitnet_b158", **params), checkpoint)
    proj = packed_model.model.layers[1].mlp.down_proj
    assert proj.deployed and proj.weight_packed.dtype == torch.uint8
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        # Both apply absmean ternary weights: quantized on the fly vs stored codes and γ.
        assert _relative(packed_model.eval()(ids), float_model(ids)) < 1e-5


def _hf_bit_linear(hf: nn.Module, checkpoint: dict[str, torch.Tensor]) -> nn.Module:
    """``hf`` with every projection a transformers ``BitLinear`` holding the packed codes:
    the published W1.58A8 function (per-token int8 absmax inputs)."""
    from transformers.integrations.bitnet import BitLinear

    for name, module in list(hf.named_modules()):
        if name.endswith("_proj") and isinstance(module, nn.Linear):
            layer = BitLinear(module.in_features, module.out_features, bias=False,
                              dtype=torch.float32)
            layer.weight.copy_(checkpoint[f"{name}.weight"])
            layer.weight_scale.copy_(checkpoint[f"{name}.weight_scale"])
            parent, _, leaf = name.rpartition(".")
            setattr(hf.get_submodule(parent), leaf, layer)
    return hf.eval()


def test_the_default_is_transformers_w158a8() -> None:
    """The zoo default quantizes every projection's input per token to int8 like BitNet's
    BitLinear (lm_head stays float in both); transformers' own layers are the reference."""
    hf = _hf("bitnet")
    checkpoint = _packed_checkpoint(hf)
    ours = load_hf_bitnet(load_model("bitnet_b158", **_params("bitnet")), checkpoint).eval()
    assert ours.model.layers[0].self_attn.q_proj.input_quant.per_token
    assert type(ours.lm_head) is nn.Linear  # float weights and inputs
    reference = _hf_bit_linear(hf, checkpoint)
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(5))
    float_inputs = load_hf_bitnet(
        load_model("bitnet_b158", quantize_activations=False, **_params("bitnet")), checkpoint
    ).eval()
    with torch.no_grad(), torch.compiler.set_stance("force_eager"):
        expected = reference(ids).logits
        got = ours(ids)
        assert _relative(got, expected) < 1e-4
        # 8-bit inputs are visible: float inputs are further from transformers' logits.
        assert _relative(float_inputs(ids), expected) > 10 * _relative(got, expected)


def test_a_checkpoint_of_another_vocabulary_is_one_located_error() -> None:
    hf = _hf("bitnet")
    checkpoint = _packed_checkpoint(hf)
    checkpoint["model.embed_tokens.weight"] = torch.zeros(300, 64)
    model = load_model("bitnet_b158", **_params("bitnet"))
    with pytest.raises(CheckpointError, match=r"model\.embed_tokens\.weight has shape \[300, 64\] "
                                              r"in the checkpoint, the model has \[256, 64\] "
                                              r"\(Embedding at bitnet_b158\.tdsl, line \d+\)"):
        load_hf_bitnet(model, checkpoint)


def test_a_packed_weight_of_another_size_is_refused() -> None:
    checkpoint = _packed_checkpoint(_hf("bitnet"))
    checkpoint["model.layers.0.mlp.up_proj.weight"] = torch.zeros(10, 64, dtype=torch.uint8)
    with pytest.raises(CheckpointError, match=r"up_proj\.weight has shape \[10, 64\]; a packed "
                                              r"\[160, 64\] weight is \[40, 64\]"):
        load_hf_bitnet(load_model("bitnet_b158", **_params("bitnet")), checkpoint)


def test_hub_round_trip_keeps_logits_and_the_cache_api(tmp_path) -> None:
    model = load_model("bitnet_b158", **_params("bitnet"), tie_embeddings=True).eval()
    ids = torch.randint(0, 256, (2, 9), generator=torch.Generator().manual_seed(4))
    with torch.no_grad():
        expected = model(ids)
        save_pretrained(model, tmp_path / "lm")
        loaded = from_pretrained(tmp_path / "lm").eval()
        assert loaded.lm_head.weight is loaded.model.embed_tokens.weight
        assert torch.equal(loaded(ids), expected)  # deployed on both sides: the same codes
        cache = KVCache()
        steps = torch.cat([loaded(ids[:, :5], cache=cache), loaded(ids[:, 5:], cache=cache)], 1)
    assert _relative(steps, expected) < 1e-5


def test_hub_config_of_another_vocabulary_names_the_layer(tmp_path) -> None:
    save_pretrained(load_model("bitnet_b158", **_params("bitnet")), tmp_path / "lm")
    config = json.loads((tmp_path / "lm" / "config.json").read_text())
    config["params"]["vocab"] = 300
    (tmp_path / "lm" / "config.json").write_text(json.dumps(config))
    with pytest.raises(ArtifactError, match=r"the model expects float32 \[300, 64\] "
                                            r"\((Embedding|Linear) at model\.tdsl, line \d+\)"):
        from_pretrained(tmp_path / "lm")


def test_float_ids_and_a_broken_shape_are_refused_with_the_declaration() -> None:
    model = load_model("bitnet_b158", **_params("bitnet"))
    with pytest.raises(TypeError, match=r"BitNetB158 expects 'ids' to be an integer tensor "
                                        r"\(int64\) \(declared at bitnet_b158\.tdsl, line \d+\), "
                                        r"got torch\.float32"):
        model(torch.zeros(1, 4))
    with pytest.raises(ValueError, match=r"BitNetB158 expects 'ids' of shape \[N, T\] \(declared "
                                         r"at bitnet_b158\.tdsl, line \d+\), got \[4\]"):
        model(torch.zeros(4, dtype=torch.long))

"""The README.md model card of a saved folder, built with huggingface_hub's ``ModelCard``.

A pure function of config.json and the file sizes, so the card is deterministic and can
be rewritten whenever files are added to the folder (``hub.write_model_card``). The card
metadata (``ModelCardData``: license, library_name, pipeline_tag, datasets, base_model,
metrics and their results) comes from config.json's optional ``card`` section, which
``save_pretrained(card=...)`` and the trainer's Hub export fill in.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

from huggingface_hub import EvalResult, ModelCard, ModelCardData

WEIGHTS_NAME = "model.safetensors"
TOKENIZER_NAME = "tokenizer.json"
_PACKING = {
    "2bit": "2-bit codes (four trits per byte)",
    "base3": "base-3 codes (five trits per byte, 1.6 bits per weight)",
}


def render_model_card(config: Mapping[str, Any], sizes: Mapping[str, int]) -> str:
    """Model card text for a folder with ``config`` whose files have ``sizes`` (bytes)."""
    model = config["model"]
    tags = ["tritondsl", "ternary", "safetensors"]
    # Hub search filters on tags; an exported graph beside the weights is worth one.
    if any(name.endswith(".onnx") for name in sizes):
        tags.append("onnx")
    params = ", ".join(f"{k}={json.dumps(v)}" for k, v in config["params"].items())
    override = config["precision"]
    data = card_data(config, tags)
    lines = [
        f"# {model} — ternary weights (tritondsl)",
        "",
        f"`{model}({params})` from `model.tdsl`, saved by tritondsl {config['tritondsl_version']}"
        + (f" with every precision overridden to `{override}`" if override else "")
        + ". "
        + (
            f"Ternary weights are stored as {_PACKING[config['packing']]} plus fp32 scales; "
            if any(p.startswith("ternary") for p in config["layers"].values())
            else "No layer is ternary; "
        )
        + "everything else keeps its own dtype.",
        "",
        "## Use",
        "",
        "```python",
        "import tritondsl",
        "",
        'model = tritondsl.from_pretrained("path/to/this/folder")  # or the Hub repo id',
        "```",
        "",
        "Loading rebuilds the network from `model.tdsl` with tritondsl's own compiler and "
        "reads `model.safetensors`; nothing is unpickled and no Python from this folder runs.",
        "",
        "## Precision",
        "",
        "| precision | layers |",
        "|---|---:|",
        *(f"| `{p}` | {n} |" for p, n in sorted(Counter(config["layers"].values()).items())),
        "",
        "## Size (measured)",
        "",
        "| file | bytes on disk |",
        "|---|---:|",
        *(f"| `{name}` | {size:,} |" for name, size in sorted(sizes.items())),
        f"| fp32 state_dict, for comparison | {config['fp32_bytes']:,} |",
        "",
    ]
    weights = sizes.get(WEIGHTS_NAME)
    if weights:
        ratio = config["fp32_bytes"] / weights
        lines += [f"`{WEIGHTS_NAME}` is {ratio:.1f}× smaller than the fp32 state_dict.", ""]
    training = dict(config.get("card", {}).get("training") or {})
    if training:
        lines += ["## Training", "", "| setting | value |", "|---|---|"]
        lines += [*(f"| {name} | `{json.dumps(value)}` |" for name, value in training.items()), ""]
    if config["files"].get(TOKENIZER_NAME):
        lines += ["## Tokenizer", "", f"`{TOKENIZER_NAME}` is the tokenizer it was trained with "
                  "(Hugging Face `tokenizers` format): "
                  "`tokenizers.Tokenizer.from_file(\"tokenizer.json\")`.", ""]
    metrics = dict(config.get("card", {}).get("metrics") or {})
    if metrics:
        lines += ["## Evaluation (from the training run)", "", "| metric | value |", "|---|---:|"]
        lines += [*(f"| {name} | {value:.4f} |" for name, value in sorted(metrics.items())), ""]
    text = "---\n" + data.to_yaml() + "\n---\n\n" + "\n".join(lines)
    return str(ModelCard(text, ignore_metadata_errors=False))


def card_data(config: Mapping[str, Any], tags: list[str]) -> ModelCardData:
    """The card's metadata: config.json's ``card`` section plus what the folder says."""
    card = dict(config.get("card") or {})
    metrics: dict[str, float] = dict(card.get("metrics") or {})
    datasets = card.get("datasets")
    results = None
    if metrics and datasets and card.get("pipeline_tag"):
        first = datasets[0] if isinstance(datasets, list) else datasets
        results = [
            EvalResult(task_type=card["pipeline_tag"], dataset_type=first, dataset_name=first,
                       dataset_split="test", metric_type=name, metric_value=value)
            for name, value in sorted(metrics.items())
        ]  # fmt: skip
    return ModelCardData(
        library_name="tritondsl",
        tags=tags,
        license=card.get("license"),
        pipeline_tag=card.get("pipeline_tag"),
        datasets=datasets,
        base_model=card.get("base_model"),
        metrics=sorted(metrics) or None,
        model_name=config["model"] if results else None,
        eval_results=results,
    )

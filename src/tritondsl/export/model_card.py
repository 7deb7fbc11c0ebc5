"""The README.md model card of a saved folder: YAML front matter and measured sizes.

A pure function of config.json and the file sizes, so the card is deterministic and can
be rewritten whenever files are added to the folder (``hub.write_model_card``).
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Mapping
from typing import Any

WEIGHTS_NAME = "model.safetensors"
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
    lines = [
        "---",
        "library_name: tritondsl",
        "tags:",
        *(f"- {tag}" for tag in tags),
        "---",
        "",
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
    return "\n".join(lines)

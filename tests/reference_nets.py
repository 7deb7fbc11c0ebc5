"""Independent functional forwards of torchvision's ResNet18 and MobileNetV2.

Written from torchvision's model definitions (torchvision/models/resnet.py and
mobilenetv2.py, v0.28), operating directly on a state_dict, so a test can show that a
generated model computes the same function as torchvision's when given the same weights.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

State = dict[str, Tensor]


def _bn(x: Tensor, sd: State, prefix: str) -> Tensor:
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=1e-5,
    )


def resnet18(sd: State, x: Tensor) -> Tensor:
    """torchvision.models.resnet18 forward in eval mode."""
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for layer, stride in (("layer1", 1), ("layer2", 2), ("layer3", 2), ("layer4", 2)):
        for block in (0, 1):
            p = f"{layer}.{block}"
            s = stride if block == 0 else 1
            out = F.relu(
                _bn(F.conv2d(x, sd[f"{p}.conv1.weight"], stride=s, padding=1), sd, f"{p}.bn1")
            )
            out = _bn(F.conv2d(out, sd[f"{p}.conv2.weight"], padding=1), sd, f"{p}.bn2")
            if f"{p}.downsample.0.weight" in sd:
                x = _bn(
                    F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd, f"{p}.downsample.1"
                )
            x = F.relu(out + x)
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def _conv_bn_relu6(x: Tensor, sd: State, prefix: str, stride: int, groups: int) -> Tensor:
    weight = sd[f"{prefix}.0.weight"]
    padding = (weight.shape[-1] - 1) // 2
    x = F.conv2d(x, weight, stride=stride, padding=padding, groups=groups)
    return F.relu6(_bn(x, sd, f"{prefix}.1"))


def mobilenet_v2(sd: State, x: Tensor) -> Tensor:
    """torchvision.models.mobilenet_v2 forward in eval mode (any width_mult)."""
    strides = [
        s
        for _, _, n, first in (
            (1, 16, 1, 1),
            (6, 24, 2, 2),
            (6, 32, 3, 2),
            (6, 64, 4, 2),
            (6, 96, 3, 1),
            (6, 160, 3, 2),
            (6, 320, 1, 1),
        )
        for s in [first] + [1] * (n - 1)
    ]
    x = _conv_bn_relu6(x, sd, "features.0", 2, 1)
    for i, stride in enumerate(strides, start=1):
        p = f"features.{i}.conv"
        inp = x
        j = 0
        if f"{p}.0.0.weight" in sd and sd[f"{p}.0.0.weight"].shape[-1] == 1:  # expansion
            x = _conv_bn_relu6(x, sd, f"{p}.0", 1, 1)
            j = 1
        hidden = sd[f"{p}.{j}.0.weight"].shape[0]
        x = _conv_bn_relu6(x, sd, f"{p}.{j}", stride, hidden)
        x = _bn(F.conv2d(x, sd[f"{p}.{j + 1}.weight"]), sd, f"{p}.{j + 2}")
        if stride == 1 and inp.shape[1] == x.shape[1]:
            x = inp + x
    x = _conv_bn_relu6(x, sd, f"features.{len(strides) + 1}", 1, 1)
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"])


def mobilenet_v2_parameter_count(width_mult: float, num_classes: int = 1000) -> int:
    """Parameters of torchvision's mobilenet_v2(width_mult=...), by its own channel rules."""

    def divisible(v: float, d: int = 8) -> int:
        new_v = max(d, int(v + d / 2) // d * d)
        return new_v + d if new_v < 0.9 * v else new_v

    def conv_bn(cin: int, cout: int, k: int, groups: int = 1) -> int:
        return cout * (cin // groups) * k * k + 2 * cout

    settings = ((1, 16, 1, 1), (6, 24, 2, 2), (6, 32, 3, 2), (6, 64, 4, 2), (6, 96, 3, 1),
                (6, 160, 3, 2), (6, 320, 1, 1))
    cin = divisible(32 * width_mult)
    last = divisible(1280 * max(1.0, width_mult))
    total = conv_bn(3, cin, 3)
    for t, c, n, _ in settings:
        cout = divisible(c * width_mult)
        for _ in range(n):
            hidden = round(cin * t)
            if t != 1:
                total += conv_bn(cin, hidden, 1)
            total += conv_bn(hidden, hidden, 3, groups=hidden) + conv_bn(hidden, cout, 1)
            cin = cout
    return total + conv_bn(cin, last, 1) + last * num_classes + num_classes

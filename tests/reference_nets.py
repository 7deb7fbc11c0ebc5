"""Independent functional forwards of torchvision's CNNs, and of the 2015 U-Net.

Written from torchvision's model definitions (torchvision/models/resnet.py, vgg.py,
mobilenetv2.py, mobilenetv3.py, efficientnet.py, v0.28) and from the U-Net paper,
operating directly on a state_dict, so a test can show that a generated model computes the
same function as torchvision's when given the same weights. Every forward is eval mode.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

State = dict[str, Tensor]


def _bn(x: Tensor, sd: State, prefix: str, eps: float = 1e-5) -> Tensor:
    return F.batch_norm(
        x,
        sd[f"{prefix}.running_mean"],
        sd[f"{prefix}.running_var"],
        sd[f"{prefix}.weight"],
        sd[f"{prefix}.bias"],
        training=False,
        eps=eps,
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


def resnet50(sd: State, x: Tensor) -> Tensor:
    """torchvision.models.resnet50: Bottleneck blocks [3, 4, 6, 3], stride on the 3x3 conv."""
    x = F.relu(_bn(F.conv2d(x, sd["conv1.weight"], stride=2, padding=3), sd, "bn1"))
    x = F.max_pool2d(x, 3, stride=2, padding=1)
    for layer, blocks, stride in (("layer1", 3, 1), ("layer2", 4, 2), ("layer3", 6, 2),
                                  ("layer4", 3, 2)):
        for block in range(blocks):
            p, s = f"{layer}.{block}", stride if block == 0 else 1
            out = F.relu(_bn(F.conv2d(x, sd[f"{p}.conv1.weight"]), sd, f"{p}.bn1"))
            out = F.conv2d(out, sd[f"{p}.conv2.weight"], stride=s, padding=1)
            out = F.relu(_bn(out, sd, f"{p}.bn2"))
            out = _bn(F.conv2d(out, sd[f"{p}.conv3.weight"]), sd, f"{p}.bn3")
            if f"{p}.downsample.0.weight" in sd:
                x = _bn(F.conv2d(x, sd[f"{p}.downsample.0.weight"], stride=s), sd,
                        f"{p}.downsample.1")
            x = F.relu(out + x)
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return F.linear(x, sd["fc.weight"], sd["fc.bias"])


def vgg11_bn(sd: State, x: Tensor) -> Tensor:
    """torchvision.models.vgg11_bn: configuration "A" with BatchNorm after every conv."""
    i = 0
    for v in (64, "M", 128, "M", 256, 256, "M", 512, 512, "M", 512, 512, "M"):
        if v == "M":
            x, i = F.max_pool2d(x, 2, 2), i + 1
            continue
        x = F.conv2d(x, sd[f"features.{i}.weight"], sd[f"features.{i}.bias"], padding=1)
        x, i = F.relu(_bn(x, sd, f"features.{i + 1}")), i + 3
    x = torch.flatten(F.adaptive_avg_pool2d(x, (7, 7)), 1)
    x = F.relu(F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    x = F.relu(F.linear(x, sd["classifier.3.weight"], sd["classifier.3.bias"]))
    return F.linear(x, sd["classifier.6.weight"], sd["classifier.6.bias"])


def _divisible(v: float, d: int = 8) -> int:
    new_v = max(d, int(v + d / 2) // d * d)
    return new_v + d if new_v < 0.9 * v else new_v


def _conv_bn(x: Tensor, sd: State, prefix: str, stride: int = 1, groups: int = 1,
             act: str = "", eps: float = 1e-5) -> Tensor:
    """Conv2dNormActivation: conv (padding (k - 1) // 2), BatchNorm, activation."""
    weight = sd[f"{prefix}.0.weight"]
    x = F.conv2d(x, weight, stride=stride, padding=(weight.shape[-1] - 1) // 2, groups=groups)
    x = _bn(x, sd, f"{prefix}.1", eps)
    return {"": lambda t: t, "RE": F.relu, "HS": F.hardswish, "SiLU": F.silu}[act](x)


def _squeeze_excitation(x: Tensor, sd: State, prefix: str, inner, gate) -> Tensor:
    scale = F.adaptive_avg_pool2d(x, 1)
    scale = inner(F.conv2d(scale, sd[f"{prefix}.fc1.weight"], sd[f"{prefix}.fc1.bias"]))
    scale = gate(F.conv2d(scale, sd[f"{prefix}.fc2.weight"], sd[f"{prefix}.fc2.bias"]))
    return scale * x


# torchvision's _mobilenet_v3_conf: input, kernel, expanded, out, use_se, activation, stride
MOBILENET_V3 = {
    "small": ([(16, 3, 16, 16, True, "RE", 2), (16, 3, 72, 24, False, "RE", 2),
               (24, 3, 88, 24, False, "RE", 1), (24, 5, 96, 40, True, "HS", 2),
               (40, 5, 240, 40, True, "HS", 1), (40, 5, 240, 40, True, "HS", 1),
               (40, 5, 120, 48, True, "HS", 1), (48, 5, 144, 48, True, "HS", 1),
               (48, 5, 288, 96, True, "HS", 2), (96, 5, 576, 96, True, "HS", 1),
               (96, 5, 576, 96, True, "HS", 1)], 1024),
    "large": ([(16, 3, 16, 16, False, "RE", 1), (16, 3, 64, 24, False, "RE", 2),
               (24, 3, 72, 24, False, "RE", 1), (24, 5, 72, 40, True, "RE", 2),
               (40, 5, 120, 40, True, "RE", 1), (40, 5, 120, 40, True, "RE", 1),
               (40, 3, 240, 80, False, "HS", 2), (80, 3, 200, 80, False, "HS", 1),
               (80, 3, 184, 80, False, "HS", 1), (80, 3, 184, 80, False, "HS", 1),
               (80, 3, 480, 112, True, "HS", 1), (112, 3, 672, 112, True, "HS", 1),
               (112, 5, 672, 160, True, "HS", 2), (160, 5, 960, 160, True, "HS", 1),
               (160, 5, 960, 160, True, "HS", 1)], 1280),
}


def mobilenet_v3(arch: str, sd: State, x: Tensor, width_mult: float = 1.0) -> Tensor:
    """torchvision.models.mobilenet_v3_small / _large (BatchNorm eps 0.001)."""
    settings, _ = MOBILENET_V3[arch]
    eps = 0.001
    x = _conv_bn(x, sd, "features.0", stride=2, act="HS", eps=eps)
    for i, (cin, _, expanded, cout, use_se, act, stride) in enumerate(settings, start=1):
        cin, expanded = _divisible(cin * width_mult), _divisible(expanded * width_mult)
        cout = _divisible(cout * width_mult)
        p, j, inp = f"features.{i}.block", 0, x
        if expanded != cin:
            x, j = _conv_bn(x, sd, f"{p}.0", act=act, eps=eps), 1
        x = _conv_bn(x, sd, f"{p}.{j}", stride=stride, groups=expanded, act=act, eps=eps)
        if use_se:
            j += 1
            x = _squeeze_excitation(x, sd, f"{p}.{j}", F.relu, F.hardsigmoid)
        x = _conv_bn(x, sd, f"{p}.{j + 1}", eps=eps)
        if stride == 1 and cin == cout:
            x = x + inp
    x = _conv_bn(x, sd, f"features.{len(settings) + 1}", act="HS", eps=eps)
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    x = F.hardswish(F.linear(x, sd["classifier.0.weight"], sd["classifier.0.bias"]))
    return F.linear(x, sd["classifier.3.weight"], sd["classifier.3.bias"])


def efficientnet_b0(sd: State, x: Tensor) -> Tensor:
    """torchvision.models.efficientnet_b0 (stochastic depth is the identity in eval)."""
    # expand ratio, kernel, stride, input channels, output channels, layers
    settings = [(1, 3, 1, 32, 16, 1), (6, 3, 2, 16, 24, 2), (6, 5, 2, 24, 40, 2),
                (6, 3, 2, 40, 80, 3), (6, 5, 1, 80, 112, 3), (6, 5, 2, 112, 192, 4),
                (6, 3, 1, 192, 320, 1)]
    x = _conv_bn(x, sd, "features.0", stride=2, act="SiLU")
    for stage, (expand, _, stride, cin, cout, layers) in enumerate(settings, start=1):
        for block in range(layers):
            c, s = (cin, stride) if block == 0 else (cout, 1)
            expanded = _divisible(c * expand)
            p, j, inp = f"features.{stage}.{block}.block", 0, x
            if expanded != c:
                x, j = _conv_bn(x, sd, f"{p}.0", act="SiLU"), 1
            x = _conv_bn(x, sd, f"{p}.{j}", stride=s, groups=expanded, act="SiLU")
            x = _squeeze_excitation(x, sd, f"{p}.{j + 1}", F.silu, torch.sigmoid)
            x = _conv_bn(x, sd, f"{p}.{j + 2}")
            if s == 1 and c == cout:
                x = x + inp
    x = _conv_bn(x, sd, "features.8", act="SiLU")
    x = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
    return F.linear(x, sd["classifier.1.weight"], sd["classifier.1.bias"])


def unet(sd: State, x: Tensor, depth: int = 5) -> Tensor:
    """The 2015 U-Net with padded convs, transposed-conv upsampling, no BatchNorm."""

    def double_conv(t: Tensor, prefix: str) -> Tensor:
        t = F.relu(F.conv2d(t, sd[f"{prefix}.0.weight"], sd[f"{prefix}.0.bias"], padding=1))
        return F.relu(F.conv2d(t, sd[f"{prefix}.2.weight"], sd[f"{prefix}.2.bias"], padding=1))

    skips = [double_conv(x, "inc")]
    for i in range(depth - 1):
        skips.append(double_conv(F.max_pool2d(skips[-1], 2), f"down.{i}.1"))
    y = skips.pop()
    for i in range(depth - 1):
        p = f"up.{i}"
        y = F.conv_transpose2d(y, sd[f"{p}.up.weight"], sd[f"{p}.up.bias"], stride=2)
        y = double_conv(torch.cat([skips.pop(), y], dim=1), f"{p}.conv")
    return F.conv2d(y, sd["outc.weight"], sd["outc.bias"])

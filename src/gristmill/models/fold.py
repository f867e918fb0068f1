"""Inference rewrites of an eager PyTorch module's graph: less memory per forward pass.

``for_inference`` traces the module with ``torch.fx`` and

- folds every eval-mode ``BatchNorm2d`` into the ``Conv2d`` whose output only it reads (the
  convolution's weights and bias absorb the normalisation), so the normalised copy of each
  convolution's output is never allocated;
- adds a residual in place (``a.add_(b)`` instead of ``a + b``) when ``a`` is a convolution's or
  normalisation's fresh output that nothing else reads, so the sum needs no third buffer.

Why: a CPU worker's memory is mostly its forward pass's activations, which the tuned allocator
keeps between batches (measured on the ResNet-50 benchmark model, batch 8, one thread: 184 MB of
heap before, 100 MB after, at the same speed). Values change only by rounding (folding reorders
the arithmetic: about 1e-6 relative). Modules the job reads through forward hooks (``keep``) are
left as they are, and a module ``fx`` cannot trace is returned unchanged.

The rewrite is a pure function of the module's structure, so a worker that builds the module on
the meta device and rewrites it gets the same parameter names as the driver that saved the folded
weights for it (``torch.share_weights`` / ``load_shared``).
"""

from __future__ import annotations

import copy
import operator
from collections.abc import Collection
from typing import Any

import torch
from torch import fx, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval

_FRESH_OUTPUT = (nn.Conv2d, nn.BatchNorm2d)  # modules whose output is a new tensor, never a view


class _Tracer(fx.Tracer):
    """Keeps whole: subclasses of convolution and normalisation layers (a "same"-padding Conv2d,
    say), as ``fx`` does for torch's own, since their bodies often depend on the input's shape;
    and the ``keep`` modules, so that a hooked block is still called as one module."""

    def __init__(self, keep: set[str]) -> None:
        super().__init__()
        self.keep = keep

    def is_leaf_module(self, m: nn.Module, qualified_name: str) -> bool:
        return (qualified_name in self.keep or isinstance(m, _FRESH_OUTPUT)
                or super().is_leaf_module(m, qualified_name))


def add_into(a: torch.Tensor, b: Any) -> torch.Tensor:
    """``a + b``, written into ``a`` when the sum has ``a``'s shape and dtype."""
    if isinstance(b, torch.Tensor) and b.shape == a.shape and b.dtype == a.dtype:
        return a.add_(b)
    return a + b


def for_inference(module: nn.Module, keep: Collection[str] = ()) -> nn.Module:
    """``module`` rewritten as described above, or ``module`` itself if nothing applies.

    Example::

        fast = for_inference(resnet.eval(), keep={"layer4"})  # layer4's output stays hookable
    """
    if module.training or isinstance(module, torch.jit.ScriptModule):
        return module
    kept = set(keep)
    try:
        traced = fx.GraphModule(module, _Tracer(kept).trace(module), type(module).__name__)
    except Exception:  # data-dependent control flow and the like: run the module as written
        return module
    modules = dict(traced.named_modules())
    changed = _fold_batchnorm(traced, modules, kept) + _add_in_place(traced, modules, kept)
    if not changed:
        return module
    traced.graph.lint()
    traced.delete_all_unused_submodules()
    traced.recompile()
    return traced.eval()


def _fold_batchnorm(traced: fx.GraphModule, modules: dict[str, nn.Module], keep: set[str]) -> int:
    count = 0
    for node in list(traced.graph.nodes):
        if node.op != "call_module" or not isinstance(modules.get(node.target), nn.BatchNorm2d):
            continue
        conv_node = node.args[0] if node.args else None
        if (not isinstance(conv_node, fx.Node) or conv_node.op != "call_module"
                or not isinstance(modules.get(conv_node.target), nn.Conv2d)
                or len(conv_node.users) > 1 or {node.target, conv_node.target} & keep):
            continue
        bn, conv = modules[node.target], modules[conv_node.target]
        if bn.training or conv.training or not bn.track_running_stats or bn.running_mean is None:
            continue
        fused = _structure_only(conv) if conv.weight.is_meta else fuse_conv_bn_eval(conv, bn)
        _set_submodule(traced, conv_node.target, fused)
        modules[conv_node.target] = fused
        node.replace_all_uses_with(conv_node)
        traced.graph.erase_node(node)
        count += 1
    return count


def _add_in_place(traced: fx.GraphModule, modules: dict[str, nn.Module], keep: set[str]) -> int:
    count = 0
    for node in list(traced.graph.nodes):
        if node.op != "call_function" or node.target not in (operator.add, torch.add):
            continue
        if len(node.args) != 2 or node.kwargs:
            continue
        a, b = node.args
        if (not isinstance(a, fx.Node) or a.op != "call_module" or a.target in keep
                or not isinstance(modules.get(a.target), _FRESH_OUTPUT) or len(a.users) > 1
                or b is a):
            continue
        with traced.graph.inserting_after(node):
            replacement = traced.graph.call_function(add_into, (a, b))
        node.replace_all_uses_with(replacement)
        traced.graph.erase_node(node)
        count += 1
    return count


def _structure_only(conv: nn.Conv2d) -> nn.Conv2d:
    """The folded convolution's shape on the meta device: its values come from the weights file
    (``load_shared``), and meta arithmetic would run torch's Python reference kernels, whose first
    use imports ``torch._dynamo`` (seconds and tens of MB per worker)."""
    fused = copy.deepcopy(conv)
    if fused.bias is None:
        fused.bias = nn.Parameter(torch.empty(conv.out_channels, device="meta"),
                                  requires_grad=False)
    return fused


def _set_submodule(root: nn.Module, qualified: str, module: nn.Module) -> None:
    parent, _, name = qualified.rpartition(".")
    setattr(root.get_submodule(parent) if parent else root, name, module)

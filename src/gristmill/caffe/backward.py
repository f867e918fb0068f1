"""Caffe's backward pass for :class:`gristmill.caffe.Net`, layer by layer over torch autograd.

Contract: :func:`analyse` computes, once per net, the flags Caffe's ``Net::Init`` computes: which
layers run backward, which bottoms get a diff, which parameters get one. The rules are Caffe's:
a layer needs backward when a bottom needs it or one of its parameters has ``lr_mult != 0``
(default 1; BatchNorm's statistics never), and only when it feeds a loss (a top with a nonzero
``loss_weight``); ``propagate_down: false`` stops a bottom, and a layer whose tops all stop is
skipped; ``force_backward: true`` then turns every layer and every bottom on (overriding
``propagate_down``, as Caffe does). So a deploy net with no ``loss_weight`` and no
``force_backward`` computes no diff at all, exactly like pycaffe. Net inputs never need backward by
themselves: their diffs are computed only when forced (or ``propagate_down: true`` asks for them).

:func:`record` runs the forward pass with autograd on only where a diff can be asked for: each
layer's inputs and parameters enter as their own leaves, so :func:`backward` can replay Caffe's
``BackwardFromTo``: walk the layers in reverse, read each layer's top diffs from the blobs' diff
arrays, write its bottom diffs into them (overwriting) and add its parameter gradients to the
parameters' diffs (accumulating, as Caffe's layers do; ``Net.clear_param_diffs`` zeroes them).
Blobs keep one diff array per name, so an in-place chain (``conv1`` -> ReLU in place) leaves the
diff of the value entering the chain, as Caffe's shared blob does. A value read by several layers
gets an implicit Split (Caffe's ``insert_splits``): its readers' diffs are summed.
"""

from __future__ import annotations

from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np
import torch

from .graph import Graph, Op

Key = Hashable  # a blob name, or ("split", value id, reader index) for a Split's top

# Layer types whose stored blobs are not trainable parameters (Caffe forces their lr_mult to 0
# or leaves them to the layer's own code), so no parameter diff is computed here.
NO_PARAM_GRAD = ("BatchNorm", "Python")


@dataclass(eq=False)
class Node:
    """One step of the backward walk: a graph op, or an implicit Split of ``value``."""

    op: Op | None
    bottoms: list[Key]
    tops: list[Key]
    n_params: int = 0
    loss: list[float] = field(default_factory=list)  # loss_weight of each top
    value: int = 0


@dataclass(eq=False)
class Flags:
    """Caffe's ``layer_need_backward_`` / ``bottom_need_backward_`` / ``param_propagate_down``."""

    nodes: list[Node]
    layer: list[bool]
    bottom: list[list[bool]]
    param: list[list[bool]]
    index: dict[str, int] = field(default_factory=dict)  # layer name -> node index

    def any(self) -> bool:
        return any(self.layer)

    def loss_seeds(self) -> list[tuple[Key, float]]:
        """The tops whose diff Caffe sets to their ``loss_weight`` at load (the backward seeds)."""
        return [(k, w) for n in self.nodes for k, w in zip(n.tops, n.loss, strict=True) if w]

    def of(self, op: Op) -> int:
        return self.index[op.layer.name]


@dataclass(eq=False)
class Record:
    """One op's forward under autograd: its input and parameter leaves, and its outputs."""

    xs: list[torch.Tensor]
    ps: list[torch.Tensor]
    outs: list[torch.Tensor]


def analyse(graph: Graph, n_params: Callable[[Op], int]) -> Flags:
    """The backward flags of ``graph``, by Caffe's ``Net::Init`` rules (see the module doc)."""
    nodes = _nodes(graph, n_params)
    blob_need: dict[Key, bool] = {}
    layer, bottom, param = [], [], []
    for node in nodes:
        op = node.op
        down = op.propagate_down if op is not None else ()
        need = any(blob_need.get(k, False) for k in node.bottoms)
        bottom.append([down[j] if down else blob_need.get(k, False)
                       for j, k in enumerate(node.bottoms)])
        lr = op.lr_mult if op is not None else ()
        frozen = op is not None and op.layer.type == "BatchNorm"
        pneed = [not frozen and (lr[i] if i < len(lr) else 1.0) != 0 for i in range(node.n_params)]
        param.append(pneed)
        need |= any(pneed)
        layer.append(need)
        if need:
            blob_need.update((k, True) for k in node.tops)
    under: set[Key] = set()
    skip: set[Key] = set()
    for i in reversed(range(len(nodes))):
        node = nodes[i]
        contributes = any(w != 0 for w in node.loss) or any(k in under for k in node.tops)
        if layer[i] and all(k in skip for k in node.tops):
            layer[i] = False
            bottom[i] = [False] * len(node.bottoms)
        if not contributes:
            layer[i] = False
        for j, k in enumerate(node.bottoms):
            if contributes:
                under.add(k)
            else:
                bottom[i][j] = False
            if not bottom[i][j]:
                skip.add(k)
    if graph.force_backward:
        for i, node in enumerate(nodes):
            layer[i] = True
            bottom[i] = [True] * len(node.bottoms)
            param[i] = [True] * node.n_params
    index = {n.op.layer.name: i for i, n in enumerate(nodes) if n.op is not None}
    return Flags(nodes, layer, bottom, param, index)


def _nodes(graph: Graph, n_params: Callable[[Op], int]) -> list[Node]:
    """The ops in order, keyed by blob name, with a Split after each value read more than once.

    As in Caffe's ``insert_splits``, a top with a nonzero ``loss_weight`` counts as one more
    reader: when something else reads it too, the Split's first top carries the loss instead.
    """
    readers: dict[int, list[tuple[Op, int]]] = {}
    for op in graph.ops:
        for j, v in enumerate(op.inputs):
            readers.setdefault(v, []).append((op, j))
    name = graph.value_names()
    key_of: dict[tuple[int, int], Key] = {}  # (id(op), input slot) -> key read there

    def splits(values: list[int], losses: list[float]) -> list[Node]:
        made = []
        for v, loss in zip(values, losses, strict=True):
            reads = readers.get(v, [])
            if len(reads) + (loss != 0) < 2:
                for op, j in reads:
                    key_of[id(op), j] = name[v]
                continue
            tops: list[Key] = [("split", v, "loss")] if loss else []
            for k, (op, j) in enumerate(reads):
                key_of[id(op), j] = ("split", v, k)
                tops.append(key_of[id(op), j])
            made.append(Node(None, [name[v]], tops, loss=[loss] + [0.0] * (len(tops) - 1)
                             if loss else [0.0] * len(tops), value=v))
        return made

    nodes = splits(list(graph.inputs.values()), [0.0] * len(graph.inputs))
    for op in graph.ops:
        losses = [op.loss_weight[t] if op.loss_weight else 0.0 for t in range(len(op.outputs))]
        node = Node(op, [key_of[id(op), j] for j in range(len(op.inputs))], list(op.tops),
                    n_params(op), loss=list(losses))
        nodes.append(node)
        made = splits(op.outputs, losses)
        for split in made:  # the loss moved onto the Split
            node.loss[op.outputs.index(split.value)] = 0.0
        nodes += made
    return nodes


def record(flags: Flags, plan: list[Op], feeds: dict[int, torch.Tensor], *,
           param_grads: Callable[[Op], bool]) -> tuple[dict[int, torch.Tensor], dict[int, Record]]:
    """Run ``plan`` keeping what :func:`backward` needs: (every value, records by node index).

    Ops that need no backward run without autograd; the others get detached leaves for their
    inputs (requiring grad where the bottom needs a diff) and parameters (where they do).
    """
    env = dict(feeds)
    records: dict[int, Record] = {}
    for op in plan:
        i = flags.of(op)
        ins = [env[v] for v in op.inputs]
        if not flags.layer[i]:
            with torch.no_grad():
                outs = op.layer.fn(ins, op.layer.params)
        else:
            xs = [_leaf(x, need) for x, need in zip(ins, flags.bottom[i], strict=True)]
            grads = param_grads(op)
            ps = [_leaf(p, grads and need) for p, need in
                  zip(op.layer.params, flags.param[i] if grads else [False] * len(op.layer.params),
                      strict=True)]
            with torch.enable_grad():
                outs = op.layer.fn(xs, ps)
            records[i] = Record(xs, ps, list(outs))
        env.update(zip(op.outputs, outs, strict=False))
    return env, records


def _leaf(t: torch.Tensor, grad: bool) -> torch.Tensor:
    leaf = t.detach()
    return leaf.requires_grad_(True) if grad and leaf.is_floating_point() else leaf


DiffOf = Callable[[Key, tuple[int, ...] | None], np.ndarray]


def backward(flags: Flags, records: dict[int, Record], lo: int, hi: int, diff_of: DiffOf,
             param_diffs: Callable[[Op], list[np.ndarray]]) -> None:
    """Caffe's ``BackwardFromTo(hi, lo)``: nodes ``hi`` down to ``lo`` that need backward.

    ``diff_of(key, shape)`` is the diff array of a blob, or of a Split's top (zeros of ``shape``
    when new); ``param_diffs(op)`` the diff arrays of the op's stored parameters.
    """
    for i in range(hi, lo - 1, -1):
        if not flags.layer[i]:
            continue
        node = flags.nodes[i]
        if node.op is None:  # Split: the sum of its readers' diffs
            if flags.bottom[i][0]:
                target = diff_of(node.bottoms[0], None)
                parts = [diff_of(k, target.shape) for k in node.tops]
                target[...] = sum(parts[1:], parts[0].copy())
            continue
        rec = records.get(i)
        if rec is None:
            raise RuntimeError(f"Net.backward(): layer {node.op.layer.name!r} has not run "
                               "forward; call net.forward() first")
        _layer_backward(node, rec, flags.bottom[i], flags.param[i], diff_of, param_diffs)


def _layer_backward(node: Node, rec: Record, bottom_need: list[bool], param_need: list[bool],
                    diff_of: DiffOf, param_diffs: Callable[[Op], list[np.ndarray]]) -> None:
    outs, seeds = [], []
    for key, out in zip(node.tops, rec.outs, strict=False):
        if out.requires_grad:
            diff = diff_of(key, tuple(out.shape))
            outs.append(out)
            # a copy: a gradient may alias its seed, and the seed's array is rewritten below
            seeds.append(torch.from_numpy(np.array(diff, np.float32))
                         .to(out.device, out.dtype).reshape(out.shape))
    wrt = [x for x in rec.xs if x.requires_grad] + [p for p in rec.ps if p.requires_grad]
    grads: dict[int, torch.Tensor | None] = {}
    if outs and wrt:
        got = torch.autograd.grad(outs, wrt, seeds, retain_graph=True, allow_unused=True)
        grads = {id(t): g for t, g in zip(wrt, got, strict=True)}
    # Read every top diff before writing: in place, a bottom's diff array is its top's.
    for j, (key, x) in enumerate(zip(node.bottoms, rec.xs, strict=True)):
        if bottom_need[j]:
            g = grads.get(id(x))
            target = diff_of(key, tuple(x.shape))
            target[...] = 0 if g is None else g.detach().cpu().numpy().reshape(target.shape)
    if any(param_need) and any(p.requires_grad for p in rec.ps):
        for target, p in zip(param_diffs(node.op), rec.ps, strict=False):
            g = grads.get(id(p))
            if g is not None:
                target += g.detach().cpu().numpy().reshape(target.shape)

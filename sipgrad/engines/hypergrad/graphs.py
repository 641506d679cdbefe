"""What an autograd graph keeps alive: the tensors its nodes saved for the backward pass.

The reverse modes report the memory a method holds across steps (RFHO's "memory usage");
for a kept graph that is the tensors its nodes saved, not the graph's outputs.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch

_SAVED_ATTRIBUTES: dict[type, tuple[str, ...]] = {}


def graph_saved_tensors(outputs: Iterable[torch.Tensor]) -> list[torch.Tensor]:
    """The tensors autograd's graph behind ``outputs`` keeps for the backward pass (each node once)."""
    seen_nodes, tensors, stack = set(), [], [t.grad_fn for t in outputs]
    while stack:
        node = stack.pop()
        if node is None or node in seen_nodes:
            continue
        seen_nodes.add(node)
        kind = type(node)
        if kind not in _SAVED_ATTRIBUTES:  # dir() is slow; node types are few
            _SAVED_ATTRIBUTES[kind] = tuple(a for a in dir(node) if a.startswith("_saved_"))
        for attribute in _SAVED_ATTRIBUTES[kind]:
            value = getattr(node, attribute, None)
            values = value if isinstance(value, (tuple, list)) else (value,)
            tensors += [v for v in values if isinstance(v, torch.Tensor)]
        stack.extend(next_node for next_node, _ in node.next_functions)
    return tensors

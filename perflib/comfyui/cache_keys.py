"""Which nodes of a prompt ComfyUI will serve from its cache: its default ("classic") cache keeps
the outputs of the last executed prompt, keyed by each node's input signature (its class, its
constant inputs, and the signatures of the nodes it links to, recursively), so a node whose
signature the last prompt also had does not run. A checkpoint already loaded is such a node.

Standard library only; no perflib imports.
"""
from __future__ import annotations

import hashlib
import json
from typing import Any, Iterable, Mapping


def node_signatures(graph: Mapping[str, Any]) -> dict[str, str]:
    """Every node's input signature as text (equal text: ComfyUI reuses the output)."""
    nodes = {str(node_id): node for node_id, node in graph.items()}
    signatures: dict[str, str] = {}
    for start in nodes:
        stack = [start]
        while stack:  # depth-first, without recursion: a chain may be thousands long
            node_id = stack[-1]
            if node_id in signatures:
                stack.pop()
                continue
            inputs = (nodes[node_id].get("inputs") or {})
            waiting = [str(v[0]) for v in inputs.values() if _is_link(v)
                       and str(v[0]) in nodes and str(v[0]) not in signatures]
            waiting = [w for w in waiting if w not in stack]  # a cycle: parsed elsewhere
            if waiting:
                stack.extend(waiting)
                continue
            stack.pop()
            signatures[node_id] = _signature(nodes[node_id], inputs, signatures)
    return signatures


def cached_nodes(graph: Mapping[str, Any], previous: Mapping[str, Any] | None,
                 needed: Iterable[str]) -> set[str]:
    """The `needed` nodes of `graph` whose output the `previous` executed prompt left in the
    cache (none without one)."""
    if not previous:
        return set()
    left = set(node_signatures(previous).values())
    mine = node_signatures(graph)
    return {node_id for node_id in needed if mine.get(node_id) in left}


def _signature(node: Mapping[str, Any], inputs: Mapping[str, Any],
               signatures: Mapping[str, str]) -> str:
    parts = {name: (["link", signatures.get(str(value[0]), "?"), value[1]]
                    if _is_link(value) else ["value", value])
             for name, value in sorted(inputs.items())}
    text = json.dumps([node.get("class_type"), parts], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()  # fixed size, whatever the depth


def _is_link(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 2 and isinstance(value[1], int) \
        and not isinstance(value[1], bool)

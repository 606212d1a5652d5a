"""The bundled demo MCP server: a few ComfyUI-copilot-flavoured tools over stdio.

``python -m supervisor`` with no config supervises this, so a new user sees a supervised
server answer at once. Run it alone with ``python -m supervisor._demo_server``.

The tools mirror the seed's copilot tools (``recall_workflow``, ``search_nodes``, ...) over
a small built-in catalogue; each carries its category in ``_meta`` and honest annotations.
"""

from __future__ import annotations

from typing import Any

from mcp.server.mcpserver import MCPServer
from mcp_types import ToolAnnotations

READ_ONLY = ToolAnnotations(read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=False)

NODES: dict[str, dict[str, Any]] = {
    "KSampler": {"category": "sampling", "inputs": ["model", "positive", "negative", "latent_image", "seed", "steps"]},
    "CheckpointLoaderSimple": {"category": "loaders", "inputs": ["ckpt_name"]},
    "CLIPTextEncode": {"category": "conditioning", "inputs": ["text", "clip"]},
    "EmptyLatentImage": {"category": "latent", "inputs": ["width", "height", "batch_size"]},
    "VAEDecode": {"category": "latent", "inputs": ["samples", "vae"]},
    "SaveImage": {"category": "image", "inputs": ["images", "filename_prefix"]},
    "LoraLoader": {"category": "loaders", "inputs": ["model", "clip", "lora_name", "strength_model"]},
    "ControlNetApply": {"category": "conditioning", "inputs": ["conditioning", "control_net", "image", "strength"]},
}

WORKFLOWS: dict[str, list[str]] = {
    "text-to-image": ["CheckpointLoaderSimple", "CLIPTextEncode", "EmptyLatentImage", "KSampler", "VAEDecode", "SaveImage"],
    "lora text-to-image": ["CheckpointLoaderSimple", "LoraLoader", "CLIPTextEncode", "KSampler", "VAEDecode", "SaveImage"],
    "controlnet pose": ["CheckpointLoaderSimple", "ControlNetApply", "CLIPTextEncode", "KSampler", "VAEDecode"],
}

server = MCPServer("mcp-supervisor-demo", instructions="A demo ComfyUI catalogue served under the supervisor.")


@server.tool(annotations=READ_ONLY, meta={"category": "workflow"})
def recall_workflow(query: str, limit: int = 3) -> list[dict[str, Any]]:
    """Find stored workflows whose name matches the query, best first."""
    words = query.lower().split()
    scored = sorted(
        ((sum(w in name for w in words), name) for name in WORKFLOWS),
        key=lambda pair: (-pair[0], pair[1]),
    )
    return [{"name": name, "nodes": WORKFLOWS[name]} for score, name in scored[:limit] if score > 0]


@server.tool(annotations=READ_ONLY, meta={"category": "node"})
def search_nodes(query: str) -> list[str]:
    """Search node types by name or category (case-insensitive substring)."""
    q = query.lower()
    return sorted(name for name, info in NODES.items() if q in name.lower() or q in info["category"])


@server.tool(annotations=READ_ONLY, meta={"category": "node"})
def get_node_info(name: str) -> dict[str, Any]:
    """The category and inputs of one node type."""
    if name not in NODES:
        raise ValueError(f"unknown node {name!r}; try search_nodes")
    return {"name": name, **NODES[name]}


@server.tool(annotations=READ_ONLY, meta={"category": "validation"})
def validate_workflow(nodes: list[str]) -> dict[str, Any]:
    """Check that every node in a workflow exists and that it ends by saving or decoding."""
    unknown = [n for n in nodes if n not in NODES]
    ends_well = bool(nodes) and nodes[-1] in ("SaveImage", "VAEDecode")
    return {"valid": not unknown and ends_well, "unknown_nodes": unknown, "ends_with_output": ends_well}


if __name__ == "__main__":
    server.run("stdio")

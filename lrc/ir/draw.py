"""A picture of a Graph: nodes in layers by dependency depth, states highlighted."""
from __future__ import annotations

import networkx as nx

from .dims import Role
from .graph import Graph
from .nodes import Input
from .printer import format_node, print_names

_COLORS = {"state": "#f4a259", "input": "#8ecae6", "output": "#90be6d", "node": "#e9ecef"}


def _kind(g: Graph, name: str) -> str:
    node = g[name]
    if isinstance(node, Input):
        return "state" if node.role is Role.STATE else "input"
    if name in g.new_state_names:
        return "state"
    return "output" if name in g.outputs else "node"


def draw(g: Graph, path: str, width: int = 44) -> str:
    """Write a PNG of `g` to `path` (labelled nodes, states in orange); returns the path."""
    try:
        import matplotlib
    except ImportError as err:
        raise ImportError('drawing a graph needs matplotlib, which lrc does not install by '
                          'default: pip install "lrc[draw]" (or pip install matplotlib)',
                          name="matplotlib") from err

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    G = nx.DiGraph(g.nx)
    for layer, names in enumerate(nx.topological_generations(G)):
        for n in names:
            G.nodes[n]["layer"] = layer
    pos = nx.multipartite_layout(G, subset_key="layer", align="horizontal", scale=2.0)
    pos = {n: (x, -y) for n, (x, y) in pos.items()}
    names = print_names(g)
    labels = {}
    for n in G.nodes:
        node = g[n]
        if isinstance(node, Input) and node.role is not Role.INDEX:
            text = f"{n}: {node.annotation!r}"
        else:
            text = format_node(node, names)
        labels[n] = text if len(text) <= width else text[: width - 1] + "…"
    layers = 1 + max(G.nodes[n]["layer"] for n in G.nodes)
    per_layer = max(sum(1 for n in G.nodes if G.nodes[n]["layer"] == k) for k in range(layers))
    fig, ax = plt.subplots(figsize=(max(8, 3.2 * per_layer), max(4, 1.4 * layers)))
    colors = [_COLORS[_kind(g, n)] for n in G.nodes]
    nx.draw_networkx_edges(G, pos, ax=ax, arrows=True, arrowsize=12, edge_color="#888888",
                           node_size=2500)
    nx.draw_networkx_labels(G, pos, labels=labels, ax=ax, font_size=8,
                            bbox={"boxstyle": "round", "fc": "white", "ec": "#555555"})
    for text, c in zip(ax.texts, colors):
        text.get_bbox_patch().set_facecolor(c)
    ax.set_title(f"{g.name}: states orange, inputs blue, outputs green")
    ax.axis("off")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path

"""The state diagram as inline SVG, generated from the machine class (no Mermaid, no internet).

Layout: the states reachable without failing or cancelling are placed left to right by their
distance from the initial state; `failed`, `cancelling` and `cancelled` sit on a row below. The
current state is filled; every transition is an arrow with its event as a tooltip.
"""

from __future__ import annotations

from collections import deque
from html import escape

from orchestrator.machines import MachineClass

SIDE_STATES = ("failed", "cancelling", "cancelled")
_W, _H, _DX, _DY, _PAD = 150, 36, 190, 64, 20


def _transitions(machine: MachineClass) -> list[tuple[str, str, str]]:
    edges = []
    for state in machine.states:
        for transition in state.transitions:
            for target in transition.targets:
                edges.append((str(state.id), str(target.id), str(transition.event)))
    return edges


def _layout(machine: MachineClass, edges: list[tuple[str, str, str]]) -> dict[str, tuple[int, int]]:
    initial = str(machine.initial_state.id)
    depth = {initial: 0}
    queue = deque([initial])
    while queue:  # bounded: each state enters the queue once
        here = queue.popleft()
        for source, target, _ in edges:
            if source == here and target not in depth and target not in SIDE_STATES:
                depth[target] = depth[here] + 1
                queue.append(target)
    rows: dict[int, int] = {}
    places: dict[str, tuple[int, int]] = {}
    for state in [str(s.id) for s in machine.states]:
        if state in depth:
            row = rows.get(depth[state], 0)
            rows[depth[state]] = row + 1
            places[state] = (_PAD + depth[state] * _DX, _PAD + row * _DY)
    bottom = _PAD + max(rows.values(), default=1) * _DY + 20
    side = [s for s in SIDE_STATES if s in machine.states_map]
    for index, state in enumerate(side):
        places[state] = (_PAD + (index * 2 + 1) * _DX // 1, bottom)
    return places


def _clip(a: tuple[int, int], b: tuple[int, int]) -> tuple[tuple[float, float], tuple[float, float]]:
    """From box centre to box centre, cut where the line leaves the first box and enters the
    second, so arrowheads are not hidden under the boxes."""
    (ax, ay), (bx, by) = (a[0] + _W / 2, a[1] + _H / 2), (b[0] + _W / 2, b[1] + _H / 2)
    dx, dy = bx - ax, by - ay
    t = min((_W / 2) / abs(dx) if dx else 1.0, (_H / 2) / abs(dy) if dy else 1.0)
    return (ax + dx * t, ay + dy * t), (bx - dx * t, by - dy * t)


def state_diagram_svg(machine: MachineClass, *, current: str | None) -> str:
    edges = _transitions(machine)
    places = _layout(machine, edges)
    width = max(x for x, _ in places.values()) + _W + _PAD
    height = max(y for _, y in places.values()) + _H + _PAD
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" class="diagram" role="img" '
        f'width="{width}" height="{height}" viewBox="0 0 {width} {height}" '
        f'aria-label="state diagram of {escape(machine.__name__)}">',
        '<defs><marker id="arrow" viewBox="0 0 10 10" refX="9" refY="5" markerWidth="7" markerHeight="7" '
        'orient="auto-start-reverse"><path d="M 0 0 L 10 5 L 0 10 z" fill="#667"/></marker></defs>',
    ]
    for source, target, event in edges:
        if source == target:
            continue
        (x1, y1), (x2, y2) = _clip(places[source], places[target])
        side = target in SIDE_STATES or source in SIDE_STATES
        cls = "edge side" if side else "edge"
        parts.append(
            f'<line class="{cls}" x1="{x1:.0f}" y1="{y1:.0f}" x2="{x2:.0f}" y2="{y2:.0f}" '
            f'marker-end="url(#arrow)"><title>{escape(source)} → {escape(target)}: {escape(event)}'
            "</title></line>"
        )
    for state, (x, y) in places.items():
        here = state == current
        cls = "node current" if here else ("node side" if state in SIDE_STATES else "node")
        final = " final" if machine.states_map[state].final else ""
        parts.append(
            f'<g class="{cls}{final}" data-state="{escape(state)}">'
            f'<rect x="{x}" y="{y}" width="{_W}" height="{_H}" rx="8"/>'
            f'<text x="{x + _W / 2}" y="{y + _H / 2 + 5}" text-anchor="middle">{escape(state)}</text></g>'
        )
    parts.append("</svg>")
    return "".join(parts)


def transitions_from(machine: MachineClass, state: str) -> list[tuple[str, str]]:
    """(event, target) pairs leaving `state`, for the table under the diagram."""
    return sorted({(event, target) for source, target, event in _transitions(machine) if source == state})

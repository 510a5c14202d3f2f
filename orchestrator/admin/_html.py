"""Server-rendered HTML for the console: a page frame, escaping helpers and small table builders.

Plain f-strings with `html.escape` on every value that came from data; no template engine and
nothing fetched from the internet (the CSS is inline).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from html import escape
from typing import Any
from urllib.parse import quote, urlencode

CSS = """
body{font:14px/1.4 system-ui,sans-serif;margin:0;color:#1d2330;background:#f6f7f9}
header{background:#1d2330;color:#fff;padding:10px 20px;display:flex;gap:18px;align-items:center}
header a{color:#cfe0ff;text-decoration:none} main{padding:16px 20px}
h1{font-size:20px;margin:4px 0 12px} h2{font-size:16px;margin:22px 0 8px}
table{border-collapse:collapse;background:#fff;width:100%;margin-bottom:8px}
th,td{border:1px solid #dde1e7;padding:4px 8px;text-align:left;vertical-align:top;font-size:13px}
th{background:#eef1f5} code{font-size:12px}
.state{display:inline-block;padding:1px 8px;border-radius:10px;background:#e3e7ee;font-weight:600}
.state-failed{background:#ffd9d6;color:#8a1c12}
.state-activated,.state-completed{background:#d4f4dc;color:#14532d}
.state-cancelled,.state-cancelling{background:#eee;color:#555}
.chips a{margin-right:10px} .flash{background:#fff7d6;border:1px solid #e8d27a;padding:8px;margin-bottom:12px}
.error{background:#fff0ef;border:1px solid #f2b8b2;padding:8px;margin:8px 0}
form.inline{display:inline-block;margin-right:16px;background:#fff;border:1px solid #dde1e7;padding:8px}
input,select,button{font:inherit;margin:2px 4px 2px 0} button{cursor:pointer}
.diagram .node rect{fill:#fff;stroke:#8792a2} .diagram .node.side rect{fill:#f3f4f6}
.diagram .node.final rect{stroke-width:2.5} .diagram .node.current rect{fill:#2f6fed;stroke:#1d4fb8}
.diagram .node.current text{fill:#fff;font-weight:700} .diagram text{font-size:12px;fill:#1d2330}
.diagram .edge{stroke:#667;stroke-width:1.2} .diagram .edge.side{stroke:#b9bfca;stroke-dasharray:3 3}
.plan td.action{font-weight:700} .muted{color:#667}
"""


def page(title: str, body: str, *, refresh_s: int | None = None, flash: str | None = None) -> str:
    refresh = f'<meta http-equiv="refresh" content="{refresh_s}">' if refresh_s else ""
    note = f'<div class="flash" id="flash">{escape(flash)}</div>' if flash else ""
    return (
        "<!doctype html><html lang=en><head><meta charset=utf-8>"
        f"<title>{escape(title)} · provisioning console</title>{refresh}<style>{CSS}</style></head>"
        '<body><header><strong>Provisioning console</strong><a href="/console">Workflows</a>'
        '<a href="/docs">API</a><a href="/console/logout">Log out</a></header>'
        f"<main>{note}{body}</main></body></html>"
    )


def state_badge(state: str | None, *, element_id: str | None = None) -> str:
    ident = f' id="{escape(element_id)}"' if element_id else ""
    value = escape(state or "-")
    return f'<span class="state state-{value}"{ident} data-state="{value}">{value}</span>'


def table(headers: Sequence[str], rows: Iterable[Sequence[str]], *, table_id: str = "", cls: str = "") -> str:
    """`rows` hold already-escaped HTML cells."""
    head = "".join(f"<th>{escape(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(f"<td>{c}</td>" for c in row) + "</tr>" for row in rows)
    ident = f' id="{escape(table_id)}"' if table_id else ""
    klass = f' class="{escape(cls)}"' if cls else ""
    return f"<table{ident}{klass}><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def text(value: Any) -> str:
    return "-" if value is None or value == "" else escape(str(value))


def attr(value: Any) -> str:
    """An attribute value: escaped, and empty (not "-") when there is none."""
    return "" if value is None else escape(str(value))


def link(href: str, label: str, *, cls: str = "") -> str:
    klass = f' class="{escape(cls)}"' if cls else ""
    return f'<a href="{escape(href)}"{klass}>{escape(label)}</a>'


def workflow_href(workflow_id: str) -> str:
    return f"/console/workflows/{quote(workflow_id)}"


def order_href(order_id: str) -> str:
    return f"/console/orders/{quote(order_id, safe='')}"


def query(params: dict[str, Any]) -> str:
    return urlencode({k: v for k, v in params.items() if v not in (None, "", [])}, doseq=True)


def hidden(name: str, value: Any) -> str:
    return (
        f'<input type="hidden" name="{escape(name)}" value="{escape("" if value is None else str(value))}">'
    )


def options(values: Iterable[str], selected: str | None, *, blank: str = "any") -> str:
    out = [f'<option value="">{escape(blank)}</option>']
    for value in values:
        chosen = " selected" if value == selected else ""
        out.append(f'<option value="{escape(value)}"{chosen}>{escape(value)}</option>')
    return "".join(out)

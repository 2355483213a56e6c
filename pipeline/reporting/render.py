"""The report as a list of :class:`Block` (heading, paragraph, list, table, figure), and its two
renderings from that one list: Markdown (``report.md``) and a self-contained HTML page with the
figures embedded (``report.html``), so the two always say the same thing."""
from __future__ import annotations

import base64
import html
import math
import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd


@dataclass
class Block:
    kind: str  # h1 | h2 | h3 | p | table | figure | list
    content: object
    caption: str = ""


def _format(value) -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, float):
        if math.isinf(value):
            return "∞" if value > 0 else "-∞"
        if abs(value) >= 1e5 and value == int(value):
            return f"{int(value):,}"
        return f"{value:,.3g}" if abs(value) < 0.01 and value != 0 else f"{value:,.2f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_table(frame: pd.DataFrame) -> list[list[str]]:
    return [[str(c) for c in frame.columns]] + [[_format(v) for v in row] for row in frame.itertuples(index=False)]


def render_markdown(blocks: list[Block]) -> str:
    lines = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            lines += ["#" * int(block.kind[1]) + " " + block.content, ""]
        elif block.kind == "p":
            lines += [block.content, ""]
        elif block.kind == "list":
            lines += [f"- {item}" for item in block.content] + [""]
        elif block.kind == "table":
            rows = format_table(block.content)
            lines.append("| " + " | ".join(rows[0]) + " |")
            lines.append("|" + "---|" * len(rows[0]))
            lines += ["| " + " | ".join(cell.replace("|", "\\|") for cell in row) + " |" for row in rows[1:]]
            lines.append("")
        elif block.kind == "figure":
            png = next(f for f in block.content if f.endswith(".png"))
            others = " · ".join(f"[{Path(f).suffix[1:].upper()}]({f})" for f in block.content)
            lines += [f"![{block.caption}]({png})", "", f"*{block.caption}* ({others})", ""]
    return "\n".join(lines).rstrip() + "\n"


def render_html(blocks: list[Block], base: Path, title: str) -> str:
    """One HTML file with the figures embedded as data URIs (it opens anywhere, offline)."""
    body = []
    for block in blocks:
        if block.kind in ("h1", "h2", "h3"):
            body.append(f"<{block.kind}>{_inline(block.content)}</{block.kind}>")
        elif block.kind == "p":
            body.append(f"<p>{_inline(block.content)}</p>")
        elif block.kind == "list":
            body.append("<ul>" + "".join(f"<li>{_inline(item)}</li>" for item in block.content) + "</ul>")
        elif block.kind == "table":
            rows = format_table(block.content)
            head = "".join(f"<th>{html.escape(c)}</th>" for c in rows[0])
            cells = "".join("<tr>" + "".join(f"<td>{html.escape(c)}</td>" for c in row) + "</tr>" for row in rows[1:])
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{cells}</tbody></table>")
        elif block.kind == "figure":
            png = next(f for f in block.content if f.endswith(".png"))
            data = base64.b64encode((base / png).read_bytes()).decode()
            body.append(f'<figure><img alt="{html.escape(block.caption)}" src="data:image/png;base64,{data}">'
                        f"<figcaption>{html.escape(block.caption)}</figcaption></figure>")
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;color:#222}"
             "table{border-collapse:collapse;margin:1em 0;font-size:0.85em}td,th{border:1px solid #ccc;padding:3px 6px;"
             "text-align:right}th{background:#f3f3f3}td:first-child,th:first-child{text-align:left}"
             "img{max-width:100%}figure{margin:1.5em 0}code{background:#f3f3f3;padding:0 3px}")
    return (f"<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>\n" + "\n".join(body) + "\n</body></html>\n")


def _inline(text: str) -> str:
    """Markdown's `code`, **bold** and [label](link) in a paragraph, as HTML (links stay relative)."""
    escaped = html.escape(text)
    escaped = re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)
    escaped = re.sub(r"\*\*([^*]+)\*\*", r"<strong>\1</strong>", escaped)
    return re.sub(r"\[([^\]]+)\]\(([^)]+)\)", r'<a href="\2">\1</a>', escaped)


def markdown_links(text: str) -> list[str]:
    """Every link target of a markdown text (images and links), for checking that they resolve."""
    return re.findall(r"\]\(([^)\s]+)\)", text)

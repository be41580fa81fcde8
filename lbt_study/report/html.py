"""The report as one self-contained HTML page: inline CSS, figures as data: URIs, no scripts.

Every string is HTML-escaped here, whatever its origin (study name, norms, error messages,
table cells): a ``<script>`` in a study name never reaches the page as markup.
"""

from __future__ import annotations

import base64
import html

from lbt_study.report.document import MISSING, Figure, Item, Reason, Section, Text, caption_of

CSS = """
body{font-family:-apple-system,'Segoe UI',Helvetica,Arial,sans-serif;margin:24px auto;
max-width:1320px;color:#222;line-height:1.45;padding:0 16px}
.wide{overflow-x:auto}
h1{font-size:1.6em;border-bottom:2px solid #3b5b92;padding-bottom:6px}
h2{font-size:1.25em;margin-top:2em;border-bottom:1px solid #ccc;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:0.85em}
th,td{border:1px solid #d0d0d0;padding:3px 8px;text-align:left;vertical-align:top;
white-space:nowrap}td:last-child{white-space:normal;min-width:12em;max-width:40em}
th{background:#eef1f6}tr:nth-child(even) td{background:#fafafa}
.reason{background:#fff4e5;border-left:4px solid #e69f00;padding:6px 10px}
.caption{color:#555;font-size:0.9em;margin:4px 0}
figure{margin:12px 0}img{max-width:100%;height:auto;border:1px solid #eee}
nav a{margin-right:12px}
"""


def render_html(title: str, sections: list[Section]) -> str:
    """The report as one HTML page: inline CSS, figures as data: URIs, everything escaped."""
    nav = " ".join(f'<a href="#s{i}">{html.escape(s.title)}</a>' for i, s in enumerate(sections))
    body = [f"<h1>{html.escape(title)}</h1>", f"<nav>{nav}</nav>"]
    for i, section in enumerate(sections):
        body.append(f'<section id="s{i}"><h2>{html.escape(section.title)}</h2>')
        body.extend(html_item(item) for item in section.items)
        body.append("</section>")
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            f"<title>{html.escape(title)}</title><style>{CSS}</style></head>\n<body>\n"
            + "\n".join(body) + "\n</body></html>\n")


def html_item(item: Item) -> str:
    """One item as HTML; its text escaped."""
    if isinstance(item, Text):
        return f"<p>{html.escape(item.text)}</p>"
    if isinstance(item, Reason):
        return f'<p class="reason"><b>Not computed:</b> {html.escape(item.text)}</p>'
    if isinstance(item, Figure):
        data = base64.b64encode(item.png).decode("ascii")
        return (f'<figure><img src="data:image/png;base64,{data}" '
                f'alt="{html.escape(item.caption)}"><figcaption class="caption">'
                f"{html.escape(item.caption)}</figcaption></figure>")
    caption = caption_of(item)
    table = item.frame.to_html(index=False, escape=True, border=0, na_rep=MISSING)
    return ((f'<p class="caption">{html.escape(caption)}</p>' if caption else "")
            + f'<div class="wide">{table}</div>')

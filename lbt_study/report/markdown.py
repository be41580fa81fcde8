"""The report as Markdown, its figures the PNG files written beside it.

Every string is HTML-escaped (a Markdown viewer renders inline HTML) and its Markdown syntax
backslash-escaped, so user text shows as written and never as markup.
"""

from __future__ import annotations

import html
import re

import pandas as pd

from lbt_study.report.document import Figure, Item, Reason, Section, Text, caption_of

_MD_SPECIAL = re.compile(r"([\\`*_\[\]|])")


def md_text(text: object) -> str:
    """User or report text for Markdown: HTML-escaped, Markdown syntax backslash-escaped."""
    escaped = html.escape(str(text), quote=False).replace("\n", " ")
    return _MD_SPECIAL.sub(r"\\\1", escaped)


def md_table(frame: pd.DataFrame) -> str:
    """A formatted frame as a Markdown table, every cell escaped."""
    header = "| " + " | ".join(md_text(c) for c in frame.columns) + " |"
    rule = "|" + "---|" * len(frame.columns)
    rows = ["| " + " | ".join(md_text(v) for v in row) + " |"
            for row in frame.itertuples(index=False)]
    return "\n".join([header, rule, *rows])


def render_markdown(title: str, sections: list[Section]) -> str:
    """The report as Markdown; figures are the PNG files written beside it."""
    lines = [f"# {md_text(title)}", ""]
    for section in sections:
        lines += [f"## {md_text(section.title)}", ""]
        for item in section.items:
            lines += [md_item(item), ""]
    return "\n".join(lines)


def md_item(item: Item) -> str:
    """One item as Markdown; its text escaped."""
    if isinstance(item, Text):
        return md_text(item.text)
    if isinstance(item, Reason):
        return f"> **Not computed:** {md_text(item.text)}"
    if isinstance(item, Figure):
        return f"![{md_text(item.caption)}]({item.name}.png)\n\n*{md_text(item.caption)}*"
    caption = caption_of(item)
    return (f"*{md_text(caption)}*\n\n" if caption else "") + md_table(item.frame)

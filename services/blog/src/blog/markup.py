"""Markdown to HTML that is safe to put in a page: no script survives.

Two layers on purpose. markdown-it escapes raw HTML and refuses ``javascript:`` links; nh3 (the
Rust ``ammonia`` sanitiser) then keeps only an allow-list of tags and attributes, so a parser quirk in
the first layer still cannot reach a reader's browser.
"""

from __future__ import annotations

import nh3
from markdown_it import MarkdownIt
from markupsafe import Markup

__all__ = ["render_markdown"]

_markdown = MarkdownIt("commonmark", {"html": False}).enable(["table", "strikethrough"])


def render_markdown(text: str) -> Markup:
    return Markup(nh3.clean(_markdown.render(text)))

"""A report that reads anywhere: its PNG plots inlined as data URIs, and a self-contained HTML rendering.

``report.md`` links its plots by relative file name, which reads in a file browser (the PNGs lie beside
it) but not where the markdown is shown without its folder: a Prefect markdown artifact, or MLflow's
artifact preview (which shows ``.md`` as text but renders ``.html``). :func:`inline_images` replaces each
relative PNG link by a ``data:image/png;base64`` URI; :func:`report_html` renders the inlined markdown to
one HTML page (tables included) with no external reference.
"""

from __future__ import annotations

import base64
import html
import re
from collections.abc import Mapping

IMAGE_LINK = re.compile(r"!\[(?P<alt>[^\]]*)\]\((?P<src>[^)\s]+)\)")
STYLE = ("body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;color:#222}"
         "table{border-collapse:collapse;margin:0.5rem 0}td,th{border:1px solid #ccc;padding:0.2rem 0.5rem;"
         "text-align:left}img{max-width:100%}pre{background:#f5f5f5;padding:0.5rem;overflow-x:auto}")


def image_links(markdown: str) -> list[str]:
    """The targets of the markdown's image links, in order."""
    return [m.group("src") for m in IMAGE_LINK.finditer(markdown)]


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def inline_images(markdown: str, images: Mapping[str, bytes]) -> str:
    """``markdown`` with every image link whose target is a key of ``images`` replaced by a data URI;
    other links (absolute URLs, already inlined images) are kept."""

    def repl(m: re.Match[str]) -> str:
        src = m.group("src")
        if src not in images:
            return m.group(0)
        return f"![{m.group('alt')}]({data_uri(images[src])})"

    return IMAGE_LINK.sub(repl, markdown)


def report_html(markdown: str, images: Mapping[str, bytes], title: str = "COALA report") -> str:
    """One self-contained HTML page of ``markdown`` (images inlined, tables rendered)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": False}).enable("table").render(inline_images(markdown, images))
    return (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head>\n<body>\n{body}</body></html>\n")

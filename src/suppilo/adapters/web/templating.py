"""The Jinja2 environment of the web interface (autoescaping always on) and the page renderer."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from fastapi import Request
from fastapi.responses import HTMLResponse
from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from suppilo.adapters.web import i18n

TEMPLATE_DIR = Path(__file__).parent / "templates"

env = Environment(
    loader=FileSystemLoader(TEMPLATE_DIR),
    autoescape=select_autoescape(default=True, default_for_string=True),
    undefined=StrictUndefined,
    trim_blocks=True,
    lstrip_blocks=True,
)


def _as_text(value: Any) -> str:
    """Any stored value as text (nested values as JSON); the template escapes it."""
    if value is None:
        return ""
    if isinstance(value, (dict, list)):
        return json.dumps(value, ensure_ascii=False, sort_keys=True, default=str)
    return str(value)


env.filters["as_text"] = _as_text


def render(
    request: Request, template: str, *, language: str, status_code: int = 200, timezone: str = "UTC", **context: Any
) -> HTMLResponse:
    """Render a page in ``language``; ``_`` and ``ngettext`` translate, ``fmt`` formats numbers, money and dates."""
    language = i18n.supported(language)
    tr = i18n.translations(language)
    html = env.get_template(template).render(
        request=request,
        lang=language,
        languages=i18n.LANGUAGES,
        _=tr.gettext,
        gettext=tr.gettext,
        ngettext=tr.ngettext,
        fmt=i18n.Formatter(language, timezone),
        **context,
    )
    return HTMLResponse(html, status_code=status_code, headers={"cache-control": "no-store"})

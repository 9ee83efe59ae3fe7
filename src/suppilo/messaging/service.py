"""Template use cases: create, change, validate, publish, preview and render for a contact; default templates."""

from __future__ import annotations

import tomllib
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.db.base import utcnow
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.messaging.models import Template, TemplateVariant
from suppilo.messaging.schemas import TemplateCreate, TemplateUpdate, VariantCreate, VariantIn
from suppilo.messaging.templates import (
    FREE_ROOTS,
    URL_ROOTS,
    RenderedMessage,
    TemplateInvalid,
    TemplateIssue,
    marketing_issues,
    render_message,
    validate_variant,
)

DEFAULTS_DIR = Path(__file__).resolve().parent / "defaults"
DEFAULT_LANGUAGES = ("en", "sv", "fi", "da", "lv")


# --- reading -------------------------------------------------------------------------------------------------------


def get_template(session: Session, workspace_id: int, template_id: int) -> Template:
    """The template with this id in this workspace; else NotFound."""
    template = session.scalar(select(Template).where(Template.workspace_id == workspace_id, Template.id == template_id))
    if template is None:
        raise NotFound("template_id", f"template {template_id} not found")
    return template


def get_template_by_key(session: Session, workspace_id: int, key: str) -> Template:
    """The template with this key in this workspace; else NotFound."""
    template = session.scalar(select(Template).where(Template.workspace_id == workspace_id, Template.key == key))
    if template is None:
        raise NotFound("template_key", f"no template with key {key!r}")
    return template


def list_templates(session: Session, workspace_id: int) -> list[Template]:
    """Every template of the workspace, by key."""
    return list(session.scalars(select(Template).where(Template.workspace_id == workspace_id).order_by(Template.key)))


def _variant(template: Template, language: str) -> TemplateVariant | None:
    return next((v for v in template.variants if v.language == language), None)


def _contact_properties(session: Session, workspace_id: int) -> list[str]:
    from suppilo.contacts.properties import definitions

    return list(definitions(session, workspace_id, "contact"))


# --- validation ----------------------------------------------------------------------------------------------------


def _workspace_address_issues(session: Session, workspace_id: int) -> list[TemplateIssue]:
    from suppilo.workspaces import service as workspaces_service

    ws = workspaces_service.get_workspace(session, workspace_id)
    missing = [
        name
        for name in ("address_line1", "postal_code", "city", "address_country")
        if not (getattr(ws, name) or "").strip()
    ]
    if missing:
        return [
            TemplateIssue(
                "workspace.postal_address",
                "marketing mail needs the workspace's postal address; set " + ", ".join(missing) + " first",
            )
        ]
    return []


def _variant_issues(session: Session, workspace_id: int, variants: Sequence[Any]) -> list[TemplateIssue]:
    props = _contact_properties(session, workspace_id)
    issues: list[TemplateIssue] = []
    for variant in variants:
        issues += validate_variant(variant, language=variant.language, contact_properties=props)
    return issues


def _publish_issues(session: Session, workspace_id: int, kind: str, variants: Sequence[Any]) -> list[TemplateIssue]:
    issues: list[TemplateIssue] = []
    if not variants:
        issues.append(TemplateIssue("variants", "a template needs at least one language variant"))
    if kind == "marketing":
        issues += _workspace_address_issues(session, workspace_id)
        for variant in variants:
            issues += marketing_issues(variant, language=variant.language)
    return issues


def template_issues(session: Session, template: Template) -> list[TemplateIssue]:
    """What keeps the template from being saved: syntax, unknown variables and fields, forbidden constructs."""
    return _variant_issues(session, template.workspace_id, template.variants)


def publish_issues(session: Session, template: Template) -> list[TemplateIssue]:
    """What keeps a valid template from being published (variants, marketing rules)."""
    return _publish_issues(session, template.workspace_id, template.kind, template.variants)


def _check_saveable(session: Session, workspace_id: int, *, kind: str, status: str, variants: Sequence[Any]) -> None:
    """Refuse (before anything is changed) content that does not validate, or would unpublish a published one."""
    issues = _variant_issues(session, workspace_id, variants)
    if status == "published":
        issues += _publish_issues(session, workspace_id, kind, variants)
    if issues:
        raise TemplateInvalid(issues)


# --- writing -------------------------------------------------------------------------------------------------------


def create_template(session: Session, workspace_id: int, data: TemplateCreate) -> Template:
    """A new draft template; refused with every issue when a variant does not validate."""
    if session.scalar(select(Template.id).where(Template.workspace_id == workspace_id, Template.key == data.key)):
        raise Conflict("key", f"a template with key {data.key!r} already exists")
    languages = [v.language for v in data.variants]
    if len(set(languages)) != len(languages):
        raise DomainError("variants", "each language may have only one variant")
    _check_saveable(session, workspace_id, kind=data.kind, status="draft", variants=data.variants)
    template = Template(
        workspace_id=workspace_id,
        key=data.key,
        name=data.name or data.key,
        description=data.description,
        kind=data.kind,
        status="draft",
        version=1,
    )
    for v in data.variants:
        template.variants.append(_new_variant(workspace_id, v.language, v))
    session.add(template)
    session.flush()
    return template


def _new_variant(workspace_id: int, language: str, data: VariantIn) -> TemplateVariant:
    return TemplateVariant(
        workspace_id=workspace_id,
        language=language,
        subject=data.subject,
        preheader=data.preheader,
        html=data.html,
        text=data.text or None,
    )


def _touch(template: Template) -> None:
    template.version += 1
    template.updated_at = utcnow()


def update_template(session: Session, workspace_id: int, template_id: int, data: TemplateUpdate) -> Template:
    """Change name, description or kind; a published template must still be publishable."""
    template = get_template(session, workspace_id, template_id)
    changes = {k: v for k, v in data.model_dump(exclude_unset=True).items() if v is not None}
    kind = changes.get("kind", template.kind)
    _check_saveable(session, workspace_id, kind=kind, status=template.status, variants=template.variants)
    for key, value in changes.items():
        setattr(template, key, value)
    _touch(template)
    session.flush()
    return template


def put_variant(session: Session, workspace_id: int, template_id: int, language: str, data: VariantIn) -> Template:
    """Create or replace the variant of one language (validated; a published template stays publishable)."""
    template = get_template(session, workspace_id, template_id)
    candidate = VariantCreate(language=language, **data.model_dump())
    others = [v for v in template.variants if v.language != language]
    _check_saveable(session, workspace_id, kind=template.kind, status=template.status, variants=[*others, candidate])
    variant = _variant(template, language)
    if variant is None:
        template.variants.append(_new_variant(workspace_id, language, data))
    else:
        variant.subject = data.subject
        variant.preheader = data.preheader
        variant.html = data.html
        variant.text = data.text or None
    _touch(template)
    session.flush()
    return template


def delete_variant(session: Session, workspace_id: int, template_id: int, language: str) -> Template:
    """Remove the variant of one language; a published template keeps at least one."""
    template = get_template(session, workspace_id, template_id)
    variant = _variant(template, language)
    if variant is None:
        raise NotFound("language", f"the template has no {language!r} variant")
    if template.status == "published" and len(template.variants) == 1:
        raise DomainError("language", "a published template needs at least one variant")
    template.variants.remove(variant)
    _touch(template)
    session.flush()
    return template


def delete_template(session: Session, workspace_id: int, template_id: int) -> None:
    """Delete a template with its variants."""
    session.delete(get_template(session, workspace_id, template_id))
    session.flush()


def validation_report(session: Session, workspace_id: int, template_id: int) -> dict[str, Any]:
    """Save and publish issues of a stored template."""
    template = get_template(session, workspace_id, template_id)
    errors = template_issues(session, template)
    publish = publish_issues(session, template)
    return {
        "valid": not errors,
        "publishable": not errors and not publish,
        "errors": [i.as_dict() for i in errors],
        "publish_errors": [i.as_dict() for i in publish],
    }


def publish_template(session: Session, workspace_id: int, template_id: int) -> Template:
    """Publish a template: it must validate and, when marketing, carry the unsubscribe link and postal address."""
    template = get_template(session, workspace_id, template_id)
    issues = template_issues(session, template) + publish_issues(session, template)
    if issues:
        raise TemplateInvalid(issues)
    template.status = "published"
    template.published_at = utcnow()
    _touch(template)
    session.flush()
    return template


def unpublish_template(session: Session, workspace_id: int, template_id: int) -> Template:
    """Back to draft: nothing is sent with it until it is published again."""
    template = get_template(session, workspace_id, template_id)
    template.status = "draft"
    _touch(template)
    session.flush()
    return template


# --- rendering -----------------------------------------------------------------------------------------------------


def _primary(language: str | None) -> str | None:
    if not language:
        return None
    return language.replace("_", "-").split("-")[0].lower() or None


def choose_language(template: Template, preferred: list[str | None]) -> TemplateVariant:
    """The first variant in ``preferred`` order; DomainError when none exists."""
    for lang in preferred:
        code = _primary(lang)
        if code:
            variant = _variant(template, code)
            if variant is not None:
                return variant
    tried = ", ".join(dict.fromkeys(c for c in (_primary(x) for x in preferred) if c)) or "none"
    raise DomainError("language", f"template {template.key!r} has no variant in {tried}", code="variant_missing")


def workspace_context(session: Session, workspace_id: int) -> dict[str, Any]:
    """The ``workspace`` variable: name, postal address (one line and parts), website, currency, time zone."""
    from babel import Locale

    from suppilo.workspaces import service as workspaces_service

    ws = workspaces_service.get_workspace(session, workspace_id)
    country_name = ""
    if ws.address_country:
        country_name = Locale.parse("en").territories.get(ws.address_country.upper(), ws.address_country)
    city_line = " ".join(x for x in (ws.postal_code, ws.city) if x)
    parts = [ws.address_line1, ws.address_line2, city_line, ws.region, country_name]
    return {
        "name": ws.name,
        "postal_address": ", ".join(p for p in parts if p),
        "address_line1": ws.address_line1,
        "address_line2": ws.address_line2,
        "postal_code": ws.postal_code,
        "city": ws.city,
        "region": ws.region,
        "country": ws.address_country,
        "website": f"https://{ws.site_domains[0]}" if ws.site_domains else None,
        "currency": ws.currency,
        "timezone": ws.timezone,
        "default_language": ws.default_language,
    }


def contact_context(session: Session, workspace_id: int, contact_id: int) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``contact`` and ``company`` variables of a contact: whitelisted fields and custom properties."""
    from suppilo.companies import service as companies_service
    from suppilo.contacts import service as contacts_service

    c = contacts_service.get_contact(session, workspace_id, contact_id)
    co = None
    if c.company_id is not None:
        try:
            co = companies_service.get_company(session, workspace_id, c.company_id)
        except NotFound:
            co = None
    return contact_context_of(c, co)


def contact_context_of(c: Any, co: Any | None) -> tuple[dict[str, Any], dict[str, Any]]:
    """The ``contact`` and ``company`` variables from a loaded contact (any object with the contact's columns) and
    its company (or None)."""
    props = {k: v for k, v in (c.properties or {}).items() if isinstance(k, str) and not k.startswith("_")}
    full_name = " ".join(x for x in (c.first_name, c.last_name) if x)
    contact: dict[str, Any] = {
        "id": c.id,
        "first_name": c.first_name,
        "last_name": c.last_name,
        "full_name": full_name or None,
        "email": c.email,
        "language": c.language,
        "country": c.country,
        "city": c.city,
        "region": c.region,
        "timezone": c.timezone,
        "job_title": c.job_title,
        "lifecycle_stage": c.lifecycle_stage,
        "properties": props,
    }
    for key, value in props.items():
        contact.setdefault(key, value)
    company: dict[str, Any] = {}
    if co is not None:
        company = {
            "name": co.name,
            "industry": co.industry,
            "domain": co.domain,
            "country": co.country,
            "city": co.city,
        }
    return contact, company


def _extra_context(extra: Mapping[str, Any] | None) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in (extra or {}).items():
        if key not in FREE_ROOTS and key not in URL_ROOTS:
            raise DomainError(
                f"extra.{key}",
                f"{key!r} cannot be passed to a template; allowed: {', '.join(sorted(FREE_ROOTS | URL_ROOTS))}",
            )
        out[key] = value
    return out


def render_for_contact(
    session: Session,
    workspace_id: int,
    template_key: str,
    contact_id: int,
    *,
    extra: dict[str, Any] | None = None,
    language: str | None = None,
    require_published: bool = True,
) -> RenderedMessage:
    """Render a template for a contact of the workspace.

    The language is ``language`` when given, else the contact's language, then the workspace default.
    ``extra`` carries plain dicts for ``order``, ``cart``, ``offer``, ``recommendations``, ``survey``,
    ``referral``, ``message`` and the URL placeholders ``unsubscribe_url``, ``preferences_url`` and
    ``view_in_browser_url`` (the sender fills those). Raises ``NotFound`` for an unknown template or contact,
    ``DomainError`` (code ``variant_missing``) when no variant fits, ``DomainError`` (``template_unpublished``)
    for a draft when ``require_published``, and ``TemplateRenderError`` when rendering fails.
    """
    template = _cached(
        session,
        ("template", workspace_id, template_key),
        lambda: get_template_by_key(session, workspace_id, template_key),
    )
    return _render(session, template, contact_id, extra=extra, language=language, require_published=require_published)


CACHE_SECONDS = 5.0


def _cached(session: Session, key: tuple[Any, ...], load: Any) -> Any:
    """A value kept on the session for a few seconds: a sender batch renders many messages of one template for one
    workspace, and reading the template (with its variants) and the workspace once per batch is enough."""
    import time

    cache: dict[tuple[Any, ...], tuple[float, Any]] = session.info.setdefault("suppilo_render_cache", {})
    now = time.monotonic()
    hit = cache.get(key)
    if hit is not None and now - hit[0] < CACHE_SECONDS:
        return hit[1]
    value = load()
    cache[key] = (now, value)
    return value


def preview(
    session: Session,
    workspace_id: int,
    template_id: int,
    contact_id: int,
    *,
    language: str | None = None,
    extra: dict[str, Any] | None = None,
) -> RenderedMessage:
    """Render a (draft or published) template for a real contact; URL placeholders point at example pages."""
    template = get_template(session, workspace_id, template_id)
    extra = dict(extra or {})
    for name in sorted(URL_ROOTS):
        extra.setdefault(name, f"https://example.invalid/{name.removesuffix('_url').replace('_', '-')}")
    return _render(session, template, contact_id, extra=extra, language=language, require_published=False)


def _render(
    session: Session,
    template: Template,
    contact_id: int,
    *,
    extra: dict[str, Any] | None,
    language: str | None,
    require_published: bool,
) -> RenderedMessage:
    if require_published and template.status != "published":
        raise DomainError("template_key", f"template {template.key!r} is not published", code="template_unpublished")
    workspace_id = template.workspace_id
    contact, company = contact_context(session, workspace_id, contact_id)
    workspace = _cached(session, ("workspace", workspace_id), lambda: workspace_context(session, workspace_id))
    return render_loaded(template, contact, company, workspace, extra=extra, language=language)


def render_loaded(
    template: Template,
    contact: dict[str, Any],
    company: dict[str, Any],
    workspace: dict[str, Any],
    *,
    extra: Mapping[str, Any] | None,
    language: str | None = None,
    volatile: str | None = None,
) -> RenderedMessage:
    """Render a loaded template with contexts already read (``contact_context_of``, ``workspace_context``): no
    database access, so the sender renders a claimed batch from a few bulk reads. Same output as
    ``render_for_contact``; the caller checks ``template.status``. ``volatile``: see ``render_message``."""
    context: dict[str, Any] = _extra_context(extra)
    variant = choose_language(template, [language, contact.get("language"), workspace["default_language"]])
    context.update(contact=contact, company=company, workspace=workspace)
    rendered = render_message(variant, language=variant.language, context=context, volatile=volatile)
    return RenderedMessage(
        subject=rendered.subject,
        preheader=rendered.preheader,
        html=rendered.html,
        text=rendered.text,
        language=variant.language,
        kind=template.kind,
        template_id=template.id,
        template_key=template.key,
        template_version=template.version,
    )


# --- default templates -----------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def default_templates() -> list[dict[str, Any]]:
    """The shipped templates (messaging/defaults/*.toml), each laid out in the shared layout of its kind."""
    layout = tomllib.loads((DEFAULTS_DIR / "_layout.toml").read_text(encoding="utf-8"))
    out: list[dict[str, Any]] = []
    for path in sorted(DEFAULTS_DIR.glob("*.toml")):
        if path.name.startswith("_"):
            continue
        spec = tomllib.loads(path.read_text(encoding="utf-8"))
        kind = spec["kind"]
        variants = []
        for lang, body in spec["variants"].items():
            strings = layout["strings"][lang]
            footer = layout[f"footer_{kind}"]
            html = (
                layout["html"]
                .replace("[[LANG]]", lang)
                .replace("[[CONTENT]]", body["body"].strip())
                .replace("[[FOOTER]]", _fill(footer, strings))
            )
            variants.append(
                {"language": lang, "subject": body["subject"], "preheader": body.get("preheader", ""), "html": html}
            )
        out.append(
            {
                "key": spec["key"],
                "kind": kind,
                "name": spec["name"],
                "description": spec.get("description", ""),
                "variants": variants,
            }
        )
    return out


def _fill(text: str, strings: Mapping[str, str]) -> str:
    for key, value in strings.items():
        text = text.replace(f"[[{key}]]", value)
    return text


def install_default_templates(session: Session, workspace_id: int) -> list[Template]:
    """Add the shipped templates the workspace lacks; publish those it can (marketing needs a postal address)."""
    existing = set(session.scalars(select(Template.key).where(Template.workspace_id == workspace_id)))
    can_market = not _workspace_address_issues(session, workspace_id)
    added: list[Template] = []
    for spec in default_templates():
        if spec["key"] in existing:
            continue
        template = Template(
            workspace_id=workspace_id,
            key=spec["key"],
            name=spec["name"],
            description=spec["description"],
            kind=spec["kind"],
            status="published" if (spec["kind"] == "transactional" or can_market) else "draft",
            version=1,
        )
        if template.status == "published":
            template.published_at = utcnow()
        for v in spec["variants"]:
            template.variants.append(
                TemplateVariant(
                    workspace_id=workspace_id,
                    language=v["language"],
                    subject=v["subject"],
                    preheader=v["preheader"],
                    html=v["html"],
                    text=None,
                )
            )
        session.add(template)
        added.append(template)
    session.flush()
    return added

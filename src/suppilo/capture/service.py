"""Capture use cases: forms (CRUD, public submissions), the snippet's configuration and the image pixel.

Services flush, never commit: the request edge commits once.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs, urlsplit

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.capture.models import Form, FormSubmission
from suppilo.capture.schemas import (
    ANONYMOUS_ID_FIELD,
    CONSENT_FIELD,
    CONSENT_VERSION_FIELD,
    HONEYPOT_FIELD,
    PAGE_URL_FIELD,
    FormCreate,
    FormUpdate,
    consent_problem,
)
from suppilo.companies import service as companies_service
from suppilo.companies.models import Company
from suppilo.companies.schemas import CompanyCreate
from suppilo.consent import service as consent_service  # issue 3: consent ledger
from suppilo.contacts import properties as contact_properties
from suppilo.contacts import service as contacts_service
from suppilo.contacts.models import Contact
from suppilo.contacts.normalize import (
    InvalidValue,
    normalize_country,
    normalize_email,
    normalize_language,
    normalize_phone,
)
from suppilo.contacts.schemas import ContactUpdate
from suppilo.db.base import utcnow
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.events import service as events_service
from suppilo.events.ingest import ingest
from suppilo.workspaces import service as workspaces_service

MAX_TEXT = 500
MAX_TEXTAREA = 5000
UTM_KEYS = (
    ("name", "utm_campaign"),
    ("source", "utm_source"),
    ("medium", "utm_medium"),
    ("term", "utm_term"),
    ("content", "utm_content"),
)
TRUTHY = frozenset({"true", "on", "1", "yes"})


class FormError(DomainError):
    """A refused form operation."""


class SubmissionInvalid(DomainError):
    """A submission with field errors; ``errors`` maps a field name (or ``consent``) to an error code."""

    def __init__(self, errors: dict[str, str], values: dict[str, Any]) -> None:
        first = next(iter(errors))
        super().__init__(f"fields.{first}", f"{first}: {errors[first]}", code="validation_error")
        self.errors = errors
        self.values = values


# --- forms ------------------------------------------------------------------------------------------------------


def new_public_key() -> str:
    """An unguessable public key for a form's URLs (128 bits)."""
    return secrets.token_urlsafe(16)


def _check_properties(session: Session, workspace_id: int, fields: list[dict[str, Any]]) -> None:
    wanted = [
        (i, f["maps_to"].split(".", 1)[1])
        for i, f in enumerate(fields)
        if (f.get("maps_to") or "").startswith("properties.")
    ]
    if not wanted:
        return
    defs = contact_properties.definitions(session, workspace_id, "contact")
    for index, name in wanted:
        if name not in defs:
            raise FormError(
                f"fields[{index}].maps_to", f"there is no contact property {name!r}", code="unknown_property"
            )


def _slug_taken(session: Session, workspace_id: int, slug: str, except_id: int | None = None) -> bool:
    query = select(Form.id).where(Form.workspace_id == workspace_id, Form.slug == slug)
    if except_id is not None:
        query = query.where(Form.id != except_id)
    return session.scalar(query) is not None


def create_form(session: Session, workspace_id: int, data: FormCreate) -> Form:
    """A new form with a fresh public key; field mappings to custom properties must name existing ones."""
    fields = [f.model_dump() for f in data.fields]
    _check_properties(session, workspace_id, fields)
    if _slug_taken(session, workspace_id, data.slug):
        raise Conflict("slug", f"a form with slug {data.slug!r} already exists", code="duplicate_slug")
    form = Form(workspace_id=workspace_id, public_key=new_public_key(), **{**data.model_dump(), "fields": fields})
    session.add(form)
    session.flush()
    return form


def list_forms(session: Session, workspace_id: int) -> list[Form]:
    """The workspace's forms, newest first."""
    return list(session.scalars(select(Form).where(Form.workspace_id == workspace_id).order_by(Form.id.desc())))


def get_form(session: Session, workspace_id: int, form_id: int) -> Form:
    """The form with this id in this workspace; NotFound otherwise."""
    form = session.scalar(select(Form).where(Form.workspace_id == workspace_id, Form.id == form_id))
    if form is None:
        raise NotFound("form_id", f"form {form_id} not found")
    return form


def update_form(session: Session, workspace_id: int, form_id: int, data: FormUpdate) -> Form:
    """Change a form; fields left out of ``data`` keep their value (the public key never changes)."""
    form = get_form(session, workspace_id, form_id)
    changes = data.model_dump(exclude_unset=True)
    for key in ("slug", "name", "fields", "consent_required", "consent_topic", "success_message", "tags", "is_active"):
        if key in changes and changes[key] is None:
            raise FormError(key, f"{key} cannot be null", code="null_not_allowed")
    if "fields" in changes:
        _check_properties(session, workspace_id, changes["fields"])
    if changes.get("slug") and _slug_taken(session, workspace_id, changes["slug"], except_id=form.id):
        raise Conflict("slug", f"a form with slug {changes['slug']!r} already exists", code="duplicate_slug")
    problem = consent_problem(
        changes.get("consent_text", form.consent_text),
        changes.get("consent_version", form.consent_version),
        bool(changes.get("consent_required", form.consent_required)),
    )
    if problem:
        raise FormError("consent_text", problem, code="invalid_consent")
    for key, value in changes.items():
        setattr(form, key, value)
    session.flush()
    return form


def delete_form(session: Session, workspace_id: int, form_id: int) -> None:
    """Delete a form and its submissions (contacts it created stay)."""
    form = get_form(session, workspace_id, form_id)
    session.delete(form)
    session.flush()


def list_submissions(session: Session, workspace_id: int, form_id: int, *, limit: int = 100) -> list[FormSubmission]:
    """A form's latest submissions, newest first."""
    get_form(session, workspace_id, form_id)
    return list(
        session.scalars(
            select(FormSubmission)
            .where(FormSubmission.workspace_id == workspace_id, FormSubmission.form_id == form_id)
            .order_by(FormSubmission.submitted_at.desc(), FormSubmission.id.desc())
            .limit(max(1, min(limit, 1000)))
        )
    )


def get_public_form(session: Session, public_key: str) -> Form | None:
    """The active form with this public key, or None (unknown and inactive forms look the same)."""
    if not public_key or len(public_key) > 64:
        return None
    form = session.scalar(select(Form).where(Form.public_key == public_key))
    if form is None or not form.is_active:
        return None
    return form


# --- submissions ------------------------------------------------------------------------------------------------


@dataclass(slots=True)
class SubmissionInput:
    """What a visitor sent to a public form, and where from."""

    values: Mapping[str, Any]
    page_url: str | None = None
    ip: str | None = None
    user_agent: str | None = None


@dataclass(slots=True)
class CleanSubmission:
    """A validated submission: the typed values, the contact attributes they fill, consent and extras."""

    values: dict[str, Any]
    attributes: dict[str, Any]
    properties: dict[str, Any]
    company_name: str | None
    consent_given: bool
    anonymous_id: str | None
    page_url: str | None
    is_bot: bool


@dataclass(slots=True)
class SubmissionOutcome:
    """The result of an accepted submission (``stored`` is False for a honeypot hit)."""

    stored: bool
    contact_id: int | None = None
    submission_id: int | None = None
    created: bool = False
    stage_changed_to: str | None = None


def is_checked(value: Any) -> bool:
    if isinstance(value, bool):
        return value
    if isinstance(value, list):
        return any(is_checked(v) for v in value)
    return str(value).strip().lower() in TRUTHY if value is not None else False


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list):
        value = value[-1] if value else ""
    if isinstance(value, bool):
        return "true" if value else ""
    return str(value).strip()


def _property_value(definition: Any, raw: str | bool) -> Any:
    """A typed form value for a custom property, or raises ValueError."""
    kind = definition.type
    if kind == "boolean":
        return raw if isinstance(raw, bool) else is_checked(raw)
    if kind == "number":
        number = float(str(raw).replace(",", ".").replace(" ", ""))
        if number != number or number in (float("inf"), float("-inf")):
            raise ValueError("not a number")
        return int(number) if number.is_integer() else number
    if kind == "multi_enum":
        return [str(raw)]
    return str(raw)


def clean_submission(
    session: Session, form: Form, data: SubmissionInput, *, default_country: str | None
) -> CleanSubmission:
    """Validate what was sent against the form; raises SubmissionInvalid with an error code per field."""
    raw = data.values
    errors: dict[str, str] = {}
    values: dict[str, Any] = {}
    attributes: dict[str, Any] = {}
    props: dict[str, Any] = {}
    company_name: str | None = None
    defs: dict[str, Any] | None = None
    for spec in form.fields:
        name = spec["name"]
        kind = spec.get("type", "text")
        target = spec.get("maps_to")
        if kind == "checkbox":
            checked = is_checked(raw.get(name))
            values[name] = checked
            if spec.get("required") and not checked:
                errors[name] = "required"
            typed: Any = checked
        else:
            text = _text(raw.get(name))
            if kind == "hidden" and not text:
                text = spec.get("default") or ""
            values[name] = text
            if not text:
                if spec.get("required"):
                    errors[name] = "required"
                continue
            if len(text) > (MAX_TEXTAREA if kind == "textarea" else MAX_TEXT):
                errors[name] = "too_long"
                continue
            if kind == "select" and text not in (spec.get("options") or []):
                errors[name] = "invalid_option"
                continue
            typed = text
            try:
                if kind == "email" or target == "email":
                    typed = normalize_email(text)
                elif target == "phone" or kind == "tel":
                    typed = normalize_phone(text, default_country)
                elif target == "country":
                    typed = normalize_country(text)
                elif target == "language":
                    typed = normalize_language(text)
            except InvalidValue:
                errors[name] = {"country": "invalid_country", "language": "invalid_language"}.get(
                    target or "", "invalid_phone" if (target == "phone" or kind == "tel") else "invalid_email"
                )
                continue
        if not target:
            continue
        if target.startswith("properties."):
            prop = target.split(".", 1)[1]
            if defs is None:
                defs = contact_properties.definitions(session, form.workspace_id, "contact")
            definition = defs.get(prop)
            if definition is None:
                continue
            try:
                props[prop] = contact_properties.coerce_value(
                    definition, _property_value(definition, typed), f"properties.{prop}"
                )
            except (ValueError, DomainError):
                errors[name] = "invalid_number" if definition.type == "number" else "invalid_value"
        elif target == "company_name":
            company_name = str(typed)
        elif not isinstance(typed, bool):
            attributes[target] = typed
    consent_given = False
    if form.consent_text:
        consent_given = is_checked(raw.get(CONSENT_FIELD))
        shown_version = _text(raw.get(CONSENT_VERSION_FIELD))
        if consent_given and shown_version and shown_version != (form.consent_version or ""):
            # The page showed an older consent text than the one we would store: ask again.
            errors[CONSENT_FIELD] = "consent_changed"
        elif form.consent_required and not consent_given:
            errors[CONSENT_FIELD] = "consent_required"
    if errors:
        raise SubmissionInvalid(errors, values)
    anonymous_id = _text(raw.get(ANONYMOUS_ID_FIELD))[:200] or None
    page_url = (data.page_url or _text(raw.get(PAGE_URL_FIELD)))[:2000] or None
    return CleanSubmission(
        values=values,
        attributes=attributes,
        properties=props,
        company_name=company_name,
        consent_given=consent_given,
        anonymous_id=anonymous_id,
        page_url=page_url,
        is_bot=bool(_text(raw.get(HONEYPOT_FIELD))),
    )


def _company_for(session: Session, workspace_id: int, name: str) -> int:
    """The id of the company called ``name`` (case-insensitive), created when there is none."""
    existing = session.scalar(
        select(Company.id)
        .where(Company.workspace_id == workspace_id, Company.name_lower == name.strip().lower())
        .order_by(Company.id)
        .limit(1)
    )
    if existing is not None:
        return existing
    return companies_service.create_company(session, workspace_id, CompanyCreate(name=name.strip()[:200])).id


def submit_form(session: Session, form: Form, data: SubmissionInput) -> SubmissionOutcome:
    """Accept a public submission: validate, then create or update the contact by email, store the submission
    with the exact consent text shown, add the form's tags, apply the ``form_submitted`` lifecycle rule, record
    a 'Form Submitted' event and join the visitor's anonymous browsing history to the contact.

    A filled honeypot answers like a success but stores nothing. Raises SubmissionInvalid on field errors.
    """
    workspace = workspaces_service.get_workspace(session, form.workspace_id)
    clean = clean_submission(session, form, data, default_country=workspace.country)
    if clean.is_bot:
        return SubmissionOutcome(stored=False)
    now = utcnow()
    attrs: dict[str, Any] = dict(clean.attributes)
    email = attrs.pop("email")
    if clean.properties:
        attrs["properties"] = clean.properties
    if form.tags:
        attrs["tags"] = list(form.tags)
    contact, created = contacts_service.upsert_contact_by_email(
        session, form.workspace_id, email, attrs, source=f"form:{form.slug}"
    )
    if clean.company_name and contact.company_id is None:
        company_id = _company_for(session, form.workspace_id, clean.company_name)
        contacts_service.update_contact(
            session, form.workspace_id, contact.id, ContactUpdate(company_id=company_id), actor=f"form:{form.slug}"
        )
    change = contacts_service.apply_rule(
        session,
        contact,
        "form_submitted",
        rules=contacts_service.lifecycle_rules(workspace.settings),
        stages=contacts_service.stage_specs(session, form.workspace_id),
        at=now,
        detail=f"form {form.name!r} ({form.slug})",
    )
    _link_anonymous_id(session, form.workspace_id, email, clean.anonymous_id, at=now, ip=data.ip)
    # Identity resolution may have merged contacts: the one with the email is the one that remains.
    remaining = session.scalar(select(Contact).where(Contact.workspace_id == form.workspace_id, Contact.email == email))
    if remaining is None:
        raise LookupError(f"the contact with {email} disappeared during identity resolution")
    contact = remaining
    submission = FormSubmission(
        workspace_id=form.workspace_id,
        form_id=form.id,
        contact_id=contact.id,
        data=clean.values,
        consent_given=clean.consent_given,
        consent_text=form.consent_text if form.consent_text else None,
        consent_version=form.consent_version if form.consent_text else None,
        page_url=clean.page_url,
        ip=(data.ip or None) and str(data.ip)[:64],
        user_agent=(data.user_agent or None) and str(data.user_agent)[:500],
        submitted_at=now,
    )
    session.add(submission)
    session.flush()
    if clean.consent_given:  # issue 3 (consent ledger): proof of consent; queues double opt-in where required
        consent_service.record_consent(
            session,
            form.workspace_id,
            contact.id,
            topic=form.consent_topic,
            source=f"form:{form.slug}",
            source_url=clean.page_url,
            consent_text=form.consent_text,
            consent_version=form.consent_version,
            ip=submission.ip,
            user_agent=submission.user_agent,
            at=now,
        )
    _record_form_event(session, form, contact.id, submission, clean, at=now)
    # issue 9 (referrals): a `ref` field, or a `ref` parameter of the page, attributes the contact to a referrer
    from suppilo.advocacy import service as advocacy_service

    advocacy_service.attribute_from_form(
        session, form.workspace_id, contact.id, ref=_text(data.values.get("ref"))[:40] or None, page_url=clean.page_url
    )
    return SubmissionOutcome(
        stored=True,
        contact_id=contact.id,
        submission_id=submission.id,
        created=created,
        stage_changed_to=change.to_stage if change else None,
    )


def _link_anonymous_id(
    session: Session, workspace_id: int, email: str, anonymous_id: str | None, *, at: datetime, ip: str | None
) -> None:
    """Join the visitor's anonymous id to the contact with ``email`` through the ingest path's identify call,
    so the visitor's earlier page views (and their anonymous contact, merged) become that contact's history."""
    if not anonymous_id:
        return
    call = {
        "type": "identify",
        "anonymousId": anonymous_id,
        "traits": {"email": email},
        "messageId": f"form-identify-{uuid.uuid4()}",
        "timestamp": at.isoformat(),
        "context": {"library": {"name": "suppilo-forms"}},
    }
    result = ingest(session, workspace_id, [call], received_at=at, ip=ip)
    if result.errors:
        raise FormError(ANONYMOUS_ID_FIELD, result.errors[0]["message"], code="invalid_anonymous_id")


def _record_form_event(
    session: Session, form: Form, contact_id: int, submission: FormSubmission, clean: CleanSubmission, *, at: datetime
) -> None:
    """The contact's 'Form Submitted' event (once per submission)."""
    properties: dict[str, Any] = {
        "form_id": form.id,
        "form_slug": form.slug,
        "form_name": form.name,
        "submission_id": submission.id,
        "consent_given": clean.consent_given,
    }
    if clean.page_url:
        properties["page_url"] = clean.page_url
    events_service.record_event(
        session,
        form.workspace_id,
        contact_id,
        "Form Submitted",
        properties,
        at,
        message_id=f"form-submission-{submission.id}",
    )


# --- the image pixel ---------------------------------------------------------------------------------------------


def record_pixel_view(
    session: Session,
    workspace_id: int,
    *,
    url: str | None,
    referrer: str | None,
    anonymous_id: str | None,
    title: str | None,
    user_agent: str | None,
    ip: str | None = None,
) -> int:
    """Record a page view from the image pixel (a page without JavaScript, an email web view) through the
    ingest path, so it gets identity resolution, a touch and a channel like a snippet page view.

    Without ``anonymous_id`` the view gets an id of its own that nothing stores in the browser. Returns the
    number of events stored (0 for a repeated message).
    """
    page_url = (url or "").strip()[:4000] or None
    parts = urlsplit(page_url) if page_url else None
    page: dict[str, Any] = {
        "url": page_url,
        "referrer": (referrer or "").strip()[:4000] or None,
        "title": (title or "").strip()[:500] or None,
    }
    if parts is not None:
        page["path"] = parts.path or "/"
        page["search"] = f"?{parts.query}" if parts.query else ""
    page = {k: v for k, v in page.items() if v is not None}
    campaign: dict[str, str] = {}
    if parts is not None and parts.query:
        query = parse_qs(parts.query)
        for key, utm in UTM_KEYS:
            if query.get(utm):
                campaign[key] = query[utm][0][:200]
    context: dict[str, Any] = {"page": page, "library": {"name": "suppilo-pixel"}}
    if campaign:
        context["campaign"] = campaign
    if user_agent:
        context["userAgent"] = user_agent[:500]
    call: dict[str, Any] = {
        "type": "page",
        "anonymousId": (anonymous_id or "").strip()[:200] or f"pixel-{uuid.uuid4()}",
        "messageId": f"pixel-{uuid.uuid4()}",
        "properties": page,
        "context": context,
    }
    if page.get("title"):
        call["name"] = page["title"][:200]
    result = ingest(session, workspace_id, [call], ip=ip)
    if result.errors:
        raise DomainError(result.errors[0]["path"], result.errors[0]["message"], code="invalid_pixel_view")
    return result.stored

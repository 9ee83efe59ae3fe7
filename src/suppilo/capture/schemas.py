"""Pydantic shapes of forms and their submissions."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

FieldType = Literal["email", "text", "tel", "textarea", "select", "checkbox", "hidden"]
FIELD_TYPES: tuple[str, ...] = ("email", "text", "tel", "textarea", "select", "checkbox", "hidden")

# Contact attributes a form field can fill (plus ``properties.<name>`` of a contact PropertyDefinition).
CONTACT_ATTRIBUTES: tuple[str, ...] = (
    "email",
    "first_name",
    "last_name",
    "phone",
    "job_title",
    "country",
    "language",
    "company_name",
)
SUPPORTED_LANGUAGES: tuple[str, ...] = ("en", "sv", "fi", "da", "lv")

# Input names the hosted page and the snippet use themselves.
HONEYPOT_FIELD = "website_url"
ANONYMOUS_ID_FIELD = "suppilo_anonymous_id"
CONSENT_FIELD = "consent"
CONSENT_VERSION_FIELD = "consent_version"
PAGE_URL_FIELD = "page_url"
RESERVED_FIELD_NAMES = frozenset(
    {HONEYPOT_FIELD, ANONYMOUS_ID_FIELD, CONSENT_FIELD, CONSENT_VERSION_FIELD, PAGE_URL_FIELD}
)

_NAME = re.compile(r"^[a-z][a-z0-9_]{0,63}$")
_PROPERTY = re.compile(r"^properties\.[a-z][a-z0-9_]{0,63}$")


class FormField(BaseModel):
    """One input of a form and the contact attribute it fills."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(min_length=1, max_length=64)
    label: str = Field(min_length=1, max_length=300)
    type: FieldType = "text"
    required: bool = False
    maps_to: str | None = Field(default=None, max_length=100)
    options: list[str] = Field(default_factory=list, max_length=200)
    default: str | None = Field(default=None, max_length=500, description="Value of a hidden field.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not _NAME.match(value):
            raise ValueError("must be lower-case letters, digits and underscores, starting with a letter")
        if value in RESERVED_FIELD_NAMES:
            raise ValueError(f"{value!r} is reserved")
        return value

    @field_validator("maps_to")
    @classmethod
    def _maps_to(cls, value: str | None) -> str | None:
        if value is None or value == "":
            return None
        if value not in CONTACT_ATTRIBUTES and not _PROPERTY.match(value):
            raise ValueError(f"must be one of {', '.join(CONTACT_ATTRIBUTES)} or properties.<name>")
        return value

    @model_validator(mode="after")
    def _options(self) -> FormField:
        if self.type == "select" and not self.options:
            raise ValueError("a select field needs options")
        if self.type != "select" and self.options:
            raise ValueError("only select fields have options")
        if self.maps_to == "email" and self.type not in ("email", "hidden"):
            raise ValueError("the field mapped to email must have type email")
        if any(not o.strip() or len(o) > 200 for o in self.options):
            raise ValueError("options must be non-empty strings of at most 200 characters")
        return self


def _check_redirect(value: str | None) -> str | None:
    if value is None or value == "":
        return None
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc:
        raise ValueError("must be an absolute http or https URL")
    return value


def _check_fields(fields: list[FormField]) -> list[FormField]:
    names = [f.name for f in fields]
    duplicates = sorted({n for n in names if names.count(n) > 1})
    if duplicates:
        raise ValueError(f"field names must be unique; repeated: {', '.join(duplicates)}")
    targets = [f.maps_to for f in fields if f.maps_to]
    repeated = sorted({t for t in targets if targets.count(t) > 1})
    if repeated:
        raise ValueError(f"two fields map to the same attribute: {', '.join(repeated)}")
    email = [f for f in fields if f.maps_to == "email"]
    if not email:
        raise ValueError("a form needs a field mapped to email")
    if not email[0].required:
        raise ValueError("the field mapped to email must be required")
    return fields


def consent_problem(text: str | None, version: str | None, required: bool) -> str | None:
    """What is wrong with a form's consent settings, or None."""
    if required and not text:
        return "consent_required needs a consent_text"
    if text and not version:
        return "a consent_text needs a consent_version, so each submission records what was shown"
    return None


class FormCreate(BaseModel):
    """A new form."""

    model_config = ConfigDict(extra="forbid")

    slug: str = Field(pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str = Field(min_length=1, max_length=200)
    fields: list[FormField] = Field(min_length=1, max_length=50)
    consent_text: str | None = Field(default=None, max_length=5000)
    consent_version: str | None = Field(default=None, max_length=32)
    consent_required: bool = False
    consent_topic: str = Field(default="marketing", pattern=r"^[a-z0-9_-]{1,64}$")
    success_message: str = Field(default="Thank you!", min_length=1, max_length=2000)
    redirect_url: str | None = Field(default=None, max_length=2000)
    tags: list[str] = Field(default_factory=list, max_length=50)
    language: Literal["en", "sv", "fi", "da", "lv"] | None = None
    is_active: bool = True

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[FormField]) -> list[FormField]:
        return _check_fields(value)

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, value: str | None) -> str | None:
        return _check_redirect(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str]) -> list[str]:
        return _clean_tags(value)

    @model_validator(mode="after")
    def _consent(self) -> FormCreate:
        problem = consent_problem(self.consent_text, self.consent_version, self.consent_required)
        if problem:
            raise ValueError(problem)
        return self


class FormUpdate(BaseModel):
    """Changes to a form; fields left out keep their value."""

    model_config = ConfigDict(extra="forbid")

    slug: str | None = Field(default=None, pattern=r"^[a-z0-9][a-z0-9-]{0,63}$")
    name: str | None = Field(default=None, min_length=1, max_length=200)
    fields: list[FormField] | None = Field(default=None, min_length=1, max_length=50)
    consent_text: str | None = Field(default=None, max_length=5000)
    consent_version: str | None = Field(default=None, max_length=32)
    consent_required: bool | None = None
    consent_topic: str | None = Field(default=None, pattern=r"^[a-z0-9_-]{1,64}$")
    success_message: str | None = Field(default=None, min_length=1, max_length=2000)
    redirect_url: str | None = Field(default=None, max_length=2000)
    tags: list[str] | None = Field(default=None, max_length=50)
    language: Literal["en", "sv", "fi", "da", "lv"] | None = None
    is_active: bool | None = None

    @field_validator("fields")
    @classmethod
    def _fields(cls, value: list[FormField] | None) -> list[FormField] | None:
        return None if value is None else _check_fields(value)

    @field_validator("redirect_url")
    @classmethod
    def _redirect(cls, value: str | None) -> str | None:
        return _check_redirect(value)

    @field_validator("tags")
    @classmethod
    def _tags(cls, value: list[str] | None) -> list[str] | None:
        return None if value is None else _clean_tags(value)


def _clean_tags(tags: list[str]) -> list[str]:
    out: list[str] = []
    for tag in tags:
        t = tag.strip()
        if not t or len(t) > 100:
            raise ValueError("tags must be non-empty and at most 100 characters")
        if t not in out:
            out.append(t)
    return out


class FormRead(BaseModel):
    """A form as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    slug: str
    public_key: str
    name: str
    fields: list[dict[str, Any]]
    consent_text: str | None
    consent_version: str | None
    consent_required: bool
    consent_topic: str
    success_message: str
    redirect_url: str | None
    tags: list[str]
    language: str | None
    is_active: bool
    created_at: datetime
    updated_at: datetime
    hosted_url: str = ""
    embed_url: str = ""


class FormSubmissionRead(BaseModel):
    """A stored submission."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    form_id: int
    contact_id: int | None
    data: dict[str, Any]
    consent_given: bool
    consent_text: str | None
    consent_version: str | None
    page_url: str | None
    ip: str | None
    user_agent: str | None
    submitted_at: datetime

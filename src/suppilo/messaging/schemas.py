"""Pydantic shapes of templates, variants, validation reports and previews."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

TemplateKind = Literal["marketing", "transactional"]
LANGUAGE_PATTERN = r"^[a-z]{2,3}$"


class VariantIn(BaseModel):
    """The content of a template in one language; ``text`` is made from ``html`` when left out."""

    subject: str = Field(min_length=1, max_length=500)
    preheader: str = Field(default="", max_length=500)
    html: str = Field(min_length=1, max_length=500_000)
    text: str | None = Field(default=None, max_length=500_000)


class VariantCreate(VariantIn):
    """A variant with its language, as part of a new template."""

    language: str = Field(pattern=LANGUAGE_PATTERN)


class TemplateCreate(BaseModel):
    """A new template with its variants."""

    key: str = Field(pattern=r"^[a-z0-9][a-z0-9_.-]{0,63}$")
    name: str = Field(default="", max_length=200)
    description: str = Field(default="", max_length=1000)
    kind: TemplateKind = "marketing"
    variants: list[VariantCreate] = Field(default_factory=list, max_length=50)


class TemplateUpdate(BaseModel):
    """Changeable fields of a template."""

    name: str | None = Field(default=None, max_length=200)
    description: str | None = Field(default=None, max_length=1000)
    kind: TemplateKind | None = None


class VariantRead(BaseModel):
    """A variant as the API shows it."""

    model_config = ConfigDict(from_attributes=True)

    language: str
    subject: str
    preheader: str
    html: str
    text: str | None
    updated_at: datetime


class TemplateRead(BaseModel):
    """A template with its variants."""

    model_config = ConfigDict(from_attributes=True)

    id: int
    key: str
    name: str
    description: str
    kind: TemplateKind
    status: Literal["draft", "published"]
    version: int
    published_at: datetime | None
    created_at: datetime
    updated_at: datetime
    variants: list[VariantRead]


class TemplateList(BaseModel):
    """Every template of the workspace."""

    items: list[TemplateRead]


class IssueRead(BaseModel):
    """One problem of a template part."""

    path: str
    message: str
    line: int | None = None


class ValidationReport(BaseModel):
    """Whether a template can be saved (``errors``) and published (``publish_errors``)."""

    valid: bool
    publishable: bool
    errors: list[IssueRead]
    publish_errors: list[IssueRead]


class PreviewRequest(BaseModel):
    """Render a template for a real contact of the workspace."""

    contact_id: int
    language: str | None = Field(default=None, pattern=LANGUAGE_PATTERN)
    extra: dict[str, Any] | None = Field(
        default=None, description="Caller data: order, cart, offer, recommendations, survey, referral."
    )


class PreviewRead(BaseModel):
    """A rendered message."""

    language: str
    subject: str
    preheader: str
    html: str
    text: str

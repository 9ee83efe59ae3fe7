"""HTTP routes: message templates and their language variants; validate, publish, preview."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any, TypeVar

from fastapi import APIRouter, Path, Response

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.adapters.http.errors import ApiError
from suppilo.messaging import service
from suppilo.messaging.schemas import (
    LANGUAGE_PATTERN,
    PreviewRead,
    PreviewRequest,
    TemplateCreate,
    TemplateList,
    TemplateRead,
    TemplateUpdate,
    ValidationReport,
    VariantIn,
)
from suppilo.messaging.templates import TemplateInvalid

router = APIRouter(prefix="/api/v1", tags=["templates"])

Language = Annotated[str, Path(pattern=LANGUAGE_PATTERN)]
T = TypeVar("T")


def _checked(fn: Callable[[], T]) -> T:
    """Run a use case; a refused template answers 422 with every issue in ``details``."""
    try:
        return fn()
    except TemplateInvalid as exc:
        details: list[dict[str, Any]] = [i.as_dict() for i in exc.issues]
        raise ApiError(422, exc.code, exc.message, exc.field, details) from exc


@router.post("/templates", response_model=TemplateRead, status_code=201)
def create_template(data: TemplateCreate, principal: Writer, session: DbSession) -> TemplateRead:
    """Create a draft template with its variants (validated: syntax, variables, forbidden constructs)."""
    return TemplateRead.model_validate(_checked(lambda: service.create_template(session, principal.workspace_id, data)))


@router.get("/templates", response_model=TemplateList)
def list_templates(principal: Reader, session: ReadSession) -> TemplateList:
    """Every template of the workspace, by key."""
    return TemplateList(
        items=[TemplateRead.model_validate(t) for t in service.list_templates(session, principal.workspace_id)]
    )


@router.get("/templates/{template_id}", response_model=TemplateRead)
def read_template(template_id: int, principal: Reader, session: ReadSession) -> TemplateRead:
    """One template with its variants."""
    return TemplateRead.model_validate(service.get_template(session, principal.workspace_id, template_id))


@router.patch("/templates/{template_id}", response_model=TemplateRead)
def update_template(template_id: int, data: TemplateUpdate, principal: Writer, session: DbSession) -> TemplateRead:
    """Change name, description or kind."""
    return TemplateRead.model_validate(
        _checked(lambda: service.update_template(session, principal.workspace_id, template_id, data))
    )


@router.delete("/templates/{template_id}", status_code=204)
def delete_template(template_id: int, principal: Writer, session: DbSession) -> Response:
    """Delete a template and its variants."""
    service.delete_template(session, principal.workspace_id, template_id)
    return Response(status_code=204)


@router.put("/templates/{template_id}/variants/{language}", response_model=TemplateRead)
def put_variant(
    template_id: int, language: Language, data: VariantIn, principal: Writer, session: DbSession
) -> TemplateRead:
    """Create or replace the variant of one language."""
    return TemplateRead.model_validate(
        _checked(lambda: service.put_variant(session, principal.workspace_id, template_id, language, data))
    )


@router.delete("/templates/{template_id}/variants/{language}", response_model=TemplateRead)
def delete_variant(template_id: int, language: Language, principal: Writer, session: DbSession) -> TemplateRead:
    """Remove the variant of one language."""
    return TemplateRead.model_validate(service.delete_variant(session, principal.workspace_id, template_id, language))


@router.post("/templates/{template_id}/validate", response_model=ValidationReport)
def validate_template(template_id: int, principal: Reader, session: ReadSession) -> ValidationReport:
    """What keeps the template from being saved (``errors``) or published (``publish_errors``)."""
    return ValidationReport.model_validate(service.validation_report(session, principal.workspace_id, template_id))


@router.post("/templates/{template_id}/publish", response_model=TemplateRead)
def publish_template(template_id: int, principal: Writer, session: DbSession) -> TemplateRead:
    """Publish: marketing templates need the postal address and an unsubscribe link in HTML and text."""
    return TemplateRead.model_validate(
        _checked(lambda: service.publish_template(session, principal.workspace_id, template_id))
    )


@router.post("/templates/{template_id}/unpublish", response_model=TemplateRead)
def unpublish_template(template_id: int, principal: Writer, session: DbSession) -> TemplateRead:
    """Back to draft."""
    return TemplateRead.model_validate(service.unpublish_template(session, principal.workspace_id, template_id))


@router.post("/templates/{template_id}/preview", response_model=PreviewRead)
def preview_template(template_id: int, data: PreviewRequest, principal: Reader, session: ReadSession) -> PreviewRead:
    """Render the template for a contact of the workspace (its language unless ``language`` is given)."""
    rendered = service.preview(
        session, principal.workspace_id, template_id, data.contact_id, language=data.language, extra=data.extra
    )
    return PreviewRead(
        language=rendered.language,
        subject=rendered.subject,
        preheader=rendered.preheader,
        html=rendered.html,
        text=rendered.text,
    )

"""HTTP routes: journeys — definitions (JSON or YAML) and versions, states, enrolment, migration between versions,
reports, diagrams, enrollments with their timelines, and the playbook gallery."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from fastapi import status as http

from suppilo.adapters.http.deps import DbSession, Reader, ReadSession, Writer
from suppilo.errors import DomainError
from suppilo.journeys import playbooks, service
from suppilo.journeys.schemas import (
    EnrolIn,
    EnrollmentDetail,
    EnrollmentPage,
    EnrollmentRead,
    EnrolOut,
    JourneyDetail,
    JourneyPage,
    JourneyRead,
    MigrateIn,
    MigrateOut,
    PlaybookEnable,
    PlaybookRead,
    StatusIn,
    TimelineEntry,
    VersionRead,
)

router = APIRouter(prefix="/api/v1", tags=["journeys"])

Limit = Annotated[int, Query(ge=1, le=1000)]
DOC_BODY = {
    "requestBody": {
        "required": True,
        "content": {
            "application/json": {"schema": {"type": "object"}},
            "application/yaml": {"schema": {"type": "string"}},
        },
    }
}


async def _document(request: Request) -> object:
    body = await request.body()
    if len(body) > 512_000:
        raise DomainError("definition", "a definition is at most 500 KB", code="too_large")
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise DomainError("definition", "the body is not UTF-8 text", code="invalid_document") from None
    return service.load_document(text)


def _detail(session: Any, journey: Any) -> JourneyDetail:
    defn = service.current_definition(session, journey)
    from suppilo.engine.journey import definition_json

    return JourneyDetail(**JourneyRead.model_validate(journey).model_dump(), definition=definition_json(defn))


@router.post("/journeys", response_model=JourneyDetail, status_code=http.HTTP_201_CREATED, openapi_extra=DOC_BODY)
async def create_journey(request: Request, principal: Writer, session: DbSession) -> JourneyDetail:
    """Save a new journey (a draft) from a JSON or YAML definition; a bad one is answered with the path and reason."""
    raw = await _document(request)
    journey = service.create_journey(session, principal.workspace_id, raw, actor=f"key:{principal.key_id}")
    return _detail(session, journey)


@router.get("/journeys", response_model=JourneyPage)
def list_journeys(principal: Reader, session: ReadSession, status: str | None = None) -> JourneyPage:
    """The workspace's journeys."""
    return JourneyPage(
        items=[
            JourneyRead.model_validate(j) for j in service.list_journeys(session, principal.workspace_id, status=status)
        ]
    )


@router.get("/journeys/stuck", response_model=list[EnrollmentRead])
def stuck(principal: Reader, session: ReadSession) -> list[EnrollmentRead]:
    """Enrollments overdue by more than 10 minutes (the runner is down or a step keeps failing) or ended as stuck."""
    return [EnrollmentRead.model_validate(e) for e in service.stuck(session, principal.workspace_id)]


@router.get("/journeys/{journey_id}", response_model=JourneyDetail)
def read_journey(journey_id: int, principal: Reader, session: ReadSession) -> JourneyDetail:
    """A journey with its current definition."""
    return _detail(session, service.get_journey(session, principal.workspace_id, journey_id))


@router.put("/journeys/{journey_id}", response_model=JourneyDetail, openapi_extra=DOC_BODY)
async def update_journey(journey_id: int, request: Request, principal: Writer, session: DbSession) -> JourneyDetail:
    """Save a new version; contacts inside stay on their version unless moved with ``/migrate``."""
    raw = await _document(request)
    journey = service.update_definition(
        session, principal.workspace_id, journey_id, raw, actor=f"key:{principal.key_id}"
    )
    return _detail(session, journey)


@router.post("/journeys/{journey_id}/status", response_model=JourneyRead)
def set_status(journey_id: int, data: StatusIn, principal: Writer, session: DbSession) -> JourneyRead:
    """Activate, pause or archive (archiving ends every enrollment)."""
    return JourneyRead.model_validate(service.set_status(session, principal.workspace_id, journey_id, data.status))


@router.get("/journeys/{journey_id}/versions", response_model=list[VersionRead])
def list_versions(journey_id: int, principal: Reader, session: ReadSession) -> list[VersionRead]:
    """Every saved version."""
    return [VersionRead.model_validate(v) for v in service.versions(session, principal.workspace_id, journey_id)]


@router.post("/journeys/{journey_id}/enrollments", response_model=EnrolOut)
def enrol(journey_id: int, data: EnrolIn, principal: Writer, session: DbSession) -> EnrolOut:
    """Enrol contacts or a segment's members by hand; the same ``key`` again enrols nobody twice."""
    if data.contact_ids is not None:
        entered = len(
            service.enrol_contacts(session, principal.workspace_id, journey_id, data.contact_ids, key=data.key)
        )
    else:
        assert data.segment_id is not None
        entered = service.enrol_segment(session, principal.workspace_id, journey_id, data.segment_id, key=data.key)
    return EnrolOut(entered=entered)


@router.get("/journeys/{journey_id}/enrollments", response_model=EnrollmentPage)
def list_enrollments(
    journey_id: int,
    principal: Reader,
    session: ReadSession,
    status: str | None = None,
    cursor: str | None = None,
    limit: Limit = 100,
) -> EnrollmentPage:
    """The journey's enrollments in id order, a page at a time."""
    service.get_journey(session, principal.workspace_id, journey_id)
    after = int(cursor) if cursor and cursor.isdigit() else 0
    rows = service.list_enrollments(
        session, principal.workspace_id, journey_id=journey_id, status=status, after_id=after, limit=limit
    )
    return EnrollmentPage(
        items=[EnrollmentRead.model_validate(r) for r in rows],
        next_cursor=str(rows[-1].id) if len(rows) == limit else None,
    )


@router.post("/journeys/{journey_id}/migrate", response_model=MigrateOut)
def migrate(journey_id: int, data: MigrateIn, principal: Writer, session: DbSession) -> MigrateOut:
    """Move the contacts of one version onto another (each stays at the step of the same id unless mapped)."""
    moved = service.migrate(
        session,
        principal.workspace_id,
        journey_id,
        from_version=data.from_version,
        to_version=data.to_version,
        step_map=data.step_map,
    )
    return MigrateOut(moved=moved)


@router.get("/journeys/{journey_id}/report")
def report(journey_id: int, principal: Reader, session: ReadSession) -> dict[str, Any]:
    """Entered, waiting, ended, goal; per step waiting / passed / sent / opened / clicked; lift over the holdout."""
    return service.report(session, principal.workspace_id, journey_id)


@router.get("/journeys/{journey_id}/diagram", response_class=Response)
def diagram(journey_id: int, principal: Reader, session: ReadSession, version: int | None = None) -> Response:
    """A Mermaid flowchart of the journey with the contacts waiting at each step."""
    text = service.diagram(session, principal.workspace_id, journey_id, version)
    return Response(text, media_type="text/plain; charset=utf-8")


@router.get("/enrollments/{enrollment_id}", response_model=EnrollmentDetail)
def read_enrollment(enrollment_id: int, principal: Reader, session: ReadSession) -> EnrollmentDetail:
    """One enrollment with its timeline."""
    row = service.get_enrollment(session, principal.workspace_id, enrollment_id)
    steps = service.enrollment_timeline(session, principal.workspace_id, enrollment_id)
    return EnrollmentDetail(
        **EnrollmentRead.model_validate(row).model_dump(),
        timeline=[TimelineEntry.model_validate(s) for s in steps],
    )


@router.get("/contacts/{contact_id}/enrollments", response_model=list[EnrollmentRead])
def contact_enrollments(contact_id: int, principal: Reader, session: ReadSession) -> list[EnrollmentRead]:
    """The contact's journeys, past and present."""
    from suppilo.contacts import service as contacts_service

    contacts_service.get_contact(session, principal.workspace_id, contact_id)
    rows = service.list_enrollments(session, principal.workspace_id, contact_id=contact_id, limit=1000)
    return [EnrollmentRead.model_validate(r) for r in rows]


@router.get("/playbooks", response_model=list[PlaybookRead])
def list_playbooks(principal: Reader) -> list[PlaybookRead]:
    """The ready-made journeys, with their default definitions."""
    return [
        PlaybookRead(key=p.key, name=p.name, description=p.description, needs=list(p.needs), definition=p.build({}))
        for p in playbooks.PLAYBOOKS.values()
    ]


@router.post("/playbooks/{key}", response_model=JourneyDetail, status_code=http.HTTP_201_CREATED)
def enable_playbook(key: str, data: PlaybookEnable, principal: Writer, session: DbSession) -> JourneyDetail:
    """Create a playbook's journey in the workspace (activated unless ``activate`` is false)."""
    journey = playbooks.enable(
        session, principal.workspace_id, key, data.settings, activate=data.activate, actor=f"key:{principal.key_id}"
    )
    return _detail(session, journey)

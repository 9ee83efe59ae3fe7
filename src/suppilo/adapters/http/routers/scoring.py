"""HTTP routes: scoring — ideal customer profiles, engagement rules, contact scores with explanations, recompute."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Body, Query, Response
from fastapi import status as http

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession, Writer
from suppilo.engine.scoring import engagement_to_json
from suppilo.errors import NotFound
from suppilo.scoring import predictive, service
from suppilo.scoring.schemas import (
    ContactScoresOut,
    IcpCreate,
    IcpPage,
    IcpRead,
    IcpUpdate,
    MatrixOut,
    PredictiveTrainIn,
    RecomputeIn,
    RecomputeOut,
    ScoreChangeOut,
)

router = APIRouter(prefix="/api/v1", tags=["scoring"])


@router.post("/scoring/icps", response_model=IcpRead, status_code=http.HTTP_201_CREATED)
def create_icp(data: IcpCreate, principal: Writer, session: DbSession) -> IcpRead:
    """Define an ICP; a bad criterion is answered with its path (``definition.employees.min``)."""
    return IcpRead.model_validate(
        service.create_icp(session, principal.workspace_id, data, actor=f"key:{principal.key_id}")
    )


@router.get("/scoring/icps", response_model=IcpPage)
def list_icps(principal: Reader, session: ReadSession) -> IcpPage:
    """The workspace's ICPs."""
    return IcpPage(items=[IcpRead.model_validate(i) for i in service.list_icps(session, principal.workspace_id)])


@router.get("/scoring/icps/{icp_id}", response_model=IcpRead)
def read_icp(icp_id: int, principal: Reader, session: ReadSession) -> IcpRead:
    """One ICP."""
    return IcpRead.model_validate(service.get_icp(session, principal.workspace_id, icp_id))


@router.patch("/scoring/icps/{icp_id}", response_model=IcpRead)
def update_icp(icp_id: int, data: IcpUpdate, principal: Writer, session: DbSession) -> IcpRead:
    """Change an ICP (fit scores follow on the next scoring run, or POST /scoring/recompute)."""
    return IcpRead.model_validate(
        service.update_icp(session, principal.workspace_id, icp_id, data, actor=f"key:{principal.key_id}")
    )


@router.delete("/scoring/icps/{icp_id}", status_code=http.HTTP_204_NO_CONTENT)
def delete_icp(icp_id: int, principal: Writer, session: DbSession) -> Response:
    """Remove an ICP."""
    service.delete_icp(session, principal.workspace_id, icp_id, actor=f"key:{principal.key_id}")
    return Response(status_code=http.HTTP_204_NO_CONTENT)


@router.get("/scoring/engagement")
def read_engagement(principal: Reader, session: ReadSession) -> dict[str, Any]:
    """The engagement rules, half-life and stage thresholds in force (the defaults until changed)."""
    return engagement_to_json(service.engagement_config(session, principal.workspace_id))


@router.put("/scoring/engagement")
def replace_engagement(principal: Admin, session: DbSession, data: Annotated[dict[str, Any], Body()]) -> dict[str, Any]:
    """Replace the engagement rules; rules that could give NaN or overflow are refused with their path."""
    return engagement_to_json(
        service.set_engagement_config(session, principal.workspace_id, data, actor=f"key:{principal.key_id}")
    )


@router.get("/contacts/{contact_id}/scores", response_model=ContactScoresOut)
def contact_scores(contact_id: int, principal: Reader, session: ReadSession) -> ContactScoresOut:
    """The contact's fit, engagement (decayed to now) and predictive scores with their explanations."""
    return ContactScoresOut.model_validate(service.explain(session, principal.workspace_id, contact_id))


@router.get("/contacts/{contact_id}/scores/history", response_model=list[ScoreChangeOut])
def contact_score_history(
    contact_id: int,
    principal: Reader,
    session: ReadSession,
    kind: str | None = None,
    limit: Annotated[int, Query(ge=1, le=1000)] = 100,
) -> list[ScoreChangeOut]:
    """How the contact's scores changed, newest first."""
    rows = service.score_history(session, principal.workspace_id, contact_id, kind, limit)
    return [ScoreChangeOut.model_validate(r) for r in rows]


@router.get("/companies/{company_id}/score")
def company_score(company_id: int, principal: Reader, session: ReadSession) -> dict[str, Any]:
    """The company's fit score against the ICPs, with its explanation."""
    row = service.company_score(session, principal.workspace_id, company_id)
    if row is None:
        raise NotFound("company_id", f"company {company_id} has no fit score")
    return {
        "company_id": row.company_id,
        "score": row.score,
        "grade": row.grade,
        "icp_id": row.icp_id,
        "criteria": row.explanation,
        "computed_at": row.computed_at,
    }


@router.post("/scoring/recompute", response_model=RecomputeOut)
def recompute(data: RecomputeIn, principal: Writer, session: DbSession) -> RecomputeOut:
    """Rescore contacts now (all of the workspace when ``contact_ids`` is left out)."""
    result = service.recompute(session, principal.workspace_id, data.contact_ids, data.kinds)
    return RecomputeOut(
        scored={k: v.scored for k, v in result.items()}, changed={k: len(v.changed) for k, v in result.items()}
    )


@router.post("/scoring/rfm")
def compute_rfm(principal: Writer, session: DbSession) -> dict[str, Any]:
    """Score every customer by recency, frequency and monetary value (1-5 each) and store ``rfm_code`` and
    ``rfm_group`` on the contacts; returns how many customers each group holds."""
    from suppilo.scoring import rfm

    return rfm.compute(session, principal.workspace_id)


@router.get("/scoring/matrix", response_model=MatrixOut)
def matrix(principal: Reader, session: ReadSession) -> MatrixOut:
    """Contacts by fit grade × engagement band: where sales should spend its time."""
    return MatrixOut.model_validate(service.priority_matrix(session, principal.workspace_id))


@router.post("/scoring/predictive/train")
def train_predictive(data: PredictiveTrainIn, principal: Admin, session: DbSession) -> dict[str, Any]:
    """Train the predictive model on the workspace's history and score its contacts; the validation report.

    422 ``insufficient_history`` when too few contacts reached the target stage (fit and engagement stand in).
    """
    return predictive.train(session, principal.workspace_id, data.target_stage, data.days)


@router.get("/scoring/predictive")
def predictive_status(principal: Reader, session: ReadSession) -> dict[str, Any]:
    """The predictive model's target, training time and validation report (AUC, Brier, calibration)."""
    return predictive.status(session, principal.workspace_id)

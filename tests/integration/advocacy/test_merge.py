"""A contact merge keeps the merged person's reviews and survey answers (they used to be deleted with the row)."""

from __future__ import annotations

import secrets
from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from suppilo.advocacy import service
from suppilo.advocacy.models import ReferralCode, Review, SurveyRequest, SurveyResponse
from suppilo.advocacy.schemas import ReviewCreate, SurveyCreate
from suppilo.contacts.merge import merge_contacts
from tests.integration.advocacy.helpers import contact, unique_email

T0 = datetime(2026, 3, 1, 9, 0, tzinfo=UTC)


def _survey(session, ws: int):
    return service.create_survey(session, ws, SurveyCreate(name=f"nps {secrets.token_hex(2)}", kind="nps"))


def _answer(session, ws: int, survey_id: int, contact_id: int, score: int, at: datetime, comment: str | None = None):
    session.add(SurveyRequest(workspace_id=ws, survey_id=survey_id, contact_id=contact_id, sent_at=at))
    session.add(
        SurveyResponse(
            workspace_id=ws, survey_id=survey_id, contact_id=contact_id, score=score, comment=comment, answered_at=at
        )
    )
    session.flush()


def test_merge_moves_reviews_and_keeps_the_first_answer_per_survey(session, workspace) -> None:
    ws = workspace.id
    keep = contact(session, ws, unique_email("keep"), first_name="Liisa")
    gone = contact(session, ws, unique_email("gone"), first_name="Liisa")
    both, only_gone, only_keep = _survey(session, ws), _survey(session, ws), _survey(session, ws)
    _answer(session, ws, both.id, gone.id, 9, T0, "great tents")  # the earlier answer to the same survey
    _answer(session, ws, both.id, keep.id, 4, T0 + timedelta(days=3))
    _answer(session, ws, only_gone.id, gone.id, 10, T0)
    _answer(session, ws, only_keep.id, keep.id, 7, T0)
    review, _ = service.create_review(session, ws, ReviewCreate(contact_id=gone.id, rating=5, text="Kestävä teltta"))
    service.get_or_create_code(session, ws, gone.id)

    merge_contacts(session, ws, keep.id, gone.id, reason="duplicate", actor="test")
    session.flush()
    session.expire_all()

    answers = {
        r.survey_id: (r.contact_id, r.score, r.comment)
        for r in session.scalars(select(SurveyResponse).where(SurveyResponse.workspace_id == ws))
    }
    assert answers == {
        both.id: (keep.id, 9, "great tents"),
        only_gone.id: (keep.id, 10, None),
        only_keep.id: (keep.id, 7, None),
    }
    requests = session.execute(
        select(SurveyRequest.survey_id, SurveyRequest.contact_id, SurveyRequest.sent_at).where(
            SurveyRequest.workspace_id == ws
        )
    ).all()
    assert sorted((s, c) for s, c, _ in requests) == sorted(
        [(both.id, keep.id), (only_gone.id, keep.id), (only_keep.id, keep.id)]
    )
    assert session.get(Review, review.id).contact_id == keep.id
    codes = session.scalars(select(ReferralCode.contact_id).where(ReferralCode.workspace_id == ws)).all()
    assert codes == [keep.id]  # the kept contact had no code: the merged one's moved


def test_merge_leaves_the_kept_contacts_referral_code(session, workspace) -> None:
    ws = workspace.id
    keep = contact(session, ws, unique_email("k"))
    gone = contact(session, ws, unique_email("g"))
    kept_code = service.get_or_create_code(session, ws, keep.id).code
    gone_code = service.get_or_create_code(session, ws, gone.id).code
    merge_contacts(session, ws, keep.id, gone.id, reason="duplicate", actor="test")
    session.flush()
    session.expire_all()
    owners = dict(
        session.execute(select(ReferralCode.code, ReferralCode.contact_id).where(ReferralCode.workspace_id == ws)).all()
    )
    assert owners[kept_code] == keep.id
    # the merged contact's code still resolves to the person it became
    assert service.code_owner(session, ws, gone_code).code == gone_code

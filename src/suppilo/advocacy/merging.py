"""Advocacy rows of a contact that is merged into another (called by the contact merge before the merged row is
deleted, which would otherwise cascade its reviews and survey answers away)."""

from __future__ import annotations

from sqlalchemy import delete, select, update
from sqlalchemy.orm import Session

from suppilo.advocacy.models import ReferralCode, Review, SurveyRequest, SurveyResponse


def move_contact(session: Session, workspace_id: int, keep_id: int, merge_id: int) -> None:
    """Give contact ``merge_id``'s reviews, survey mails and survey answers to ``keep_id``.

    One person answers a survey once and the first answer counts: when both contacts answered the same survey,
    the earlier answer stays (its comment too) and the later one goes; the same for the survey mail (the earlier
    send stays). A referral code moves when the kept contact has none; otherwise the merged contact's code keeps
    resolving through ``contact_merges``, like its referrals.
    """
    session.execute(
        update(Review)
        .where(Review.workspace_id == workspace_id, Review.contact_id == merge_id)
        .values(contact_id=keep_id)
        .execution_options(synchronize_session=False)
    )
    for model, when in ((SurveyRequest, SurveyRequest.sent_at), (SurveyResponse, SurveyResponse.answered_at)):
        rows = session.execute(
            select(model.id, model.survey_id, model.contact_id, when).where(
                model.workspace_id == workspace_id, model.contact_id.in_((keep_id, merge_id))
            )
        ).all()
        by_survey: dict[int, list[tuple[int, int, object]]] = {}
        for row_id, survey_id, contact_id, at in rows:
            by_survey.setdefault(survey_id, []).append((row_id, contact_id, at))
        drop: list[int] = []
        move: list[int] = []
        for pair in by_survey.values():
            pair.sort(key=lambda r: (r[2], r[0]))  # earliest first; the id breaks ties
            first_id, first_contact, _ = pair[0]
            drop.extend(r[0] for r in pair[1:])
            if first_contact == merge_id:
                move.append(first_id)
        if drop:
            session.execute(
                delete(model)
                .where(model.workspace_id == workspace_id, model.id.in_(drop))
                .execution_options(synchronize_session=False)
            )
        if move:
            session.execute(
                update(model)
                .where(model.workspace_id == workspace_id, model.id.in_(move))
                .values(contact_id=keep_id)
                .execution_options(synchronize_session=False)
            )
    has_code = session.scalar(
        select(ReferralCode.id).where(ReferralCode.workspace_id == workspace_id, ReferralCode.contact_id == keep_id)
    )
    if has_code is None:
        session.execute(
            update(ReferralCode)
            .where(ReferralCode.workspace_id == workspace_id, ReferralCode.contact_id == merge_id)
            .values(contact_id=keep_id)
            .execution_options(synchronize_session=False)
        )

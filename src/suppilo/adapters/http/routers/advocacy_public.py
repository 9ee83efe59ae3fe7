"""Public advocacy endpoints (no API key): the referral link ``/r/{code}`` and survey answers ``/s/{token}``.

A forged or altered survey link writes nothing and answers 404. The comment form posts back to the same signed
path, so the token itself protects it (a cross-site page cannot make one up).
"""

from __future__ import annotations

import html
from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, Form, Request
from fastapi.responses import HTMLResponse, RedirectResponse

from suppilo.adapters.http.deps import DbSession
from suppilo.adapters.http.routers.public_mail import PAGE_HEADERS
from suppilo.advocacy import service
from suppilo.advocacy.schemas import ReviewCreate
from suppilo.advocacy.surveys import SCALES, SurveyClaim, resolve_claim
from suppilo.db.base import utcnow
from suppilo.messaging import tracking
from suppilo.workspaces import service as workspaces_service

router = APIRouter(tags=["public advocacy"])


def _secret(request: Request) -> str:
    return str(request.app.state.settings.resolved_secret_key())


def _page(title: str, body: str, status: int = 200) -> HTMLResponse:
    doc = (
        "<!doctype html><html><head><meta charset='utf-8'><meta name='viewport' content='width=device-width'>"
        f"<title>{html.escape(title)}</title><style>body{{font-family:system-ui,sans-serif;max-width:32rem;"
        "margin:3rem auto;padding:0 1rem;line-height:1.5}textarea,select{width:100%;font:inherit}"
        "button{font-size:1rem;padding:.5rem 1rem;margin-top:.5rem}</style>"
        f"</head><body><h1>{html.escape(title)}</h1>{body}</body></html>"
    )
    return HTMLResponse(doc, status_code=status, headers=PAGE_HEADERS)


def _invalid() -> HTMLResponse:
    return _page(
        "This link is not valid", "<p>The link is incomplete, altered or expired. Nothing was recorded.</p>", 404
    )


@router.get("/r/{code}", include_in_schema=False, response_model=None)
def referral_link(code: str, session: DbSession) -> RedirectResponse | HTMLResponse:
    """Send the visitor to the workspace's website with ``?ref=CODE`` (and UTM referral tags, so the tracking
    snippet records the landing as a referral touch)."""
    row = service.find_code(session, code)
    if row is None:
        return _page("Unknown referral link", "<p>This referral link does not exist. Check the address.</p>", 404)
    ws = workspaces_service.get_workspace(session, row.workspace_id)
    if not ws.site_domains:
        return _page("No website", "<p>This shop has not configured its website yet.</p>", 404)
    query = urlencode({"ref": row.code, "utm_source": "referral", "utm_medium": "referral",
                       "utm_campaign": "referral-programme"})  # fmt: skip
    return RedirectResponse(
        f"https://{ws.site_domains[0]}/?{query}", status_code=302, headers={"Referrer-Policy": "no-referrer"}
    )


def _comment_form(token: str, claim: SurveyClaim, ask_review: bool) -> str:
    action = f"/s/{html.escape(token)}?score={claim.score}"
    review = ""
    if ask_review:
        options = "".join(f"<option value='{n}'>{n} / 5</option>" for n in range(5, 0, -1))
        review = (
            "<p><label>Would you like to write a review others can read? (optional)<br>"
            f"<select name='review_rating'><option value=''>No review</option>{options}</select></label></p>"
            "<p><label>Your review<br><textarea name='review_text' rows='4' maxlength='5000'></textarea></label></p>"
        )
    return (
        f"<form method='post' action='{action}'>"
        "<p><label>Anything you would like to add? (optional)<br>"
        "<textarea name='comment' rows='4' maxlength='5000'></textarea></label></p>"
        f"{review}<button type='submit'>Send</button></form>"
    )


@router.get("/s/{token}", include_in_schema=False)
def answer(token: str, request: Request, session: DbSession, score: str | None = None) -> HTMLResponse:
    """Record the score of a signed link (the first click counts) and thank the respondent. A request that looks
    like a link scanner (scanner user agent, no user agent) records nothing and gets a button that confirms."""
    claim = service.parse_link(_secret(request), token, score)
    if claim is None:
        return _invalid()
    found = resolve_claim(session, claim)
    if found is None:
        return _invalid()
    survey = found[0]
    ip = request.client.host if request.client else None
    if tracking.machine_click_reason(request.headers.get("user-agent"), ip, request.method, None, utcnow()):
        action = f"/s/{html.escape(token)}?score={claim.score}"
        return _page(
            "Confirm your answer",
            f"<p>Your answer: <strong>{claim.score} / {SCALES[survey.kind][1]}</strong></p>"
            f"<form method='post' action='{action}'><button type='submit'>Send my answer</button></form>",
        )
    recorded = service.record_answer(session, claim)
    if recorded is None:
        return _invalid()
    response, created = recorded
    note = (
        ""
        if created
        else f"<p>You had already answered {response.score} / {SCALES[survey.kind][1]}; that answer is kept.</p>"
    )
    return _page("Thank you!", f"<p>Thanks for your answer.</p>{note}" + _comment_form(token, claim, survey.ask_review))


@router.post("/s/{token}", include_in_schema=False)
def comment(
    token: str,
    request: Request,
    session: DbSession,
    score: str | None = None,
    comment: Annotated[str, Form(max_length=5000)] = "",
    review_rating: Annotated[str, Form(max_length=2)] = "",
    review_text: Annotated[str, Form(max_length=10_000)] = "",
) -> HTMLResponse:
    """The thank-you page's form: a comment on the answer and, optionally, a review (pending moderation)."""
    claim = service.parse_link(_secret(request), token, score)
    if claim is None:
        return _invalid()
    recorded = service.record_answer(session, claim)
    if recorded is None:
        return _invalid()
    survey = service.get_survey(session, claim.workspace_id, claim.survey_id)
    if comment.strip():
        service.add_comment(session, claim, comment)
    thanks = "<p>Thank you, your comment is saved.</p>"
    if survey.ask_review and review_rating.strip().isdigit() and 1 <= int(review_rating) <= 5:
        service.create_review(
            session,
            claim.workspace_id,
            ReviewCreate(
                contact_id=claim.contact_id,
                rating=int(review_rating),
                text=review_text,
                idempotency_key=f"survey:{claim.survey_id}:{claim.contact_id}",
            ),
            source="survey",
        )
        thanks += "<p>Thank you for your review: it will appear once we have read it.</p>"
    return _page("Thank you!", thanks)

"""Task reminders: at a task's ``reminder_at`` its owner gets an email (template ``task_reminder``) through the
outbox, in the owner's language and time zone.

Effectively once: the outbox row is keyed ``task-reminder:{task_id}:{reminder_at}`` and written in the same
transaction that marks the task's ``reminder_sent_at``; a job that dies before its commit leaves neither, and a
second run (or a second worker) finds the key taken. Moving the reminder to another time clears
``reminder_sent_at``, so the new time gets its own message. Reminders of done tasks are not sent.

Each reminder links to the task in the web interface (``message.task_url``): the deal's page (at the task) for a
task on a deal, else the owner's task list, as an absolute URL under the configured ``SUPPILO_PUBLIC_URL`` — the
same base the unsubscribe and survey links use.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from urllib.parse import quote

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.contacts.models import Contact
from suppilo.db.base import utcnow
from suppilo.deals.models import Deal, Task
from suppilo.messaging import outbox
from suppilo.messaging import service as messaging_service
from suppilo.messaging.models import Template
from suppilo.messaging.templates import render_message
from suppilo.workspaces.models import Membership, User, Workspace

TEMPLATE_KEY = "task_reminder"


@dataclass(frozen=True, slots=True)
class _Variant:
    subject: str
    preheader: str
    html: str
    text: str | None = None


def dedupe_key(task: Task) -> str:
    """The outbox key of a task's reminder."""
    assert task.reminder_at is not None
    return f"task-reminder:{task.id}:{task.reminder_at.isoformat()}"


def _variant(session: Session, workspace_id: int, languages: list[str | None]) -> tuple[Any, str]:
    """The workspace's published ``task_reminder`` variant, else the shipped default's."""
    template = session.scalar(
        select(Template).where(Template.workspace_id == workspace_id, Template.key == TEMPLATE_KEY)
    )
    if template is not None and template.status == "published":
        variant = messaging_service.choose_language(template, languages)
        return variant, variant.language
    spec = next(t for t in messaging_service.default_templates() if t["key"] == TEMPLATE_KEY)
    by_lang = {v["language"]: v for v in spec["variants"]}
    for lang in [*languages, "en"]:
        code = (lang or "").replace("_", "-").split("-")[0].lower()
        if code in by_lang:
            v = by_lang[code]
            return _Variant(subject=v["subject"], preheader=v["preheader"], html=v["html"]), code
    raise LookupError("the shipped task_reminder template has no English variant")


def public_base(public_url: str | None) -> str:
    """The public base URL without a trailing slash (the configured one unless given)."""
    if public_url is None:
        from suppilo.config import get_settings

        public_url = get_settings().public_url
    return str(public_url).rstrip("/")


def task_url(session: Session, task: Task, public_url: str | None = None) -> str:
    """The absolute web-interface link of a task: its deal's page at the task, else the task list at the task."""
    slug = session.scalar(select(Workspace.slug).where(Workspace.id == task.workspace_id))
    base = f"{public_base(public_url)}/app/w/{quote(str(slug), safe='')}"
    if task.deal_id is not None:
        return f"{base}/deals/{task.deal_id}#task-{task.id}"
    return f"{base}/tasks#task-{task.id}"


def render_reminder(session: Session, task: Task, user: User, *, public_url: str | None = None) -> Any:
    """The reminder for ``task`` rendered for its owner ``user`` (their language and zone), with the link to the
    task in the web interface under ``public_url`` (default: the configured public URL)."""
    workspace = messaging_service.workspace_context(session, task.workspace_id)
    deal_name = None
    if task.deal_id is not None:
        deal_name = session.scalar(
            select(Deal.name).where(Deal.workspace_id == task.workspace_id, Deal.id == task.deal_id)
        )
    contact_name = None
    if task.contact_id is not None:
        row = session.execute(
            select(Contact.first_name, Contact.last_name, Contact.email).where(
                Contact.workspace_id == task.workspace_id, Contact.id == task.contact_id
            )
        ).first()
        if row is not None:
            contact_name = " ".join(x for x in (row.first_name, row.last_name) if x) or row.email
    variant, language = _variant(session, task.workspace_id, [user.language, workspace["default_language"]])
    context = {
        "workspace": workspace,
        "contact": {},
        "company": {},
        "message": {
            "task_title": task.title,
            "task_kind": task.kind,
            "due_at": task.due_at.isoformat(),
            "owner_name": user.name or None,
            "deal_name": deal_name,
            "contact_name": contact_name,
            "task_url": task_url(session, task, public_url),
        },
    }
    zone = user.timezone if user.timezone and user.timezone != "UTC" else workspace["timezone"]
    return render_message(variant, language=language, context=context, timezone=zone)


def queue_due_reminders(
    session: Session, *, now: datetime | None = None, limit: int = 500, public_url: str | None = None
) -> int:
    """Queue the reminders that are due (all workspaces); returns how many messages were queued. Links point under
    ``public_url`` (default: the configured public URL)."""
    now = now or utcnow()
    query = (
        select(Task)
        .where(Task.reminder_sent_at.is_(None), Task.reminder_at.is_not(None), Task.reminder_at <= now)
        .order_by(Task.reminder_at, Task.id)
        .limit(limit)
    )
    if session.get_bind().dialect.name == "postgresql":
        query = query.with_for_update(skip_locked=True, of=Task)
    queued = 0
    for task in list(session.scalars(query)):
        task.reminder_sent_at = now
        if task.done_at is not None or task.owner_id is None:
            continue
        user = session.scalar(
            select(User)
            .join(Membership, Membership.user_id == User.id)
            .where(Membership.workspace_id == task.workspace_id, User.id == task.owner_id, User.is_active.is_(True))
        )
        if user is None or not user.email:
            continue
        rendered = render_reminder(session, task, user, public_url=public_url)
        row = outbox.enqueue(
            session,
            task.workspace_id,
            dedupe_key=dedupe_key(task),
            contact_id=None,
            rendered=rendered,
            kind="transactional",
            topic="task_reminder",
            priority=5,
            extra={"to_user_id": user.id, "task_id": task.id},
        )
        if row is not None:
            row.to_address = user.email
            queued += 1
    session.flush()
    return queued

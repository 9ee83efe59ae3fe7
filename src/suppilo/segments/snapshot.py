"""Loading what the in-memory filter evaluator reads, for a batch of contacts, in a few queries."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Collection, Iterable, Iterator, Sequence
from typing import Any

from sqlalchemy import bindparam, select
from sqlalchemy.orm import Session

from suppilo.engine.filter_eval import (
    ConsentSnapshot,
    ContactSnapshot,
    EventSnapshot,
    OrderLineSnapshot,
    OrderSnapshot,
    ScoreSnapshot,
    StageChangeSnapshot,
)
from suppilo.engine.filters import COMPANY_FIELDS, CONTACT_FIELDS
from suppilo.segments.compiler import (
    companies,
    consent_records,
    contact_scores,
    contact_tags,
    contacts,
    events,
    order_lines,
    orders,
    stage_changes,
)

CHUNK = 500
PARTS = frozenset({"company", "tags", "scores", "consents", "stages", "orders", "events"})


# The per-event reads, built once (expanding parameters): building a statement cost more than running it.
_CONTACTS = select(contacts.c.id, contacts.c.properties, *(contacts.c[f] for f in CONTACT_FIELDS)).where(
    contacts.c.workspace_id == bindparam("ws"), contacts.c.id.in_(bindparam("ids", expanding=True))
)
_EVENTS = (
    select(events.c.contact_id, events.c.name, events.c.occurred_at, events.c.properties)
    .where(events.c.workspace_id == bindparam("ws"), events.c.contact_id.in_(bindparam("ids", expanding=True)))
    .order_by(events.c.occurred_at, events.c.id)
)
_EVENTS_NAMED = _EVENTS.where(events.c.name.in_(bindparam("names", expanding=True)))


def _chunks(ids: Sequence[int]) -> Iterator[Sequence[int]]:
    for i in range(0, len(ids), CHUNK):
        yield ids[i : i + CHUNK]


def load_snapshots(
    session: Session,
    workspace_id: int,
    contact_ids: Iterable[int],
    *,
    event_names: Collection[str] | None = None,
    parts: Collection[str] | None = None,
) -> dict[int, ContactSnapshot]:
    """Snapshots of the workspace's contacts among ``contact_ids`` (ids of other workspaces are skipped).

    ``event_names`` limits the events loaded to those names (None: all events), e.g. to the ``events:<name>``
    dependencies of the filters about to be evaluated. ``parts`` limits what is loaded besides the contact's own
    row to some of ``PARTS`` (None: everything); what is left out is empty in the snapshots.
    """
    want = PARTS if parts is None else frozenset(parts)
    ids = sorted(set(contact_ids))
    rows: dict[int, Any] = {}
    tags: dict[int, set[str]] = defaultdict(set)
    changes: dict[int, list[StageChangeSnapshot]] = defaultdict(list)
    order_rows: list[Any] = []
    event_rows: dict[int, list[EventSnapshot]] = defaultdict(list)
    scores: dict[int, dict[str, ScoreSnapshot]] = defaultdict(dict)
    consents: dict[int, list[ConsentSnapshot]] = defaultdict(list)
    for chunk in _chunks(ids):
        for r in session.execute(_CONTACTS, {"ws": workspace_id, "ids": list(chunk)}):
            rows[r.id] = r
        if "tags" in want:
            for cid, tag in session.execute(
                select(contact_tags.c.contact_id, contact_tags.c.tag).where(
                    contact_tags.c.workspace_id == workspace_id, contact_tags.c.contact_id.in_(chunk)
                )
            ):
                tags[cid].add(tag)
        for r in (
            ()
            if "scores" not in want
            else session.execute(
                select(
                    contact_scores.c.contact_id,
                    contact_scores.c.kind,
                    contact_scores.c.score,
                    contact_scores.c.grade,
                    contact_scores.c.decay_key,
                    contact_scores.c.half_life_seconds,
                ).where(contact_scores.c.workspace_id == workspace_id, contact_scores.c.contact_id.in_(chunk))
            )
        ):
            scores[r.contact_id][r.kind] = ScoreSnapshot(r.score, r.grade, r.decay_key, r.half_life_seconds)
        for r in (
            ()
            if "consents" not in want
            else session.execute(
                select(
                    consent_records.c.contact_id,
                    consent_records.c.topic,
                    consent_records.c.action,
                    consent_records.c.recorded_at,
                    consent_records.c.id,
                ).where(consent_records.c.workspace_id == workspace_id, consent_records.c.contact_id.in_(chunk))
            )
        ):
            consents[r.contact_id].append(ConsentSnapshot(r.topic, r.action, r.recorded_at, r.id))
        for r in (
            ()
            if "stages" not in want
            else session.execute(
                select(
                    stage_changes.c.contact_id,
                    stage_changes.c.from_stage,
                    stage_changes.c.to_stage,
                    stage_changes.c.changed_at,
                )
                .where(stage_changes.c.workspace_id == workspace_id, stage_changes.c.contact_id.in_(chunk))
                .order_by(stage_changes.c.changed_at, stage_changes.c.id)
            )
        ):
            changes[r.contact_id].append(StageChangeSnapshot(r.from_stage, r.to_stage, r.changed_at))
        order_rows.extend(
            ()
            if "orders" not in want
            else session.execute(
                select(
                    orders.c.id,
                    orders.c.contact_id,
                    orders.c.placed_at,
                    orders.c.currency,
                    orders.c.total_minor,
                    orders.c.status,
                )
                .where(orders.c.workspace_id == workspace_id, orders.c.contact_id.in_(chunk))
                .order_by(orders.c.placed_at, orders.c.id)
            )
        )
        if "events" in want and (event_names is None or event_names):
            params: dict[str, Any] = {"ws": workspace_id, "ids": list(chunk)}
            if event_names is None:
                stmt = _EVENTS
            else:
                stmt, params["names"] = _EVENTS_NAMED, sorted(event_names)
            for r in session.execute(stmt, params):
                event_rows[r.contact_id].append(EventSnapshot(r.name, r.occurred_at, r.properties or {}))

    lines: dict[int, list[OrderLineSnapshot]] = defaultdict(list)
    order_ids = [r.id for r in order_rows]
    for chunk in _chunks(order_ids):
        for r in session.execute(
            select(order_lines.c.order_id, order_lines.c.sku, order_lines.c.quantity)
            .where(order_lines.c.workspace_id == workspace_id, order_lines.c.order_id.in_(chunk))
            .order_by(order_lines.c.id)
        ):
            lines[r.order_id].append(OrderLineSnapshot(r.sku, r.quantity))
    contact_orders: dict[int, list[OrderSnapshot]] = defaultdict(list)
    for r in order_rows:
        contact_orders[r.contact_id].append(
            OrderSnapshot(r.placed_at, r.currency, r.total_minor, r.status, tuple(lines[r.id]))
        )

    company_ids = sorted({r.company_id for r in rows.values() if r.company_id is not None} if "company" in want else ())
    company_rows: dict[int, Any] = {}
    company_cols = [companies.c.id, companies.c.properties, *(companies.c[f] for f in COMPANY_FIELDS)]
    for chunk in _chunks(company_ids):
        for r in session.execute(
            select(*company_cols).where(companies.c.workspace_id == workspace_id, companies.c.id.in_(chunk))
        ):
            company_rows[r.id] = r

    result: dict[int, ContactSnapshot] = {}
    for cid, r in rows.items():
        company = company_rows.get(r.company_id) if r.company_id is not None else None
        result[cid] = ContactSnapshot(
            id=cid,
            fields={f: getattr(r, f) for f in CONTACT_FIELDS},
            properties=r.properties or {},
            company=None if company is None else {f: getattr(company, f) for f in COMPANY_FIELDS},
            company_properties={} if company is None else (company.properties or {}),
            tags=frozenset(tags[cid]),
            stage_changes=tuple(changes[cid]),
            orders=tuple(contact_orders[cid]),
            events=tuple(event_rows[cid]),
            scores=scores.get(cid, {}),
            consents=tuple(consents[cid]),
        )
    return result

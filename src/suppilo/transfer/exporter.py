"""Streaming export of contacts, companies, products and orders as CSV or JSON lines.

Rows are read in pages by id (constant memory, no long-held server cursor). CSV cells that a spreadsheet would run
as a formula (starting with = + - @ tab or CR) get a leading apostrophe; numeric columns stay numbers.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections.abc import Iterator
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from suppilo.commerce.models import Order, OrderLine, Product
from suppilo.companies.models import Company
from suppilo.contacts.models import Contact, ContactTag, PropertyDefinition
from suppilo.errors import DomainError
from suppilo.transfer.values import format_money
from suppilo.workspaces.models import User

PAGE = 2000
FORMULA_START = ("=", "+", "-", "@", "\t", "\r")
_E164 = re.compile(r"^\+[1-9][0-9]{5,14}$")
FORMATS = ("csv", "json")


class ExportError(DomainError):
    """A refused export (unknown kind or format)."""


def neutralise(value: str) -> str:
    """``=HYPERLINK(...)`` -> ``'=HYPERLINK(...)``: a spreadsheet shows the text instead of running it."""
    return "'" + value if value.startswith(FORMULA_START) else value


CONTACT_COLUMNS = [
    "id",
    "email",
    "first_name",
    "last_name",
    "phone",
    "job_title",
    "company_name",
    "company_domain",
    "country",
    "region",
    "city",
    "language",
    "timezone",
    "lifecycle_stage",
    "owner",
    "first_touch_channel",
    "first_touch_source",
    "first_touch_at",
    "created_at",
    "updated_at",
    "tags",
]
COMPANY_COLUMNS = [
    "id",
    "name",
    "domain",
    "industry",
    "employees",
    "annual_revenue",
    "revenue_currency",
    "country",
    "city",
    "owner",
    "external_id",
    "created_at",
    "updated_at",
]
PRODUCT_COLUMNS = ["id", "sku", "name", "category", "price", "currency", "url", "image_url", "created_at", "updated_at"]
ORDER_COLUMNS = [
    "order_id",
    "email",
    "placed_at",
    "status",
    "currency",
    "subtotal",
    "discount",
    "tax",
    "shipping",
    "total",
    "refunded",
    "coupon_code",
    "channel",
    "sku",
    "name",
    "category",
    "quantity",
    "unit_price",
]
# Columns whose values are numbers (or validated E.164 phones), written as they are.
NUMERIC = frozenset(
    {
        "id",
        "employees",
        "annual_revenue",
        "price",
        "subtotal",
        "discount",
        "tax",
        "shipping",
        "total",
        "refunded",
        "quantity",
        "unit_price",
    }
)
COLUMNS = {"contacts": CONTACT_COLUMNS, "companies": COMPANY_COLUMNS, "products": PRODUCT_COLUMNS}
COLUMNS["orders"] = ORDER_COLUMNS


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value is not None else None


def property_names(session: Session, workspace_id: int, kind: str) -> list[str]:
    """The names of the custom properties defined for ``kind`` (contacts, companies, products)."""
    singular = {"contacts": "contact", "companies": "company", "products": "product", "orders": "order"}[kind]
    return list(
        session.scalars(
            select(PropertyDefinition.name)
            .where(
                PropertyDefinition.workspace_id == workspace_id, PropertyDefinition.object_type.in_([kind, singular])
            )
            .order_by(PropertyDefinition.name)
        )
    )


def _owners(session: Session, ids: set[int]) -> dict[int, str]:
    if not ids:
        return {}
    return dict(session.execute(select(User.id, User.email).where(User.id.in_(ids))).all())


def _pages(session: Session, model: Any, workspace_id: int, *extra: Any) -> Iterator[list[Any]]:
    """The workspace's rows of ``model`` in id order, a page at a time (keyset pagination, constant memory)."""
    after = 0
    while True:
        page = list(
            session.scalars(
                select(model)
                .where(model.workspace_id == workspace_id, model.id > after, *extra)
                .order_by(model.id)
                .limit(PAGE)
            )
        )
        if not page:
            return
        after = page[-1].id
        yield page
        session.expunge_all()


def _contacts(session: Session, workspace_id: int) -> Iterator[dict[str, Any]]:
    for page in _pages(session, Contact, workspace_id, Contact.email.isnot(None)):
        ids = [c.id for c in page]
        tags: dict[int, list[str]] = {}
        for cid, tag in session.execute(
            select(ContactTag.contact_id, ContactTag.tag)
            .where(ContactTag.workspace_id == workspace_id, ContactTag.contact_id.in_(ids))
            .order_by(ContactTag.contact_id, ContactTag.tag)
        ):
            tags.setdefault(cid, []).append(tag)
        company_ids = {c.company_id for c in page if c.company_id is not None}
        companies: dict[int, tuple[str, str | None]] = {}
        if company_ids:
            for cid, name, domain in session.execute(
                select(Company.id, Company.name, Company.domain).where(
                    Company.workspace_id == workspace_id, Company.id.in_(company_ids)
                )
            ):
                companies[cid] = (name, domain)
        owners = _owners(session, {c.owner_id for c in page if c.owner_id is not None})
        for c in page:
            company = companies.get(c.company_id) if c.company_id is not None else None
            yield {
                "id": c.id,
                "email": c.email,
                "first_name": c.first_name,
                "last_name": c.last_name,
                "phone": c.phone,
                "job_title": c.job_title,
                "company_name": company[0] if company else None,
                "company_domain": company[1] if company else None,
                "country": c.country,
                "region": c.region,
                "city": c.city,
                "language": c.language,
                "timezone": c.timezone,
                "lifecycle_stage": c.lifecycle_stage,
                "owner": owners.get(c.owner_id) if c.owner_id is not None else None,
                "first_touch_channel": c.first_touch_channel,
                "first_touch_source": c.first_touch_source,
                "first_touch_at": _iso(c.first_touch_at),
                "created_at": _iso(c.created_at),
                "updated_at": _iso(c.updated_at),
                "tags": tags.get(c.id, []),
                "properties": dict(c.properties or {}),
            }


def _companies(session: Session, workspace_id: int) -> Iterator[dict[str, Any]]:
    for page in _pages(session, Company, workspace_id):
        owners = _owners(session, {c.owner_id for c in page if c.owner_id is not None})
        for c in page:
            yield {
                "id": c.id,
                "name": c.name,
                "domain": c.domain,
                "industry": c.industry,
                "employees": c.employees,
                "annual_revenue": format_money(c.annual_revenue_minor, c.revenue_currency) or None,
                "revenue_currency": c.revenue_currency,
                "country": c.country,
                "city": c.city,
                "owner": owners.get(c.owner_id) if c.owner_id is not None else None,
                "external_id": c.external_id,
                "created_at": _iso(c.created_at),
                "updated_at": _iso(c.updated_at),
                "properties": dict(c.properties or {}),
            }


def _products(session: Session, workspace_id: int) -> Iterator[dict[str, Any]]:
    for page in _pages(session, Product, workspace_id):
        for p in page:
            yield {
                "id": p.id,
                "sku": p.sku,
                "name": p.name,
                "category": p.category,
                "price": format_money(p.price_minor, p.currency),
                "currency": p.currency,
                "url": p.url,
                "image_url": p.image_url,
                "created_at": _iso(p.created_at),
                "updated_at": _iso(p.updated_at),
                "properties": dict(p.properties or {}),
            }


def _orders(session: Session, workspace_id: int) -> Iterator[dict[str, Any]]:
    for page in _pages(session, Order, workspace_id):
        ids = [o.id for o in page]
        lines: dict[int, list[OrderLine]] = {}
        for line in session.scalars(
            select(OrderLine)
            .where(OrderLine.workspace_id == workspace_id, OrderLine.order_id.in_(ids))
            .order_by(OrderLine.order_id, OrderLine.id)
        ):
            lines.setdefault(line.order_id, []).append(line)
        contact_ids = {o.contact_id for o in page if o.contact_id is not None}
        emails: dict[int, str | None] = {}
        if contact_ids:
            emails = dict(
                session.execute(
                    select(Contact.id, Contact.email).where(
                        Contact.workspace_id == workspace_id, Contact.id.in_(contact_ids)
                    )
                ).all()
            )
        for o in page:
            cur = o.currency
            yield {
                "order_id": o.external_id,
                "email": emails.get(o.contact_id) if o.contact_id is not None else None,
                "placed_at": _iso(o.placed_at),
                "status": o.status,
                "currency": cur,
                "subtotal": format_money(o.subtotal_minor, cur),
                "discount": format_money(o.discount_minor, cur),
                "tax": format_money(o.tax_minor, cur),
                "shipping": format_money(o.shipping_minor, cur),
                "total": format_money(o.total_minor, cur),
                "refunded": format_money(o.refunded_minor, cur),
                "coupon_code": o.coupon_code,
                "channel": o.channel,
                "lines": [
                    {
                        "sku": ln.sku,
                        "name": ln.name,
                        "category": ln.category,
                        "quantity": ln.quantity,
                        "unit_price": format_money(ln.unit_price_minor, cur),
                    }
                    for ln in lines.get(o.id, [])
                ],
            }


_RECORDS = {"contacts": _contacts, "companies": _companies, "products": _products, "orders": _orders}


def export_records(session: Session, workspace_id: int, kind: str) -> Iterator[dict[str, Any]]:
    """The workspace's records of ``kind`` as JSON-ready dicts (orders carry their lines)."""
    if kind not in _RECORDS:
        raise ExportError("kind", f"unknown export kind {kind!r}; choose one of {', '.join(_RECORDS)}")
    return _RECORDS[kind](session, workspace_id)


def _cell(column: str, value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, list):
        value = ";".join(str(v) for v in value)
    if isinstance(value, dict):
        value = json.dumps(value, ensure_ascii=False)
    text = str(value)
    if column in NUMERIC and not isinstance(value, str | list | dict):
        return text
    if column in NUMERIC and re.fullmatch(r"-?[0-9]+(\.[0-9]+)?", text):
        return text
    if column == "phone" and _E164.match(text):
        return text
    return neutralise(text)


def export_csv(session: Session, workspace_id: int, kind: str, *, chunk_rows: int = 500) -> Iterator[str]:
    """CSV text in chunks: a header, then one row per record (one per order line for orders)."""
    records = export_records(session, workspace_id, kind)
    props = property_names(session, workspace_id, kind) if kind != "orders" else []
    columns = COLUMNS[kind] + [p for p in props if p not in COLUMNS[kind]]
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\r\n")
    writer.writerow([neutralise(c) for c in columns])
    pending = 0
    for record in records:
        rows = _order_rows(record) if kind == "orders" else [record]
        for row in rows:
            extra = row.get("properties", {})
            writer.writerow([_cell(c, row.get(c) if c in COLUMNS[kind] else extra.get(c)) for c in columns])
            pending += 1
        if pending >= chunk_rows:
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
            pending = 0
    yield buffer.getvalue()


def _order_rows(order: dict[str, Any]) -> list[dict[str, Any]]:
    head = {k: v for k, v in order.items() if k != "lines"}
    if not order["lines"]:
        return [head]
    return [{**head, **line} for line in order["lines"]]


def export_json(session: Session, workspace_id: int, kind: str, *, chunk_rows: int = 500) -> Iterator[str]:
    """JSON lines: one object per record."""
    parts: list[str] = []
    for record in export_records(session, workspace_id, kind):
        parts.append(json.dumps(record, ensure_ascii=False, default=str))
        if len(parts) >= chunk_rows:
            yield "\n".join(parts) + "\n"
            parts = []
    if parts:
        yield "\n".join(parts) + "\n"


def export_stream(session: Session, workspace_id: int, kind: str, fmt: str) -> Iterator[str]:
    """``export_csv`` or ``export_json`` by ``fmt``."""
    if fmt not in FORMATS:
        raise ExportError("format", f"format must be csv or json; got {fmt!r}")
    if kind not in _RECORDS:
        raise ExportError("kind", f"unknown export kind {kind!r}; choose one of {', '.join(_RECORDS)}")
    return export_csv(session, workspace_id, kind) if fmt == "csv" else export_json(session, workspace_id, kind)

"""Building the demo workspace: setup through the services, then the generated rows in bulk, one commit per chunk."""

from __future__ import annotations

import secrets
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import timedelta
from decimal import Decimal
from typing import Any

from argon2 import PasswordHasher
from sqlalchemy import Engine, Table, delete, func, select, text
from sqlalchemy.orm import Session

from suppilo.analytics import service as analytics_service
from suppilo.analytics.schemas import RateCreate
from suppilo.capture.models import Form, FormSubmission
from suppilo.commerce.models import Cart, Order, OrderLine, Product, Refund
from suppilo.companies.models import Company
from suppilo.contacts.models import (
    Contact,
    ContactIdentity,
    ContactMerge,
    ContactTag,
    PropertyDefinition,
    StageChange,
)
from suppilo.db.base import utcnow
from suppilo.db.registry import Base
from suppilo.db.session import make_session_factory
from suppilo.db.tables import table_of
from suppilo.deals.demo import load_demo_pipeline
from suppilo.demo import catalog
from suppilo.demo.generator import (
    FORMS,
    INTERESTS,
    NEWSLETTER_TOPICS,
    CompanyInfo,
    Context,
    DemoParams,
    IdCounter,
    Rows,
    generate_chunk,
    generate_companies,
)
from suppilo.demo.params import GENERATOR_VERSION, SITE_DOMAIN, SITE_URL
from suppilo.events.models import Event, Touch
from suppilo.scoring import service as scoring_service
from suppilo.scoring.schemas import IcpCreate
from suppilo.workspaces import service as workspaces_service
from suppilo.workspaces.models import User, Workspace
from suppilo.workspaces.schemas import WorkspaceCreate

ROLES = ("admin", "marketer", "sales", "analyst")
USER_NAMES = {"admin": "Aino Admin", "marketer": "Mikko Marketer", "sales": "Saara Sales", "analyst": "Antti Analyst"}

TABLES: dict[str, Table] = {
    "contacts": table_of(Contact),
    "events": table_of(Event),
    "touches": table_of(Touch),
    "identities": table_of(ContactIdentity),
    "merges": table_of(ContactMerge),
    "stage_changes": table_of(StageChange),
    "tags": table_of(ContactTag),
    "form_submissions": table_of(FormSubmission),
    "orders": table_of(Order),
    "order_lines": table_of(OrderLine),
    "refunds": table_of(Refund),
    "carts": table_of(Cart),
}
# Tables whose ids the generator assigns itself (PostgreSQL sequences are moved past them afterwards).
ASSIGNED_ID_TABLES = ("contacts", "events", "orders", "companies", "products", "forms")

Progress = Callable[[int, int], None]


@dataclass
class DemoSetup:
    """What setup created: the workspace, its users (with their one-time passwords) and keys."""

    workspace_id: int
    slug: str
    admin_key: str
    write_key: str
    users: list[dict[str, str]] = field(default_factory=list)


@dataclass
class DemoResult:
    """A finished load: counts per table and timing."""

    workspace_id: int
    counts: dict[str, int]
    seconds: float

    @property
    def rows(self) -> int:
        """Rows inserted in all."""
        return sum(self.counts.values())


def demo_settings(params: DemoParams) -> dict[str, Any]:
    """What a demo workspace records about how it was made (compared on restart)."""
    return {**params.as_dict(), "generator_version": GENERATOR_VERSION}


def demo_state(workspace: Workspace) -> dict[str, Any] | None:
    """The demo record of a workspace (None when it is not a demo workspace)."""
    state = (workspace.settings or {}).get("demo")
    return state if isinstance(state, dict) else None


def is_reusable(workspace: Workspace, params: DemoParams) -> bool:
    """Whether ``workspace`` is a completely loaded demo with exactly these parameters."""
    state = demo_state(workspace)
    return bool(state and state.get("complete") and state.get("params") == demo_settings(params))


def delete_workspace(engine: Engine, workspace_id: int) -> None:
    """Delete a workspace and every row of it (table by table, largest first, then the workspace)."""
    with engine.begin() as conn:
        for table in reversed(Base.metadata.sorted_tables):
            if "workspace_id" in table.c and table.name != "workspaces":
                conn.execute(delete(table).where(table.c.workspace_id == workspace_id))
        workspaces = table_of(Workspace)
        conn.execute(delete(workspaces).where(workspaces.c.id == workspace_id))


def _user(session: Session, email: str, name: str, password: str, hasher: PasswordHasher) -> User:
    existing = session.scalar(select(User).where(User.email == email))
    if existing is not None:
        existing.password_hash = hasher.hash(password)
        existing.name = name
        session.flush()
        return existing
    return workspaces_service.create_user(session, email=email, name=name, password_hash=hasher.hash(password))


# Pohjola Outdoor's wholesale ideal customer: an outdoor or sports shop (or hotel, gift buyer) in its home markets,
# big enough to order by the pallet, reached through its buyer or owner.
DEMO_ICP: dict[str, Any] = {
    "industries": {
        "values": ["Outdoor retail", "Sporting goods", "Hotels & hospitality", "Corporate gifts"],
        "weight": 30,
    },
    "employees": {"min": 5, "max": 250, "weight": 20},
    "location": {"regions": ["nordics", "baltics"], "weight": 20},
    "job_titles": {"keywords": ["purchasing", "buyer", "category"], "weight": 15},
    "seniority": {"keywords": ["owner", "ceo", "manager"], "weight": 15},
}


def setup_workspace(session: Session, params: DemoParams, slug: str) -> DemoSetup:
    """Create the demo workspace with users, memberships, keys, forms, products and property definitions."""
    ws = workspaces_service.create_workspace(
        session,
        WorkspaceCreate(
            slug=slug,
            name="Pohjola Outdoor",
            default_language="en",
            currency="EUR",
            timezone="Europe/Helsinki",
            country="FI",
            address_line1="Eteläranta 12",
            postal_code="00130",
            city="Helsinki",
            region="Uusimaa",
            address_country="FI",
            site_domains=[SITE_DOMAIN],
        ),
    )
    ws.settings = {"demo": {"params": demo_settings(params), "complete": False}}
    hasher = PasswordHasher()
    users: list[dict[str, str]] = []
    for role in ROLES:
        email = f"{role}@{SITE_DOMAIN}" if slug == "demo" else f"{role}+{slug}@{SITE_DOMAIN}"
        password = secrets.token_urlsafe(12)
        user = _user(session, email, USER_NAMES[role], password, hasher)
        workspaces_service.add_member(session, ws.id, user.id, role)
        users.append({"email": email, "password": password, "role": role, "id": str(user.id)})
    # The shop sells in several currencies at the catalogue's fixed rates; reports convert with them.
    since = (params.anchor - timedelta(days=800)).date()
    rates = [
        RateCreate(date=since, base=cur, quote="EUR", rate=Decimal(1) / Decimal(str(per_eur)))
        for cur, per_eur in catalog.FX_PER_EUR.items()
        if cur != "EUR"
    ]
    analytics_service.upsert_rates(session, ws.id, rates)
    _, admin_key = workspaces_service.create_api_key(session, ws.id, scopes=["admin"], name="demo admin")
    _, write_key = workspaces_service.create_api_key(session, ws.id, scopes=["track"], name="demo tracking snippet")
    now = utcnow()
    created = params.anchor.replace(year=params.anchor.year - 2)
    conn = session.connection()
    conn.execute(
        table_of(Product).insert(),
        [
            {
                "workspace_id": ws.id,
                "sku": p.sku,
                "name": p.name,
                "category": p.category,
                "price_minor": p.price_eur,
                "currency": "EUR",
                "url": f"{SITE_URL}/p/{p.slug}",
                "image_url": f"{SITE_URL}/img/{p.slug}.jpg",
                "properties": {
                    "prices": {cur: catalog.price_in(p, cur) for cur in catalog.CURRENCIES},
                    "category_label": catalog.CATEGORY_LABEL[p.category],
                    "wholesale": p.b2b,
                },
                "created_at": created,
                "updated_at": created,
            }
            for p in catalog.PRODUCTS
        ],
    )
    conn.execute(
        table_of(Form).insert(),
        [
            {
                "workspace_id": ws.id,
                "slug": f["slug"],
                "public_key": f"fk_{slug}_{f['slug']}_{secrets.token_hex(6)}",
                "name": f["name"],
                "fields": f["fields"],
                "consent_text": f["consent_text"],
                "consent_version": "2024-09",
                "consent_required": True,
                "consent_topic": f["consent_topic"],
                "success_message": "Thank you! Check your inbox.",
                "redirect_url": None,
                "tags": f["tags"],
                "language": None,
                "is_active": True,
                "created_at": created,
                "updated_at": created,
            }
            for f in FORMS
        ],
    )
    definitions = [
        ("interests", "Interests", "multi_enum", list(INTERESTS), "What the contact shops for."),
        ("newsletter_topics", "Newsletter topics", "multi_enum", list(NEWSLETTER_TOPICS), "Chosen at sign-up."),
        ("customer_type", "Customer type", "enum", ["B2C", "B2B"], "Consumer or wholesale account."),
    ]
    conn.execute(
        table_of(PropertyDefinition).insert(),
        [
            {
                "workspace_id": ws.id,
                "object_type": "contact",
                "name": name,
                "label": label,
                "type": kind,
                "options": options,
                "description": description,
                "created_at": now,
                "updated_at": now,
            }
            for name, label, kind, options, description in definitions
        ],
    )
    scoring_service.create_icp(
        session,
        ws.id,
        IcpCreate(
            name="Wholesale partner", description="Shops and hotels that buy by the pallet.", definition=DEMO_ICP
        ),
    )
    session.flush()
    return DemoSetup(ws.id, slug, admin_key, write_key, users)


def _max_id(conn: Any, table: Table) -> int:
    return int(conn.execute(select(func.coalesce(func.max(table.c.id), 0))).scalar_one())


def _bump_sequences(conn: Any) -> None:
    if conn.dialect.name != "postgresql":
        return
    for name in ASSIGNED_ID_TABLES:
        conn.execute(
            text(
                f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                f"(SELECT GREATEST(COALESCE(MAX(id), 0), 1) FROM {name}))"
            )
        )


def load_data(engine: Engine, workspace_id: int, params: DemoParams, *, progress: Progress | None = None) -> DemoResult:
    """Generate and insert the demo rows into ``workspace_id``: companies, then chunks of contacts.

    Memory stays constant (one chunk at a time); each chunk is committed on its own.
    """
    started = time.perf_counter()
    factory = make_session_factory(engine)
    with factory() as session:
        user_rows = session.execute(
            text("SELECT m.role, m.user_id FROM memberships m WHERE m.workspace_id = :ws"), {"ws": workspace_id}
        ).all()
        user_ids = {role: int(uid) for role, uid in user_rows}
        product_ids = dict(
            session.execute(select(Product.sku, Product.id).where(Product.workspace_id == workspace_id)).all()
        )
        form_ids = dict(session.execute(select(Form.slug, Form.id).where(Form.workspace_id == workspace_id)).all())
    counts: dict[str, int] = {name: 0 for name in ("companies", *TABLES)}
    companies_table = table_of(Company)
    with engine.begin() as conn:
        company_base = _max_id(conn, companies_table)
        owners = [user_ids.get("sales", user_ids["admin"]), user_ids["admin"]]
        companies = generate_companies(params, workspace_id=workspace_id, id_base=company_base, owners=owners)
        conn.execute(companies_table.insert(), companies)
        counts["companies"] = len(companies)
        contact_base = _max_id(conn, TABLES["contacts"])
        ids = IdCounter(_max_id(conn, TABLES["events"]) + 1, _max_id(conn, TABLES["orders"]) + 1)
        _bump_sequences(conn)
    ctx = Context(
        workspace_id=workspace_id,
        contact_id_base=contact_base,
        companies=[CompanyInfo(c["id"], c["country"], c["domain"], c["owner_id"]) for c in companies],
        product_ids=product_ids,
        form_ids=form_ids,
        user_ids=user_ids,
    )
    del companies
    for chunk in range(params.n_chunks):
        rows: Rows = generate_chunk(params, ctx, ids, chunk)
        with engine.begin() as conn:
            for name, table in TABLES.items():
                batch = getattr(rows, name)
                if batch:
                    conn.execute(table.insert(), batch)
                    counts[name] += len(batch)
            _bump_sequences(conn)
        if progress is not None:
            progress(min(params.contacts, (chunk + 1) * 1000), params.contacts)
    return DemoResult(workspace_id, counts, time.perf_counter() - started)


def mark_complete(session: Session, workspace_id: int, params: DemoParams, result: DemoResult) -> None:
    """Record on the workspace that the demo with these parameters is fully loaded."""
    ws = workspaces_service.get_workspace(session, workspace_id)
    ws.settings = {
        **(ws.settings or {}),
        "demo": {"params": demo_settings(params), "complete": True, "counts": result.counts},
    }
    load_demo_pipeline(session, workspace_id, params.anchor, params.seed)
    scoring_service.score_all_fit(session, workspace_id)
    session.flush()

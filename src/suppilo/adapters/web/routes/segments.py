"""Segments: the list with member counts; a visual filter builder (rows of field / operator / value in AND/OR groups,
plain form fields serialised here to the filter JSON of ``suppilo.engine.filters``) with a live count (htmx posts the
form to ``preview`` as the user edits; without scripts a button counts), a raw JSON editor as the alternative,
field-level errors that keep what was typed; the paged membership list and its history; adding and removing the
members of static lists.

Everyone may read segments; admins and marketers create and change them."""

from __future__ import annotations

import json
import re
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from typing import Any

from babel.numbers import get_currency_precision
from fastapi import APIRouter, Request
from fastapi.responses import RedirectResponse, Response
from sqlalchemy import or_, select
from starlette.datastructures import FormData

from suppilo.adapters.http.deps import DbSession, ReadSession
from suppilo.adapters.web import csrf
from suppilo.adapters.web.auth import Ctx, WebError, Workspace_
from suppilo.adapters.web.errors import error_text
from suppilo.adapters.web.templating import render
from suppilo.contacts.models import Contact, PropertyDefinition
from suppilo.engine import filters as F
from suppilo.errors import Conflict, DomainError, NotFound
from suppilo.segments import service as segments_service
from suppilo.segments.models import Segment
from suppilo.segments.schemas import SegmentCreate, SegmentUpdate

router = APIRouter()
MANAGERS = frozenset({"admin", "marketer"})
MEMBER_PAGE = 50
HISTORY_PAGE = 50
MAX_ROWS = 60
MAX_GROUPS = 12


def N_(text: str) -> str:
    """Marks a text for the catalogues; the template translates it."""
    return text


FIELD_LABELS = {
    "email": N_("Email"),
    "external_id": N_("External id"),
    "first_name": N_("First name"),
    "last_name": N_("Last name"),
    "phone": N_("Phone"),
    "language": N_("Language"),
    "country": N_("Country"),
    "region": N_("Region"),
    "city": N_("City"),
    "timezone": N_("Time zone"),
    "job_title": N_("Job title"),
    "lifecycle_stage": N_("Lifecycle stage"),
    "first_touch_channel": N_("First touch channel"),
    "first_touch_source": N_("First touch source"),
    "first_touch_campaign": N_("First touch campaign"),
    "latest_touch_channel": N_("Latest touch channel"),
    "latest_touch_source": N_("Latest touch source"),
    "latest_touch_campaign": N_("Latest touch campaign"),
    "is_anonymous": N_("Anonymous visitor"),
    "owner_id": N_("Owner id"),
    "company_id": N_("Company id"),
    "created_at": N_("Created"),
    "updated_at": N_("Updated"),
    "lifecycle_stage_at": N_("Stage reached"),
    "first_touch_at": N_("First touch"),
    "latest_touch_at": N_("Latest touch"),
    "first_seen_at": N_("First seen"),
    "last_seen_at": N_("Last seen"),
    "name": N_("Name"),
    "domain": N_("Domain"),
    "industry": N_("Industry"),
    "employees": N_("Employees"),
    "annual_revenue_minor": N_("Annual revenue (minor units)"),
}
# Condition kinds that are not a field: (value of "what", label, the name input's meaning or "").
OTHER_KINDS = (
    ("stage", N_("Lifecycle stage is"), ""),
    ("stage_history", N_("Lifecycle stage history"), ""),
    ("tag", N_("Tag"), ""),
    ("event", N_("Event"), N_("event name")),
    ("order_count", N_("Number of orders"), ""),
    ("order_total", N_("Order total"), N_("currency")),
    ("first_order", N_("First order"), ""),
    ("last_order", N_("Last order"), ""),
    ("bought_product", N_("Bought product (SKUs)"), ""),
    ("score.fit", N_("Fit score"), ""),
    ("score.engagement", N_("Engagement score"), ""),
    ("score.predictive", N_("Predictive score"), ""),
    ("consent", N_("Consent"), N_("topic")),
    ("segment", N_("In segment"), ""),
)
OP_LABELS = {
    "eq": N_("is"),
    "neq": N_("is not"),
    "contains": N_("contains"),
    "not_contains": N_("does not contain"),
    "starts_with": N_("starts with"),
    "ends_with": N_("ends with"),
    "in": N_("is one of"),
    "not_in": N_("is none of"),
    "is_set": N_("is known"),
    "is_not_set": N_("is unknown"),
    "gt": N_("is more than"),
    "gte": N_("is at least"),
    "lt": N_("is less than"),
    "lte": N_("is at most"),
    "between": N_("is between"),
    "is_true": N_("is true"),
    "is_false": N_("is false"),
    "before": N_("is before"),
    "after": N_("is after"),
    "on": N_("is on"),
    "within_last_days": N_("within the last days"),
    "more_than_days_ago": N_("more than days ago"),
    "within_next_days": N_("within the next days"),
    "contains_any": N_("contains any of"),
    "contains_all": N_("contains all of"),
    "contains_none": N_("contains none of"),
    "was_ever_in": N_("was ever in"),
    "entered": N_("entered"),
    "has_tag": N_("has tag"),
    "has_no_tag": N_("does not have tag"),
    "has_any_tags": N_("has any of the tags"),
    "has_all_tags": N_("has all of the tags"),
    "did": N_("did"),
    "did_not": N_("did not"),
    "at_least": N_("at least (times)"),
    "at_most": N_("at most (times)"),
    "exactly": N_("exactly (times)"),
    "grade_in": N_("grade is one of"),
    "granted": N_("granted"),
    "withdrawn": N_("withdrawn"),
    "no_record": N_("no record"),
    "objected": N_("objected"),
    "in_segment": N_("is a member of"),
    "not_in_segment": N_("is not a member of"),
}
NO_VALUE = frozenset(
    {"is_set", "is_not_set", "is_true", "is_false", "did", "did_not", "granted", "withdrawn", "no_record", "objected"}
)
LIST_OPS = frozenset(
    {"in", "not_in", "contains_any", "contains_all", "contains_none", "has_any_tags", "has_all_tags", "grade_in"}
)
WINDOWED = frozenset({"event", "order_count", "order_total", "first_order", "last_order", "bought_product"})
_ORDER = list(OP_LABELS)


def _sorted_ops(ops: AbstractSet[str]) -> list[str]:
    return sorted(ops, key=_ORDER.index)


# --- the builder ----------------------------------------------------------------------------------------------------


@dataclass
class Row:
    group: int
    what: str = "contact.email"
    name: str = ""
    op: str = ""
    value: str = ""
    days: str = ""
    error: str = ""
    error_at: str = ""  # what / name / op / value / days


@dataclass
class Builder:
    """The builder's state: how groups combine, each group's match, the rows (each names its group)."""

    match: str = "and"
    groups: list[str] = field(default_factory=lambda: ["and"])
    rows: list[Row] = field(default_factory=list)


@dataclass
class Fields:
    """What the builder can offer in a workspace: custom properties and segments."""

    contact_props: dict[str, str]
    company_props: dict[str, str]
    segments: list[tuple[int, str]]

    def field_type(self, what: str) -> str | None:
        kind, _, name = what.partition(".")
        if kind not in ("contact", "company"):
            return None
        builtins = F.CONTACT_FIELDS if kind == "contact" else F.COMPANY_FIELDS
        props = self.contact_props if kind == "contact" else self.company_props
        if name.startswith("properties."):
            return props.get(name.removeprefix("properties."))
        return builtins.get(name)

    def ops(self, what: str) -> list[str]:
        ftype = self.field_type(what)
        if ftype is not None:
            return _sorted_ops(F.OPS_BY_TYPE[ftype])
        if what.startswith("score."):
            graded = what != "score.engagement"
            return _sorted_ops(F.SCORE_RANGE_OPS | ({"grade_in", "is_set", "is_not_set"} if graded else set()))
        return _sorted_ops(
            {
                "stage": {"in", "not_in"},
                "stage_history": {"was_ever_in", "entered"},
                "tag": F.TAG_OPS,
                "event": F.EVENT_COUNT_OPS,
                "order_count": F.NUMBER_OPS,
                "order_total": F.NUMBER_OPS,
                "first_order": F.DATE_OPS | F.SET_OPS,
                "last_order": F.DATE_OPS | F.SET_OPS,
                "bought_product": set(),
                "consent": {"granted", "withdrawn", "no_record", "objected"},
                "segment": {"in_segment", "not_in_segment"},
            }.get(what, set())
        )

    def known(self, what: str) -> bool:
        return self.field_type(what) is not None or what in {k for k, _, _ in OTHER_KINDS}


def _fields(session: Any, workspace_id: int) -> Fields:
    contact_props: dict[str, str] = {}
    company_props: dict[str, str] = {}
    for object_type, name, type_ in session.execute(
        select(PropertyDefinition.object_type, PropertyDefinition.name, PropertyDefinition.type)
        .where(PropertyDefinition.workspace_id == workspace_id)
        .order_by(PropertyDefinition.name)
    ):
        (contact_props if object_type == "contact" else company_props)[name] = type_
    segs = [(s.id, s.name) for s in segments_service.list_segments(session, workspace_id)]
    return Fields(contact_props, company_props, segs)


def _number(text: str) -> Any:
    text = text.strip().replace(" ", "").replace("\u00a0", "")
    if re.fullmatch(r"-?\d+", text):
        return int(text)
    try:
        value = float(text.replace(",", "."))
    except ValueError:
        return text  # the validator names it
    return value


def _split(text: str) -> list[str]:
    return [p.strip() for p in re.split(r"[,;\n]", text) if p.strip()]


def _row_json(row: Row, fields: Fields) -> dict[str, Any]:
    """One builder row as a filter leaf (values typed after the field and operator)."""
    what, op, text = row.what, row.op, row.value.strip()
    ftype = fields.field_type(what)
    leaf: dict[str, Any]
    if ftype is not None:
        kind, _, name = what.partition(".")
        leaf = {"type": kind, "field": name, "op": op}
    elif what.startswith("score."):
        leaf = {"type": "score", "kind": what.removeprefix("score."), "op": op}
    elif what == "event":
        leaf = {"type": "event", "name": row.name.strip(), "op": op}
    elif what == "consent":
        return {"type": "consent", "op": op, "topic": row.name.strip() or "marketing"}
    elif what == "order_total":
        leaf = {"type": "order_total", "currency": row.name.strip().upper(), "op": op}
    elif what == "bought_product":
        leaf = {"type": "bought_product", "value": _split(text)}
    else:
        leaf = {"type": what, "op": op}
    if what in WINDOWED and row.days.strip():
        leaf["window"] = {"last_days": _number(row.days)}
    if what == "stage_history" and op == "entered" and row.days.strip():
        leaf["window"] = {"last_days": _number(row.days)}
    if what == "bought_product" or op in NO_VALUE:
        return leaf
    numeric = (
        ftype in ("number", "id")
        or what in ("order_count", "order_total", "event", "segment")
        or what.startswith("score.")
        or op in ("within_last_days", "more_than_days_ago", "within_next_days")
    )
    if what == "stage" or op in LIST_OPS:
        items: list[Any] = _split(text)
        if ftype == "id":
            items = [_number(i) for i in items]
        leaf["value"] = items
    elif op == "between":
        parts = _split(text)
        leaf["value"] = [_number(p) for p in parts] if numeric else parts
    elif numeric:
        leaf["value"] = _number(text) if text else None
    else:
        leaf["value"] = text
    if what == "order_total":
        leaf["value"] = _scale(leaf["value"], leaf["currency"], 1)
    return leaf


def _precision(currency: str) -> int:
    try:
        return int(get_currency_precision(currency))
    except Exception:  # an unknown code: the validator names the currency
        return 2


def _scale(value: Any, currency: str, direction: int) -> Any:
    """Order totals: the builder shows major units (12.50), the filter stores minor units (1250)."""
    factor = 10 ** _precision(currency)
    if isinstance(value, list):
        return [_scale(v, currency, direction) for v in value]
    if isinstance(value, int | float) and not isinstance(value, bool):
        scaled = value * factor if direction > 0 else value / factor
        return round(scaled) if direction > 0 else (int(scaled) if float(scaled).is_integer() else scaled)
    return value


def to_filter(builder: Builder, fields: Fields) -> dict[str, Any]:
    """The builder's filter JSON: ``{match: [{group match: [leaves]}, ...]}`` (paths map back to rows)."""
    groups: list[dict[str, Any]] = []
    for gi, gmatch in enumerate(builder.groups):
        leaves = [_row_json(r, fields) for r in builder.rows if r.group == gi]
        groups.append({gmatch: leaves})
    return {builder.match: groups}


def _text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, list | tuple):
        return ", ".join(_text(v) for v in value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value)


def _leaf_row(leaf: dict[str, Any], group: int) -> Row | None:
    """A stored leaf as a builder row, or None when the builder cannot show it (event where, date windows)."""
    kind = leaf.get("type")
    window = leaf.get("window")
    if leaf.get("where") or (window is not None and set(window) != {"last_days"}):
        return None
    days = _text(window.get("last_days")) if window else ""
    op = str(leaf.get("op", ""))
    value = leaf.get("value")
    if kind in ("contact", "company"):
        return Row(group, f"{kind}.{leaf['field']}", "", op, _text(value), days)
    if kind == "score":
        return Row(group, f"score.{leaf['kind']}", "", op, _text(value), days)
    if kind == "event":
        return Row(group, "event", str(leaf.get("name", "")), op, _text(value), days)
    if kind == "consent":
        return Row(group, "consent", str(leaf.get("topic", "marketing")), op, "", "")
    if kind == "order_total":
        currency = str(leaf.get("currency", ""))
        return Row(group, "order_total", currency, op, _text(_scale(value, currency, -1)), days)
    if kind == "bought_product":
        return Row(group, "bought_product", "", "", _text(value), days)
    if kind in {k for k, _, _ in OTHER_KINDS}:
        return Row(group, str(kind), "", op, _text(value), days)
    return None


def from_filter(flt: dict[str, Any] | None) -> Builder | None:
    """A stored filter in the builder, when its shape fits (groups of conditions); None otherwise."""
    if not flt:
        return Builder()
    top = "and" if "and" in flt else "or" if "or" in flt else None
    children = flt[top] if top else [flt]
    builder = Builder(match=top or "and", groups=[], rows=[])
    for child in children:
        gi = len(builder.groups)
        gkey = "and" if "and" in child else "or" if "or" in child else None
        leaves = child[gkey] if gkey else [child]
        builder.groups.append(gkey or "and")
        for leaf in leaves:
            if not isinstance(leaf, dict) or "and" in leaf or "or" in leaf or "not" in leaf:
                return None
            row = _leaf_row(leaf, gi)
            if row is None:
                return None
            builder.rows.append(row)
    if not builder.groups:
        builder.groups = ["and"]
    return builder


def read_builder(form: FormData) -> Builder:
    """The builder from the submitted form fields (repeated ``row_*`` fields, one ``group_match`` per group)."""
    groups = [g if g in ("and", "or") else "and" for g in form.getlist("group_match")][:MAX_GROUPS] or ["and"]
    match = form.get("match")
    columns = [form.getlist(f"row_{c}") for c in ("group", "what", "name", "op", "value", "days")]
    rows = []
    for group, what, name, op, value, days in list(zip(*columns, strict=False))[:MAX_ROWS]:
        gi = int(group) if isinstance(group, str) and group.isdigit() else 0
        rows.append(
            Row(
                min(gi, len(groups) - 1),
                str(what)[:100],
                str(name)[:200],
                str(op)[:32],
                str(value)[:2000],
                str(days)[:10],
            )
        )
    return Builder(match if match in ("and", "or") else "and", groups, rows)


def apply_action(builder: Builder, action: str, fields: Fields) -> None:
    """Add a row or a group, remove a row; an operator the row's field does not take becomes its first one."""
    kind, _, arg = action.partition(":")
    if kind == "add" and arg.isdigit() and len(builder.rows) < MAX_ROWS:
        gi = min(int(arg), len(builder.groups) - 1)
        last = max((i for i, r in enumerate(builder.rows) if r.group == gi), default=len(builder.rows) - 1)
        builder.rows.insert(last + 1, Row(gi))
    elif kind == "add_group" and len(builder.groups) < MAX_GROUPS and len(builder.rows) < MAX_ROWS:
        builder.groups.append("and")
        builder.rows.append(Row(len(builder.groups) - 1))
    elif kind == "remove" and arg.isdigit() and int(arg) < len(builder.rows):
        builder.rows.pop(int(arg))
        used = sorted({r.group for r in builder.rows})
        remap = {g: i for i, g in enumerate(used)}
        builder.groups = [builder.groups[g] for g in used] or ["and"]
        for r in builder.rows:
            r.group = remap[r.group]
    for row in builder.rows:
        if not fields.known(row.what):
            row.what = "contact.email"
        ops = fields.ops(row.what)
        if ops and row.op not in ops:
            row.op = ops[0]


_PATH = re.compile(r"^filter\.(and|or)\[(\d+)\]\.(and|or)\[(\d+)\](?:\.([a-z_]+))?")


def place_error(builder: Builder, exc: DomainError) -> bool:
    """Attach a validation error to its row and input; False when it names no row."""
    m = _PATH.match(exc.field)
    if not m:
        return False
    gi, li = int(m.group(2)), int(m.group(4))
    in_group = [r for r in builder.rows if r.group == gi]
    if li >= len(in_group):
        return False
    row = in_group[li]
    tail = m.group(5) or ""
    row.error = exc.message
    row.error_at = {
        "value": "value",
        "op": "op",
        "name": "name",
        "currency": "name",
        "topic": "name",
        "window": "days",
        "field": "what",
        "type": "what",
        "kind": "what",
    }.get(tail, "value")
    return True


# --- pages ----------------------------------------------------------------------------------------------------------


def _manage(ctx: Ctx) -> None:
    ctx.require("view")
    if ctx.role not in MANAGERS:
        raise WebError(403, "forbidden")


def _segment_or_404(session: Any, workspace_id: int, segment_id: int) -> Segment:
    try:
        return segments_service.get_segment(session, workspace_id, segment_id)
    except NotFound as exc:
        raise WebError(404, "not_found") from exc


def _page(request: Request, ctx: Ctx, template: str, status_code: int = 200, **context: Any) -> Response:
    return render(
        request,
        template,
        language=ctx.language,
        timezone=ctx.timezone,
        status_code=status_code,
        ctx=ctx,
        csrf=ctx.user.info.csrf_token,
        can_manage=ctx.role in MANAGERS,
        active="segments",
        **context,
    )


@router.get("/w/{slug}/segments")
def segments(request: Request, ctx: Workspace_, session: ReadSession, done: str = "") -> Response:
    ctx.require("view")
    items = segments_service.list_segments(session, ctx.workspace_id)
    return _page(request, ctx, "segments.html", items=items, done=done)


@dataclass
class EditState:
    """Everything the editor shows: the segment's fields, the builder or the JSON text, errors and the count."""

    name: str = ""
    description: str = ""
    kind: str = "dynamic"
    mode: str = "builder"
    builder: Builder = field(default_factory=Builder)
    json_text: str = ""
    errors: dict[str, str] = field(default_factory=dict)
    count: int | None = None
    count_error: str = ""
    notice: str = ""


def _editor(
    request: Request, ctx: Ctx, session: Any, state: EditState, segment: Segment | None, status_code: int = 200
) -> Response:
    fields = _fields(session, ctx.workspace_id)
    apply_action(state.builder, "", fields)
    return _page(
        request,
        ctx,
        "segments_edit.html",
        status_code=status_code,
        segment=segment,
        state=state,
        fields=fields,
        contact_fields=list(F.CONTACT_FIELDS),
        company_fields=list(F.COMPANY_FIELDS),
        other_kinds=OTHER_KINDS,
        field_labels=FIELD_LABELS,
        op_labels=OP_LABELS,
        no_value=NO_VALUE,
        windowed=WINDOWED | {"stage_history"},
        name_hint={k: hint for k, _, hint in OTHER_KINDS if hint},
    )


def _state_from_form(form: FormData, fields: Fields) -> tuple[EditState, str]:
    action = str(form.get("action") or "save")
    mode = "json" if form.get("mode") == "json" else "builder"
    state = EditState(
        name=str(form.get("name") or "")[:200],
        description=str(form.get("description") or "")[:2000],
        kind="static" if form.get("kind") == "static" else "dynamic",
        mode=mode,
        builder=read_builder(form),
        json_text=str(form.get("filter_json") or "")[:100_000],
    )
    apply_action(state.builder, action, fields)
    if action == "to_json" and mode == "builder":
        state.mode = "json"
        state.json_text = json.dumps(to_filter(state.builder, fields), indent=2, ensure_ascii=False)
    elif action == "to_builder" and mode == "json":
        try:
            raw = json.loads(state.json_text or "{}")
        except json.JSONDecodeError as exc:
            state.errors["filter"] = f"not valid JSON at line {exc.lineno}, column {exc.colno}"
        else:
            built = from_filter(raw) if isinstance(raw, dict) else None
            if built is None:
                state.errors["filter"] = N_(
                    "This filter does not fit the builder (nested groups, not, event property filters or date "
                    "windows); keep editing it as JSON."
                )
            else:
                state.mode, state.builder = "builder", built
                apply_action(state.builder, "", fields)
    return state, action


def _filter_of(state: EditState, fields: Fields) -> dict[str, Any] | None:
    """The filter the editor describes; a JSON syntax error goes to ``state.errors``."""
    if state.mode == "builder":
        return to_filter(state.builder, fields)
    try:
        raw = json.loads(state.json_text)
    except json.JSONDecodeError as exc:
        state.errors["filter"] = f"not valid JSON at line {exc.lineno}, column {exc.colno}"
        return None
    if not isinstance(raw, dict):
        state.errors["filter"] = N_("a filter is a JSON object")
        return None
    return raw


def _show_error(state: EditState, exc: DomainError) -> None:
    if state.mode == "builder" and place_error(state.builder, exc):
        state.errors.setdefault("rows", "")
        return
    key = exc.field.split(".")[0] if exc.field.split(".")[0] in ("name", "description") else "filter"
    state.errors[key] = f"{exc.field}: {exc.message}" if key == "filter" else exc.message


def _count(session: Any, workspace_id: int, state: EditState, fields: Fields) -> None:
    apply_action(state.builder, "", fields)
    if state.kind != "dynamic" or state.errors:
        return
    raw = _filter_of(state, fields)
    if raw is None:
        return
    try:
        state.count = segments_service.preview_count(session, workspace_id, raw)
    except DomainError as exc:
        _show_error(state, exc)
        state.count_error = exc.message


@router.post("/w/{slug}/segments/preview")
async def preview(request: Request, ctx: Workspace_, session: ReadSession) -> Response:
    """The editor re-rendered with the live count (htmx swaps in the builder or the count)."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    fields = _fields(session, ctx.workspace_id)
    state, _ = _state_from_form(await request.form(), fields)
    _count(session, ctx.workspace_id, state, fields)
    return _editor(request, ctx, session, state, None)


@router.get("/w/{slug}/segments/new")
def new_segment(request: Request, ctx: Workspace_, session: ReadSession, kind: str = "dynamic") -> Response:
    _manage(ctx)
    state = EditState(kind="static" if kind == "static" else "dynamic")
    fields = _fields(session, ctx.workspace_id)
    _count(session, ctx.workspace_id, state, fields)
    return _editor(request, ctx, session, state, None)


async def _save(request: Request, ctx: Ctx, session: Any, segment: Segment | None) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    fields = _fields(session, ctx.workspace_id)
    form = await request.form()
    state, action = _state_from_form(form, fields)
    if segment is not None:
        state.kind = segment.kind
    if action != "save":
        _count(session, ctx.workspace_id, state, fields)
        return _editor(request, ctx, session, state, segment)
    if not state.name.strip():
        state.errors["name"] = N_("a name is required")
    raw = _filter_of(state, fields) if state.kind == "dynamic" else None
    if not state.errors:
        try:
            if segment is None:
                saved = segments_service.create_segment(
                    session,
                    ctx.workspace_id,
                    SegmentCreate(name=state.name.strip(), description=state.description, kind=state.kind, filter=raw),
                )
            else:
                saved = segments_service.update_segment(
                    session,
                    ctx.workspace_id,
                    segment.id,
                    SegmentUpdate(name=state.name.strip(), description=state.description, filter=raw),
                )
        except DomainError as exc:
            session.rollback()
            _show_error(state, exc)
        else:
            return RedirectResponse(f"{ctx.base}/segments/{saved.id}?done=saved", status_code=303)
    if segment is not None:
        segment = _segment_or_404(session, ctx.workspace_id, segment.id)
    return _editor(request, ctx, session, state, segment, status_code=422)


@router.post("/w/{slug}/segments/new")
async def create_segment(request: Request, ctx: Workspace_, session: DbSession) -> Response:
    return await _save(request, ctx, session, None)


@router.get("/w/{slug}/segments/{segment_id}/edit")
def edit_segment(request: Request, ctx: Workspace_, session: ReadSession, segment_id: int) -> Response:
    _manage(ctx)
    seg = _segment_or_404(session, ctx.workspace_id, segment_id)
    built = from_filter(seg.filter) if seg.kind == "dynamic" else Builder()
    state = EditState(name=seg.name, description=seg.description, kind=seg.kind)
    if built is None:
        state.mode = "json"
        state.json_text = json.dumps(seg.filter, indent=2, ensure_ascii=False)
        state.notice = "json_only"
    else:
        state.builder = built
    fields = _fields(session, ctx.workspace_id)
    _count(session, ctx.workspace_id, state, fields)
    return _editor(request, ctx, session, state, seg)


@router.post("/w/{slug}/segments/{segment_id}/edit")
async def save_segment(request: Request, ctx: Workspace_, session: DbSession, segment_id: int) -> Response:
    seg = _segment_or_404(session, ctx.workspace_id, segment_id)
    return await _save(request, ctx, session, seg)


def _names(session: Any, workspace_id: int, contact_ids: list[int]) -> dict[int, str]:
    if not contact_ids:
        return {}
    rows = session.execute(
        select(Contact.id, Contact.first_name, Contact.last_name, Contact.email).where(
            Contact.workspace_id == workspace_id, Contact.id.in_(sorted(set(contact_ids)))
        )
    )
    return {cid: " ".join(p for p in (first, last) if p) or email or f"#{cid}" for cid, first, last, email in rows}


@router.get("/w/{slug}/segments/{segment_id}")
def segment_page(
    request: Request,
    ctx: Workspace_,
    session: ReadSession,
    segment_id: int,
    cursor: str | None = None,
    history_cursor: str | None = None,
    done: str = "",
    changed: int | None = None,
) -> Response:
    ctx.require("view")
    seg = _segment_or_404(session, ctx.workspace_id, segment_id)
    try:
        members, next_cursor = segments_service.list_members(
            session, ctx.workspace_id, seg.id, cursor=cursor, limit=MEMBER_PAGE
        )
        changes, next_history = segments_service.history(
            session, ctx.workspace_id, seg.id, cursor=history_cursor, limit=HISTORY_PAGE
        )
    except DomainError as exc:
        raise WebError(422, error_text(exc, ctx.language)) from exc
    names = _names(session, ctx.workspace_id, [m.contact_id for m in members] + [c.contact_id for c in changes])
    base = f"{ctx.base}/segments/{seg.id}"
    return _page(
        request,
        ctx,
        "segments_detail.html",
        segment=seg,
        filter_text=json.dumps(seg.filter, indent=2, ensure_ascii=False) if seg.filter else "",
        members=members,
        changes=changes,
        names=names,
        next_url=f"{base}?cursor={next_cursor}#members" if next_cursor else None,
        first_url=f"{base}#members" if cursor else None,
        older_url=f"{base}?history_cursor={next_history}#history" if next_history else None,
        newest_url=f"{base}#history" if history_cursor else None,
        done=done,
        changed=changed,
        member_errors={},
        typed="",
    )


def _contact_ids(session: Any, workspace_id: int, text: str) -> tuple[list[int], list[str]]:
    """Contact ids for the ids and emails typed (one per line or comma-separated), and what matched nothing."""
    tokens = _split(text)[:10_000]
    ids = {int(t) for t in tokens if t.isdigit()}
    emails = {t.lower() for t in tokens if not t.isdigit()}
    found: dict[str, int] = {}
    if ids or emails:
        conds = []
        if ids:
            conds.append(Contact.id.in_(sorted(ids)))
        if emails:
            conds.append(Contact.email.in_(sorted(emails)))
        for cid, email in session.execute(
            select(Contact.id, Contact.email).where(Contact.workspace_id == workspace_id, or_(*conds))
        ):
            found[str(cid)] = cid
            if email:
                found[email.lower()] = cid
    missing = [t for t in tokens if (t if t.isdigit() else t.lower()) not in found]
    return sorted({found[t if t.isdigit() else t.lower()] for t in tokens if t not in missing}), missing


async def _members(request: Request, ctx: Ctx, session: Any, segment_id: int, remove: bool) -> Response:
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    seg = _segment_or_404(session, ctx.workspace_id, segment_id)
    if seg.kind != "static":
        raise WebError(422, "members of a dynamic segment follow its filter; use a static list")
    form = await request.form()
    typed = str(form.get("contacts") or "")[:200_000]
    ids, missing = _contact_ids(session, ctx.workspace_id, typed)
    error = ""
    if missing:
        error = "not found: " + ", ".join(missing[:10]) + (" …" if len(missing) > 10 else "")
    elif not ids:
        error = N_("give contact ids or emails")
    if error:
        members, next_cursor = segments_service.list_members(session, ctx.workspace_id, seg.id, limit=MEMBER_PAGE)
        changes, next_history = segments_service.history(session, ctx.workspace_id, seg.id, limit=HISTORY_PAGE)
        return _page(
            request,
            ctx,
            "segments_detail.html",
            status_code=422,
            segment=seg,
            filter_text="",
            members=members,
            changes=changes,
            names=_names(session, ctx.workspace_id, [m.contact_id for m in members] + [c.contact_id for c in changes]),
            next_url=f"{ctx.base}/segments/{seg.id}?cursor={next_cursor}#members" if next_cursor else None,
            first_url=None,
            older_url=f"{ctx.base}/segments/{seg.id}?history_cursor={next_history}#history" if next_history else None,
            newest_url=None,
            done="",
            changed=None,
            member_errors={"remove" if remove else "add": error},
            typed=typed,
        )
    if remove:
        n = segments_service.remove_members(session, ctx.workspace_id, seg.id, ids)
    else:
        n = segments_service.add_members(session, ctx.workspace_id, seg.id, ids)
    done = "removed" if remove else "added"
    return RedirectResponse(f"{ctx.base}/segments/{seg.id}?done={done}&changed={n}", status_code=303)


@router.post("/w/{slug}/segments/{segment_id}/members")
async def add_members(request: Request, ctx: Workspace_, session: DbSession, segment_id: int) -> Response:
    return await _members(request, ctx, session, segment_id, remove=False)


@router.post("/w/{slug}/segments/{segment_id}/members/remove")
async def remove_members(request: Request, ctx: Workspace_, session: DbSession, segment_id: int) -> Response:
    return await _members(request, ctx, session, segment_id, remove=True)


@router.post("/w/{slug}/segments/{segment_id}/delete")
async def delete_segment(request: Request, ctx: Workspace_, session: DbSession, segment_id: int) -> Response:
    """Delete a segment with its membership and history; refused (409) while another segment uses it."""
    await csrf.check(request, ctx.user.info.csrf_token)
    _manage(ctx)
    seg = _segment_or_404(session, ctx.workspace_id, segment_id)
    try:
        segments_service.delete_segment(session, ctx.workspace_id, seg.id)
    except Conflict as exc:
        raise WebError(409, error_text(exc, ctx.language)) from exc
    return RedirectResponse(f"{ctx.base}/segments?done=deleted", status_code=303)

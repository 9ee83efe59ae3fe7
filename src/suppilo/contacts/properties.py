"""Custom properties of contacts and companies: typed definitions and validation of values against them."""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import Boolean, ColumnElement, func, select
from sqlalchemy.orm import Session
from sqlalchemy.sql.elements import SQLCoreOperations

from suppilo.contacts.models import Contact, PropertyDefinition
from suppilo.contacts.schemas import PropertyDefinitionCreate, PropertyDefinitionUpdate
from suppilo.errors import Conflict, DomainError, NotFound

ENUM_TYPES = ("enum", "multi_enum")


class PropertyError(DomainError):
    """A refused property value or definition."""


def definitions(session: Session, workspace_id: int, object_type: str) -> dict[str, PropertyDefinition]:
    """The workspace's property definitions of ``object_type`` by name."""
    rows = session.scalars(
        select(PropertyDefinition).where(
            PropertyDefinition.workspace_id == workspace_id, PropertyDefinition.object_type == object_type
        )
    )
    return {r.name: r for r in rows}


def coerce_value(definition: PropertyDefinition, value: Any, path: str) -> Any:
    """``value`` checked against ``definition`` (dates come back as ISO strings); raises PropertyError."""
    kind = definition.type
    if kind == "string":
        if not isinstance(value, str):
            raise PropertyError(path, f"{definition.name} must be a string", code="invalid_type")
        if len(value) > 10_000:
            raise PropertyError(path, f"{definition.name} is longer than 10000 characters", code="too_long")
        return value
    if kind == "number":
        if isinstance(value, bool) or not isinstance(value, int | float):
            raise PropertyError(path, f"{definition.name} must be a number", code="invalid_type")
        if isinstance(value, float) and value != value:
            raise PropertyError(path, f"{definition.name} must be a number", code="invalid_type")
        return value
    if kind == "boolean":
        if not isinstance(value, bool):
            raise PropertyError(path, f"{definition.name} must be true or false", code="invalid_type")
        return value
    if kind == "date":
        if not isinstance(value, str):
            raise PropertyError(path, f"{definition.name} must be an ISO date (YYYY-MM-DD)", code="invalid_type")
        try:
            return date.fromisoformat(value).isoformat()
        except ValueError as exc:
            raise PropertyError(
                path, f"{definition.name} must be an ISO date (YYYY-MM-DD); got {value!r}", code="invalid_type"
            ) from exc
    if kind == "enum":
        if not isinstance(value, str) or value not in definition.options:
            raise PropertyError(
                path,
                f"{definition.name} must be one of {', '.join(definition.options)}; got {value!r}",
                "invalid_option",
            )
        return value
    if kind == "multi_enum":
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise PropertyError(path, f"{definition.name} must be a list of options", code="invalid_type")
        unknown = [v for v in value if v not in definition.options]
        if unknown:
            raise PropertyError(
                path,
                f"{definition.name} accepts only {', '.join(definition.options)}; got {', '.join(unknown)}",
                code="invalid_option",
            )
        return [o for o in definition.options if o in value]
    raise PropertyError(path, f"{definition.name} has an unknown type {kind!r}")


def validate_properties(
    session: Session,
    workspace_id: int,
    object_type: str,
    values: dict[str, Any],
    *,
    current: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """``current`` with ``values`` merged in after validation (a value of None removes the property).

    An unknown property or a wrong type raises PropertyError with the path ``properties.<name>``.
    """
    merged = dict(current or {})
    if not values:
        return merged
    defs = definitions(session, workspace_id, object_type)
    for name, value in values.items():
        path = f"properties.{name}"
        definition = defs.get(name)
        if definition is None:
            raise PropertyError(path, f"there is no {object_type} property {name!r}", code="unknown_property")
        if value is None:
            merged.pop(name, None)
        else:
            merged[name] = coerce_value(definition, value, path)
    return merged


def _uses_key(properties: SQLCoreOperations[dict[str, Any]], name: str, dialect: str) -> ColumnElement[bool]:
    if dialect == "postgresql":
        return properties.op("?", return_type=Boolean)(name)
    return func.json_type(properties, f'$."{name}"').is_not(None)


def usage_count(session: Session, workspace_id: int, object_type: str, name: str) -> int:
    """How many contacts or companies have a value for property ``name``."""
    from suppilo.companies.models import Company

    model: type[Contact] | type[Company] = Contact if object_type == "contact" else Company
    dialect = session.get_bind().dialect.name
    stmt = (
        select(func.count())
        .select_from(model)
        .where(model.workspace_id == workspace_id, _uses_key(model.properties, name, dialect))
    )
    return int(session.scalar(stmt) or 0)


def _check_options(kind: str, options: list[str]) -> list[str]:
    cleaned = [o.strip() for o in options]
    if kind in ENUM_TYPES:
        if not cleaned or any(not o for o in cleaned):
            raise PropertyError(
                "options", "an enum property needs a list of non-empty options", code="options_required"
            )
        if len(set(cleaned)) != len(cleaned):
            raise PropertyError("options", "options must be unique", code="duplicate_option")
        return cleaned
    if cleaned:
        raise PropertyError("options", f"a {kind} property has no options", code="options_not_allowed")
    return []


def list_definitions(session: Session, workspace_id: int, object_type: str | None = None) -> list[PropertyDefinition]:
    """Property definitions of the workspace, by object type and name."""
    stmt = select(PropertyDefinition).where(PropertyDefinition.workspace_id == workspace_id)
    if object_type:
        stmt = stmt.where(PropertyDefinition.object_type == object_type)
    return list(session.scalars(stmt.order_by(PropertyDefinition.object_type, PropertyDefinition.name)))


def get_definition(session: Session, workspace_id: int, definition_id: int) -> PropertyDefinition:
    """One property definition of this workspace; NotFound otherwise."""
    row = session.scalar(
        select(PropertyDefinition).where(
            PropertyDefinition.workspace_id == workspace_id, PropertyDefinition.id == definition_id
        )
    )
    if row is None:
        raise NotFound("property_id", f"property {definition_id} not found")
    return row


def create_definition(session: Session, workspace_id: int, data: PropertyDefinitionCreate) -> PropertyDefinition:
    """Define a custom property; its name is unique per object type (409 otherwise)."""
    options = _check_options(data.type, data.options)
    if data.name in definitions(session, workspace_id, data.object_type):
        raise Conflict("name", f"a {data.object_type} property named {data.name!r} already exists")
    row = PropertyDefinition(
        workspace_id=workspace_id,
        object_type=data.object_type,
        name=data.name,
        label=data.label or data.name.replace("_", " ").capitalize(),
        type=data.type,
        options=options,
        description=data.description,
    )
    session.add(row)
    session.flush()
    return row


def ensure_definition(
    session: Session,
    workspace_id: int,
    *,
    name: str,
    type: str,
    label: str,
    description: str,
    options: list[str] | None = None,
    object_type: str = "contact",
) -> None:
    """Declare a property suppilo itself writes (``lapse_at``, ``rfm_group`` ...) unless the workspace has it."""
    if name not in definitions(session, workspace_id, object_type):
        session.add(
            PropertyDefinition(
                workspace_id=workspace_id,
                object_type=object_type,
                name=name,
                label=label,
                type=type,
                options=list(options or []),
                description=description,
            )
        )
        session.flush()


def update_definition(
    session: Session, workspace_id: int, definition_id: int, data: PropertyDefinitionUpdate
) -> PropertyDefinition:
    """Change a definition; changing the type of a property that records use is refused (409)."""
    row = get_definition(session, workspace_id, definition_id)
    changes = data.model_dump(exclude_unset=True)
    new_type = changes.get("type") or row.type
    if new_type != row.type:
        used = usage_count(session, workspace_id, row.object_type, row.name)
        if used:
            raise Conflict(
                "type",
                f"{used} {row.object_type} record(s) have a value for {row.name!r}; its type cannot change",
                code="property_in_use",
            )
    options = changes["options"] if changes.get("options") is not None else row.options
    if new_type not in ENUM_TYPES and "options" not in changes:
        options = []
    options = _check_options(new_type, options)
    row.type = new_type
    row.options = options
    if changes.get("label") is not None:
        row.label = changes["label"]
    if changes.get("description") is not None:
        row.description = changes["description"]
    session.flush()
    return row


def delete_definition(session: Session, workspace_id: int, definition_id: int) -> None:
    """Remove a definition that no record uses (409 when some do)."""
    row = get_definition(session, workspace_id, definition_id)
    used = usage_count(session, workspace_id, row.object_type, row.name)
    if used:
        raise Conflict(
            "property_id",
            f"{used} {row.object_type} record(s) have a value for {row.name!r}; clear them first",
            code="property_in_use",
        )
    session.delete(row)
    session.flush()

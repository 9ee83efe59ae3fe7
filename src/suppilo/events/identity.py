"""Identity resolution of a batch in memory: anonymous ids, user ids and emails onto contacts.

The resolver is loaded with the contacts the batch's identifiers already point to (a few bulk SELECTs),
then walks the messages in order. New contacts are placeholders until the batch inserts them in bulk;
contacts found to be the same person are joined (union-find), so every event of the batch lands on the
surviving contact, and stored contacts that were joined are merged afterwards with ``merge_contacts``.
"""

from __future__ import annotations

import contextlib
from datetime import date, datetime
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from suppilo.contacts.normalize import (
    InvalidValue,
    normalize_country,
    normalize_language,
    normalize_phone,
)


class Person:
    """A contact during one batch: a stored row (``id`` set) or a placeholder to insert."""

    __slots__ = (
        "changes",
        "country",
        "email",
        "external_id",
        "first_seen_at",
        "first_touch_at",
        "id",
        "is_anonymous",
        "last_seen_at",
        "latest_touch_at",
        "parent",
        "properties",
        "props_changed",
        "stage",
    )

    def __init__(
        self,
        *,
        id: int | None = None,
        is_anonymous: bool = True,
        email: str | None = None,
        external_id: str | None = None,
        stage: str = "awareness",
        country: str | None = None,
        properties: dict[str, Any] | None = None,
        first_touch_at: datetime | None = None,
        latest_touch_at: datetime | None = None,
        first_seen_at: datetime | None = None,
        last_seen_at: datetime | None = None,
    ) -> None:
        self.id = id
        self.is_anonymous = is_anonymous
        self.email = email
        self.external_id = external_id
        self.stage = stage
        self.country = country
        self.properties: dict[str, Any] = dict(properties or {})
        self.props_changed = False
        self.first_touch_at = first_touch_at
        self.latest_touch_at = latest_touch_at
        self.first_seen_at = first_seen_at
        self.last_seen_at = last_seen_at
        self.changes: dict[str, Any] = {}
        self.parent: Person | None = None

    def find(self) -> Person:
        """The surviving contact this one was joined into (itself when none)."""
        node = self
        while node.parent is not None:
            node = node.parent
        return node


def _zone(value: str) -> str | None:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        return None
    return value


def _text(value: Any, limit: int = 200) -> str | None:
    if value is None or isinstance(value, dict | list | bool):
        return None
    out = str(value).strip()[:limit]
    return out or None


def contact_fields_from_traits(traits: dict[str, Any], country_hint: str | None) -> dict[str, Any]:
    """Contact columns set by Segment traits; values that do not normalise are left out (they stay in the event).

    ``email`` is not handled here: an invalid email refuses the whole call, so it is checked at validation.
    """
    out: dict[str, Any] = {}
    first = _text(traits.get("firstName") or traits.get("first_name"))
    last = _text(traits.get("lastName") or traits.get("last_name"))
    name = _text(traits.get("name"))
    if name and not (first or last):
        parts = name.split(None, 1)
        first = parts[0]
        last = parts[1] if len(parts) > 1 else None
    if first:
        out["first_name"] = first
        out["first_name_lower"] = first.lower()
    if last:
        out["last_name"] = last
        out["last_name_lower"] = last.lower()
    title = _text(traits.get("title") or traits.get("job_title") or traits.get("jobTitle"))
    if title:
        out["job_title"] = title
    raw_address = traits.get("address")
    address: dict[str, Any] = raw_address if isinstance(raw_address, dict) else {}
    raw_country = _text(traits.get("country") or address.get("country"))
    if raw_country:
        with contextlib.suppress(InvalidValue):
            out["country"] = normalize_country(raw_country)
    city = _text(traits.get("city") or address.get("city"), 100)
    if city:
        out["city"] = city
    region = _text(traits.get("region") or traits.get("state") or address.get("state"), 100)
    if region:
        out["region"] = region
    raw_phone = _text(traits.get("phone"), 64)
    if raw_phone:
        with contextlib.suppress(InvalidValue):
            out["phone"] = normalize_phone(raw_phone, out.get("country") or country_hint)
    raw_language = _text(traits.get("language") or traits.get("locale"), 32)
    if raw_language:
        with contextlib.suppress(InvalidValue):
            out["language"] = normalize_language(raw_language)
    raw_zone = _text(traits.get("timezone"), 64)
    if raw_zone and _zone(raw_zone):
        out["timezone"] = raw_zone
    return out


def coerce_property(kind: str, options: list[str], value: Any) -> tuple[bool, Any]:
    """Whether ``value`` fits a custom property of type ``kind``, and its stored form."""
    if value is None:
        return True, None
    if kind == "string":
        if isinstance(value, str | int | float) and not isinstance(value, bool):
            return True, str(value)[:1000]
    elif kind == "number":
        if isinstance(value, int | float) and not isinstance(value, bool):
            return True, value
        if isinstance(value, str):
            try:
                number = float(value)
            except ValueError:
                return False, None
            return True, int(number) if number.is_integer() else number
    elif kind == "boolean":
        if isinstance(value, bool):
            return True, value
        if isinstance(value, str) and value.lower() in ("true", "false"):
            return True, value.lower() == "true"
    elif kind == "date":
        if isinstance(value, str):
            try:
                return True, date.fromisoformat(value[:10]).isoformat()
            except ValueError:
                return False, None
    elif kind == "enum":
        if isinstance(value, str) and value in options:
            return True, value
    elif kind == "multi_enum" and isinstance(value, list) and all(isinstance(v, str) and v in options for v in value):
        return True, list(value)
    return False, None


class Resolver:
    """Maps identifiers to Persons for one batch and records what has to be written."""

    def __init__(
        self,
        anon_map: dict[str, int],
        user_map: dict[str, int],
        email_map: dict[str, int],
        states: dict[int, Any],
    ) -> None:
        self.persons: dict[int, Person] = {}
        for cid, row in states.items():
            self.persons[cid] = Person(
                id=cid,
                is_anonymous=row.is_anonymous,
                email=row.email,
                external_id=row.external_id,
                stage=row.lifecycle_stage,
                country=row.country,
                properties=row.properties,
                first_touch_at=row.first_touch_at,
                latest_touch_at=row.latest_touch_at,
                first_seen_at=row.first_seen_at,
                last_seen_at=row.last_seen_at,
            )
        self.anon: dict[str, Person] = {k: self.persons[v] for k, v in anon_map.items() if v in self.persons}
        self.users: dict[str, Person] = {k: self.persons[v] for k, v in user_map.items() if v in self.persons}
        self.emails: dict[str, Person] = {k: self.persons[v] for k, v in email_map.items() if v in self.persons}
        self.new: list[Person] = []
        self.identities: list[tuple[str, str, Person]] = []
        self.merges: list[Person] = []  # stored persons joined into another
        self.identified: list[Person] = []  # persons an identify gave an email
        # (person, email): an identify gave a stored contact the address of a contact merged into it
        self.after_merge_email: list[tuple[Person, str]] = []

    def _new(self, *, anonymous: bool) -> Person:
        person = Person(is_anonymous=anonymous)
        self.new.append(person)
        return person

    def _join(self, src: Person, dst: Person) -> None:
        src, dst = src.find(), dst.find()
        if src is dst:
            return
        src.parent = dst
        if src.id is None:
            for key, value in src.changes.items():
                dst.changes.setdefault(key, value)
            if src.external_id and dst.external_id is None:
                dst.external_id = src.external_id
            if src.email and not dst.email and "email" not in dst.changes:
                dst.changes["email"] = src.email
                dst.email = src.email
            for key, value in src.properties.items():
                dst.properties.setdefault(key, value)
                dst.props_changed = dst.props_changed or src.props_changed
        else:
            self.merges.append(src)
        if src.email:
            self.emails[src.email] = dst
        dst.is_anonymous = dst.is_anonymous and src.is_anonymous

    def _add_user(self, person: Person, user_id: str) -> None:
        self.users[user_id] = person
        self.identities.append(("user_id", user_id, person))
        if person.external_id is None:
            person.external_id = user_id
            person.changes["external_id"] = user_id
        if person.is_anonymous:
            person.is_anonymous = False
            person.changes["is_anonymous"] = False

    def _add_anon(self, person: Person, anonymous_id: str) -> None:
        self.anon[anonymous_id] = person
        self.identities.append(("anonymous_id", anonymous_id, person))

    def _set_email(self, person: Person, email: str) -> None:
        owner = self.emails.get(email)
        if owner is not None and owner.find() is not person:
            return  # another contact has this address; the identify does not take it away
        if person.email != email:
            if person.email and self.emails.get(person.email) is person:
                del self.emails[person.email]
            person.email = email
            person.changes["email"] = email
            self.emails[email] = person
        if person.is_anonymous:
            person.is_anonymous = False
            person.changes["is_anonymous"] = False

    def _lookup(self, table: dict[str, Person], key: str | None) -> Person | None:
        if not key:
            return None
        person = table.get(key)
        return person.find() if person is not None else None

    def resolve(self, anonymous_id: str | None, user_id: str | None, email: str | None) -> Person:
        """The contact of a call with these identifiers, creating, upgrading or joining contacts as needed."""
        by_anon = self._lookup(self.anon, anonymous_id)
        by_user = self._lookup(self.users, user_id)
        by_email = self._lookup(self.emails, email)
        if (
            email
            and by_user is not None
            and by_email is not None
            and by_user is not by_email
            and by_email.external_id is None
        ):
            # The user's email belongs to a contact known only by that address (a form lead, an import): they are
            # one person. (An address held by another user id stays there: two accounts are not one person because
            # of one identify.)
            if by_email.id is None:
                self._join(by_email, by_user)  # the address's contact is new in this batch: it simply joins
                by_email = by_user
            elif by_user.id is None:
                self._join(by_user, by_email)  # the user is new in this batch: it joins the stored contact
                by_user = by_email
            else:
                # Two stored contacts: the address's is merged into the user's, its history moving along. The
                # address moves only once the merged row has let go of it (``merge_contacts`` fills an empty one,
                # ``after_merge_email`` replaces an older one), so it is not written as a change here: that would
                # collide with the merged row's address.
                self._join(by_email, by_user)
                if by_user.email is not None and by_user.email != email:
                    if self.emails.get(by_user.email) is by_user:
                        del self.emails[by_user.email]
                    self.after_merge_email.append((by_user, email))
                by_user.email = email
                by_user.changes.pop("email", None)
                self.emails[email] = by_user
                by_email = by_user
        known = by_user or by_email
        if known is None and (user_id or email):
            if by_anon is not None and (by_anon.external_id is None or by_anon.external_id == user_id):
                known = by_anon  # the anonymous visitor identifies: upgraded in place
            else:
                known = self._new(anonymous=False)
        if known is None:
            if by_anon is not None:
                return by_anon
            person = self._new(anonymous=True)
            if anonymous_id:
                self._add_anon(person, anonymous_id)
            return person
        if user_id and by_user is None:
            self._add_user(known, user_id)
        if email:
            self._set_email(known, email)
            self.identified.append(known)
        if anonymous_id:
            if by_anon is None:
                self._add_anon(known, anonymous_id)
            elif by_anon is not known and by_anon.is_anonymous:
                self._join(by_anon, known)
        return known.find()

    def alias(self, previous_id: str, user_id: str) -> Person:
        """``previous_id`` (an anonymous or older user id) and ``user_id`` are one person."""
        prev = self._lookup(self.anon, previous_id) or self._lookup(self.users, previous_id)
        current = self._lookup(self.users, user_id)
        if prev is not None and current is not None:
            self._join(prev, current)
            return current.find()
        if prev is not None:
            self._add_user(prev, user_id)
            return prev
        if current is not None:
            self._add_anon(current, previous_id)
            return current
        person = self._new(anonymous=False)
        self._add_user(person, user_id)
        self._add_anon(person, previous_id)
        return person

    def apply_traits(self, person: Person, fields: dict[str, Any], props: dict[str, Any] | None = None) -> None:
        """Record trait-driven column and custom property changes of ``person``."""
        person = person.find()
        for key, value in fields.items():
            person.changes[key] = value
            if key == "country":
                person.country = value
        if props:
            for key, value in props.items():
                if person.properties.get(key) != value:
                    person.properties[key] = value
                    person.props_changed = True

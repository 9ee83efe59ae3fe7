"""Pydantic shapes of the Segment-spec tracking calls and of the channel rule table."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

_ID = Field(default=None, max_length=200)


class _Message(BaseModel):
    """Fields every Segment call shares; unknown fields (``integrations``, ``version`` ...) are ignored."""

    model_config = ConfigDict(extra="ignore", coerce_numbers_to_str=True)

    messageId: str | None = _ID
    anonymousId: str | None = _ID
    userId: str | None = _ID
    timestamp: datetime | None = None
    originalTimestamp: datetime | None = None
    sentAt: datetime | None = None
    context: dict[str, Any] | None = None


class TrackIn(_Message):
    """``track``: something a person did."""

    event: str = Field(min_length=1, max_length=200)
    properties: dict[str, Any] | None = None


class PageIn(_Message):
    """``page`` (and ``screen``): a page or app screen was viewed."""

    name: str | None = Field(default=None, max_length=200)
    category: str | None = Field(default=None, max_length=200)
    properties: dict[str, Any] | None = None


class IdentifyIn(_Message):
    """``identify``: who the person is, with traits."""

    traits: dict[str, Any] | None = None


class GroupIn(_Message):
    """``group``: the person belongs to a company."""

    groupId: str = Field(min_length=1, max_length=200)
    traits: dict[str, Any] | None = None


class AliasIn(_Message):
    """``alias``: ``previousId`` and ``userId`` are the same person."""

    previousId: str = Field(min_length=1, max_length=200)
    userId: str = Field(min_length=1, max_length=200)


MESSAGE_MODELS: dict[str, type[_Message]] = {
    "track": TrackIn,
    "page": PageIn,
    "screen": PageIn,
    "identify": IdentifyIn,
    "group": GroupIn,
    "alias": AliasIn,
}


class ChannelRuleIn(BaseModel):
    """One row of the channel table as edited by an admin."""

    channel: str = Field(max_length=32)
    conditions: dict[str, Any]
    description: str = Field(default="", max_length=300)


class ChannelRuleRead(ChannelRuleIn):
    """A stored rule with its id and position."""

    id: int
    position: int


class ChannelRulesUpdate(BaseModel):
    """The whole table, in the order rules are tried (first match wins)."""

    rules: list[ChannelRuleIn] = Field(max_length=500)


class ChannelRulesRead(BaseModel):
    """The workspace's table."""

    rules: list[ChannelRuleRead]


class ChannelTestIn(BaseModel):
    """A landing URL and referrer to classify with the current table."""

    url: str | None = Field(default=None, max_length=4000)
    referrer: str | None = Field(default=None, max_length=4000)
    campaign: dict[str, Any] | None = None


class ChannelTestOut(BaseModel):
    """How the visit is classified and which rule decided it (None: nothing matched, so direct/referral)."""

    channel: str
    source: str | None
    medium: str | None
    campaign: str | None
    term: str | None
    content: str | None
    referrer_host: str | None
    rule: ChannelRuleRead | None

"""HTTP routes: sources — the channel rule table a marketer edits and tests."""

from __future__ import annotations

from fastapi import APIRouter

from suppilo.adapters.http.deps import Admin, DbSession, Reader, ReadSession
from suppilo.adapters.http.errors import ApiError
from suppilo.events import service
from suppilo.events.schemas import ChannelRuleRead, ChannelRulesRead, ChannelRulesUpdate, ChannelTestIn, ChannelTestOut

router = APIRouter(prefix="/api/v1", tags=["sources"])


@router.get("/channel-rules", response_model=ChannelRulesRead)
def read_channel_rules(principal: Reader, session: ReadSession) -> ChannelRulesRead:
    """The channel rules in the order they are tried (first match wins; nothing matching is direct/referral)."""
    rules = service.channel_rules(session, principal.workspace_id)
    return ChannelRulesRead(rules=[ChannelRuleRead(**r) for r in rules])


@router.put("/channel-rules", response_model=ChannelRulesRead)
def replace_channel_rules(data: ChannelRulesUpdate, principal: Admin, session: DbSession) -> ChannelRulesRead:
    """Replace the whole table; every invalid rule is reported with its path (``rules[2].conditions.medium``)."""
    problems = service.rule_problems(data.rules)
    if problems:
        first = problems[0]
        raise ApiError(422, "invalid_rule", f"{first['path']}: {first['message']}", first["path"], problems)
    rules = service.replace_channel_rules(
        session, principal.workspace_id, data.rules, actor=f"api_key:{principal.key_id}"
    )
    return ChannelRulesRead(rules=[ChannelRuleRead(**r) for r in rules])


@router.post("/channel-rules/test", response_model=ChannelTestOut)
def test_channel_rules(data: ChannelTestIn, principal: Reader, session: ReadSession) -> ChannelTestOut:
    """Classify a landing URL and referrer with the current table, naming the rule that decided."""
    return service.try_classification(session, principal.workspace_id, data)

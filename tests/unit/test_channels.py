"""Channel classification: parsing visits and the default rule table."""

from __future__ import annotations

from suppilo.engine.channels import DEFAULT_RULES, Visit, classify, parse_visit, rule_matches, validate_rule


def channel(url: str | None, referrer: str | None = None, **kw) -> str:
    return classify(
        parse_visit(url=url, referrer=referrer, site_domains=["shop.example.fi"], **kw), DEFAULT_RULES
    ).channel


def test_utm_parameters_classify() -> None:
    assert channel("https://shop.example.fi/?utm_source=google&utm_medium=cpc") == "paid_search"
    assert channel("https://shop.example.fi/?utm_source=facebook&utm_medium=paid") == "paid_social"
    assert channel("https://shop.example.fi/?utm_source=news&utm_medium=email&utm_campaign=may") == "email"
    assert channel("https://shop.example.fi/?utm_medium=banner") == "display"
    assert channel("https://shop.example.fi/?gclid=abc") == "paid_search"


def test_referrers_classify_and_own_domain_is_not_a_referrer() -> None:
    assert channel("https://shop.example.fi/", "https://www.google.fi/") == "organic_search"
    assert channel("https://shop.example.fi/", "https://t.co/xyz") == "organic_social"
    assert channel("https://shop.example.fi/", "https://blog.partner.org/post") == "referral"
    assert channel("https://shop.example.fi/b", "https://shop.example.fi/a") == "direct"
    assert channel("https://shop.example.fi/", None) == "direct"


def test_context_campaign_is_used_when_url_has_none() -> None:
    visit = parse_visit(
        url="https://shop.example.fi/", referrer=None, campaign={"name": "spring", "source": "nl", "medium": "email"}
    )
    result = classify(visit, DEFAULT_RULES)
    assert result.channel == "email" and result.campaign == "spring" and result.source == "nl"


def test_first_matching_rule_wins_and_custom_rules_apply() -> None:
    visit = Visit(utm_source="partner", utm_medium="collab")
    assert classify(visit, DEFAULT_RULES).channel == "direct" or classify(visit, DEFAULT_RULES).channel == "referral"
    rules = [{"channel": "affiliate", "conditions": {"medium": ["collab"]}}, *DEFAULT_RULES]
    assert classify(visit, rules).channel == "affiliate"
    assert rule_matches({"campaign_prefix": "spr"}, Visit(utm_campaign="Spring24"))
    assert not rule_matches({"campaign_prefix": "spr"}, Visit(utm_campaign="autumn"))


def test_organic_search_gets_organic_medium_and_referrer_source() -> None:
    result = classify(
        parse_visit(url="https://shop.example.fi/", referrer="https://www.bing.com/search"), DEFAULT_RULES
    )
    assert (result.channel, result.medium, result.source) == ("organic_search", "organic", "bing.com")


def test_validate_rule_reports_problems() -> None:
    assert validate_rule("email", {"medium": ["email"]}) == []
    assert validate_rule("tv", {"medium": ["x"]})
    assert validate_rule("email", {})
    assert validate_rule("email", {"medium": "email"})
    assert validate_rule("email", {"colour": ["red"]})
    assert validate_rule("email", {"any_referrer": "yes"})

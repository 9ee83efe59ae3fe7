"""The segments pages: the list with member counts, the visual builder (rows and AND/OR groups serialised to the
filter JSON, live count, field-level errors that keep the input), the JSON editor, membership and history, static
lists; roles, CSRF, other workspaces and stored script shown as text."""

from __future__ import annotations

import json
import re

import pytest

from suppilo.segments import service as segments_service
from suppilo.segments.schemas import SegmentCreate
from tests.adapters.test_web_shell import csrf_of, login, make_user

SCRIPT = "<script>alert('segment')</script>"


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def contact(client, ws, email: str, **fields) -> int:
    res = client.post("/api/v1/contacts", json={"email": email, **fields}, headers=ws.auth())
    assert res.status_code in (200, 201), res.text
    return int(res.json()["id"])


def people(client, ws) -> dict[str, int]:
    return {
        "anna": contact(client, ws, "anna@example.fi", first_name="Anna", country="FI", tags=["vip"]),
        "bo": contact(client, ws, "bo@example.se", first_name="Bo", country="SE"),
        "cai": contact(client, ws, "cai@example.fi", first_name="Cai", country="FI"),
    }


def builder_form(token: str, rows: list[dict[str, str]], groups: list[str] | None = None, **extra: str) -> dict:
    """The builder's form fields (repeated fields as lists, as a browser sends them)."""
    form: dict[str, object] = {"csrf_token": token, "mode": "builder", "kind": "dynamic"}
    form["match"] = extra.pop("match", "and")
    form["group_match"] = groups or ["and"]
    for col in ("group", "what", "name", "op", "value", "days"):
        form[f"row_{col}"] = [r.get(col, "0" if col == "group" else "") for r in rows]
    form.update(extra)
    return form


def count_of(html: str) -> int:
    match = re.search(r'id="count-value">([\d,]+)<', html)
    assert match, "no live count in the page"
    return int(match.group(1).replace(",", ""))


def test_builder_counts_live_and_saves_a_dynamic_segment(client, session_factory, workspace) -> None:
    ids = people(client, workspace)
    login(client, make_user(session_factory, workspace.id, "marketer"))
    page = client.get(f"/app/w/{workspace.slug}/segments/new").text
    token = csrf_of(page)
    assert 'hx-post="/app/w/' in page and count_of(page) == 3  # the empty builder matches everyone
    preview = f"/app/w/{workspace.slug}/segments/preview"
    one = builder_form(token, [{"what": "contact.country", "op": "eq", "value": "FI"}])
    assert client.post(preview, data=one, headers={"X-CSRF-Token": token}).status_code == 200
    assert count_of(client.post(preview, data=one).text) == 2
    # Adding a row (the builder's button) and filling it narrows the count: FI and tagged vip.
    added = client.post(preview, data={**one, "action": "add:0"}).text
    assert 'id="row-1-what"' in added
    two = builder_form(
        token,
        [{"what": "contact.country", "op": "eq", "value": "FI"}, {"what": "tag", "op": "has_tag", "value": "vip"}],
    )
    assert count_of(client.post(preview, data=two).text) == 1
    # OR across two groups: FI-and-vip, or SE.
    groups = builder_form(
        token,
        [
            {"what": "contact.country", "op": "eq", "value": "FI"},
            {"what": "tag", "op": "has_tag", "value": "vip"},
            {"group": "1", "what": "contact.country", "op": "in", "value": "SE, NO"},
        ],
        groups=["and", "and"],
        match="or",
    )
    assert count_of(client.post(preview, data=groups).text) == 2
    res = client.post(f"/app/w/{workspace.slug}/segments/new", data={**groups, "name": "Finnish VIPs or Swedes"})
    assert res.status_code == 200 and "Segment saved." in res.text
    assert 'id="member-count">2<' in res.text and "Anna" in res.text and "Bo" in res.text and "Cai" not in res.text
    seg_id = int(re.search(r"/segments/(\d+)/edit", res.text).group(1))
    with session_factory() as s:
        stored = segments_service.get_segment(s, workspace.id, seg_id).filter
    assert stored["or"][1]["and"][0] == {
        "type": "contact",
        "field": "country",
        "op": "in",
        "value": ["SE", "NO"],
        "field_type": "string",
    }
    # The history says who entered and why; the list shows the count.
    history = res.text[res.text.index('id="history-table"') :]
    assert history.count("entered") >= 2 and "created" in history
    listing = client.get(f"/app/w/{workspace.slug}/segments").text
    row = listing[listing.index(f'id="segment-{seg_id}"') :]
    assert '<td class="num">2</td>' in row[: row.index("</tr>")]
    # Editing opens the same rows in the builder.
    edit = client.get(f"/app/w/{workspace.slug}/segments/{seg_id}/edit").text
    assert 'value="SE, NO"' in edit and count_of(edit) == 2
    assert ids


def test_field_errors_point_at_the_row_and_keep_the_input(client, session_factory, workspace) -> None:
    people(client, workspace)
    login(client, make_user(session_factory, workspace.id, "admin"))
    token = csrf_of(client.get(f"/app/w/{workspace.slug}/segments/new").text)
    bad = builder_form(
        token,
        [
            {"what": "contact.country", "op": "eq", "value": "FI"},
            {"what": "order_count", "op": "gte", "value": f"lots {SCRIPT}"},
        ],
    )
    res = client.post(f"/app/w/{workspace.slug}/segments/new", data={**bad, "name": f"Orders {SCRIPT}"})
    assert res.status_code == 422, res.text[-3000:]
    row = res.text[res.text.index('id="row-1"') :]
    row = row[: row.index("</li>")]
    assert "a finite number is required" in row and 'aria-invalid="true"' in row
    assert "lots &lt;script&gt;" in row and SCRIPT not in res.text
    assert 'value="Orders &lt;script&gt;alert(&#39;segment&#39;)&lt;/script&gt;"' in res.text
    # No name: the name field says so; the rows stay.
    res = client.post(f"/app/w/{workspace.slug}/segments/new", data={**bad, "name": "  "})
    assert res.status_code == 422 and 'id="seg-name-error"' in res.text
    # A JSON filter with an unknown field names its path and keeps the text.
    raw = json.dumps({"and": [{"type": "contact", "field": "shoe_size", "op": "eq", "value": "42"}]})
    form = {"csrf_token": token, "mode": "json", "kind": "dynamic", "name": "Shoes", "filter_json": raw}
    res = client.post(f"/app/w/{workspace.slug}/segments/new", data=form)
    assert res.status_code == 422 and "filter.and[0].field" in res.text and "shoe_size" in res.text
    assert "&#34;shoe_size&#34;" in res.text  # the text typed, back in the textarea
    broken = client.post(f"/app/w/{workspace.slug}/segments/new", data={**form, "filter_json": "{nope"})
    assert broken.status_code == 422 and "not valid JSON at line 1" in broken.text and "{nope</textarea>" in broken.text


def test_json_editor_and_switching_between_the_editors(client, session_factory, workspace) -> None:
    people(client, workspace)
    login(client, make_user(session_factory, workspace.id, "marketer"))
    url = f"/app/w/{workspace.slug}/segments/new"
    token = csrf_of(client.get(url).text)
    as_json = client.post(url, data=builder_form(token, [{"what": "contact.country", "op": "eq", "value": "SE"}],
                                                 action="to_json"))  # fmt: skip
    text = re.search(r'<textarea id="filter-json"[^>]*>(.*?)</textarea>', as_json.text, re.S).group(1)
    assert "&#34;country&#34;" in text
    nested = {"and": [{"not": {"type": "contact", "field": "country", "op": "eq", "value": "SE"}}]}
    form = {"csrf_token": token, "mode": "json", "kind": "dynamic", "filter_json": json.dumps(nested)}
    refused = client.post(url, data={**form, "action": "to_builder"})
    assert "does not fit the builder" in refused.text and 'id="filter-json"' in refused.text
    assert count_of(client.post(f"/app/w/{workspace.slug}/segments/preview", data=form).text) == 2
    res = client.post(url, data={**form, "name": "Not Swedish"})
    assert res.status_code == 200 and 'id="member-count">2<' in res.text
    seg_id = int(re.search(r"/segments/(\d+)/edit", res.text).group(1))
    edit = client.get(f"/app/w/{workspace.slug}/segments/{seg_id}/edit").text
    assert "edited as JSON" in edit and 'id="filter-json"' in edit


def test_static_list_add_and_remove_members(client, session_factory, workspace) -> None:
    ids = people(client, workspace)
    login(client, make_user(session_factory, workspace.id, "marketer"))
    page = client.get(f"/app/w/{workspace.slug}/segments/new?kind=static").text
    token = csrf_of(page)
    assert 'id="builder"' not in page
    res = client.post(
        f"/app/w/{workspace.slug}/segments/new",
        data={"csrf_token": token, "kind": "static", "name": "Trade fair 2026", "action": "save"},
    )
    assert res.status_code == 200 and 'id="member-count">0<' in res.text
    seg_id = int(re.search(r"/segments/(\d+)/edit", res.text).group(1))
    members = f"/app/w/{workspace.slug}/segments/{seg_id}/members"
    assert client.post(members, data={"contacts": "anna@example.fi"}).status_code == 403  # no CSRF token
    res = client.post(members, data={"csrf_token": token, "contacts": f"anna@example.fi\n{ids['bo']}"})
    assert "2 contacts added." in res.text and 'id="member-count">2<' in res.text
    missing = client.post(members, data={"csrf_token": token, "contacts": f"nobody@example.com, {SCRIPT}"})
    assert missing.status_code == 422 and "not found: nobody@example.com" in missing.text
    assert SCRIPT not in missing.text and "&lt;script&gt;" in missing.text
    res = client.post(f"{members}/remove", data={"csrf_token": token, "contacts": "Anna@Example.fi"})
    assert "1 contact removed." in res.text and 'id="member-count">1<' in res.text
    history = res.text[res.text.index('id="history-table"') :]
    assert "exited" in history and "removed" in history and "added" in history


def test_roles_and_other_workspaces(client, session_factory, workspace, other_workspace) -> None:
    with session_factory() as s:
        mine = segments_service.create_segment(
            s,
            workspace.id,
            SegmentCreate(name=SCRIPT, filter={"type": "contact", "field": "country", "op": "eq", "value": "FI"}),
        )
        theirs = segments_service.create_segment(s, other_workspace.id, SegmentCreate(name="Theirs", kind="static"))
        s.commit()
        mine_id, theirs_id = mine.id, theirs.id
    login(client, make_user(session_factory, workspace.id, "analyst"))
    listing = client.get(f"/app/w/{workspace.slug}/segments").text
    assert SCRIPT not in listing and "&lt;script&gt;alert" in listing and "New segment" not in listing
    page = client.get(f"/app/w/{workspace.slug}/segments/{mine_id}").text
    assert "&lt;script&gt;" in page and SCRIPT not in page and f"/segments/{mine_id}/edit" not in page
    token = csrf_of(page)
    assert client.get(f"/app/w/{workspace.slug}/segments/new").status_code == 403
    assert client.post(f"/app/w/{workspace.slug}/segments/preview", data={"csrf_token": token}).status_code == 403
    assert client.get(f"/app/w/{workspace.slug}/segments/{theirs_id}").status_code == 404
    assert client.get(f"/app/w/{other_workspace.slug}/segments").status_code == 404
    client.cookies.clear()
    login(client, make_user(session_factory, workspace.id, "admin"))
    token = csrf_of(client.get(f"/app/w/{workspace.slug}/segments").text)
    res = client.post(f"/app/w/{workspace.slug}/segments/{theirs_id}/members", data={"csrf_token": token})
    assert res.status_code == 404
    assert client.get(f"/app/w/{workspace.slug}/segments/{theirs_id}/edit").status_code == 404


def test_delete_a_segment_unless_another_uses_it(client, session_factory, workspace) -> None:
    with session_factory() as s:
        base = segments_service.create_segment(
            s,
            workspace.id,
            SegmentCreate(name="Finns", filter={"type": "contact", "field": "city", "op": "eq", "value": SCRIPT}),
        )
        user = segments_service.create_segment(
            s,
            workspace.id,
            SegmentCreate(name="Uses Finns", filter={"type": "segment", "op": "in_segment", "value": base.id}),
        )
        s.commit()
        base_id, user_id = base.id, user.id
    login(client, make_user(session_factory, workspace.id, "marketer"))
    page = client.get(f"/app/w/{workspace.slug}/segments/{base_id}").text
    assert SCRIPT not in page and "&lt;script&gt;alert(&#39;segment&#39;)&lt;/script&gt;" in page  # the filter as text
    edit = client.get(f"/app/w/{workspace.slug}/segments/{base_id}/edit").text
    assert SCRIPT not in edit and 'value="&lt;script&gt;' in edit
    token = csrf_of(page)
    refused = client.post(f"/app/w/{workspace.slug}/segments/{base_id}/delete", data={"csrf_token": token})
    assert refused.status_code == 409 and f"segments {user_id} use this segment" in refused.text
    res = client.post(f"/app/w/{workspace.slug}/segments/{user_id}/delete", data={"csrf_token": token})
    assert res.status_code == 200 and "Segment deleted." in res.text and "Uses Finns" not in res.text
    res = client.post(f"/app/w/{workspace.slug}/segments/{base_id}/delete", data={"csrf_token": token})
    assert "Segment deleted." in res.text and f'id="segment-{base_id}"' not in res.text
    assert client.get(f"/app/w/{workspace.slug}/segments/{base_id}").status_code == 404

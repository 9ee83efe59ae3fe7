"""Importing contacts in the web interface — upload, column mapping guessed from the header with sample rows,
progress polled by htmx, summary with refused lines — and CSV export: field errors keep the chosen mapping, stored
script in headers and cells is shown as text, another workspace's import is 404."""

from __future__ import annotations

import re
import time

import pytest
from sqlalchemy import update

from suppilo.db.base import utcnow
from suppilo.transfer.models import ImportJob
from tests.adapters.test_web_shell import csrf_of, login, make_user
from tests.conftest import make_workspace

SCRIPT = "<script>alert('xss')</script>"

CSV = (
    "E-mail,Given name,Surname,Puhelin,Company,Country,Kieli,Tags,Lifecycle stage,Shoe size,Notes\n"
    "anna@example.com,Anna,Korhonen,+358401234567,Nordic Hotels,FI,fi,vip;newsletter,interest,38,first\n"
    "not-an-email,Bad,Row,,,FI,fi,,,,second\n"
    "bertil@example.se,Bertil,Berg,,,SE,sv,,customer,44,third\n"
    "carl@example.dk,Carl,Carlsen,,,Narnia,da,,,,fourth\n"
)


@pytest.fixture(autouse=True)
def _fresh(client):
    client.cookies.clear()
    yield
    client.cookies.clear()


def upload(client, ws, content: bytes | str, filename: str = "contacts.csv", kind: str | None = None):
    page = client.get(f"/app/w/{ws.slug}/imports")
    data = content.encode() if isinstance(content, str) else content
    return client.post(
        f"/app/w/{ws.slug}/imports",
        data={"csrf_token": csrf_of(page.text), **({"kind": kind} if kind else {})},
        files={"file": (filename, data, "text/csv")},
        follow_redirects=False,
    )


def selected(html: str, i: int) -> str:
    select = html[html.index(f'name="column_{i}"') : html.index("</select>", html.index(f'name="column_{i}"'))]
    match = re.search(r'<option value="([^"]+)" selected>', select)
    assert match, f"column {i} has no selected option"
    return match.group(1)


def wait_done(client, url: str, timeout: float = 60.0) -> str:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        html = client.get(url).text
        if 'id="import-summary"' in html or 'id="import-failure"' in html:
            return html
        time.sleep(0.2)
    raise AssertionError("the import did not finish")


def test_upload_guess_mapping_start_and_read_the_summary(client, session_factory, workspace) -> None:
    res = client.post(
        "/api/v1/properties",
        json={"object_type": "contact", "name": "shoe_size", "type": "number"},
        headers=workspace.auth(),
    )
    assert res.status_code == 201, res.text
    login(client, make_user(session_factory, workspace.id, "marketer"))
    res = upload(client, workspace, CSV)
    assert res.status_code == 303
    job_url = res.headers["location"]
    assert re.fullmatch(rf"/app/w/{workspace.slug}/imports/\d+", job_url)
    page = client.get(job_url)
    html = page.text
    assert page.status_code == 200 and "Map the columns" in html
    # Guessed from the header names (aliases in several languages), the custom property by its name.
    expected = [
        "email",
        "first_name",
        "last_name",
        "phone",
        "company_name",
        "country",
        "language",
        "tags",
        "lifecycle_stage",
        "properties.shoe_size",
        "ignore",
    ]
    assert [selected(html, i) for i in range(11)] == expected
    # The header and the first rows with their line numbers.
    assert "Line 2" in html and "Line 5" in html and "anna@example.com" in html and "Narnia" in html
    # The user changes "Notes" from ignored to the job title.
    form = {"csrf_token": csrf_of(html), **{f"column_{i}": t for i, t in enumerate(expected)}}
    form["column_10"] = "job_title"
    started = client.post(f"{job_url}/start", data=form, follow_redirects=False)
    assert started.status_code == 303 and started.headers["location"] == job_url
    done = wait_done(client, job_url)
    assert 'id="summary-rows">4<' in done
    assert 'id="summary-created">2<' in done and 'id="summary-updated">0<' in done
    assert 'id="summary-failed">2<' in done
    refused = done[done.index('id="refused-rows"') :]
    assert re.search(r'<td class="num">3</td><td>[^<]*email', refused)
    assert re.search(r'<td class="num">5</td><td>[^<]*Narnia', refused)
    errors_csv = client.get(f"{job_url}/errors.csv")
    assert errors_csv.status_code == 200 and "not-an-email" in errors_csv.text and "_error" in errors_csv.text
    # The contacts are there with what the mapping said.
    found = client.get("/api/v1/contacts", params={"q": "anna@example.com"}, headers=workspace.auth()).json()
    anna = found["items"][0]
    assert anna["first_name"] == "Anna" and anna["job_title"] == "first" and anna["lifecycle_stage"] == "interest"
    assert anna["properties"]["shoe_size"] == 38 and sorted(anna["tags"]) == ["newsletter", "vip"]
    # The job is listed with its outcome; the same file again updates instead of duplicating.
    listing = client.get(f"/app/w/{workspace.slug}/imports").text
    assert "contacts.csv" in listing and "Done" in listing
    again = client.get(upload(client, workspace, CSV).headers["location"]).text
    job2 = re.search(r'action="(/app/w/[^"]+/start)"', again).group(1)
    client.post(job2, data={"csrf_token": csrf_of(again), **{f"column_{i}": t for i, t in enumerate(expected)}})
    second = wait_done(client, job2.removesuffix("/start"))
    assert 'id="summary-created">0<' in second and 'id="summary-updated">2<' in second


def test_refused_rows_are_worded_in_the_users_language(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "marketer", language="fi"))
    text = (
        "Email,Country,Created\n"
        "anna@example.com,FI,2024-01-05\n"  # line 2: imported
        "not-an-email,FI,\n"  # line 3
        "bertil@example.se,Narnia,\n"  # line 4
        "carl@example.dk,DK,yesterday\n"  # line 5
        ",FI,\n"  # line 6
        "dora@example.fi,FI\n"  # line 7: two fields
    )
    job_url = upload(client, workspace, text).headers["location"]
    html = client.get(job_url).text
    chosen = [selected(html, i) for i in range(3)]
    assert chosen == ["email", "country", "created_at"]
    form = {"csrf_token": csrf_of(html), **{f"column_{i}": t for i, t in enumerate(chosen)}}
    assert client.post(f"{job_url}/start", data=form, follow_redirects=False).status_code == 303
    done = wait_done(client, job_url)
    assert 'id="summary-created">1<' in done and 'id="summary-failed">5<' in done
    refused = done[done.index('id="refused-rows"') : done.index("</table>", done.index('id="refused-rows"'))]
    reasons = dict(re.findall(r'<td class="num">(\d+)</td><td>([^<]*)</td>', refused))
    assert reasons == {
        "3": "email: ”not-an-email” ei ole kelvollinen sähköpostiosoite.",
        "4": "country: ”Narnia” ei ole maa (kaksikirjaiminen ISO-koodi tai maan nimi).",
        "5": "created_at: ”yesterday” ei ole päivämäärä (käytä muotoa YYYY-MM-DD tai YYYY-MM-DDTHH:MM:SS+00:00).",
        "6": "email: arvo puuttuu.",
        "7": "Rivillä on 2 kenttää, otsikkorivillä 3.",
    }
    # The error file and the API keep the English reasons.
    assert "is not a valid email address" in client.get(f"{job_url}/errors.csv").text


def test_mapping_errors_are_shown_per_column_and_keep_the_choices(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "sales"))
    job_url = upload(client, workspace, CSV).headers["location"]
    html = client.get(job_url).text
    token = csrf_of(html)
    choices = ["email", "email", "last_name"] + ["ignore"] * 8
    res = client.post(
        f"{job_url}/start", data={"csrf_token": token, **{f"column_{i}": t for i, t in enumerate(choices)}}
    )
    assert res.status_code == 422
    assert 'id="column-1-error"' in res.text and "already mapped to this field" in res.text
    assert [selected(res.text, i) for i in range(3)] == ["email", "email", "last_name"]
    none = ["ignore"] * 11
    res = client.post(f"{job_url}/start", data={"csrf_token": token, **{f"column_{i}": t for i, t in enumerate(none)}})
    assert res.status_code == 422 and "Map one column to Email" in res.text
    unknown = ["email", "properties.nope"] + ["ignore"] * 9
    res = client.post(
        f"{job_url}/start", data={"csrf_token": token, **{f"column_{i}": t for i, t in enumerate(unknown)}}
    )
    assert res.status_code == 422 and 'id="column-1-error"' in res.text
    assert selected(res.text, 1) == "properties.nope"
    # Nothing started: the page still asks for the mapping.
    assert "Map the columns" in client.get(job_url).text
    assert client.post(f"{job_url}/start", data={"column_0": "email"}).status_code == 403


def test_bad_uploads_are_explained_at_the_file_field(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "admin"))
    empty = upload(client, workspace, b"")
    assert empty.status_code == 422 and 'id="import-file-error"' in empty.text and "is empty" in empty.text
    binary = upload(client, workspace, b"\x00\x01\x02PK\x00", filename="photo.png")
    assert binary.status_code == 422 and "not a text file" in binary.text
    page = client.get(f"/app/w/{workspace.slug}/imports")
    missing = client.post(f"/app/w/{workspace.slug}/imports", data={"csrf_token": csrf_of(page.text)})
    assert missing.status_code == 422 and "Choose a CSV file" in missing.text


def test_progress_fragment_polls_while_running(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "analyst"))
    with session_factory() as s:
        job = ImportJob(
            workspace_id=workspace.id,
            filename="big.csv",
            stored_path="/nonexistent/big.csv",
            status="running",
            header=["email"],
            mapping={"email": "email"},
            rows_done=20000,
            bytes_read=512 * 1024,
            total_bytes=1024 * 1024,
            failed=3,
        )
        s.add(job)
        s.commit()
        job_id = job.id
    url = f"/app/w/{workspace.slug}/imports/{job_id}"
    part = client.get(url, params={"part": "progress"}, headers={"HX-Request": "true"})
    assert part.status_code == 200 and "<html" not in part.text
    assert 'hx-trigger="every 1s"' in part.text and 'id="rows-done">20,000<' in part.text
    assert 'id="rows-refused">3<' in part.text and "50%" in part.text and 'value="50"' in part.text
    full = client.get(url)
    assert "<html" in full.text and 'id="import-status">Running<' in full.text
    # A job whose runner stopped reporting long ago is shown as interrupted and no longer polled.
    with session_factory() as s:
        from datetime import timedelta

        s.execute(update(ImportJob).where(ImportJob.id == job_id).values(updated_at=utcnow() - timedelta(hours=1)))
        s.commit()
    stale = client.get(url).text
    assert "Interrupted" in stale and "every 1s" not in stale


def test_stored_script_in_a_file_is_text_and_other_workspaces_are_404(client, session_factory, workspace) -> None:
    login(client, make_user(session_factory, workspace.id, "admin"))
    evil = f"email,{SCRIPT}\nx@example.com,{SCRIPT}\n"
    job_url = upload(client, workspace, evil, filename=f"{SCRIPT}.csv").headers["location"]
    html = client.get(job_url).text
    assert SCRIPT not in html and "&lt;script&gt;alert(&#39;xss&#39;)&lt;/script&gt;" in html
    assert SCRIPT not in client.get(f"/app/w/{workspace.slug}/imports").text
    other = make_workspace(session_factory)
    client.cookies.clear()
    login(client, make_user(session_factory, other.id, "admin"))
    assert client.get(job_url).status_code == 404
    job_id = job_url.rsplit("/", 1)[1]
    assert client.get(f"/app/w/{other.slug}/imports/{job_id}").status_code == 404
    assert client.get(f"/app/w/{other.slug}/imports/{job_id}/errors.csv").status_code == 404
    page = client.get(f"/app/w/{other.slug}/imports")
    res = client.post(f"/app/w/{other.slug}/imports/{job_id}/start", data={"csrf_token": csrf_of(page.text)})
    assert res.status_code == 404


def test_export_csv_neutralises_formulas_and_stays_in_the_workspace(client, session_factory, workspace) -> None:
    client.post(
        "/api/v1/contacts", json={"email": "f@example.com", "first_name": "=HYPERLINK(1)"}, headers=workspace.auth()
    )
    other = make_workspace(session_factory)
    client.post("/api/v1/contacts", json={"email": "theirs@example.com"}, headers=other.auth())
    client.post("/api/v1/companies", json={"name": "Acme", "domain": "acme.example"}, headers=workspace.auth())
    login(client, make_user(session_factory, workspace.id, "analyst"))
    res = client.get(f"/app/w/{workspace.slug}/exports/contacts.csv")
    assert res.status_code == 200 and res.headers["content-type"].startswith("text/csv")
    assert "attachment" in res.headers["content-disposition"]
    assert "'=HYPERLINK(1)" in res.text and "f@example.com" in res.text and "theirs@" not in res.text
    companies = client.get(f"/app/w/{workspace.slug}/exports/companies.csv")
    assert "acme.example" in companies.text
    assert client.get(f"/app/w/{workspace.slug}/exports/orders.csv").status_code == 404
    # Analysts read and export but do not import.
    page = client.get(f"/app/w/{workspace.slug}/imports").text
    assert 'id="import-upload"' not in page
    res = client.post(
        f"/app/w/{workspace.slug}/imports",
        data={"csrf_token": csrf_of(page)},
        files={"file": ("a.csv", b"email\nz@example.com\n", "text/csv")},
    )
    assert res.status_code == 403


def test_companies_and_orders_import_with_the_same_mapping_step(client, session_factory, workspace) -> None:
    from sqlalchemy import select

    from suppilo.commerce.models import Order

    login(client, make_user(session_factory, workspace.id, "admin"))
    companies = "Company name,Website,Industry,Country\nNordic Hotels,nordhotel.fi,Hotels,FI\nNo Domain Oy,,Retail,SE\n"
    job_url = upload(client, workspace, companies, "companies.csv", kind="companies").headers["location"]
    html = client.get(job_url).text
    assert 'id="import-kind">Companies<' in html
    assert [selected(html, i) for i in range(4)] == ["name", "domain", "industry", "country"]
    token = csrf_of(html)
    # Companies are matched by their domain: a mapping without it is refused at the form.
    res = client.post(
        f"{job_url}/start",
        data={
            "csrf_token": token,
            "column_0": "name",
            "column_1": "ignore",
            "column_2": "industry",
            "column_3": "ignore",
        },
    )
    assert res.status_code == 422 and "Map one column to “domain”" in res.text
    chosen = {
        "csrf_token": token,
        "column_0": "name",
        "column_1": "domain",
        "column_2": "industry",
        "column_3": "country",
    }
    assert client.post(f"{job_url}/start", data=chosen, follow_redirects=False).status_code == 303
    done = wait_done(client, job_url)
    assert 'id="summary-created">1<' in done and 'id="summary-failed">1<' in done
    assert f'href="/app/w/{workspace.slug}/companies"' in done
    found = client.get("/api/v1/companies", params={"q": "Nordic"}, headers=workspace.auth()).json()
    assert [(c["name"], c["domain"], c["industry"], c["country"]) for c in found["items"]] == [
        ("Nordic Hotels", "nordhotel.fi", "Hotels", "FI")
    ]

    orders = (
        "Order ID,Email,Order date,Currency,SKU,Product name,Quantity,Unit price,Total\n"
        "W-1,buyer@example.com,2025-05-01,EUR,BOOT-1,Boots,1,100.00,100.00\n"
        "W-2,buyer@example.com,2025-05-03,EUR,SOCK-1,Socks,2,10.00,20.00\n"
    )
    job_url = upload(client, workspace, orders, "orders.csv", kind="orders").headers["location"]
    html = client.get(job_url).text
    guessed = [selected(html, i) for i in range(9)]
    assert guessed == ["order_id", "email", "placed_at", "currency", "sku", "name", "quantity", "unit_price", "total"]
    form = {"csrf_token": csrf_of(html), **{f"column_{i}": t for i, t in enumerate(guessed)}}
    assert client.post(f"{job_url}/start", data=form, follow_redirects=False).status_code == 303
    done = wait_done(client, job_url)
    assert 'id="summary-created">2<' in done and 'id="summary-failed">0<' in done
    with session_factory() as s:
        stored = s.execute(
            select(Order.external_id, Order.total_minor).where(Order.workspace_id == workspace.id).order_by(Order.id)
        ).all()
    assert [tuple(r) for r in stored] == [("W-1", 10000), ("W-2", 2000)]
    listing = client.get(f"/app/w/{workspace.slug}/imports").text
    assert "Orders" in listing and "Companies" in listing
    assert upload(client, workspace, orders, "x.csv", kind="deals").status_code == 422

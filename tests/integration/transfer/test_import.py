"""CSV import: HubSpot and Salesforce files, re-runs, encodings, delimiters, bad rows, tenant isolation."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import func, select

from suppilo.commerce.models import Order, OrderLine, Product
from suppilo.companies.models import Company
from suppilo.contacts.models import Contact, ContactTag, PropertyDefinition, StageChange
from suppilo.events.models import Touch
from suppilo.transfer.importer import import_file
from suppilo.transfer.mapping import MappingError
from suppilo.transfer.readers import UnreadableFile

HUBSPOT = (
    "Record ID,First Name,Last Name,Email,Phone Number,Mobile Phone Number,Job Title,Company Name,"
    "Country/Region,City,State/Region,Lifecycle Stage,Contact owner,Preferred language,Original Source,Create Date\n"
    "101,Aino,Virtanen,Aino.Virtanen@Nordkraft.FI,040 1234567,,CEO,Nordkraft Oy,Finland,Helsinki,Uusimaa,"
    "customer,,fi,ORGANIC_SEARCH,2023-05-01 10:22\n"
    "102,Erik,Svensson,erik@gmail.com,,+46 70 123 45 67,Buyer,,Sweden,Stockholm,,marketingqualifiedlead,,sv,"
    "PAID_SOCIAL,2023-06-02 08:00\n"
    "103,Mia,Jones,mia@nordkraft.fi,,,CTO,Nordkraft Oy,FI,Espoo,,salesqualifiedlead,,en,REFERRALS,2023-07-03\n"
)

SALESFORCE = (
    "FirstName,LastName,Email,Phone,MobilePhone,Title,Company,MailingCountry,MailingCity,LeadSource\n"
    "John,Doe,john.doe@acme-corp.com,(212) 555-0101,,VP Sales,Acme Corp,US,New York,Trade Show\n"
    "Jane,Roe,jane@acme-corp.com,,+1 415 555 0199,Engineer,Acme Corp,US,San Francisco,Web\n"
)


def write(tmp_path: Path, name: str, text: str, encoding: str = "utf-8") -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode(encoding))
    return path


def contacts_of(session_factory, workspace_id: int) -> dict[str, Contact]:
    with session_factory() as s:
        return {c.email: c for c in s.scalars(select(Contact).where(Contact.workspace_id == workspace_id))}


def count(session_factory, model, workspace_id: int) -> int:
    with session_factory() as s:
        return s.scalar(select(func.count()).select_from(model).where(model.workspace_id == workspace_id))


def test_hubspot_export_imports_with_the_right_fields(session_factory, workspace, tmp_path: Path) -> None:
    path = write(tmp_path, "hubspot-contacts.csv", HUBSPOT)
    summary = import_file(session_factory, workspace.id, "contacts", path)
    assert (summary.created, summary.updated, summary.failed) == (3, 0, 0)
    assert summary.ignored_columns == ["Record ID"]
    assert summary.mapping["Country/Region"] == "country" and summary.mapping["Original Source"] == "source"
    people = contacts_of(session_factory, workspace.id)
    aino = people["aino.virtanen@nordkraft.fi"]
    assert (aino.first_name, aino.last_name, aino.first_name_lower) == ("Aino", "Virtanen", "aino")
    assert (aino.phone, aino.country, aino.city, aino.region) == ("+358401234567", "FI", "Helsinki", "Uusimaa")
    assert (aino.language, aino.timezone, aino.job_title) == ("fi", "Europe/Helsinki", "CEO")
    assert aino.lifecycle_stage == "customer"
    assert aino.first_touch_channel == "organic_search"
    assert aino.created_at.isoformat() == "2023-05-01T07:22:00+00:00"  # Helsinki summer time, stored UTC
    erik = people["erik@gmail.com"]
    assert erik.phone == "+46701234567" and erik.country == "SE" and erik.timezone == "Europe/Stockholm"
    assert erik.lifecycle_stage == "consideration" and erik.company_id is None  # free mail: no company
    assert erik.first_touch_channel == "paid_social"
    mia = people["mia@nordkraft.fi"]
    assert mia.lifecycle_stage == "decision" and mia.first_touch_channel == "referral"
    assert mia.company_id == aino.company_id is not None
    with session_factory() as s:
        company = s.get(Company, aino.company_id)
        assert (company.domain, company.name) == ("nordkraft.fi", "Nordkraft Oy")
        changes = s.scalars(select(StageChange).where(StageChange.contact_id == aino.id)).all()
        assert [(c.from_stage, c.to_stage, c.reason, c.source, c.changed_at) for c in changes] == [
            (None, "customer", "import hubspot-contacts.csv", "import", aino.created_at)
        ]
        touch = s.scalars(select(Touch).where(Touch.contact_id == erik.id)).one()
        assert touch.channel == "paid_social" and touch.content == "hubspot-contacts.csv"
        assert (touch.medium, touch.occurred_at, touch.workspace_id) == ("import", erik.created_at, workspace.id)
        assert touch.source == erik.first_touch_source and touch.event_id is None


def test_salesforce_export_imports_with_the_right_fields(session_factory, workspace, tmp_path: Path) -> None:
    path = write(tmp_path, "leads.csv", SALESFORCE)
    summary = import_file(session_factory, workspace.id, "contacts", path, channel="outbound")
    assert (summary.created, summary.failed) == (2, 0)
    people = contacts_of(session_factory, workspace.id)
    john = people["john.doe@acme-corp.com"]
    assert (john.first_name, john.last_name, john.job_title) == ("John", "Doe", "VP Sales")
    assert (john.phone, john.country, john.city, john.timezone) == (
        "+12125550101",
        "US",
        "New York",
        "America/New_York",
    )
    assert john.first_touch_channel == "events"
    assert people["jane@acme-corp.com"].phone == "+14155550199"
    assert people["jane@acme-corp.com"].first_touch_channel == "direct"
    # No lifecycle column: the 'contact_imported' rule puts them at interest.
    assert {c.lifecycle_stage for c in people.values()} == {"interest"}
    assert john.company_id == people["jane@acme-corp.com"].company_id is not None


def test_running_the_same_file_twice_gives_the_same_state(session_factory, workspace, tmp_path: Path) -> None:
    path = write(tmp_path, "hubspot.csv", HUBSPOT)
    import_file(session_factory, workspace.id, "contacts", path)
    before = {
        e: (c.first_name, c.lifecycle_stage, c.company_id, c.version)
        for e, c in contacts_of(session_factory, workspace.id).items()
    }
    counts = [count(session_factory, m, workspace.id) for m in (Contact, Company, StageChange, Touch)]
    again = import_file(session_factory, workspace.id, "contacts", path)
    assert (again.created, again.updated, again.failed) == (0, 3, 0)
    after = {
        e: (c.first_name, c.lifecycle_stage, c.company_id, c.version)
        for e, c in contacts_of(session_factory, workspace.id).items()
    }
    assert after == before
    assert (
        [count(session_factory, m, workspace.id) for m in (Contact, Company, StageChange, Touch)]
        == counts
        == [3, 1, 3, 3]
    )


def test_a_later_file_updates_and_moves_stages_forward_only(session_factory, workspace, tmp_path: Path) -> None:
    import_file(session_factory, workspace.id, "contacts", write(tmp_path, "a.csv", HUBSPOT))
    update = "Email,City,Lifecycle Stage\nmia@nordkraft.fi,Turku,customer\naino.virtanen@nordkraft.fi,,lead\n"
    summary = import_file(session_factory, workspace.id, "contacts", write(tmp_path, "b.csv", update))
    assert (summary.created, summary.updated) == (0, 2)
    people = contacts_of(session_factory, workspace.id)
    assert people["mia@nordkraft.fi"].city == "Turku" and people["mia@nordkraft.fi"].lifecycle_stage == "customer"
    assert people["mia@nordkraft.fi"].first_name == "Mia"  # a column the file lacks is kept
    aino = people["aino.virtanen@nordkraft.fi"]
    assert aino.city == "Helsinki" and aino.lifecycle_stage == "customer"  # empty cell kept; never backwards
    with session_factory() as s:
        reasons = s.scalars(
            select(StageChange.reason).where(StageChange.contact_id == people["mia@nordkraft.fi"].id)
        ).all()
    assert sorted(reasons) == ["import a.csv", "import b.csv"]


def test_same_address_in_two_cases_is_one_contact(session_factory, workspace, tmp_path: Path) -> None:
    text = "Email,First Name\nAlice@EXAMPLE.com,Alice\nalice@example.com,Alicia\n"
    summary = import_file(session_factory, workspace.id, "contacts", write(tmp_path, "dup.csv", text))
    assert (summary.created, summary.updated, summary.failed) == (1, 1, 0)
    people = contacts_of(session_factory, workspace.id)
    assert list(people) == ["alice@example.com"] and people["alice@example.com"].first_name == "Alicia"


def test_bom_cp1252_semicolons_and_tabs(session_factory, workspace, tmp_path: Path) -> None:
    bom = write(tmp_path, "bom.csv", "Email;First Name;City\nsami@firma.fi;Sämi;Jyväskylä\n", "utf-8-sig")
    s1 = import_file(session_factory, workspace.id, "contacts", bom)
    assert s1.encoding == "utf-8-sig" and s1.delimiter == ";" and s1.mapping["Email"] == "email"
    cp = write(tmp_path, "excel.csv", "Email,First Name,City\nbjorn@firma.fi,Björn,Malmö – Süd\n", "cp1252")
    s2 = import_file(session_factory, workspace.id, "contacts", cp)
    assert s2.encoding == "cp1252" and s2.failed == 0
    tab = write(tmp_path, "tab.tsv", "Email\tLast Name\nolli@firma.fi\tÖstman\n")
    assert import_file(session_factory, workspace.id, "contacts", tab).delimiter == "\t"
    people = contacts_of(session_factory, workspace.id)
    assert people["sami@firma.fi"].first_name == "Sämi" and people["sami@firma.fi"].city == "Jyväskylä"
    assert people["bjorn@firma.fi"].first_name == "Björn" and people["bjorn@firma.fi"].city == "Malmö – Süd"
    assert people["olli@firma.fi"].last_name == "Östman"


def test_bad_rows_go_to_the_error_file_with_their_lines(session_factory, workspace, tmp_path: Path) -> None:
    text = (
        "Email,First Name,Phone Number,Country/Region,Create Date\n"  # line 1
        'ok1@firma.fi,"Two\nLines",,FI,\n'  # lines 2-3
        "not-an-email,Bad,,,\n"  # line 4
        'ok2@firma.fi,"=HYPERLINK(""http://x"")",,,\n'  # line 5
        "bad-phone@firma.fi,P,12,FI,\n"  # line 6
        'ok3@firma.fi,"a\n\nb",,,\n'  # lines 7-9
        "ragged@firma.fi,R\n"  # line 10
        "bad-country@firma.fi,C,,Atlantis,\n"  # line 11
        "bad-date@firma.fi,D,,,yesterday\n"  # line 12
        ",NoEmail,,,\n"  # line 13
    )
    errors = tmp_path / "errors.csv"
    summary = import_file(
        session_factory, workspace.id, "contacts", write(tmp_path, "bad.csv", text), error_path=errors
    )
    assert (summary.created, summary.failed) == (3, 6)
    lines = {e.line: e.error for e in summary.errors}
    assert sorted(lines) == [4, 6, 10, 11, 12, 13]
    assert "email" in lines[4] and "phone" in lines[6] and "2 fields" in lines[10]
    assert "country" in lines[11] and "created_at" in lines[12] and "required" in lines[13]
    # Each refused row also has a code and its parameters, so that an interface can word it in another language.
    coded = {e.line: (e.code, e.params) for e in summary.errors}
    assert coded[4] == ("invalid_email", {"column": "email", "value": "not-an-email"})
    assert coded[6] == ("invalid_phone", {"column": "phone", "value": "12"})
    assert coded[10] == ("row_width", {"fields": "2", "header": "5"})
    assert coded[11] == ("not_a_country", {"column": "country", "value": "Atlantis"})
    assert coded[12] == ("not_a_datetime", {"column": "created_at", "value": "yesterday"})
    assert coded[13] == ("required", {"column": "email"})
    assert summary.to_dict()["errors"][0] == {
        "line": 4,
        "error": lines[4],
        "code": "invalid_email",
        "params": {"column": "email", "value": "not-an-email"},
    }
    import csv

    with errors.open(encoding="utf-8", newline="") as fh:
        rows = list(csv.DictReader(fh))
    assert [int(r["_line"]) for r in rows] == [4, 6, 10, 11, 12, 13]
    assert rows[0]["Email"] == "not-an-email" and rows[0]["_error"] == lines[4]
    people = contacts_of(session_factory, workspace.id)
    assert sorted(people) == ["ok1@firma.fi", "ok2@firma.fi", "ok3@firma.fi"]
    assert people["ok1@firma.fi"].first_name == "Two\nLines"
    assert people["ok2@firma.fi"].first_name == '=HYPERLINK("http://x")'  # stored as text; neutralised on export


def test_custom_properties_only_when_defined_and_validated(session_factory, workspace, tmp_path: Path) -> None:
    with session_factory() as s:
        s.add(PropertyDefinition(workspace_id=workspace.id, object_type="contact", name="shoe_size", type="number"))
        s.add(
            PropertyDefinition(
                workspace_id=workspace.id, object_type="contact", name="plan", type="enum", options=["Free", "Pro"]
            )
        )
        s.commit()
    text = (
        "Email,Shoe Size,Plan,Favourite Colour,Tags\na@firma.fi,42,pro,blue,vip; newsletter\nb@firma.fi,big,Free,red,\n"
    )
    summary = import_file(session_factory, workspace.id, "contacts", write(tmp_path, "props.csv", text))
    assert summary.ignored_columns == ["Favourite Colour"] and summary.failed == 1
    assert "shoe" in summary.errors[0].error.lower() and summary.errors[0].line == 3
    a = contacts_of(session_factory, workspace.id)["a@firma.fi"]
    assert a.properties == {"shoe_size": 42, "plan": "Pro"}
    with session_factory() as s:
        assert sorted(s.scalars(select(ContactTag.tag).where(ContactTag.contact_id == a.id))) == ["newsletter", "vip"]


def test_explicit_mapping_overrides(session_factory, workspace, tmp_path: Path) -> None:
    text = "Sähköposti osoite,Nimi,Muu\nx@firma.fi,Xavier,zzz\n"
    with pytest.raises(MappingError):
        import_file(session_factory, workspace.id, "contacts", write(tmp_path, "m.csv", text))
    summary = import_file(
        session_factory,
        workspace.id,
        "contacts",
        tmp_path / "m.csv",
        overrides={"Sähköposti osoite": "email", "Nimi": "first_name", "Muu": ""},
    )
    assert summary.created == 1 and summary.ignored_columns == ["Muu"]
    assert contacts_of(session_factory, workspace.id)["x@firma.fi"].first_name == "Xavier"


def test_unreadable_files_are_refused(session_factory, workspace, tmp_path: Path) -> None:
    with pytest.raises(UnreadableFile):
        import_file(session_factory, workspace.id, "contacts", write(tmp_path, "empty.csv", ""))
    with pytest.raises(UnreadableFile):
        import_file(session_factory, workspace.id, "contacts", tmp_path / "missing.csv")
    (tmp_path / "bin.csv").write_bytes(b"\x00\x01\x02PK\x03\x04")
    with pytest.raises(UnreadableFile):
        import_file(session_factory, workspace.id, "contacts", tmp_path / "bin.csv")


def test_an_import_never_touches_another_workspace(session_factory, workspace, other_workspace, tmp_path: Path) -> None:
    path = write(tmp_path, "hubspot.csv", HUBSPOT)
    import_file(session_factory, other_workspace.id, "contacts", path)
    theirs = contacts_of(session_factory, other_workspace.id)
    summary = import_file(
        session_factory, workspace.id, "contacts", write(tmp_path, "x.csv", HUBSPOT.replace("Helsinki", "Oulu"))
    )
    assert summary.created == 3  # the same addresses are new in this workspace
    assert {e: c.city for e, c in contacts_of(session_factory, other_workspace.id).items()} == {
        e: c.city for e, c in theirs.items()
    }
    assert contacts_of(session_factory, workspace.id)["aino.virtanen@nordkraft.fi"].city == "Oulu"
    assert count(session_factory, Company, workspace.id) == count(session_factory, Company, other_workspace.id) == 1


def test_companies_by_domain(session_factory, workspace, tmp_path: Path) -> None:
    text = (
        "Company name,Company Domain Name,Industry,Number of Employees,Annual Revenue,Country/Region,City\n"
        'Nordkraft Oy,https://www.nordkraft.fi/about,Energy,120,"1 250 000,50",Finland,Helsinki\n'
        "Nordkraft,NORDKRAFT.FI,,130,,,\n"
        "No Domain,,,,,,\n"
        "Bad Count,bad.fi,,many,,,\n"
    )
    path = write(tmp_path, "companies.csv", text)
    summary = import_file(session_factory, workspace.id, "companies", path)
    assert (summary.created, summary.updated, summary.failed) == (1, 1, 2)
    import_file(session_factory, workspace.id, "companies", path)
    with session_factory() as s:
        (company,) = s.scalars(select(Company).where(Company.workspace_id == workspace.id)).all()
    assert (company.domain, company.name, company.industry, company.employees) == (
        "nordkraft.fi",
        "Nordkraft",
        "Energy",
        130,
    )
    assert (company.annual_revenue_minor, company.revenue_currency, company.country) == (125000050, "EUR", "FI")


def test_products_by_sku_with_money_in_minor_units(session_factory, workspace, tmp_path: Path) -> None:
    text = (
        "SKU,Product Name,Category,Price,Currency\n"
        "A-1,Mug,Kitchen,12.50,EUR\n"
        'B-2,Tea,Food,"1,5",\n'
        "C-3,Yen thing,,1200,JPY\n"
        "D-4,Too precise,,1.234,EUR\n"
    )
    path = write(tmp_path, "products.csv", text)
    summary = import_file(session_factory, workspace.id, "products", path)
    assert (summary.created, summary.failed) == (3, 1) and "decimals" in summary.errors[0].error
    again = import_file(session_factory, workspace.id, "products", path)
    assert (again.created, again.updated) == (0, 3)
    with session_factory() as s:
        rows = s.execute(
            select(Product.sku, Product.price_minor, Product.currency)
            .where(Product.workspace_id == workspace.id)
            .order_by(Product.sku)
        ).all()
    assert [tuple(r) for r in rows] == [("A-1", 1250, "EUR"), ("B-2", 150, "EUR"), ("C-3", 1200, "JPY")]


def test_orders_one_row_per_line_with_lifecycle_rules(session_factory, workspace, tmp_path: Path) -> None:
    write(tmp_path, "p.csv", "sku,name,price\nMUG,Mug,12.00\n")
    import_file(session_factory, workspace.id, "products", tmp_path / "p.csv")
    text = (
        "Order ID,Email,Order Date,Currency,SKU,Product Name,Quantity,Unit Price,Shipping\n"
        "1001,Buyer@Firma.fi,2024-01-05,EUR,MUG,Mug,2,12.00,4.90\n"
        "1001,Buyer@Firma.fi,2024-01-05,EUR,TEA,Tea,1,3.50,4.90\n"
        "1002,buyer@firma.fi,2024-03-01,EUR,TEA,Tea,3,3.50,\n"
        "1003,other@firma.fi,2024-03-02,EUR,MUG,Mug,1,12.00,\n"
        "1003,other@firma.fi,2024-03-02,EUR,MUG,Mug,x,12.00,\n"
    )
    path = write(tmp_path, "orders.csv", text)
    summary = import_file(session_factory, workspace.id, "orders", path)
    assert (summary.created, summary.failed) == (2, 2)
    assert {e.line for e in summary.errors} == {5, 6}
    import_file(session_factory, workspace.id, "orders", path)
    with session_factory() as s:
        orders = {o.external_id: o for o in s.scalars(select(Order).where(Order.workspace_id == workspace.id))}
        assert sorted(orders) == ["1001", "1002"]
        first = orders["1001"]
        assert (first.subtotal_minor, first.shipping_minor, first.total_minor) == (2750, 490, 3240)
        lines = s.scalars(select(OrderLine).where(OrderLine.order_id == first.id).order_by(OrderLine.sku)).all()
        assert [(ln.sku, ln.quantity, ln.unit_price_minor, ln.product_id is not None) for ln in lines] == [
            ("MUG", 2, 1200, True),
            ("TEA", 1, 350, False),
        ]
        buyer = s.scalars(
            select(Contact).where(Contact.workspace_id == workspace.id, Contact.email == "buyer@firma.fi")
        ).one()
        assert buyer.lifecycle_stage == "loyal" and first.contact_id == buyer.id
        moves = s.execute(
            select(StageChange.to_stage, StageChange.changed_at)
            .where(StageChange.contact_id == buyer.id)
            .order_by(StageChange.id)
        ).all()
        assert [(m.to_stage, m.changed_at.date().isoformat()) for m in moves] == [
            ("customer", "2024-01-04"),
            ("loyal", "2024-02-29"),
        ]  # dated by the first and second orders (midnight Helsinki is the previous day in UTC)
        assert s.scalar(select(func.count()).select_from(OrderLine).where(OrderLine.workspace_id == workspace.id)) == 3


def test_many_batches_keep_errors_duplicates_and_refused_rows(session_factory, workspace, tmp_path: Path) -> None:
    rows = [
        "a1@firma.fi,Aino,E1,+358 40 1111111",  # line 2
        "not-an-email,Bad,,",  # line 3: refused while reading
        "a2@firma.fi,Bea,,",  # 4
        "a3@firma.fi,Cai,,+1 212 555 0101",  # 5
        "a4@firma.fi,Dan,,",  # 6
        "a5@firma.fi,Eva,DUP,",  # 7
        "a6@firma.fi,Fia,,12",  # 8: refused (phone)
        "a7@firma.fi,Gun,DUP,",  # 9: refused by the database (external id taken by line 7)
        "a8@firma.fi,Hal,,",  # 10
        "A1@FIRMA.FI,Aina,,",  # 11: the contact of line 2 again, in a later batch
        "a9@firma.fi,Ida,,+44 20 7946 0958",  # 12
    ]
    path = write(tmp_path, "batches.csv", "Email,First Name,External ID,Phone\n" + "\n".join(rows) + "\n")
    calls: list[tuple[int, int, int]] = []
    errors = tmp_path / "errors.csv"
    summary = import_file(
        session_factory,
        workspace.id,
        "contacts",
        path,
        batch_size=3,
        error_path=errors,
        progress=lambda n, done, total: calls.append((n, done, total)),
    )
    assert (summary.rows, summary.created, summary.updated, summary.failed) == (11, 7, 1, 3)
    lines = {e.line: e.error for e in summary.errors}
    assert sorted(lines) == [3, 8, 9]
    assert "email" in lines[3] and "phone" in lines[8] and lines[9] == "the database refused the row"
    people = contacts_of(session_factory, workspace.id)
    assert sorted(people) == [f"a{i}@firma.fi" for i in range(1, 10) if i not in (6, 7)]
    assert people["a1@firma.fi"].first_name == "Aina" and people["a1@firma.fi"].external_id == "E1"
    assert people["a1@firma.fi"].phone == "+358401111111" and people["a3@firma.fi"].phone == "+12125550101"
    assert people["a9@firma.fi"].phone == "+442079460958" and people["a5@firma.fi"].external_id == "DUP"
    assert count(session_factory, StageChange, workspace.id) == count(session_factory, Touch, workspace.id) == 7
    counts = [n for n, _done, _total in calls]
    assert counts == sorted(counts) and counts[-1] == 11 and len(calls) >= 3
    assert calls[-1][1] == calls[-1][2] == path.stat().st_size
    import csv

    with errors.open(encoding="utf-8", newline="") as fh:
        assert sorted(int(r["_line"]) for r in csv.DictReader(fh)) == [3, 8, 9]
    again = import_file(session_factory, workspace.id, "contacts", path, batch_size=4)
    assert (again.created, again.failed) == (0, 3)
    assert count(session_factory, Touch, workspace.id) == 7


def test_old_objects_are_frozen_only_while_an_import_runs(session_factory, workspace, tmp_path: Path) -> None:
    import gc

    before = gc.get_freeze_count()
    during: list[int] = []
    rows = "".join(f"p{i}@firma.fi,P{i}\n" for i in range(25))
    path = write(tmp_path, "frozen.csv", "Email,First Name\n" + rows)
    summary = import_file(
        session_factory,
        workspace.id,
        "contacts",
        path,
        batch_size=10,
        progress=lambda *_: during.append(gc.get_freeze_count()),
    )
    assert summary.created == 25 and len(during) == 3
    assert all(n > before for n in during)  # the collector skipped the objects alive at the start
    assert gc.get_freeze_count() == before  # and has them back afterwards
    with pytest.raises(UnreadableFile):
        import_file(session_factory, workspace.id, "contacts", write(tmp_path, "empty.csv", ""))
    assert gc.get_freeze_count() == before  # also when the import fails


def test_batches_written_at_once_keep_later_rows_winning_and_errors_in_line_order(
    session_factory, workspace, tmp_path: Path
) -> None:
    # Two-row batches: on PostgreSQL two of them are written at once, on their own connections. Keys shared by
    # neighbouring batches (an address, an external id, new company domains in opposite orders) must behave as if
    # the file were written one batch after another.
    rows = [
        "b1@alpha.example,Ann,X1,subscriber",  # 2
        "b2@beta.example,Ben,,",  # 3
        "B1@ALPHA.EXAMPLE,Anna,,customer",  # 4: line 2's contact again, in the next batch
        "b3@beta.example,Cid,X3,",  # 5
        "b4@alpha.example,Dan,,nonsense",  # 6: refused while reading (stage)
        "b5@gamma.example,Eli,X3,",  # 7: refused by the database (external id of line 5, the batch before)
        "b6@delta.example,Fay,,",  # 8
        "b7@gamma.example,Gus,,",  # 9
        "b1@alpha.example,Annika,,lead",  # 10: the same contact a third time (never moved back to interest)
        "b8@delta.example,Hal,X1,",  # 11: refused by the database (external id of line 2)
    ]
    path = write(tmp_path, "at-once.csv", "Email,First Name,External ID,Lifecycle Stage\n" + "\n".join(rows) + "\n")
    errors = tmp_path / "errors.csv"
    calls: list[int] = []
    summary = import_file(
        session_factory,
        workspace.id,
        "contacts",
        path,
        batch_size=2,
        error_path=errors,
        progress=lambda n, _done, _total: calls.append(n),
    )
    assert (summary.rows, summary.created, summary.updated, summary.failed) == (10, 5, 2, 3)
    import csv

    with errors.open(encoding="utf-8", newline="") as fh:
        assert [int(r["_line"]) for r in csv.DictReader(fh)] == [6, 7, 11]
    assert calls == sorted(calls) and calls[-1] == 10
    people = contacts_of(session_factory, workspace.id)
    assert sorted(people) == [
        f"b{i}@{d}.example" for i, d in ((1, "alpha"), (2, "beta"), (3, "beta"), (6, "delta"))
    ] + ["b7@gamma.example"]
    b1 = people["b1@alpha.example"]
    assert (b1.first_name, b1.external_id, b1.lifecycle_stage) == ("Annika", "X1", "customer")
    with session_factory() as s:
        found = s.execute(select(Company.domain, Company.id).where(Company.workspace_id == workspace.id)).all()
        companies = {domain: cid for domain, cid in found}
        changes = s.scalars(select(StageChange.to_stage).where(StageChange.contact_id == b1.id)).all()
    assert sorted(companies) == ["alpha.example", "beta.example", "delta.example", "gamma.example"]
    assert all(c.company_id == companies[c.email.split("@")[1]] for c in people.values())
    assert sorted(changes) == ["customer", "interest"]
    assert count(session_factory, Touch, workspace.id) == 5
    again = import_file(session_factory, workspace.id, "contacts", path, batch_size=2)
    assert (again.created, again.updated, again.failed) == (0, 7, 3)
    assert count(session_factory, Contact, workspace.id) == 5 and count(session_factory, Touch, workspace.id) == 5

"""Which column of a file feeds which field: auto-mapping (HubSpot, Salesforce, our own exports) and overrides."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from suppilo.errors import DomainError

Kind = Literal["contacts", "companies", "products", "orders"]
KINDS: tuple[Kind, ...] = ("contacts", "companies", "products", "orders")


def header_key(header: str) -> str:
    """A header folded for matching: lower-case letters and digits only ('Country/Region' -> 'countryregion')."""
    return re.sub(r"[^0-9a-z]", "", header.lower())


# field -> the header keys that mean it. The field name itself always matches.
CONTACT_FIELDS: dict[str, tuple[str, ...]] = {
    "email": ("email", "emailaddress", "mail", "primaryemail", "emailaddr", "sposti", "sahkoposti"),
    "first_name": ("firstname", "givenname", "forename", "fname", "etunimi"),
    "last_name": ("lastname", "surname", "familyname", "lname", "sukunimi"),
    "phone": ("phone", "phonenumber", "telephone", "tel", "businessphone", "workphone", "puhelin"),
    "mobile_phone": ("mobilephonenumber", "mobilephone", "mobile", "cellphone", "cell", "mobilenumber"),
    "job_title": ("jobtitle", "title", "position", "role"),
    "company_name": ("companyname", "company", "accountname", "account", "organization", "organisation"),
    "company_domain": ("companydomainname", "companydomain", "website", "websiteurl", "domain"),
    "country": ("country", "countryregion", "mailingcountry", "countrycode", "maa"),
    "region": ("region", "state", "stateregion", "mailingstate", "province", "county"),
    "city": ("city", "mailingcity", "town", "kaupunki"),
    "language": ("language", "preferredlanguage", "locale", "kieli"),
    "timezone": ("timezone", "tz"),
    "lifecycle_stage": ("lifecyclestage", "lifecycle", "stage"),
    "owner": ("owner", "contactowner", "owneremail"),
    "source": ("source", "originalsource", "leadsource", "channel", "firsttouchchannel"),
    "created_at": ("createdat", "createdate", "createddate", "created", "datecreated"),
    "tags": ("tags", "tag", "labels"),
    "external_id": ("externalid", "userid"),
}

COMPANY_FIELDS: dict[str, tuple[str, ...]] = {
    "name": ("name", "companyname", "accountname", "company", "account", "organization", "organisation"),
    "domain": ("domain", "companydomainname", "companydomain", "website", "websiteurl", "url"),
    "industry": ("industry", "sector"),
    "employees": ("employees", "numberofemployees", "employeecount", "headcount"),
    "annual_revenue": ("annualrevenue", "revenue"),
    "revenue_currency": ("revenuecurrency", "currency", "currencyisocode"),
    "country": ("country", "countryregion", "billingcountry", "countrycode"),
    "city": ("city", "billingcity"),
    "owner": ("owner", "companyowner", "accountowner", "owneremail"),
    "external_id": ("externalid", "groupid"),
    "created_at": ("createdat", "createdate", "createddate", "created"),
}

PRODUCT_FIELDS: dict[str, tuple[str, ...]] = {
    "sku": ("sku", "productsku", "productid", "itemid", "productcode", "articlenumber", "variantsku"),
    "name": ("name", "productname", "title", "itemname"),
    "category": ("category", "productcategory", "producttype", "type"),
    "price": ("price", "unitprice", "listprice", "variantprice"),
    "currency": ("currency", "currencycode", "currencyisocode"),
    "url": ("url", "producturl", "link"),
    "image_url": ("imageurl", "image", "imagelink", "imagesrc"),
}

ORDER_FIELDS: dict[str, tuple[str, ...]] = {
    "order_id": ("orderid", "ordernumber", "order", "externalid", "orderexternalid"),
    "email": ("email", "customeremail", "emailaddress", "buyeremail"),
    "placed_at": ("placedat", "orderdate", "date", "createdat", "createddate", "processedat", "paidat"),
    "status": ("status", "orderstatus"),
    "currency": ("currency", "currencycode"),
    "sku": ("sku", "lineitemsku", "productsku", "productid"),
    "name": ("name", "productname", "lineitemname", "itemname", "product"),
    "category": ("category", "productcategory"),
    "quantity": ("quantity", "qty", "lineitemquantity"),
    "unit_price": ("unitprice", "price", "lineitemprice"),
    "total": ("total", "ordertotal", "totalprice", "amount"),
    "discount": ("discount", "discountamount", "discounttotal", "discounts"),
    "tax": ("tax", "taxes", "taxamount", "vat"),
    "shipping": ("shipping", "shippingamount", "shippingcost"),
    "coupon_code": ("couponcode", "coupon", "discountcode"),
    "channel": ("channel", "saleschannel"),
}

FIELDS: dict[str, dict[str, tuple[str, ...]]] = {
    "contacts": CONTACT_FIELDS,
    "companies": COMPANY_FIELDS,
    "products": PRODUCT_FIELDS,
    "orders": ORDER_FIELDS,
}

# The key that makes a row findable again; a file without a column for it cannot be imported.
REQUIRED: dict[str, tuple[str, ...]] = {
    "contacts": ("email",),
    "companies": ("domain",),
    "products": ("sku",),
    "orders": ("order_id",),
}

IGNORE = ("", "-", "ignore")


class MappingError(DomainError):
    """An override names an unknown field, or the key column is missing."""

    default_code = "invalid_mapping"


@dataclass(frozen=True, slots=True)
class PropertySpec:
    """A custom property definition the file can fill."""

    name: str
    type: str
    options: tuple[str, ...] = ()


@dataclass
class ColumnMapping:
    """Column index -> field; column index -> custom property; the columns left out."""

    fields: dict[int, str] = field(default_factory=dict)
    properties: dict[int, PropertySpec] = field(default_factory=dict)
    ignored: list[str] = field(default_factory=list)

    def describe(self, header: list[str]) -> dict[str, str]:
        """``{"Column": "field"}`` for the summary (properties as ``properties.<name>``)."""
        out = {header[i]: f for i, f in self.fields.items()}
        out.update({header[i]: f"properties.{p.name}" for i, p in self.properties.items()})
        return out

    def index_of(self, name: str) -> int | None:
        """The column feeding field ``name``."""
        for i, f in self.fields.items():
            if f == name:
                return i
        return None


def parse_overrides(items: list[str] | None) -> dict[str, str]:
    """``["Column=field", ...]`` -> ``{"Column": "field"}`` (``Column=`` ignores the column)."""
    out: dict[str, str] = {}
    for item in items or []:
        if "=" not in item:
            raise MappingError("map", f"{item!r} is not of the form 'Column=field'")
        column, _, target = item.rpartition("=")
        if not column.strip():
            raise MappingError("map", f"{item!r} names no column")
        out[column.strip()] = target.strip()
    return out


def build_mapping(
    kind: str,
    header: list[str],
    *,
    overrides: dict[str, str] | None = None,
    properties: list[PropertySpec] | None = None,
) -> ColumnMapping:
    """Map the columns of ``header`` for an import of ``kind``.

    Overrides (by exact or folded header) win; then a column matches a field by its folded name or an alias,
    then a custom property by its folded name. The first column claiming a field wins; later ones are ignored.
    """
    if kind not in FIELDS:
        raise MappingError("kind", f"unknown import kind {kind!r}; choose one of {', '.join(KINDS)}")
    spec = FIELDS[kind]
    alias_to_field = {header_key(name): name for name in spec}
    for name, aliases in spec.items():
        for alias in aliases:
            alias_to_field.setdefault(alias, name)
    props = {header_key(p.name): p for p in properties or []}
    wanted = {header_key(k): v for k, v in (overrides or {}).items()}
    unknown_override = [k for k in (overrides or {}) if header_key(k) not in {header_key(h) for h in header}]
    if unknown_override:
        raise MappingError("map", f"the file has no column {unknown_override[0]!r}")
    mapping = ColumnMapping()
    taken: set[str] = set()
    for i, column in enumerate(header):
        key = header_key(column)
        if key in wanted:
            target = wanted[key]
            if target.lower() in IGNORE:
                mapping.ignored.append(column)
                continue
            prop_name = target.removeprefix("properties.")
            if target in spec and not target.startswith("properties."):
                if target in taken:
                    raise MappingError("map", f"two columns are mapped to {target!r}")
                mapping.fields[i] = target
                taken.add(target)
            elif header_key(prop_name) in props:
                mapping.properties[i] = props[header_key(prop_name)]
            else:
                raise MappingError(
                    "map",
                    f"{target!r} is neither a field of {kind} ({', '.join(spec)}) nor a defined custom property",
                )
            continue
        target_field = alias_to_field.get(key)
        if target_field is not None and target_field not in taken:
            mapping.fields[i] = target_field
            taken.add(target_field)
        elif key in props and props[key] not in mapping.properties.values():
            mapping.properties[i] = props[key]
        else:
            mapping.ignored.append(column)
    missing = [f for f in REQUIRED[kind] if f not in taken]
    if missing:
        raise MappingError(
            "file",
            f"no column for {missing[0]!r} (the key of {kind}); map one with --map 'Column={missing[0]}'",
            code="missing_column",
        )
    return mapping

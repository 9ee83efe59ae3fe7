"""Service refusals in the user's language. A ``DomainError`` carries an English message (what the API answers,
with its code) plus a ``code`` and ``params``; the web interface words the codes it knows through the gettext
catalogues and falls back to the English message for the others."""

from __future__ import annotations

from suppilo.adapters.web.i18n import supported, translations
from suppilo.errors import DomainError


def N_(message: str) -> str:
    """Mark a message for the catalogues (translated when shown)."""
    return message


# Code → message (``%(name)s`` placeholders take the error's parameters); ``code.reason`` when one code has several
# reasons (its ``reason`` parameter), e.g. the API's ``unreadable_file``.
MESSAGES: dict[str, str] = {
    # contacts and companies
    "invalid_email": N_("Give a valid email address."),
    "invalid_phone": N_("Give a valid phone number (with its country code when it is from another country)."),
    "invalid_domain": N_("Give a domain name such as example.com."),
    "invalid_country": N_("Give the country as its two-letter ISO code, such as FI or SE."),
    "invalid_language": N_("Give a language code such as fi or sv."),
    "invalid_cursor": N_("This page link is no longer valid; start again from the first page."),
    # CSV import: the file and the column mapping
    "unreadable_file.empty": N_("The file is empty."),
    "unreadable_file.not_text": N_("The file is not a text file (it contains NUL bytes; UTF-16 is not supported)."),
    "unreadable_file.no_header": N_("The file has no header row."),
    "unreadable_file.not_csv": N_("The file does not look like a CSV file (no delimiter in the header)."),
    "too_many_columns": N_("The file has %(columns)s columns; at most %(most)s can be mapped."),
    "already_started": N_("This import has already been started."),
    "mapping_stale": N_("The form does not match the file's columns; upload the file again."),
    "unknown_target": N_("“%(target)s” is not a field you can map to."),
    "target_taken": N_("Column “%(column)s” is already mapped to this field."),
    "duplicate_column": N_("Two columns are named “%(column)s”; rename one in the file or ignore it."),
    "email_unmapped": N_("Map one column to Email: contacts are matched and updated by their email."),
    "key_unmapped": N_("Map one column to “%(field)s”: the rows are matched and updated by it."),
    # reports: the period and the A/B test calculator
    "period_reversed": N_("The start date %(from)s is after the end date %(to)s."),
    "duplicate_arm": N_("Two arms are named “%(name)s”; give each arm its own name."),
    "unknown_control": N_("“%(control)s” is not one of the arms; give the name of an arm as the control."),
    "conversions_exceed_trials": N_("Conversions (%(conversions)s) cannot exceed trials (%(trials)s)."),
    "missing_exchange_rate": N_(
        "There is no exchange rate from %(from)s to %(to)s on or before %(date)s: import rates into %(home)s."
    ),
    # CSV import: refused rows (``row.<code>`` of the importer's row errors; ``column`` names the field)
    "row.required": N_("%(column)s: a value is required."),
    "row.too_long": N_("%(column)s: longer than %(limit)s characters."),
    "row.not_a_number": N_("%(column)s: “%(value)s” is not a number."),
    "row.not_a_whole_number": N_("%(column)s: “%(value)s” is not a whole number."),
    "row.below_minimum": N_("%(column)s: “%(value)s” must be at least %(minimum)s."),
    "row.not_a_currency": N_("%(column)s: “%(value)s” is not an ISO 4217 currency code."),
    "row.too_many_decimals": N_("%(column)s: “%(value)s” has more than %(digits)s decimals for %(currency)s."),
    "row.not_a_datetime": N_("%(column)s: “%(value)s” is not a date (use YYYY-MM-DD or YYYY-MM-DDTHH:MM:SS+00:00)."),
    "row.not_a_date": N_("%(column)s: “%(value)s” is not a date (use YYYY-MM-DD)."),
    "row.not_a_boolean": N_("%(column)s: “%(value)s” is not true or false."),
    "row.not_a_country": N_("%(column)s: “%(value)s” is not a country (a two-letter ISO code or a country name)."),
    "row.not_a_timezone": N_("%(column)s: “%(value)s” is not an IANA time zone."),
    "row.not_an_option": N_("%(column)s: “%(value)s” is not one of %(options)s."),
    "row.not_a_stage": N_("%(column)s: “%(value)s” is not a lifecycle stage of this workspace."),
    "row.negative": N_("%(column)s: “%(value)s” is negative."),
    "row.required_for_line": N_("%(column)s: required for an order line."),
    "row.required_for_priced_line": N_("%(column)s: required for an order line with a unit price."),
    "row.invalid_email": N_("%(column)s: “%(value)s” is not a valid email address."),
    "row.invalid_phone": N_("%(column)s: “%(value)s” is not a valid phone number."),
    "row.invalid_domain": N_("%(column)s: “%(value)s” is not a valid domain name."),
    "row.invalid_country": N_("%(column)s: “%(value)s” is not a two-letter ISO country code."),
    "row.invalid_language": N_("%(column)s: “%(value)s” is not a language code."),
    "row.row_width": N_("The row has %(fields)s fields, the header has %(header)s."),
    "row.order_line_invalid": N_("Order %(order)s: its line %(line)s is invalid."),
    "row.order_lines_differ": N_("Order %(order)s: the currency and the email must be the same on every line."),
    "row.order_other_line_invalid": N_("Another line of order %(order)s is invalid."),
    "row.row_refused": N_("The database refused the row."),
}


def coded_text(code: str, params: dict[str, str], language: str, fallback: str) -> str:
    """The message of ``code`` in ``language`` with ``params``; ``fallback`` (English) for an unknown code."""
    msgid = MESSAGES.get(f"{code}.{params['reason']}") if "reason" in params else MESSAGES.get(code)
    if msgid is None:
        return fallback
    text = translations(supported(language)).gettext(msgid)
    if "%(" not in msgid:
        return text
    try:
        return text % params
    except (KeyError, ValueError, TypeError):
        return fallback


def error_text(exc: DomainError, language: str) -> str:
    """A service refusal as the user reads it."""
    return coded_text(exc.code, exc.params, language, exc.message)

"""Template rendering and validation in a locked-down Jinja2 sandbox.

Security model (see docs/messaging.md): templates are written by workspace users and rendered with contact data,
so both are untrusted. Rendering uses an ``ImmutableSandboxedEnvironment`` with

* a context of plain data only (dicts, lists, strings, numbers, dates) built from whitelisted fields;
* no globals but a capped ``range``; filters from an allow-list (no ``attr``, ``format``, ``safe``, ...);
* no attribute whose name starts with ``_`` or is ``format``/``format_map``/``mro``/..., and calls only to
  a short list of harmless methods of strings, dicts and lists;
* no macros, includes, imports, inheritance or recursive loops;
* ``*`` and ``**`` checked so no huge string or number is built; every ``for`` loop draws from one
  iteration budget per render; the output size is capped.

The same rules are checked when a template is saved (:func:`validate_source`) and enforced again when it is
rendered, so a template stored before a rule existed still cannot reach anything.
"""

from __future__ import annotations

import contextvars
import copy
import functools
import html as html_lib
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, time
from decimal import Decimal
from html.parser import HTMLParser
from typing import Any, Protocol
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import css_inline
from babel import Locale, UnknownLocaleError
from babel.dates import format_date, format_datetime
from babel.numbers import format_currency, format_decimal, format_percent, get_currency_precision
from jinja2 import ChainableUndefined, nodes, pass_context, pass_environment, pass_eval_context
from jinja2 import filters as jinja_filters
from jinja2.exceptions import SecurityError, TemplateError, TemplateSyntaxError
from jinja2.runtime import LoopContext
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import Markup

from suppilo.errors import DomainError

# --- limits -----------------------------------------------------------------------------------------------------

MAX_LOOP_ITERATIONS = 10_000  # all ``for`` loops of one render together
MAX_RANGE = 1_000  # the largest ``range(...)``
MAX_OUTPUT_CHARS = 1_000_000  # per rendered part
MAX_SEQUENCE_LEN = 100_000  # ``'x' * n`` and friends
MAX_INT_BITS = 4_096  # ``a ** b`` and ``a * b`` on integers
MAX_SOURCE_CHARS = 500_000

# --- what templates may use --------------------------------------------------------------------------------------

CONTACT_FIELDS = frozenset(
    {"id", "first_name", "last_name", "full_name", "email", "language", "country", "city", "region", "timezone"}
    | {"job_title", "lifecycle_stage", "properties"}
)
COMPANY_FIELDS = frozenset({"name", "industry", "domain", "country", "city"})
WORKSPACE_FIELDS = frozenset(
    {"name", "postal_address", "address_line1", "address_line2", "postal_code", "city", "region", "country"}
    | {"website", "currency"}
)
# Roots whose attributes are checked, and roots that callers fill with plain dicts of their own shape.
CHECKED_ROOTS: dict[str, frozenset[str]] = {
    "contact": CONTACT_FIELDS,
    "company": COMPANY_FIELDS,
    "workspace": WORKSPACE_FIELDS,
}
FREE_ROOTS = frozenset({"order", "cart", "offer", "recommendations", "survey", "referral", "message"})
URL_ROOTS = frozenset({"unsubscribe_url", "preferences_url", "view_in_browser_url"})
KNOWN_ROOTS = frozenset(CHECKED_ROOTS) | FREE_ROOTS | URL_ROOTS | {"range", "today", "now", "language"}

FORBIDDEN_ATTRIBUTES = frozenset(
    {"format", "format_map", "mro", "globals", "func_globals", "gi_frame", "gi_code", "cr_frame", "f_globals"}
    | {"f_locals", "f_back", "tb_frame", "im_func", "func_code", "environment", "undefined"}
)
FORBIDDEN_NAMES = frozenset({"cycler", "joiner", "namespace", "lipsum", "dict", "self", "varargs", "kwargs", "caller"})
# Methods of plain values a template may call.
SAFE_METHODS = frozenset(
    {"upper", "lower", "title", "capitalize", "strip", "lstrip", "rstrip", "startswith", "endswith", "split"}
    | {"rsplit", "splitlines", "isdigit", "isalpha", "isalnum", "isspace", "get", "items", "keys", "values"}
    | {"count", "index", "find", "cycle", "changed"}
)
SAFE_FILTERS = frozenset(
    {"abs", "batch", "capitalize", "count", "default", "d", "dictsort", "e", "escape", "filesizeformat", "first"}
    | {"float", "forceescape", "groupby", "int", "items", "join", "last", "length", "list", "lower", "map", "max"}
    | {"min", "reject", "rejectattr", "replace", "reverse", "round", "select", "selectattr", "slice", "sort"}
    | {"string", "striptags", "sum", "title", "trim", "truncate", "unique", "upper", "urlencode", "urlize"}
    | {"wordcount", "wordwrap"}
)
OWN_FILTERS = frozenset({"money", "date", "datetime", "time", "number", "percent"})
FORBIDDEN_NODES: dict[type[nodes.Node], str] = {
    nodes.Macro: "macros are not allowed",
    nodes.CallBlock: "call blocks are not allowed",
    nodes.Import: "imports are not allowed",
    nodes.FromImport: "imports are not allowed",
    nodes.Include: "includes are not allowed",
    nodes.Extends: "template inheritance is not allowed",
    nodes.Block: "blocks are not allowed",
    nodes.FilterBlock: "filter blocks are not allowed",
    nodes.ScopedEvalContextModifier: "autoescape blocks are not allowed",
    nodes.EvalContextModifier: "autoescape blocks are not allowed",
}
ATTRIBUTE_ARG_FILTERS = frozenset(
    {"map", "selectattr", "rejectattr", "sort", "groupby", "sum", "unique", "min", "max", "dictsort"}
)


class TemplateContent(Protocol):
    """What :func:`render_message` needs of a template variant (a ``TemplateVariant`` row or any object)."""

    subject: str
    preheader: str
    html: str
    text: str | None


@dataclass(frozen=True, slots=True)
class RenderedMessage:
    """A rendered message: subject and preheader are single lines; html has its CSS inlined."""

    subject: str
    preheader: str
    html: str
    text: str
    language: str = ""
    kind: str = ""
    template_id: int | None = None
    template_key: str = ""
    template_version: int | None = None


@dataclass(frozen=True, slots=True)
class TemplateIssue:
    """One problem of a template: the path of the part (``variants.fi.html``), a message and a line number."""

    path: str
    message: str
    line: int | None = None

    def as_dict(self) -> dict[str, Any]:
        return {"path": self.path, "message": self.message, "line": self.line}


class TemplateInvalid(DomainError):
    """A template was refused at save or publish; ``issues`` lists every problem found."""

    def __init__(self, issues: list[TemplateIssue]) -> None:
        first = issues[0]
        where = f" (line {first.line})" if first.line else ""
        extra = f" (and {len(issues) - 1} more)" if len(issues) > 1 else ""
        super().__init__(first.path, f"{first.message}{where}{extra}", code="template_invalid")
        self.issues = issues


class TemplateRenderError(DomainError):
    """Rendering one message failed (a refused construct, a limit, a bad value); other messages are unaffected."""

    default_code = "template_render_failed"


class RenderLimitError(SecurityError):
    """A render exceeded a loop, size or number limit."""


# --- the environment ---------------------------------------------------------------------------------------------


@dataclass
class _RenderState:
    locale: Locale
    timezone: ZoneInfo
    currency: str
    iterations_left: int = MAX_LOOP_ITERATIONS


_state: contextvars.ContextVar[_RenderState | None] = contextvars.ContextVar("suppilo_render_state", default=None)


class SilentUndefined(ChainableUndefined):
    """A missing value renders as nothing, chains (``order.lines.first``) and works with ``default``."""

    __slots__ = ()

    def __str__(self) -> str:
        return ""


def _capped_range(*args: int) -> range:
    r = range(*args)
    if len(r) > MAX_RANGE:
        raise RenderLimitError(f"range() is limited to {MAX_RANGE} items")
    return r


def _seq_len(value: Any) -> int | None:
    if isinstance(value, str | bytes | list | tuple):
        return len(value)
    return None


class MailSandbox(ImmutableSandboxedEnvironment):
    """The sandbox templates render in (see the module documentation)."""

    intercepted_binops = frozenset({"*", "**", "//", "%"})

    def __init__(self, *, autoescape: bool) -> None:
        super().__init__(
            autoescape=autoescape,
            undefined=SilentUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=False,
            auto_reload=False,
            cache_size=0,
        )
        self.globals.clear()
        self.globals["range"] = _capped_range
        self.filters = {name: jinja_filters.FILTERS[name] for name in SAFE_FILTERS}
        self.filters["replace"] = _safe_replace
        self.filters["wordwrap"] = _safe_wordwrap
        # Context-bound so that Jinja never folds them into constants at compile time: their result depends on
        # the render (locale, time zone, iteration budget), and compiled templates are cached.
        for name, fn in {**_own_filters(), "_loop_guard": _loop_guard}.items():
            self.filters[name] = _per_render(fn)

    def is_safe_attribute(self, obj: Any, attr: str, value: Any) -> bool:
        if attr.startswith("_") or attr in FORBIDDEN_ATTRIBUTES:
            return False
        return bool(super().is_safe_attribute(obj, attr, value))

    def getattr(self, obj: Any, attribute: str) -> Any:
        _refuse_name(attribute)
        return super().getattr(obj, attribute)

    def getitem(self, obj: Any, argument: Any) -> Any:
        if isinstance(argument, str):
            _refuse_name(argument)
        return super().getitem(obj, argument)

    def unsafe_undefined(self, obj: Any, attribute: str) -> Any:
        raise SecurityError(f"access to attribute {attribute!r} is not allowed")

    def call(self, __context: Any, __obj: Any, *args: Any, **kwargs: Any) -> Any:
        obj = __obj
        if obj is _capped_range:
            return __context.call(obj, *args, **kwargs)
        name = getattr(obj, "__name__", "")
        owner = getattr(obj, "__self__", None)
        if name in SAFE_METHODS and isinstance(owner, str | dict | list | tuple | LoopContext):
            return super().call(__context, obj, *args, **kwargs)
        raise SecurityError(f"calling {name or type(obj).__name__!r} is not allowed in a template")

    def call_binop(self, context: Any, operator: str, left: Any, right: Any) -> Any:
        if operator == "**":
            if isinstance(left, int) and isinstance(right, int):
                if right < 0 or max(abs(left).bit_length(), 1) * right > MAX_INT_BITS:
                    raise RenderLimitError("the power is too large")
            elif isinstance(right, int | float) and abs(right) > 1_000:
                raise RenderLimitError("the power is too large")
            return left**right
        if operator == "*":
            for seq, n in ((left, right), (right, left)):
                length = _seq_len(seq)
                if length is not None and isinstance(n, int) and length * max(n, 0) > MAX_SEQUENCE_LEN:
                    raise RenderLimitError("the repeated value is too long")
            both_int = isinstance(left, int) and isinstance(right, int)
            if both_int and abs(left).bit_length() + abs(right).bit_length() > MAX_INT_BITS:
                raise RenderLimitError("the product is too large")
            return left * right
        if operator == "%":
            if isinstance(left, str):
                raise SecurityError("string formatting with % is not allowed")
            return left % right
        return left // right

    def _parse(self, source: str, name: str | None, filename: str | None) -> nodes.Template:
        tree = super()._parse(source, name, filename)
        # Every loop draws from the render's iteration budget.
        for loop in tree.find_all(nodes.For):
            loop.iter = nodes.Filter(loop.iter, "_loop_guard", [], [], None, None, lineno=loop.lineno)
        return tree


def _per_render(fn: Callable[..., Any]) -> Callable[..., Any]:
    @pass_context
    @functools.wraps(fn)
    def wrapper(_context: Any, *args: Any, **kwargs: Any) -> Any:
        return fn(*args, **kwargs)

    return wrapper


def _refuse_name(name: str) -> None:
    """Private and dangerous names are refused whatever they are looked up on (even a missing value)."""
    if name.startswith("_") or name in FORBIDDEN_ATTRIBUTES:
        raise SecurityError(f"access to attribute {name!r} is not allowed")


def _loop_guard(iterable: Any) -> Iterator[Any]:
    state = _state.get()
    if isinstance(iterable, SilentUndefined) or iterable is None:
        return iter(())
    if isinstance(iterable, Mapping):
        iterable = list(iterable)
    return _counting(iter(iterable), state)


def _counting(it: Iterator[Any], state: _RenderState | None) -> Iterator[Any]:
    for item in it:
        if state is not None:
            state.iterations_left -= 1
            if state.iterations_left < 0:
                raise RenderLimitError(f"loops are limited to {MAX_LOOP_ITERATIONS} iterations per message")
        yield item


def _safe_replace(eval_ctx: Any, s: Any, old: str, new: str, count: int | None = None) -> Any:
    text = str(s)
    occurrences = text.count(str(old)) if old else len(text) + 1
    if len(text) + occurrences * len(str(new)) > MAX_SEQUENCE_LEN:
        raise RenderLimitError("the replaced text is too long")
    return jinja_filters.do_replace(eval_ctx, s, old, new, count)


_safe_replace = pass_eval_context(_safe_replace)


def _safe_wordwrap(environment: Any, s: str, width: int = 79, *args: Any, **kwargs: Any) -> str:
    if not isinstance(width, int) or width < 1:
        raise RenderLimitError("wordwrap needs a positive width")
    return jinja_filters.do_wordwrap(environment, s, width, *args, **kwargs)


_safe_wordwrap = pass_environment(_safe_wordwrap)


# --- Babel filters -----------------------------------------------------------------------------------------------


def _current() -> _RenderState:
    state = _state.get()
    if state is None:
        return _RenderState(locale=Locale.parse("en"), timezone=ZoneInfo("UTC"), currency="EUR")
    return state


def _is_missing(value: Any) -> bool:
    return value is None or isinstance(value, SilentUndefined) or value == ""


def _to_decimal(value: Any) -> Decimal:
    if isinstance(value, bool):
        raise TypeError("a number is required")
    if isinstance(value, int | Decimal):
        return Decimal(value)
    if isinstance(value, float):
        return Decimal(repr(value))
    return Decimal(str(value).strip())


def money(value: Any, currency: Any = None, *, minor: bool = True) -> str:
    """Minor units as money in the message's locale: ``{{ order.total_minor | money(order.currency) }}``."""
    if _is_missing(value):
        return ""
    state = _current()
    code = str(currency).upper() if not _is_missing(currency) else state.currency
    amount = _to_decimal(value)
    if minor:
        amount = amount.scaleb(-get_currency_precision(code))
    return format_currency(amount, code, locale=state.locale)


def _to_datetime(value: Any) -> datetime | date:
    if isinstance(value, datetime | date):
        return value
    text = str(value).strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    if len(text) == 10:
        return date.fromisoformat(text)
    return datetime.fromisoformat(text)


def _localise(value: datetime | date, state: _RenderState) -> datetime | date:
    if isinstance(value, datetime):
        if value.tzinfo is None:
            value = value.replace(tzinfo=UTC)
        return value.astimezone(state.timezone)
    return value


def date_filter(value: Any, fmt: str = "medium") -> str:
    """A date in the contact's locale: ``{{ order.placed_at | date("long") }}`` (short, medium, long, full)."""
    if _is_missing(value):
        return ""
    state = _current()
    when = _localise(_to_datetime(value), state)
    day = when.date() if isinstance(when, datetime) else when
    return format_date(day, format=_check_format(fmt), locale=state.locale)


def datetime_filter(value: Any, fmt: str = "medium") -> str:
    """A date and time in the contact's locale and time zone."""
    if _is_missing(value):
        return ""
    state = _current()
    when = _localise(_to_datetime(value), state)
    if not isinstance(when, datetime):
        when = datetime.combine(when, time(0), tzinfo=state.timezone)
    return format_datetime(when, format=_check_format(fmt), tzinfo=state.timezone, locale=state.locale)


def time_filter(value: Any, fmt: str = "short") -> str:
    """A time of day in the contact's locale and time zone."""
    if _is_missing(value):
        return ""
    state = _current()
    when = _localise(_to_datetime(value), state)
    if not isinstance(when, datetime):
        return ""
    from babel.dates import format_time

    return format_time(when, format=_check_format(fmt), tzinfo=state.timezone, locale=state.locale)


def _check_format(fmt: Any) -> str:
    text = str(fmt)
    if text in {"short", "medium", "long", "full"}:
        return text
    if len(text) > 64 or not re.fullmatch(r"[A-Za-z ,.:/'\-]+", text):
        raise RenderLimitError(f"date format {text!r} is not allowed")
    return text


def number(value: Any, decimals: int | None = None) -> str:
    """A number in the contact's locale: ``{{ n | number }}``, ``{{ x | number(2) }}``."""
    if _is_missing(value):
        return ""
    state = _current()
    amount = _to_decimal(value)
    if decimals is not None:
        if not 0 <= int(decimals) <= 10:
            raise RenderLimitError("decimals must be between 0 and 10")
        fmt = "#,##0" + ("." + "0" * int(decimals) if int(decimals) else "")
        return format_decimal(amount, format=fmt, locale=state.locale, decimal_quantization=True)
    return format_decimal(amount, locale=state.locale)


def percent(value: Any, decimals: int = 0) -> str:
    """A ratio as a percentage in the contact's locale: ``{{ 0.25 | percent }}`` → ``25 %`` in Finnish."""
    if _is_missing(value):
        return ""
    state = _current()
    if not 0 <= int(decimals) <= 6:
        raise RenderLimitError("decimals must be between 0 and 6")
    pattern = state.locale.percent_formats[None].pattern  # e.g. "#,##0 %" in Finnish
    if int(decimals):
        pattern = pattern.replace("0", "0." + "0" * int(decimals), 1)
    return format_percent(_to_decimal(value), format=pattern, locale=state.locale)


def _own_filters() -> dict[str, Callable[..., Any]]:
    return {
        "money": money,
        "date": date_filter,
        "datetime": datetime_filter,
        "time": time_filter,
        "number": number,
        "percent": percent,
    }


_html_env = MailSandbox(autoescape=True)
_text_env = MailSandbox(autoescape=False)


@functools.lru_cache(maxsize=512)
def _compile(source: str, html: bool) -> Any:
    env = _html_env if html else _text_env
    return env.from_string(source)


# --- validation ----------------------------------------------------------------------------------------------------


def validate_source(
    source: str,
    *,
    path: str,
    html: bool = False,
    contact_properties: Iterable[str] = (),
) -> list[TemplateIssue]:
    """Every problem of one template part: syntax, unknown variables and fields, forbidden constructs."""
    if len(source) > MAX_SOURCE_CHARS:
        return [TemplateIssue(path, f"is longer than {MAX_SOURCE_CHARS} characters")]
    env = _html_env if html else _text_env
    try:
        tree = jinja2_parse(env, source)
    except TemplateSyntaxError as exc:
        return [TemplateIssue(path, f"syntax error: {exc.message}", exc.lineno)]
    issues: list[TemplateIssue] = []
    props = frozenset(contact_properties)

    def add(node: nodes.Node, message: str) -> None:
        issue = TemplateIssue(path, message, getattr(node, "lineno", None))
        if issue not in issues:
            issues.append(issue)

    for node_type, message in FORBIDDEN_NODES.items():
        for node in tree.find_all(node_type):
            add(node, message)
    for loop in tree.find_all(nodes.For):
        if loop.recursive:
            add(loop, "recursive loops are not allowed")
        if (
            isinstance(loop.iter, nodes.Call)
            and isinstance(loop.iter.node, nodes.Name)
            and loop.iter.node.name == "range"
        ):
            found = [_const_int(a) for a in loop.iter.args]
            args = [a for a in found if a is not None]
            if args and len(args) == len(found):
                try:
                    too_many = len(range(*args)) > MAX_RANGE
                except (TypeError, ValueError, OverflowError):
                    too_many = True
                if too_many:
                    add(loop, f"range() is limited to {MAX_RANGE} items")
    for binexpr in tree.find_all(nodes.BinExpr):
        if isinstance(binexpr, nodes.Pow) and _const_int(binexpr) == _TOO_LARGE:
            add(binexpr, "the power is too large")
        left = binexpr.left
        if isinstance(binexpr, nodes.Mod) and isinstance(left, nodes.Const) and isinstance(left.value, str):
            add(binexpr, "string formatting with % is not allowed")
        if isinstance(binexpr, nodes.Mul):
            for seq, n in ((binexpr.left, binexpr.right), (binexpr.right, binexpr.left)):
                count = _const_int(n)
                if isinstance(seq, nodes.Const | nodes.List | nodes.Tuple) and count is not None:
                    length = len(seq.value) if isinstance(seq, nodes.Const) and isinstance(seq.value, str) else None
                    if isinstance(seq, nodes.List | nodes.Tuple):
                        length = len(seq.items)
                    if length is not None and length * max(count, 0) > MAX_SEQUENCE_LEN:
                        add(binexpr, "the repeated value is too long")
    for name_node in tree.find_all(nodes.Name):
        if name_node.name.startswith("_"):
            add(name_node, f"names starting with '_' are not allowed: {name_node.name}")
        elif name_node.name in FORBIDDEN_NAMES:
            add(name_node, f"{name_node.name!r} is not allowed in templates")
    for attr_node in tree.find_all(nodes.Getattr):
        _check_attribute_name(attr_node, attr_node.attr, add)
    for item_node in tree.find_all(nodes.Getitem):
        if isinstance(item_node.arg, nodes.Const) and isinstance(item_node.arg.value, str):
            _check_attribute_name(item_node, item_node.arg.value, add)
    for filter_node in [*tree.find_all(nodes.Filter), *tree.find_all(nodes.Test)]:
        if isinstance(filter_node, nodes.Filter):
            if filter_node.name not in SAFE_FILTERS and filter_node.name not in OWN_FILTERS:
                add(filter_node, f"the filter {filter_node.name!r} is not allowed")
            if filter_node.name in ATTRIBUTE_ARG_FILTERS:
                for const in filter_node.find_all(nodes.Const):
                    if isinstance(const.value, str) and (const.value[:1] == "_" or "._" in const.value):
                        add(filter_node, f"attribute {const.value!r} is not allowed")
    for call in tree.find_all(nodes.Call):
        if isinstance(call.node, nodes.Getattr) and call.node.attr not in SAFE_METHODS:
            add(call, f"calling {call.node.attr!r} is not allowed")
        elif isinstance(call.node, nodes.Name) and call.node.name != "range":
            add(call, f"calling {call.node.name!r} is not allowed")
        elif not isinstance(call.node, nodes.Getattr | nodes.Name):
            add(call, "only range() and simple methods of values may be called")

    declared = _undeclared(env, tree)
    for name in sorted(declared):
        if name not in KNOWN_ROOTS and not name.startswith("_") and name not in FORBIDDEN_NAMES:
            node = next((n for n in tree.find_all(nodes.Name) if n.name == name), tree)
            add(node, f"unknown variable {name!r}; known: {', '.join(sorted(KNOWN_ROOTS - {'range'}))}")
    for attr_node in tree.find_all(nodes.Getattr):
        base = attr_node.node
        if isinstance(base, nodes.Name) and base.name in CHECKED_ROOTS and base.name in declared:
            allowed = CHECKED_ROOTS[base.name] | (props if base.name == "contact" else frozenset())
            if attr_node.attr not in allowed:
                add(attr_node, f"unknown field {base.name}.{attr_node.attr}")
        if (
            isinstance(base, nodes.Getattr)
            and base.attr == "properties"
            and isinstance(base.node, nodes.Name)
            and base.node.name == "contact"
            and "contact" in declared
            and attr_node.attr not in props
        ):
            add(attr_node, f"unknown contact property {attr_node.attr!r}")
    issues.sort(key=lambda i: (i.line or 0, i.message))
    return issues


_TOO_LARGE = 10**100 + 1  # what a constant power beyond the limit counts as


def _const_int(node: nodes.Node) -> int | None:
    """The value of a constant integer expression (``10**9``), ``None`` when it is not one or is absurd."""
    if isinstance(node, nodes.Const) and isinstance(node.value, int) and not isinstance(node.value, bool):
        return node.value
    if isinstance(node, nodes.Neg):
        inner = _const_int(node.node)
        return None if inner is None else -inner
    if isinstance(node, nodes.BinExpr):
        left, right = _const_int(node.left), _const_int(node.right)
        if left is None or right is None:
            return None
        if isinstance(node, nodes.Pow):
            if right < 0 or max(abs(left).bit_length(), 1) * right > MAX_INT_BITS:
                return _TOO_LARGE
            return int(left**right)
        ops: dict[type[nodes.Node], Callable[[int, int], int]] = {
            nodes.Add: lambda a, b: a + b,
            nodes.Sub: lambda a, b: a - b,
            nodes.Mul: lambda a, b: a * b,
        }
        for kind, op in ops.items():
            if isinstance(node, kind):
                return op(left, right)
    return None


def _check_attribute_name(node: nodes.Node, attr: str, add: Callable[[nodes.Node, str], None]) -> None:
    if attr.startswith("_"):
        add(node, f"attributes starting with '_' are not allowed: {attr}")
    elif attr in FORBIDDEN_ATTRIBUTES:
        add(node, f"the attribute {attr!r} is not allowed")


def jinja2_parse(env: MailSandbox, source: str) -> nodes.Template:
    """Parse without the loop guard (validation looks at what the user wrote)."""
    return ImmutableSandboxedEnvironment._parse(env, source, None, None)


def _undeclared(env: MailSandbox, tree: nodes.Template) -> set[str]:
    from jinja2 import meta

    try:
        return set(meta.find_undeclared_variables(tree))
    except TemplateSyntaxError:
        # An unknown filter stops the code generator; fall back to names read but never assigned.
        stored = {n.name for n in tree.find_all(nodes.Name) if n.ctx in ("store", "param")}
        return {n.name for n in tree.find_all(nodes.Name) if n.ctx == "load"} - stored


def validate_variant(
    variant: TemplateContent, *, language: str, contact_properties: Iterable[str] = ()
) -> list[TemplateIssue]:
    """The issues of every part of one language variant, with paths ``variants.<lang>.<part>``."""
    props = list(contact_properties)
    issues: list[TemplateIssue] = []
    if not (variant.subject or "").strip():
        issues.append(TemplateIssue(f"variants.{language}.subject", "the subject is empty"))
    if not (variant.html or "").strip():
        issues.append(TemplateIssue(f"variants.{language}.html", "the HTML body is empty"))
    for part, is_html in (("subject", False), ("preheader", False), ("html", True), ("text", False)):
        source = getattr(variant, part) or ""
        issues += validate_source(source, path=f"variants.{language}.{part}", html=is_html, contact_properties=props)
    return issues


_UNSUB_HREF = re.compile(r"""href\s*=\s*["']?\s*\{\{-?\s*unsubscribe_url\s*-?\}\}""", re.IGNORECASE)
_UNSUB_TEXT = re.compile(r"\{\{-?\s*unsubscribe_url\s*-?\}\}")
_ADDRESS = re.compile(r"\{\{-?\s*workspace\.postal_address\b")


def marketing_issues(variant: TemplateContent, *, language: str) -> list[TemplateIssue]:
    """What a marketing variant lacks: an unsubscribe link and the postal address, in HTML and text."""
    issues: list[TemplateIssue] = []
    base = f"variants.{language}"
    if not _UNSUB_HREF.search(variant.html or ""):
        issues.append(
            TemplateIssue(f"{base}.html", 'marketing mail needs an unsubscribe link: <a href="{{ unsubscribe_url }}">')
        )
    if not _ADDRESS.search(variant.html or ""):
        issues.append(TemplateIssue(f"{base}.html", "marketing mail needs {{ workspace.postal_address }}"))
    if variant.text:
        if not _UNSUB_TEXT.search(variant.text):
            issues.append(TemplateIssue(f"{base}.text", "marketing mail needs {{ unsubscribe_url }} in the text part"))
        if not _ADDRESS.search(variant.text):
            issues.append(TemplateIssue(f"{base}.text", "marketing mail needs {{ workspace.postal_address }}"))
    return issues


# --- rendering -----------------------------------------------------------------------------------------------------


def _plain(value: Any, depth: int = 0) -> Any:
    """Plain data only: objects other than dicts, lists, strings, numbers and dates are refused."""
    if depth > 12:
        raise TemplateRenderError("context", "the context is nested too deeply")
    if value is None or isinstance(value, str | bool | int | float | Decimal | date | datetime):
        return value
    if isinstance(value, Markup):
        return str(value)
    if isinstance(value, Mapping):
        return {
            str(k): _plain(v, depth + 1)
            for k, v in value.items()
            if not str(k).startswith("_") and v is not None and v != ""
        }
    if isinstance(value, list | tuple):
        return [_plain(v, depth + 1) for v in value]
    raise TemplateRenderError("context", f"a {type(value).__name__} cannot be put into a template context")


def _plain_context(context: Mapping[str, Any]) -> dict[str, Any]:
    """``_plain`` of a render's context; the ``workspace`` dict, the same for every message of a sender's chunk, is
    made plain once while it stays equal (the sandbox cannot change what a template is given)."""
    out: dict[str, Any] = {}
    for k, v in context.items():
        key = str(k)
        if key.startswith("_") or v is None or v == "":
            continue
        out[key] = _plain_shared(v) if key == "workspace" and type(v) is dict else _plain(v, 1)
    return out


_shared_plain: tuple[dict[str, Any], dict[str, Any], dict[str, Any]] | None = None


def _plain_shared(value: dict[str, Any]) -> dict[str, Any]:
    global _shared_plain
    hit = _shared_plain
    if hit is not None and hit[0] is value and hit[1] == value:
        return hit[2]
    plain: dict[str, Any] = _plain(value, 1)
    _shared_plain = (value, copy.deepcopy(value), plain)
    return plain


def locale_for(language: str, country: str | None = None) -> Locale:
    """The Babel locale of a language and country (``fi`` + ``FI`` → ``fi_FI``), falling back to the language."""
    return _locale_for(language or "en", country.upper() if country else None)


@functools.lru_cache(maxsize=1024)
def _locale_for(language: str, country: str | None) -> Locale:
    # Locale.parse reads Babel's data files: parsed once per (language, country) for the process.
    lang = (language or "en").replace("-", "_").split("_")[0].lower()
    for candidate in ([f"{lang}_{country.upper()}"] if country else []) + [lang, "en"]:
        try:
            return Locale.parse(candidate)
        except (UnknownLocaleError, ValueError):
            continue
    return Locale.parse("en")


def _zone(name: Any) -> ZoneInfo | None:
    if not name or not isinstance(name, str):
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _render_part(source: str, context: dict[str, Any], *, html: bool) -> str:
    if not source:
        return ""
    template = _compile(source, html)
    out: list[str] = []
    size = 0
    for chunk in template.generate(context):
        size += len(chunk)
        if size > MAX_OUTPUT_CHARS:
            raise RenderLimitError(f"the rendered text is longer than {MAX_OUTPUT_CHARS} characters")
        out.append(chunk)
    return "".join(out)


_ASCII_SPACE = re.compile(r"[ \t\r\n\f\v]+")


def _one_line(text: str) -> str:
    """One line: runs of ASCII whitespace (CR/LF included) become one space; no-break spaces stay."""
    return _ASCII_SPACE.sub(" ", text.replace("\x00", "")).strip()


_inliner = css_inline.CSSInliner(load_remote_stylesheets=False, keep_style_tags=False, keep_link_tags=False)


def inline_css(html: str) -> str:
    """Styles from ``<style>`` blocks moved into ``style`` attributes (no remote stylesheet is ever fetched)."""
    if "<style" not in html.lower():
        return html
    return str(_inliner.inline(html))


# A message's own string that may be set aside (``volatile_key``): long, of characters that parsing copies unchanged
# wherever it does not lower-case them (the signed tokens' alphabet: base64url and '.').
_INERT = re.compile(r"[A-Za-z0-9_.-]{16,512}")
_STYLE_BLOCK = re.compile(r"<style\b.*?(?:</style|\Z)", re.IGNORECASE | re.DOTALL)
# CSS that could select on an attribute's value: attribute selectors, :lang()/:dir(), escapes.
_VALUE_SELECTOR = re.compile(r"[\[\\]|:\s*(?:lang|dir)\b", re.IGNORECASE)


def volatile_key(html: str, volatile: str | None) -> str | None:
    """``html`` with each occurrence of ``volatile`` (a message's own token, ``_INERT``) replaced by as many '~',
    or ``html`` itself when it does not occur; None when it cannot be set aside (the caller works on ``html``).

    The key is parsed exactly as ``html`` is, state for state: '~' and the token's characters take the same
    transitions of the HTML tokenizer everywhere but where a tag or end tag opens ('<' + letter), which the
    placeholder never follows: each occurrence must follow a '/' that does not follow '<' and precede a '"'. Only
    where names are lower-cased (tag, attribute, doctype names) would they differ, which ``_body_and_text`` and
    ``tracking.rewrite_links`` rule out on what they make of the key. ``html`` must hold no '~' (so every '~' of
    a result comes from a placeholder)."""
    if not volatile or "~" in html or not _INERT.fullmatch(volatile):
        return None
    at = html.find(volatile)
    if at < 0:
        return html
    size = len(volatile)
    while at >= 0:
        end = at + size
        if at < 1 or html[at - 1] != "/" or (at >= 2 and html[at - 2] == "<") or html[end : end + 1] != '"':
            return None
        at = html.find(volatile, end)
    return html.replace(volatile, "~" * size)


# The contact's names as they stand in a message's text: letters, with inner hyphens (Anna-Liisa), 2-64 characters.
# Jinja's escaping leaves them as they are, and the HTML tokenizer and css-inline treat them, in text and attribute
# values, exactly as a run of another character that is neither '&' nor '<' (the placeholders '^' and '`').
_NAME_TEXT = re.compile(r"[^\W\d_]+(?:-[^\W\d_]+)*")
# What may stand just before a name that is set aside: nothing that could begin a character reference ('&', '#',
# letters, digits) or markup ('<', '/', '!', '?') together with it.
_BEFORE_NAME = frozenset(" \t\n\r\f\xa0>,.;:()[]\"'«»„“”‘’¡¿–—")
_NAME_MARKS = "^`"  # the placeholders of the first and the last name
_MARKS = "~" + _NAME_MARKS
# Attribute values that CSS parses (style) or that selectors match on (class, id: in quirks mode without regard to
# case): a placeholder there could be styled otherwise than the real string.
_MATCHED_ATTRS = frozenset({"style", "class", "id"})


def personal_key(key: str, names: Sequence[str]) -> tuple[str, tuple[tuple[str, str], ...]]:
    """``key`` (a ``volatile_key``) with each of the contact's ``names`` (first, last) replaced by as many '^' (the
    first) or '`' (the last) wherever it stands as a word after a space, '>' or punctuation (``_BEFORE_NAME``), so
    that messages to contacts whose names are as long share their work; a name that stands anywhere else, or whose
    mark ``key`` already holds, stays. The longer name goes first (a name inside the other is not split). Whatever
    the parse makes of the marks is checked afterwards (``_placeholders_inert``: text and attribute values other
    than style, class and id only). Returns the key and the (mark, name) pairs set aside."""
    aside: list[tuple[str, str]] = []
    order = sorted(
        ((name, mark) for name, mark in zip(names, _NAME_MARKS, strict=False) if name), key=lambda nm: -len(nm[0])
    )
    for name, mark in order:
        if mark in key or not _NAME_TEXT.fullmatch(name) or not 2 <= len(name) <= 64:
            continue
        at = key.find(name)
        if at < 0:
            continue
        size, safe = len(name), True
        while at >= 0:
            end = at + size
            after = key[end : end + 1]
            if at < 1 or key[at - 1] not in _BEFORE_NAME or (after and (after.isalnum() or after == "_")):
                safe = False
                break
            at = key.find(name, end)
        if safe:
            key = key.replace(name, mark * size)
            aside.append((mark, name))
    return key, tuple(aside)


def _placeholders_inert(key: str, body: str) -> bool:
    """Whether ``inline_css`` treated the placeholders of ``key`` ('~' for the token, '^' and '`' for the names) as
    plain characters of text or attribute values (so it treats the real strings alike): each reaches ``body`` (none
    dropped), none in a ``<style>`` block, in a tag or attribute name, a comment, a doctype, a style attribute (which
    CSS parsing rewrites) or a class or id (which selectors match), and no style block selects on attribute values.
    ``body`` is serializer-made HTML (``_SERIAL_MARKUP`` reads its tokens)."""
    marks = [m for m in _MARKS if m in key]
    if any(body.count(m) != key.count(m) for m in marks) or _RAW_TEXT.search(body):
        return False
    for block in _STYLE_BLOCK.findall(key):
        if any(m in block for m in marks) or _VALUE_SELECTOR.search(block):
            return False
    pos = 0
    for m in _SERIAL_MARKUP.finditer(body):
        if "<" in body[pos : m.start()]:
            return False  # not serializer-made
        pos = m.end()
        token = m.group()
        present = [c for c in marks if c in token]
        if not present:
            continue
        start, attrs = m.group("start", "attrs")
        if start is None or any(c in start for c in present):
            return False
        values = _SERIAL_ATTR.findall(attrs)
        for name, value in values:
            if any(c in name for c in present) or (name.lower() in _MATCHED_ATTRS and any(c in value for c in present)):
                return False
        if any(token.count(c) != sum(value.count(c) for _, value in values) for c in present):
            return False
    return "<" not in body[pos:]


class Sharing:
    """Whether looking for shared work pays: a lookup that misses costs more than working alone (the key, a check,
    the cache), so after a window of ``window`` lookups with fewer than ``min_hits`` hits (contacts with distinct
    names: every HTML differs) the next ``pause`` messages are worked on alone, then it tries again. Either way the
    result is the same."""

    __slots__ = ("hits", "min_hits", "pause", "paused", "tries", "window")

    def __init__(self, window: int = 64, min_hits: int = 16, pause: int = 1024) -> None:
        self.window, self.min_hits, self.pause = window, min_hits, pause
        self.hits = self.tries = self.paused = 0

    def wanted(self) -> bool:
        if self.paused:
            self.paused -= 1
            return False
        return True

    def record(self, hit: bool) -> None:
        self.tries += 1
        self.hits += hit
        if self.tries >= self.window:
            if self.hits < self.min_hits:
                self.paused = self.pause
            self.hits = self.tries = 0


_body_sharing = Sharing()


# Rendered HTML (its message's own token replaced: ``volatile_key``) -> (the HTML with CSS inlined, its text part
# or None), or None when the placeholders could not be set aside: a journey step sends one template to many
# contacts, and those with the same values get the same HTML.
_BODIES: dict[str, tuple[str, str | None] | None] = {}
_BODIES_SIZE = 256
_BODIES_MAX_LEN = 64 * 1024  # longer HTML is inlined each time (bounds the cache to a few tens of MB at worst)


def _body_and_text(
    html: str, volatile: str | None, with_text: bool, names: Sequence[str] = ()
) -> tuple[str, str | None]:
    """``inline_css(html)`` and (``with_text``) its ``html_to_text``, shared between messages through ``_BODIES``:
    the same as computed on ``html``, since the placeholders are inert (``volatile_key``, ``personal_key``,
    ``_placeholders_inert``) and ``html_to_text`` reads them only as text or as attribute values, as it would the
    token and the names."""
    key = volatile_key(html, volatile) if volatile and len(html) <= _BODIES_MAX_LEN and _body_sharing.wanted() else None
    aside: tuple[tuple[str, str], ...] = ()
    if key is not None and names:
        key, aside = personal_key(key, names)
    hit = _BODIES.get(key, _MISSING) if key is not None else None
    if key is not None:
        _body_sharing.record(hit is not _MISSING)
    if key is not None and (hit is _MISSING or (with_text and hit is not None and hit[1] is None)):
        try:
            body = inline_css(key)
        except Exception:  # the real HTML is inlined below, raising what it raises
            hit = None
        else:
            usable = key is html or _placeholders_inert(key, body)
            hit = (body, html_to_text(body) if with_text else None) if usable else None
        _remember(_BODIES, key, hit, _BODIES_MAX_LEN, _BODIES_SIZE)
    if key is None or hit is None:
        body = inline_css(html)
        return body, html_to_text(body) if with_text else None
    body, text = hit
    if key is not html:
        assert volatile is not None
        for mark, value in (("~", volatile), *aside):
            placeholder = mark * len(value)
            body = body.replace(placeholder, value)
            text = text.replace(placeholder, value) if text is not None else None
    return body, text if with_text else None


def _inject_preheader(html: str, preheader: str) -> str:
    if not preheader:
        return html
    block = (
        '<div style="display:none;max-height:0;overflow:hidden;mso-hide:all;font-size:1px;line-height:1px;'
        f'color:transparent;opacity:0" data-preheader="1">{html_lib.escape(preheader)}</div>'
    )
    match = re.search(r"<body[^>]*>", html, re.IGNORECASE)
    if match:
        return html[: match.end()] + block + html[match.end() :]
    return block + html


def render_message(
    template: TemplateContent,
    *,
    language: str,
    context: Mapping[str, Any],
    locale: str | None = None,
    timezone: str | None = None,
    currency: str | None = None,
    volatile: str | None = None,
) -> RenderedMessage:
    """Render one variant with a context of plain data.

    The locale defaults to ``language`` with ``contact.country``; the time zone to ``contact.timezone`` then
    ``workspace.timezone`` then UTC; the currency of ``money`` without an argument to ``workspace.currency``.
    ``volatile``: a string of this message alone (the sender passes its unsubscribe token), so that messages whose
    HTML differs only in it share the CSS inlining and the text part (``volatile_key``); the result is the same.
    Raises :class:`TemplateRenderError` (a ``DomainError``) when anything fails, including refused constructs.
    """
    ctx = _plain_context(context)
    contact = ctx.get("contact") or {}
    workspace = ctx.get("workspace") or {}
    loc = locale_for(locale or language, contact.get("country") if not locale else None)
    zone = _zone(timezone) or _zone(contact.get("timezone")) or _zone(workspace.get("timezone")) or ZoneInfo("UTC")
    state = _RenderState(locale=loc, timezone=zone, currency=(currency or workspace.get("currency") or "EUR"))
    ctx.setdefault("language", language)
    token = _state.set(state)
    try:
        subject = _one_line(_render_part(template.subject or "", ctx, html=False))
        preheader = _one_line(_render_part(template.preheader or "", ctx, html=False))
        names = (str(contact.get("first_name") or ""), str(contact.get("last_name") or "")) if volatile else ()
        body, from_html = _body_and_text(
            _render_part(template.html or "", ctx, html=True), volatile, not template.text, names
        )
        # html_to_text's result is already tidy (_tidy_text is idempotent), only a text template's needs it.
        text = _tidy_text(_render_part(template.text, ctx, html=False)) if template.text else (from_html or "")
    except TemplateRenderError:
        raise
    except SecurityError as exc:
        raise TemplateRenderError("template", f"refused: {exc}", code="template_refused") from exc
    except TemplateSyntaxError as exc:
        raise TemplateRenderError("template", f"syntax error at line {exc.lineno}: {exc.message}") from exc
    except (TemplateError, ArithmeticError, TypeError, ValueError, LookupError, RecursionError) as exc:
        raise TemplateRenderError("template", f"rendering failed: {exc}") from exc
    finally:
        _state.reset(token)
    return RenderedMessage(
        subject=subject,
        preheader=preheader,
        html=_inject_preheader(body, preheader),
        text=text,
        language=language,
    )


# --- HTML to text --------------------------------------------------------------------------------------------------


class _TextMaker(HTMLParser):
    BLOCKS = frozenset(
        {"p", "div", "section", "article", "header", "footer", "table", "tr", "h1", "h2", "h3", "h4", "h5", "h6"}
        | {"ul", "ol", "blockquote", "hr", "center"}
    )
    SKIP = frozenset({"style", "script", "head", "title"})

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.out: list[str] = []
        self.skip_depth = 0
        self.hidden_stack: list[str] = []
        self.links: list[tuple[str, int]] = []
        self.lists: list[list[int]] = []  # [is_ordered, counter]

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.start(tag, {k: v or "" for k, v in attrs})

    def start(self, tag: str, a: dict[str, str]) -> None:
        """A start tag with its attributes as a dict (read only: the fast tokenizer shares it between calls)."""
        if tag in self.SKIP:
            self.skip_depth += 1
            return
        if self.hidden_stack or "data-preheader" in a or "display:none" in a.get("style", "").replace(" ", ""):
            if tag not in {"br", "img", "hr", "meta", "link", "input"}:
                self.hidden_stack.append(tag)
            return
        if tag in self.BLOCKS:
            self.out.append("\n\n")
        if tag in {"h1", "h2"}:
            self.out.append("")
        if tag == "br":
            self.out.append("\n")
        elif tag == "hr":
            self.out.append("----\n\n")
        elif tag in {"ul", "ol"}:
            self.lists.append([1 if tag == "ol" else 0, 0])
        elif tag == "li":
            indent = "  " * max(len(self.lists) - 1, 0)
            if self.lists and self.lists[-1][0]:
                self.lists[-1][1] += 1
                self.out.append(f"\n{indent}{self.lists[-1][1]}. ")
            else:
                self.out.append(f"\n{indent}- ")
        elif tag in {"td", "th"}:
            self.out.append(" ")
        elif tag == "a":
            self.links.append((a.get("href", "").strip(), len(self.out)))
        elif tag == "img" and a.get("alt"):
            self.out.append(a["alt"])

    def handle_endtag(self, tag: str) -> None:
        if tag in self.SKIP:
            self.skip_depth = max(self.skip_depth - 1, 0)
            return
        if self.hidden_stack:
            if tag == self.hidden_stack[-1]:
                self.hidden_stack.pop()
            return
        if tag == "a" and self.links:
            href, start = self.links.pop()
            label = _one_line("".join(self.out[start:]))
            if href and not href.startswith(("#", "javascript:")):
                shown = href[7:] if href.startswith("mailto:") else href
                if not label:
                    self.out.append(shown)
                elif label != shown:
                    self.out.append(f" ({shown})")
        elif tag in {"ul", "ol"}:
            if self.lists:
                self.lists.pop()
            self.out.append("\n\n")
        elif tag in self.BLOCKS:
            self.out.append("\n\n")

    def handle_data(self, data: str) -> None:
        if self.skip_depth or self.hidden_stack:
            return
        folded = _FOLDED.get(data)
        if folded is None:
            folded = _ASCII_SPACE.sub(" ", data)
            _remember(_FOLDED, data, folded, _TAG_CACHE_MAX_LEN, _TAG_CACHE_SIZE)
        self.out.append(folded)


# Text chunk -> the chunk with its whitespace runs folded (a template's layout gives the same chunks to every message).
_FOLDED: dict[str, str] = {}


def html_to_text(html: str) -> str:
    """A readable text part from HTML: paragraphs, lists as ``- item``/``1. item``, links as ``text (url)``."""
    maker = _TextMaker()
    if not _feed_serialized(maker, html):
        maker = _TextMaker()
        maker.feed(html)
        maker.close()
    return _tidy_text("".join(maker.out))


# The tokens of HTML as an HTML5 serializer writes it (what css-inline returns): lower-case tags, every attribute
# value double-quoted with '"' and '&' escaped, '<' escaped in text, comments and a doctype.
_WS = "[\t\n\r\f ]"
_NAME = "[a-zA-Z][^\t\n\r\f />\x00]*"
_ATTR_NAME = "[^\t\n\r\f />\"'=\x00]+"
_SERIAL_MARKUP = re.compile(
    f'<(?:(?P<start>{_NAME})(?P<attrs>(?:{_WS}+{_ATTR_NAME}="[^"]*")*){_WS}*(?P<close>/?)>'
    f"|/(?P<end>{_NAME}){_WS}*>"
    "|!--.*?--\\s*>"
    "|![dD][oO][cC][tT][yY][pP][eE][^>]*>)",
    re.DOTALL,
)
_SERIAL_ATTR = re.compile(f'{_WS}+({_ATTR_NAME})="([^"]*)"')
# Elements whose content is not escaped (HTMLParser reads script/style as CDATA): left to HTMLParser.
_RAW_TEXT = re.compile(r"<(?:script|style|xmp|iframe|noembed|noframes|noscript|plaintext|textarea)\b", re.I)


def _parse_tag(m: re.Match[str]) -> tuple[tuple[int, Any, Any], ...]:
    """The calls one markup token of ``_SERIAL_MARKUP`` makes (none for a comment or a declaration)."""
    start, attrs_text, close, end = m.group(1, 2, 3, 4)
    if start is not None:
        tag = start.lower()
        unescape = html_lib.unescape
        attrs = {k.lower(): unescape(v) if "&" in v else v for k, v in _SERIAL_ATTR.findall(attrs_text)}
        return ((1, tag, attrs), (2, tag, None)) if close else ((1, tag, attrs),)
    if end is not None:
        return ((2, end.lower(), None),)
    return ()


def _remember(cache: dict[str, Any], key: str, value: Any, max_len: int, size: int) -> None:
    """Keep ``value`` under ``key`` unless the key is longer than ``max_len``; a cache holding ``size`` entries is
    emptied first (the texts of a few templates repeat, so it refills with what is in use)."""
    if len(key) <= max_len:
        if len(cache) >= size:
            cache.clear()
        cache[key] = value


# Markup token text -> its calls: a template's layout repeats the same tags (inlined styles and all) in every message
# it renders. The handlers only read the attribute lists they are given.
_TAG_CACHE: dict[str, tuple[tuple[int, Any, Any], ...]] = {}
_TAG_CACHE_SIZE = 4096
_TAG_CACHE_MAX_LEN = 1024  # longer tags are parsed each time (bounds the cache to a few MB)


def _feed_serialized(maker: _TextMaker, html: str) -> bool:
    """Feed ``maker`` the start tags, end tags and text of serializer-made HTML with the same calls, in the same
    order and with the same values that ``HTMLParser`` makes (names lower-cased, text and attribute values
    unescaped, text split at every tag, comment and declaration), about five times faster. Returns False, having
    decided nothing, when the HTML is not in that form (any '<' that does not open one of those tokens, raw-text
    elements), so the caller parses it with ``HTMLParser``; ``tests/.../test_render_golden.py`` compares both."""
    if _RAW_TEXT.search(html):
        return False
    calls = _lines_calls(html)
    if calls is None:
        calls = _document_calls(html)
        if calls is None:
            return False
    for kind, a, b in calls:
        if kind == 0:
            maker.handle_data(a)
        elif kind == 1:
            maker.start(a, b)
        else:
            maker.handle_endtag(a)
    return True


# Line text -> (its calls, whether it begins with text, whether it ends with text), or None when a token of the
# document crosses the line's end. A template's messages share most lines (the layout, inlined styles and all):
# only the lines holding a contact's values or a message's own links are tokenized again.
_LINE_CACHE: dict[str, tuple[tuple[tuple[int, Any, Any], ...], bool, bool] | None] = {}
_LINE_CACHE_SIZE = 4096
_LINE_CACHE_MAX_LEN = 2048


def _lines_calls(html: str) -> list[tuple[int, Any, Any]] | None:
    """The calls of ``_document_calls`` assembled line by line from cached lines; None when some token spans a
    line break (the caller tokenizes the whole document then). Text split only by a line break is joined again, so
    the calls are exactly the whole document's: no token can cross a line whose tokens were all found within it, and
    an entity cannot contain a line break."""
    calls: list[tuple[int, Any, Any]] = []
    trailing = False
    lines = html.split("\n")
    last = len(lines) - 1
    for i, line in enumerate(lines):
        if i < last:
            line += "\n"
        elif not line:
            break
        hit = _LINE_CACHE.get(line, _MISSING)
        if hit is _MISSING:
            hit = _line_calls(line)
            _remember(_LINE_CACHE, line, hit, _LINE_CACHE_MAX_LEN, _LINE_CACHE_SIZE)
        if hit is None:
            return None
        line_calls, leading, ends_with_text = hit
        if not line_calls:
            continue
        if trailing and leading:
            calls[-1] = (0, calls[-1][1] + line_calls[0][1], None)
            calls.extend(line_calls[1:])
        else:
            calls.extend(line_calls)
        trailing = ends_with_text
    return calls


_MISSING: Any = object()


def _line_calls(line: str) -> tuple[tuple[tuple[int, Any, Any], ...], bool, bool] | None:
    calls = _document_calls(line)
    if calls is None:
        return None
    first = _SERIAL_MARKUP.search(line)
    leading = bool(calls) and calls[0][0] == 0 and (first is None or first.start() > 0)
    ends_with_text = bool(calls) and calls[-1][0] == 0 and not _ends_with_markup(line)
    return tuple(calls), leading, ends_with_text


def _ends_with_markup(line: str) -> bool:
    end = 0
    for m in _SERIAL_MARKUP.finditer(line):
        end = m.end()
    return end == len(line)


def _document_calls(html: str) -> list[tuple[int, Any, Any]] | None:
    """The calls ``HTMLParser`` would make for serializer-made HTML, or None when it is not in that form."""
    calls: list[tuple[int, Any, Any]] = []
    pos = 0
    unescape = html_lib.unescape
    for m in _SERIAL_MARKUP.finditer(html):
        begin = m.start()
        if begin > pos:
            chunk = html[pos:begin]
            if "<" in chunk:
                return None
            calls.append((0, unescape(chunk) if "&" in chunk else chunk, None))
        pos = m.end()
        text = m.group()
        hit = _TAG_CACHE.get(text)
        if hit is None:
            hit = _parse_tag(m)
            _remember(_TAG_CACHE, text, hit, _TAG_CACHE_MAX_LEN, _TAG_CACHE_SIZE)
        calls.extend(hit)
    if pos < len(html):
        chunk = html[pos:]
        if "<" in chunk:
            return None
        calls.append((0, html_lib.unescape(chunk), None))
    return calls


def _html_to_text_parser(html: str) -> str:
    """``html_to_text`` through ``HTMLParser`` only (the reference the tests compare the fast tokenizer with)."""
    maker = _TextMaker()
    maker.feed(html)
    maker.close()
    return _tidy_text("".join(maker.out))


def _strip_line(line: str) -> str:
    line = line.rstrip()
    # Keep the indentation of nested list items, drop any other leading space.
    if line[:1] == " " and _LIST_ITEM_LINE.match(line):
        return line
    return line.lstrip()


_LIST_ITEM_LINE = re.compile(r"^ +(- |\d+\. )")


def _tidy_text(text: str) -> str:
    lines = [_strip_line(line) for line in text.replace("\r\n", "\n").replace("\r", "\n").split("\n")]
    out: list[str] = []
    blank = False
    for line in lines:
        if not line:
            blank = bool(out)
            continue
        if blank:
            out.append("")
        blank = False
        out.append(line)
    return "\n".join(out) + ("\n" if out else "")

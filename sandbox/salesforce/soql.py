"""SOQL: a tokenizer, a recursive-descent parser and an evaluator for the subset integrations use.

Supported: ``SELECT`` field lists with parent-relationship paths (``Owner.Name``, ``Account.Name``,
``Who.Name``), ``COUNT()`` and ``COUNT(field)``; ``FROM`` one object; ``WHERE`` with ``AND``/``OR``/``NOT``
and parentheses (mixing ``AND`` and ``OR`` without parentheses is rejected, as Salesforce does),
``= != <> < <= > >= LIKE IN NOT IN INCLUDES EXCLUDES``; literals: quoted strings with backslash
escapes, numbers, ``true``/``false``/``null``, dates, datetimes and the relative date literals
(``TODAY``, ``YESTERDAY``, ``LAST_N_DAYS:n`` ...); ``ORDER BY`` several keys with ``ASC``/``DESC`` and
``NULLS FIRST``/``LAST``; ``LIMIT`` and ``OFFSET``. Errors are :class:`SalesforceError` with the
``MALFORMED_QUERY``, ``INVALID_FIELD`` or ``INVALID_TYPE`` codes and the caret-pointing message.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sandbox.salesforce.errors import SalesforceError
from sandbox.salesforce.ids import parse_date, parse_datetime, to18
from sandbox.salesforce.schema import NUMBER_TYPES, STRING_TYPES, FieldDef, ObjectDef, Schema

KEYWORDS = {
    "SELECT",
    "FROM",
    "WHERE",
    "AND",
    "OR",
    "NOT",
    "IN",
    "LIKE",
    "INCLUDES",
    "EXCLUDES",
    "ORDER",
    "BY",
    "ASC",
    "DESC",
    "NULLS",
    "FIRST",
    "LAST",
    "LIMIT",
    "OFFSET",
    "NULL",
    "TRUE",
    "FALSE",
    "COUNT",
    "GROUP",
    "HAVING",
    "WITH",
    "FOR",
    "USING",
}
_TOKEN_RE = re.compile(
    r"""
    (?P<ws>\s+)
  | (?P<datetime>\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,3})?(?:Z|[+-]\d{2}:?\d{2}))
  | (?P<date>\d{4}-\d{2}-\d{2}(?![\dT]))
  | (?P<number>[+-]?\d+(?:\.\d+)?(?![\w]))
  | (?P<string>')
  | (?P<ident>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<op><=|>=|!=|<>|=|<|>)
  | (?P<punct>[(),.:])
    """,
    re.VERBOSE,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "b": "\b", "f": "\f", "'": "'", '"': '"', "\\": "\\"}


@dataclass
class Token:
    """One lexical token with its position in the query text."""

    kind: str
    value: Any
    pos: int
    text: str


def _error(query: str, pos: int, message: str, code: str = "MALFORMED_QUERY") -> SalesforceError:
    row = query.count("\n", 0, pos) + 1
    line_start = query.rfind("\n", 0, pos) + 1
    line_end = query.find("\n", pos)
    line = query[line_start : line_end if line_end >= 0 else len(query)]
    col = pos - line_start + 1
    return SalesforceError(
        400, code, f"\n{line}\n{' ' * (col - 1)}^\nERROR at Row:{row}:Column:{col}\n{message}"
    )


def tokenize(query: str) -> list[Token]:
    """Split SOQL text into tokens.

    Raises:
        SalesforceError: MALFORMED_QUERY for a character that starts no token or an unclosed string.
    """
    tokens: list[Token] = []
    pos = 0
    while pos < len(query):
        match = _TOKEN_RE.match(query, pos)
        if match is None:
            raise _error(query, pos, f"unexpected token: '{query[pos]}'")
        kind = match.lastgroup or ""
        if kind == "ws":
            pos = match.end()
            continue
        if kind == "string":
            value, end = _read_string(query, pos)
            tokens.append(Token("string", value, pos, query[pos:end]))
            pos = end
            continue
        text = match.group()
        if kind == "ident" and text.upper() in KEYWORDS:
            tokens.append(Token("kw", text.upper(), pos, text))
        elif kind == "number":
            tokens.append(Token("number", float(text) if "." in text else int(text), pos, text))
        else:
            tokens.append(Token(kind, text, pos, text))
        pos = match.end()
    tokens.append(Token("eof", None, len(query), "<EOF>"))
    return tokens


def _read_string(query: str, start: int) -> tuple[str, int]:
    out: list[str] = []
    pos = start + 1
    while pos < len(query):
        char = query[pos]
        if char == "'":
            return "".join(out), pos + 1
        if char == "\\":
            nxt = query[pos + 1 : pos + 2]
            if nxt in _ESCAPES:
                out.append(_ESCAPES[nxt])
                pos += 2
                continue
            if nxt in {"%", "_"}:
                out.append("\\" + nxt)  # kept escaped: only LIKE gives them meaning
                pos += 2
                continue
            if nxt == "u" and re.match(r"[0-9a-fA-F]{4}", query[pos + 2 : pos + 6]):
                out.append(chr(int(query[pos + 2 : pos + 6], 16)))
                pos += 6
                continue
            raise _error(query, pos, "Invalid string literal: illegal escape sequence")
        out.append(char)
        pos += 1
    raise _error(
        query, start, "line 1:" + str(start) + " mismatched character '<EOF>' expecting '''"
    )


# --------------------------------------------------------------------------------------------------
# Syntax tree


@dataclass
class FieldRef:
    """A (possibly dotted) field path as written, with where it was written."""

    path: list[str]
    pos: int


@dataclass
class Comparison:
    """``field op value`` (op is one of = != < <= > >= LIKE IN NOT_IN INCLUDES EXCLUDES)."""

    field: FieldRef
    op: str
    value: Any
    value_pos: int


@dataclass
class BoolOp:
    """``AND`` / ``OR`` over several conditions, or ``NOT`` over one."""

    op: str
    items: list[Any]


@dataclass
class DateLiteral:
    """A relative date literal such as ``LAST_N_DAYS:30``, resolved to a ``[start, end)`` range."""

    name: str
    n: int | None = None


@dataclass
class OrderKey:
    """One ``ORDER BY`` key."""

    field: FieldRef
    descending: bool = False
    nulls_last: bool | None = None


@dataclass
class Query:
    """A parsed SOQL statement."""

    text: str
    fields: list[FieldRef]
    object_name: str
    object_pos: int
    where: Any = None
    order: list[OrderKey] = field(default_factory=list)
    limit: int | None = None
    offset: int | None = None
    count: bool = False
    count_field: FieldRef | None = None


_RELATIVE_FIXED = {
    "TODAY",
    "YESTERDAY",
    "TOMORROW",
    "LAST_WEEK",
    "THIS_WEEK",
    "NEXT_WEEK",
    "LAST_MONTH",
    "THIS_MONTH",
    "NEXT_MONTH",
    "LAST_90_DAYS",
    "NEXT_90_DAYS",
    "THIS_YEAR",
    "LAST_YEAR",
    "NEXT_YEAR",
}
_RELATIVE_N = {
    "LAST_N_DAYS",
    "NEXT_N_DAYS",
    "N_DAYS_AGO",
    "LAST_N_WEEKS",
    "NEXT_N_WEEKS",
    "LAST_N_MONTHS",
    "NEXT_N_MONTHS",
}


class Parser:
    """Recursive-descent parser over :func:`tokenize` output."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0

    @property
    def tok(self) -> Token:
        """The current token."""
        return self.tokens[self.i]

    def advance(self) -> Token:
        """Consume and return the current token."""
        tok = self.tokens[self.i]
        if tok.kind != "eof":
            self.i += 1
        return tok

    def unexpected(self, tok: Token | None = None) -> SalesforceError:
        """The MALFORMED_QUERY error for an unexpected token."""
        tok = tok or self.tok
        return _error(self.text, tok.pos, f"unexpected token: '{tok.text}'")

    def is_kw(self, *words: str) -> bool:
        """True when the current token is one of the keywords."""
        return self.tok.kind == "kw" and self.tok.value in words

    def expect_kw(self, word: str) -> Token:
        """Consume a keyword or fail."""
        if not self.is_kw(word):
            raise self.unexpected()
        return self.advance()

    def expect_punct(self, char: str) -> Token:
        """Consume a punctuation token or fail."""
        if self.tok.kind != "punct" or self.tok.value != char:
            raise self.unexpected()
        return self.advance()

    def parse(self) -> Query:
        """Parse a whole statement."""
        self.expect_kw("SELECT")
        fields: list[FieldRef] = []
        count = False
        count_field = None
        while True:
            if self.is_kw("COUNT"):
                start = self.advance()
                self.expect_punct("(")
                if self.tok.kind == "ident":
                    count_field = self.field_ref()
                self.expect_punct(")")
                if fields or count:
                    raise _error(self.text, start.pos, "COUNT() cannot be mixed with other fields")
                count = True
            else:
                fields.append(self.field_ref())
            if self.tok.kind == "punct" and self.tok.value == ",":
                self.advance()
                if count and count_field is None:
                    raise self.unexpected()
                continue
            break
        if not self.is_kw("FROM"):
            raise self.unexpected()
        self.advance()
        if self.tok.kind != "ident":
            raise self.unexpected()
        obj_tok = self.advance()
        query = Query(
            self.text, fields, obj_tok.value, obj_tok.pos, count=count, count_field=count_field
        )
        if self.is_kw("WHERE"):
            self.advance()
            query.where = self.condition()
        if self.is_kw("ORDER"):
            self.advance()
            self.expect_kw("BY")
            query.order = self.order_list()
        if self.is_kw("LIMIT"):
            self.advance()
            query.limit = self.integer()
        if self.is_kw("OFFSET"):
            self.advance()
            query.offset = self.integer()
        if self.tok.kind != "eof":
            raise self.unexpected()
        return query

    def integer(self) -> int:
        """Consume a non-negative integer literal."""
        tok = self.advance()
        if tok.kind != "number" or not isinstance(tok.value, int) or tok.value < 0:
            raise self.unexpected(tok)
        return tok.value

    def field_ref(self) -> FieldRef:
        """Parse ``name(.name)*``."""
        tok = self.tok
        if tok.kind != "ident":
            raise self.unexpected()
        path = [self.advance().value]
        while self.tok.kind == "punct" and self.tok.value == ".":
            self.advance()
            if self.tok.kind != "ident":
                raise self.unexpected()
            path.append(self.advance().value)
        return FieldRef(path, tok.pos)

    def order_list(self) -> list[OrderKey]:
        """Parse ``key [ASC|DESC] [NULLS FIRST|LAST] (, ...)*``."""
        keys = []
        while True:
            key = OrderKey(self.field_ref())
            if self.is_kw("ASC", "DESC"):
                key.descending = self.advance().value == "DESC"
            if self.is_kw("NULLS"):
                self.advance()
                if not self.is_kw("FIRST", "LAST"):
                    raise self.unexpected()
                key.nulls_last = self.advance().value == "LAST"
            keys.append(key)
            if self.tok.kind == "punct" and self.tok.value == ",":
                self.advance()
                continue
            return keys

    def condition(self) -> Any:
        """Parse an AND-chain or an OR-chain (not both without parentheses)."""
        first = self.unary()
        if not self.is_kw("AND", "OR"):
            return first
        op = self.tok.value
        items = [first]
        while self.is_kw("AND", "OR"):
            if self.tok.value != op:
                raise self.unexpected()
            self.advance()
            items.append(self.unary())
        return BoolOp(op, items)

    def unary(self) -> Any:
        """Parse ``NOT x``, ``( condition )`` or a comparison."""
        if self.is_kw("NOT"):
            self.advance()
            return BoolOp("NOT", [self.unary()])
        if self.tok.kind == "punct" and self.tok.value == "(":
            self.advance()
            inner = self.condition()
            self.expect_punct(")")
            return inner
        return self.comparison()

    def comparison(self) -> Comparison:
        """Parse ``field op value``."""
        ref = self.field_ref()
        tok = self.tok
        if tok.kind == "op":
            op = "!=" if tok.value == "<>" else tok.value
            self.advance()
            value_pos = self.tok.pos
            return Comparison(ref, op, self.value(), value_pos)
        if self.is_kw("LIKE"):
            self.advance()
            value_pos = self.tok.pos
            value = self.value()
            if not isinstance(value, str):
                raise _error(self.text, value_pos, "Invalid LIKE pattern: must be a string")
            return Comparison(ref, "LIKE", value, value_pos)
        negate = False
        if self.is_kw("NOT"):
            self.advance()
            negate = True
            if not self.is_kw("IN"):
                raise self.unexpected()
        if self.is_kw("IN", "INCLUDES", "EXCLUDES"):
            op = self.advance().value
            if negate:
                op = "NOT_IN"
            value_pos = self.tok.pos
            self.expect_punct("(")
            if self.is_kw("SELECT"):
                raise _error(self.text, self.tok.pos, "semi-join sub-selects are not supported")
            values = [self.value()]
            while self.tok.kind == "punct" and self.tok.value == ",":
                self.advance()
                values.append(self.value())
            self.expect_punct(")")
            return Comparison(ref, op, values, value_pos)
        raise self.unexpected()

    def value(self) -> Any:
        """Parse one literal."""
        tok = self.advance()
        if tok.kind in {"string", "number"}:
            return tok.value
        if tok.kind == "kw" and tok.value in {"NULL", "TRUE", "FALSE"}:
            return {"NULL": None, "TRUE": True, "FALSE": False}[tok.value]
        if tok.kind == "date":
            parsed = parse_date(tok.value)
            if parsed is None:
                raise _error(
                    self.text,
                    tok.pos,
                    f"line 1:{tok.pos} no viable alternative at character '{tok.text}'",
                )
            return parsed
        if tok.kind == "datetime":
            parsed_dt = parse_datetime(tok.value)
            if parsed_dt is None:
                raise self.unexpected(tok)
            return parsed_dt
        if tok.kind == "ident":
            name = tok.value.upper()
            if name in _RELATIVE_FIXED:
                return DateLiteral(name)
            if name in _RELATIVE_N:
                self.expect_punct(":")
                return DateLiteral(name, self.integer())
            return _error_raise(self.text, tok)
        raise self.unexpected(tok)


def _error_raise(text: str, tok: Token) -> Any:
    raise _error(text, tok.pos, f"unexpected token: '{tok.text}'")


def parse(text: str) -> Query:
    """Parse SOQL text.

    Raises:
        SalesforceError: MALFORMED_QUERY with Salesforce's caret message.
    """
    if not isinstance(text, str) or not text.strip():
        raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
    return Parser(text).parse()


# --------------------------------------------------------------------------------------------------
# Date literals


def _month_start(day: date, delta_months: int = 0) -> date:
    month_index = day.year * 12 + day.month - 1 + delta_months
    return date(month_index // 12, month_index % 12 + 1, 1)


def date_range(lit: DateLiteral, today: date) -> tuple[date, date]:
    """Resolve a relative date literal to a half-open ``[start, end)`` range of days."""
    week_start = today - timedelta(days=(today.weekday() + 1) % 7)  # weeks start on Sunday
    n = lit.n or 0
    one = timedelta(days=1)
    ranges: dict[str, tuple[date, date]] = {
        "TODAY": (today, today + one),
        "YESTERDAY": (today - one, today),
        "TOMORROW": (today + one, today + 2 * one),
        "THIS_WEEK": (week_start, week_start + 7 * one),
        "LAST_WEEK": (week_start - 7 * one, week_start),
        "NEXT_WEEK": (week_start + 7 * one, week_start + 14 * one),
        "THIS_MONTH": (_month_start(today), _month_start(today, 1)),
        "LAST_MONTH": (_month_start(today, -1), _month_start(today)),
        "NEXT_MONTH": (_month_start(today, 1), _month_start(today, 2)),
        "LAST_90_DAYS": (today - 90 * one, today + one),
        "NEXT_90_DAYS": (today + one, today + 91 * one),
        "THIS_YEAR": (date(today.year, 1, 1), date(today.year + 1, 1, 1)),
        "LAST_YEAR": (date(today.year - 1, 1, 1), date(today.year, 1, 1)),
        "NEXT_YEAR": (date(today.year + 1, 1, 1), date(today.year + 2, 1, 1)),
        "LAST_N_DAYS": (today - n * one, today + one),
        "NEXT_N_DAYS": (today + one, today + (n + 1) * one),
        "N_DAYS_AGO": (today - n * one, today - (n - 1) * one),
        "LAST_N_WEEKS": (week_start - 7 * n * one, week_start),
        "NEXT_N_WEEKS": (week_start + 7 * one, week_start + 7 * (n + 1) * one),
        "LAST_N_MONTHS": (_month_start(today, -n), _month_start(today)),
        "NEXT_N_MONTHS": (_month_start(today, 1), _month_start(today, n + 1)),
    }
    return ranges[lit.name]


# --------------------------------------------------------------------------------------------------
# Evaluation


@dataclass
class ResolvedPath:
    """A field path checked against the schema."""

    ref: FieldRef
    hops: list[FieldDef]
    """Reference fields followed, in order."""
    leaf: FieldDef
    names: list[str]
    """Canonical names: relationship names for the hops, then the field name."""


class Evaluator:
    """Runs a parsed query against records fetched through callables.

    Args:
        schema: the org schema.
        fetch_all: ``(object_name, include_deleted) -> iterable of record dicts``.
        fetch_one: ``record_id -> record dict or None`` for parent lookups (any object).
        api_version: used in ``attributes.url``.
        today: the day relative date literals count from.
    """

    def __init__(
        self,
        schema: Schema,
        fetch_all: Callable[[str, bool], Iterable[dict[str, Any]]],
        fetch_one: Callable[[str], dict[str, Any] | None],
        api_version: str,
        today: date | None = None,
    ) -> None:
        self.schema = schema
        self.fetch_all = fetch_all
        self.fetch_one = fetch_one
        self.version = api_version
        self.today = today or datetime.now(UTC).date()

    def resolve(self, query: Query, obj: ObjectDef, ref: FieldRef) -> ResolvedPath:
        """Check a field path against the schema and return its resolution.

        Raises:
            SalesforceError: INVALID_FIELD naming the column and entity as Salesforce does.
        """
        current = [obj]
        hops: list[FieldDef] = []
        names: list[str] = []
        for index, part in enumerate(ref.path):
            last = index == len(ref.path) - 1
            if index == 0 and len(ref.path) > 1 and part.lower() == obj.name.lower():
                continue  # ``Lead.Name`` written with the object's own name
            if last:
                leaf = self._field_on(current, part)
                if leaf is None:
                    raise _error(
                        query.text,
                        ref.pos,
                        f"No such column '{part}' on entity '{current[0].name}'. If you are"
                        " attempting to use a custom field, be sure to append the '__c' after the"
                        " custom field name. Please reference your WSDL or the describe call for"
                        " the appropriate names.",
                        "INVALID_FIELD",
                    )
                names.append(leaf.name)
                return ResolvedPath(ref, hops, leaf, names)
            hop = None
            for candidate in current:
                hop = candidate.relationship(part)
                if hop:
                    break
            if hop is None:
                raise _error(
                    query.text,
                    ref.pos,
                    f"Didn't understand relationship '{part}' in field path. If you are attempting"
                    " to use a custom relationship, be sure to append the '__r' after the custom"
                    " relationship name. Please reference your WSDL or the describe call for the"
                    " appropriate names.",
                    "INVALID_FIELD",
                )
            hops.append(hop)
            names.append(hop.relationship_name or part)
            current = [o for o in (self.schema.object(t) for t in hop.reference_to) if o]
        raise _error(query.text, ref.pos, "unexpected token", "MALFORMED_QUERY")

    @staticmethod
    def _field_on(objects: list[ObjectDef], name: str) -> FieldDef | None:
        for obj in objects:
            found = obj.field(name)
            if found:
                return found
        return None

    def run(self, query: Query, include_deleted: bool) -> tuple[int, list[dict[str, Any]]]:
        """Evaluate the query.

        Returns:
            ``(totalSize, records)``: records are REST-shaped with ``attributes``; for ``COUNT()``
            the list is empty, for ``COUNT(field)`` it holds one AggregateResult.
        """
        obj = self.schema.object(query.object_name)
        if obj is None:
            raise _error(
                query.text,
                query.object_pos,
                f"sObject type '{query.object_name}' is not supported. If you are attempting to"
                " use a custom object, be sure to append the '__c' after the entity name. Please"
                " reference your WSDL or the describe call for the appropriate names.",
                "INVALID_TYPE",
            )
        selected = [self.resolve(query, obj, ref) for ref in query.fields]
        if query.count_field is not None:
            selected_count = self.resolve(query, obj, query.count_field)
        order = [(self.resolve(query, obj, key.field), key) for key in query.order]
        predicate = self._compile(query, obj, query.where) if query.where is not None else None
        cache: dict[str, dict[str, Any] | None] = {}
        rows = [
            record
            for record in self.fetch_all(obj.name, include_deleted)
            if predicate is None or predicate(record, cache)
        ]
        for path, key in reversed(order):
            rows = self._sorted(rows, path, key, cache)
        if query.offset:
            rows = rows[query.offset :]
        if query.limit is not None:
            rows = rows[: query.limit]
        if query.count:
            if query.count_field is None:
                return len(rows), []
            non_null = sum(1 for r in rows if self._value(r, selected_count, cache) is not None)
            return 1, [{"attributes": {"type": "AggregateResult"}, "expr0": non_null}]
        return len(rows), [self._shape(obj, record, selected, cache) for record in rows]

    # ----------------------------------------------------------------------------------------------

    def _parent(self, record: dict[str, Any] | None, hop: FieldDef, cache: dict) -> dict | None:
        if record is None:
            return None
        ref_id = record.get(hop.name)
        if not ref_id:
            return None
        if ref_id not in cache:
            cache[ref_id] = self.fetch_one(ref_id)
        return cache[ref_id]

    def _value(self, record: dict[str, Any], path: ResolvedPath, cache: dict) -> Any:
        current: dict[str, Any] | None = record
        for hop in path.hops:
            current = self._parent(current, hop, cache)
        return None if current is None else current.get(path.leaf.name)

    def _shape(
        self, obj: ObjectDef, record: dict[str, Any], selected: list[ResolvedPath], cache: dict
    ) -> dict[str, Any]:
        out: dict[str, Any] = {"attributes": self._attributes(obj.name, record.get("Id"))}
        for path in selected:
            target = out
            current: dict[str, Any] | None = record
            broken = False
            for hop, name in zip(path.hops, path.names, strict=False):
                if broken:
                    break
                current = self._parent(current, hop, cache)
                if current is None:
                    target.setdefault(name, None)
                    broken = True
                    break
                existing = target.get(name)
                if not isinstance(existing, dict):
                    parent_obj = self.schema.object_for_id(current.get("Id", ""))
                    existing = {
                        "attributes": self._attributes(
                            parent_obj.name if parent_obj else hop.reference_to[0],
                            current.get("Id"),
                        )
                    }
                    target[name] = existing
                target = existing
            if not broken:
                target[path.leaf.name] = None if current is None else current.get(path.leaf.name)
        return out

    def _attributes(self, type_name: str, record_id: Any) -> dict[str, str]:
        return {
            "type": type_name,
            "url": f"/services/data/v{self.version}/sobjects/{type_name}/{record_id}",
        }

    def _sorted(self, rows: list[dict], path: ResolvedPath, key: OrderKey, cache: dict) -> list:
        nulls_last = key.nulls_last if key.nulls_last is not None else key.descending
        present: list[tuple[Any, dict]] = []
        missing: list[tuple[Any, dict]] = []
        for row in rows:
            value = self._value(row, path, cache)
            (missing if value is None else present).append((self._sort_key(path.leaf, value), row))
        present.sort(key=lambda pair: pair[0], reverse=key.descending)
        ordered = [row for _, row in present]
        nulls = [row for _, row in missing]
        return ordered + nulls if nulls_last else nulls + ordered

    @staticmethod
    def _sort_key(fdef: FieldDef, value: Any) -> Any:
        if fdef.type == "datetime":
            return parse_datetime(value) or datetime.min.replace(tzinfo=UTC)
        if fdef.type in {"id", "reference"}:
            # Ids order by their case-sensitive 18-character form, the same order the ``<``/``>``
            # filters compare in, so ``ORDER BY Id`` and ``WHERE Id > :last`` page consistently.
            return to18(value) or value
        if isinstance(value, str):
            return value.lower()
        return value

    def _compile(self, query: Query, obj: ObjectDef, node: Any) -> Callable[[dict, dict], bool]:
        if isinstance(node, BoolOp):
            parts = [self._compile(query, obj, item) for item in node.items]
            if node.op == "AND":
                return lambda r, c: all(p(r, c) for p in parts)
            if node.op == "OR":
                return lambda r, c: any(p(r, c) for p in parts)
            inner = parts[0]
            return lambda r, c: not inner(r, c)
        path = self.resolve(query, obj, node.field)
        test = self._comparison(query, path, node)
        return lambda r, c: test(self._value(r, path, c))

    def _literal(self, query: Query, fdef: FieldDef, value: Any, pos: int) -> Any:
        kind = fdef.type
        name = fdef.name

        def bad(expected: str, quoted: bool) -> SalesforceError:
            how = "should be enclosed in quotes" if quoted else "should not be enclosed in quotes"
            return _error(
                query.text,
                pos,
                f"value of filter criterion for field '{name}' must be of type {expected} and {how}",
                "INVALID_FIELD",
            )

        if value is None:
            return None
        if kind in STRING_TYPES or kind in {"anyType"}:
            if kind != "anyType" and not isinstance(value, str):
                raise bad("string", True)
            return value
        if kind in {"id", "reference"}:
            if not isinstance(value, str):
                raise bad("id", True)
            normal = to18(value)
            if normal is None:
                raise _error(
                    query.text, pos, f"invalid ID field: {value}", "INVALID_QUERY_FILTER_OPERATOR"
                )
            return normal
        if kind == "boolean":
            if not isinstance(value, bool):
                raise bad("boolean", False)
            return value
        if kind in NUMBER_TYPES or kind == "int":
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise bad("double" if kind != "int" else "int", False)
            return value
        if kind == "date":
            if isinstance(value, DateLiteral):
                return date_range(value, self.today)
            if isinstance(value, date) and not isinstance(value, datetime):
                return value
            raise bad("date", False)
        if kind == "datetime":
            if isinstance(value, DateLiteral):
                start, end = date_range(value, self.today)
                return (
                    datetime.combine(start, datetime.min.time(), UTC),
                    datetime.combine(end, datetime.min.time(), UTC),
                )
            if isinstance(value, datetime):
                return value
            raise bad("dateTime", False)
        return value

    def _comparison(
        self, query: Query, path: ResolvedPath, node: Comparison
    ) -> Callable[[Any], bool]:
        fdef = path.leaf
        op = node.op
        if op in {"IN", "NOT_IN", "INCLUDES", "EXCLUDES"}:
            literals = [self._literal(query, fdef, v, node.value_pos) for v in node.value]
            if op in {"INCLUDES", "EXCLUDES"}:
                if fdef.type != "multipicklist":
                    raise _error(
                        query.text,
                        node.field.pos,
                        "includes or excludes operator only valid on multipicklist field",
                        "INVALID_QUERY_FILTER_OPERATOR",
                    )
                wanted = [{p.lower() for p in str(lit).split(";")} for lit in literals]

                def includes(v: Any) -> bool:
                    have = {p.lower() for p in (v or "").split(";") if p}
                    return any(w <= have for w in wanted)

                return includes if op == "INCLUDES" else (lambda v: not includes(v))
            normal = {self._norm(fdef, lit) for lit in literals if not isinstance(lit, tuple)}
            if op == "IN":
                return lambda v: self._norm(fdef, v) in normal
            return lambda v: self._norm(fdef, v) not in normal
        if op == "LIKE":
            if fdef.type not in STRING_TYPES and fdef.type not in {"id", "reference"}:
                raise _error(
                    query.text,
                    node.field.pos,
                    f"invalid operator on field: {fdef.name}",
                    "INVALID_QUERY_FILTER_OPERATOR",
                )
            pattern = _like_regex(node.value)
            return lambda v: v is not None and pattern.match(str(v)) is not None
        literal = self._literal(query, fdef, node.value, node.value_pos)
        if isinstance(literal, tuple):
            start, end = literal
            if fdef.type == "datetime":

                def conv(v: Any) -> Any:
                    return parse_datetime(v) if v else None
            else:

                def conv(v: Any) -> Any:
                    return parse_date(v) if v else None

            checks: dict[str, Callable[[Any], bool]] = {
                "=": lambda x: start <= x < end,
                "!=": lambda x: not (start <= x < end),
                "<": lambda x: x < start,
                "<=": lambda x: x < end,
                ">": lambda x: x >= end,
                ">=": lambda x: x >= start,
            }
            check = checks[op]

            def in_range(v: Any) -> bool:
                x = conv(v)
                if x is None:
                    return op == "!="
                return check(x)

            return in_range
        if literal is None:
            if op == "=":
                return lambda v: v is None
            if op == "!=":
                return lambda v: v is not None
            return lambda v: False
        target = self._norm(fdef, literal)
        compare: dict[str, Callable[[Any, Any], bool]] = {
            "=": lambda a, b: a == b,
            "!=": lambda a, b: a != b,
            "<": lambda a, b: a < b,
            "<=": lambda a, b: a <= b,
            ">": lambda a, b: a > b,
            ">=": lambda a, b: a >= b,
        }
        fn = compare[op]

        def test(v: Any) -> bool:
            if v is None:
                return op == "!="
            try:
                return fn(self._norm(fdef, v), target)
            except TypeError:
                return False

        return test

    @staticmethod
    def _norm(fdef: FieldDef, value: Any) -> Any:
        if value is None:
            return None
        if fdef.type == "datetime":
            return value if isinstance(value, datetime) else parse_datetime(value)
        if fdef.type == "date":
            return value if isinstance(value, date) else parse_date(value)
        if fdef.type in {"id", "reference"}:
            return to18(value) if isinstance(value, str) else value
        if isinstance(value, str):
            return value.lower()
        if isinstance(value, int | float) and not isinstance(value, bool):
            return float(value)
        return value


def _like_regex(pattern: str) -> re.Pattern[str]:
    out = []
    i = 0
    while i < len(pattern):
        char = pattern[i]
        if char == "\\" and i + 1 < len(pattern) and pattern[i + 1] in "%_":
            out.append(re.escape(pattern[i + 1]))
            i += 2
            continue
        out.append(".*" if char == "%" else "." if char == "_" else re.escape(char))
        i += 1
    return re.compile("^" + "".join(out) + "$", re.IGNORECASE | re.DOTALL)

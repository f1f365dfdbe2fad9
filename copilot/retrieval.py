"""Hybrid retrieval of citable evidence: notes, activities and competitor documents.

:func:`retrieve` answers one question ("why do we lose to Vantora on price?") for one tenant:

1. **Facets to record ids.** ``competitor``, ``outcome``, ``stage``, ``segment``,
   ``opportunity_ids`` and ``account_ids`` narrow the tenant's deals (one columnar read of the
   opportunities); notes and activities are then searched only where ``opportunity_id`` (or, for
   account facets, ``account_id``) is in that set. The tenant filter is in every query, so nothing
   of another tenant can come back.
   A facet matching more than ``MAX_SCOPE_DEALS`` deals keeps the most recently closed ones.
2. **Candidates per source.** Notes: within a scope, BM25 and cosine computed here over the
   tenant's notes held in memory between writes (``_NoteMatrix``); unscoped, LanceDB's full-text
   and vector search. Deals are held the same way, so a question reads no table it has not seen
   change (each held value is checked against its table's version).
   Activities: they have no index of their own, so their subject and body are ranked here with
   BM25, and only inside a narrow facet scope (see ``ACTIVITY_SCOPE_DEALS``). Competitor
   documents (``copilot.intel``): a tenant has tens to hundreds of chunks per competitor, so they
   are read whole and ranked here by BM25 and by cosine against their stored vectors.
3. **Fusion.** Reciprocal rank fusion (``1 / (60 + rank)`` summed over the lists a hit appears in,
   the constant from Cormack et al., SIGIR 2009), plus two light boosts: recency (a year-old
   record keeps about a third of the boost) and an exact mention of the faceted competitor.

:func:`resolve_ref` turns a citation back into the record it names, for the same tenant only.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from copilot.competitors import CompetitorMatcher
from copilot.llm import Evidence
from core.embeddings import get_embedder
from core.store import TABLES, Store

KINDS = ("note", "activity", "intel")
"""Evidence kinds :func:`retrieve` searches."""
FACETS = ("competitor", "aliases", "outcome", "segment", "stage", "opportunity_ids", "account_ids")
"""Facet names :func:`retrieve` accepts (``aliases``: further wordings of ``competitor``)."""
OUTCOMES = ("won", "lost", "open")
RECORD_REFS = {
    "note": "note",
    "activity": "activity",
    "opportunity": "opportunity",
    "account": "account",
}
"""Ref prefix -> store entity for refs that name a synced record."""

RRF_K = 60
"""Reciprocal rank fusion constant."""
RECENCY_WEIGHT = 0.5 / RRF_K
"""At most half a first-place vote for a record from today."""
RECENCY_HALF_LIFE_DAYS = 240.0
ALIAS_WEIGHT = 1.0 / RRF_K
"""A mention of the faceted competitor counts like one more first-place vote."""
CANDIDATES_PER_LIST = 30
"""Hits taken from each ranked list before fusion."""
MAX_ACTIVITY_SCAN = 4000
"""Most activity rows ranked in-process per query."""
ACTIVITY_SCOPE_DEALS = 50
"""Activities are searched only within this many deals (or an account scope): across a wide scope
they are timeline lines ("Sent overview deck") that never outrank a note, and scanning them cost
a third of a competitor query's time."""

_WORD = re.compile(r"\w+", re.UNICODE)
_STOPWORDS = frozenset((
    "a", "an", "and", "are", "as", "at", "be", "but", "by", "do", "for", "from", "has", "have",
    "how", "in", "is", "it", "its", "of", "on", "or", "our", "so", "that", "the", "their", "them",
    "they", "this", "to", "was", "we", "were", "what", "when", "where", "which", "who", "why",
    "will", "with", "you",
))  # fmt: skip
_REF = re.compile(r"^(?P<kind>[a-z]+):(?P<rest>[^\s]{1,200})$")
_INTEL_REF = re.compile(r"^(?P<doc>[0-9a-f]{8,64})#(?P<chunk>\d{1,6})$")


class FacetError(ValueError):
    """A facet name or value retrieval does not understand."""


@dataclass
class _Scope:
    """What the facets resolved to; ``None`` means unrestricted."""

    opportunity_ids: list[str] | None = None
    account_ids: list[str] | None = None
    deals: dict[str, dict[str, Any]] = field(default_factory=dict)
    competitor: str | None = None
    aliases: tuple[str, ...] = ()
    held_notes: _NoteMatrix | None = None

    @property
    def empty(self) -> bool:
        return self.opportunity_ids == [] and not self.account_ids

    @property
    def scoped(self) -> bool:
        return self.opportunity_ids is not None or self.account_ids is not None


def retrieve(
    store: Store,
    tenant_id: str,
    query: str,
    *,
    facets: Mapping[str, Any] | None = None,
    kinds: Sequence[str] = KINDS,
    limit: int = 12,
) -> list[Evidence]:
    """The best evidence for a question within a tenant, filtered by facets.

    Args:
        store: the store.
        tenant_id: whose records; nothing of another tenant is ever returned.
        query: what the evidence should be about (free text).
        facets: ``competitor`` (name), ``aliases`` (its other wordings), ``outcome`` (``won``,
            ``lost``, ``open``), ``stage`` (deal stage, any case), ``segment`` (an account segment's
            id or name, see ``copilot.segments``), ``opportunity_ids``, ``account_ids``. Several
            facets intersect.
        kinds: evidence kinds to search: ``note``, ``activity``, ``intel``.
        limit: most items returned.

    Returns:
        Evidence, best first, each with ``facets`` describing its deal (outcome, stage,
        competitor, opportunity and account ids) or its document (competitor, title).

    Raises:
        FacetError: an unknown facet, kind or facet value.
    """
    unknown_kinds = sorted(set(kinds) - set(KINDS))
    if unknown_kinds:
        raise FacetError(f"unknown evidence kind {unknown_kinds[0]!r}; expected one of {KINDS}")
    if limit < 1:
        raise FacetError("limit must be at least 1")
    if not query.strip():
        _resolve_facets(store, tenant_id, dict(facets or {}))  # still refuse bad facets
        return []
    scope = _resolve_facets(store, tenant_id, dict(facets or {}))
    if scope.empty and "intel" not in kinds:
        return []
    query_vector = get_embedder().embed_one(query)
    query_terms = _terms(query)
    matcher = (
        CompetitorMatcher({scope.competitor: (scope.competitor, *scope.aliases)})
        if scope.competitor
        else None
    )
    ranked: list[list[tuple[str, Evidence]]] = []
    if "note" in kinds and not scope.empty:
        ranked += _note_lists(store, tenant_id, query, query_vector, scope)
    narrow = scope.account_ids or len(scope.opportunity_ids or ()) <= ACTIVITY_SCOPE_DEALS
    if "activity" in kinds and scope.scoped and not scope.empty and narrow:
        ranked += _activity_list(store, tenant_id, query_terms, scope)
    if "intel" in kinds and not (scope.opportunity_ids is not None and scope.competitor is None):
        ranked += _intel_lists(store, tenant_id, query_terms, query_vector, scope)
    return _fuse(ranked, matcher, limit)


def resolve_ref(store: Store, tenant_id: str, ref: str) -> dict[str, Any] | None:
    """The record a citation names, within one tenant.

    Args:
        store: the store.
        tenant_id: the tenant the citation was made for.
        ref: ``note:<id>``, ``activity:<id>``, ``opportunity:<id>``, ``account:<id>``,
            ``segment:<segment_id>`` or ``intel:<doc_id>#<chunk>``.

    Returns:
        The record (vectors left out), or None when the tenant has no such record.

    Raises:
        ValueError: ``ref`` is not a citation of any of these forms.
    """
    if not isinstance(ref, str):
        raise ValueError(f"a citation must be text like 'note:<id>', got {type(ref).__name__}")
    match = _REF.match(ref)
    if match is None:
        raise ValueError(f"malformed citation {ref!r}; expected '<kind>:<id>'")
    kind, rest = match.group("kind"), match.group("rest")
    if kind == "intel":
        from copilot.intel import read_chunk

        chunk = _INTEL_REF.match(rest)
        if chunk is None:
            raise ValueError(f"malformed intel citation {ref!r}; expected 'intel:<doc_id>#<n>'")
        return read_chunk(store, tenant_id, chunk.group("doc"), int(chunk.group("chunk")))
    if kind == "segment":
        from copilot.segments import list_segments

        return next((s for s in list_segments(store, tenant_id) if s["segment_id"] == rest), None)
    if kind not in RECORD_REFS:
        raise ValueError(f"unknown citation kind {kind!r} in {ref!r}")
    entity = RECORD_REFS[kind]
    rows = store.query(tenant_id, entity, filters={"crm_id": rest}, limit=1)
    if not rows:
        return None
    row = rows[0]
    row.pop("vector", None)
    return row


# --------------------------------------------------------------------------------------------------
# Facets


_NOTE_COLUMNS = ("crm_id", "title", "body", "created_at", "opportunity_id", "account_id", "vector")
MAX_SCOPE_DEALS = 200
"""A facet matching more deals keeps the most recently closed (or created) ones: a battle card
leans on recent experience, and the cap bounds a query's cost at any tenant size."""
DEAL_COLUMNS = ("crm_id", "account_id", "stage", "is_closed", "is_won", "competitors", "close_date")
"""Opportunity columns facets and evidence labels use."""


def deal_index(store: Store, tenant_id: str) -> dict[str, dict[str, Any]]:
    """A tenant's deals by id with what facets and evidence labels need (one columnar read)."""
    table = store.to_arrow(tenant_id, "opportunity", columns=list(DEAL_COLUMNS))
    return {row["crm_id"]: row for row in table.to_pylist()}


def outcome_of(deal: Mapping[str, Any]) -> str:
    """``won``, ``lost`` or ``open``."""
    if not deal.get("is_closed"):
        return "open"
    return "won" if deal.get("is_won") else "lost"


def _resolve_facets(store: Store, tenant_id: str, facets: dict[str, Any]) -> _Scope:
    unknown = sorted(set(facets) - set(FACETS))
    if unknown:
        raise FacetError(f"unknown facet {unknown[0]!r}; expected one of {', '.join(FACETS)}")
    given = {k: v for k, v in facets.items() if v not in (None, "", [], ())}
    scope = _Scope()
    competitor = given.get("competitor")
    if competitor is not None:
        if not isinstance(competitor, str):
            raise FacetError("facet 'competitor' must be a name")
        scope.competitor = competitor.strip()
        scope.aliases = tuple(_strings(given.get("aliases", ()), "aliases"))
    outcome = given.get("outcome")
    if outcome is not None and outcome not in OUTCOMES:
        raise FacetError(f"facet 'outcome' must be one of {OUTCOMES}, got {outcome!r}")
    stage = given.get("stage")
    if stage is not None and not isinstance(stage, str):
        raise FacetError("facet 'stage' must be a stage name")
    explicit_opps = (
        _strings(given["opportunity_ids"], "opportunity_ids")
        if ("opportunity_ids" in given)
        else None
    )
    explicit_accounts = (
        _strings(given["account_ids"], "account_ids") if ("account_ids" in given) else None
    )
    segment = given.get("segment")
    if segment is not None and not isinstance(segment, str):
        raise FacetError("facet 'segment' must be a segment name")

    accounts: set[str] | None = set(explicit_accounts) if explicit_accounts is not None else None
    if segment is not None:
        in_segment = _segment_accounts(store, tenant_id, segment)
        accounts = in_segment if accounts is None else accounts & in_segment
    deal_facets = (competitor, outcome, stage, explicit_opps, accounts)
    if all(f is None for f in deal_facets):
        return scope
    chosen = _select_deals(
        store,
        tenant_id,
        wordings={w.casefold() for w in (scope.competitor or "", *scope.aliases) if w},
        outcome=outcome,
        stage=stage,
        opportunity_ids=explicit_opps,
        account_ids=accounts,
    )
    scope.deals = {row["crm_id"]: row for row in chosen}
    scope.opportunity_ids = sorted(scope.deals)
    # Account-level notes (plans, reviews) belong to no deal; they count when only accounts were
    # asked for, since a deal facet says the question is about deals.
    if accounts is not None and all(f is None for f in (competitor, outcome, stage, explicit_opps)):
        scope.account_ids = sorted(accounts)
    return scope


def _select_deals(
    store: Store,
    tenant_id: str,
    *,
    wordings: set[str],
    outcome: str | None,
    stage: str | None,
    opportunity_ids: Sequence[str] | None,
    account_ids: set[str] | None,
) -> list[dict[str, Any]]:
    """The deals matching every given facet, filtered column-wise in Arrow.

    Converting every deal to Python rows was most of a query's time at 16k deals; only the chosen
    ones are converted here.
    """
    table = _deal_table(store, tenant_id)
    mask = np.ones(table.num_rows, dtype=bool)
    if opportunity_ids is not None:
        mask &= _as_bool(pc.is_in(table["crm_id"], value_set=pa.array(list(opportunity_ids))))
    if outcome == "open":
        mask &= ~_as_bool(table["is_closed"])
    elif outcome is not None:
        won = _as_bool(table["is_won"])
        mask &= _as_bool(table["is_closed"]) & (won if outcome == "won" else ~won)
    if account_ids is not None:
        mask &= _as_bool(pc.is_in(table["account_id"], value_set=pa.array(sorted(account_ids))))
    if stage is not None:
        lowered = pc.utf8_lower(table["stage"])
        mask &= _as_bool(pc.equal(lowered, stage.strip().casefold()))
    if wordings:
        column = table["competitors"].combine_chunks()
        flat = pc.utf8_lower(pc.list_flatten(column))
        parents = pc.list_parent_indices(column)
        hit = pc.filter(parents, pc.is_in(flat, value_set=pa.array(sorted(wordings))))
        named = np.zeros(table.num_rows, dtype=bool)
        named[np.asarray(hit, dtype=np.int64)] = True
        mask &= named
    chosen = table.filter(pa.array(mask))
    if chosen.num_rows > MAX_SCOPE_DEALS:
        order = pc.sort_indices(
            chosen, sort_keys=[("close_date", "descending"), ("crm_id", "descending")]
        )
        chosen = chosen.take(order[:MAX_SCOPE_DEALS])
    return chosen.to_pylist()


def _deal_table(store: Store, tenant_id: str) -> pa.Table:
    """The tenant's deals (``DEAL_COLUMNS``), read once per version of the opportunities table.

    Reading them for every question was a fifth of a query's time at 16k deals.
    """
    return store.memo(
        tenant_id,
        ("retrieval.deals",),
        [TABLES["opportunity"]],
        lambda: store.to_arrow(tenant_id, "opportunity", columns=list(DEAL_COLUMNS)),
    )


def _as_bool(values: Any) -> np.ndarray:
    return np.asarray(pc.fill_null(values, False), dtype=bool)


def _segment_accounts(store: Store, tenant_id: str, segment: str) -> set[str]:
    """Accounts in a segment named by its id or its name (any case)."""
    from copilot import segments

    wanted = segment.strip().casefold()
    ids = {
        row["segment_id"]
        for row in segments.list_segments(store, tenant_id)
        if wanted in (row["segment_id"].casefold(), (row["name"] or "").strip().casefold())
    }
    return {a for a, s in segments.segment_members(store, tenant_id).items() if s in ids}


def _strings(value: Any, name: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Iterable):
        raise FacetError(f"facet {name!r} must be a list of ids or names")
    out = []
    for item in value:
        if not isinstance(item, str) or not item:
            raise FacetError(f"facet {name!r} holds {item!r}, which is not an id")
        out.append(item)
    return out


# --------------------------------------------------------------------------------------------------
# Candidate lists


def _note_lists(
    store: Store, tenant_id: str, query: str, vector: np.ndarray, scope: _Scope
) -> list[list[tuple[str, Evidence]]]:
    """Full-text and vector hits of notes, one pair of lists per scope filter."""
    filter_sets: list[dict[str, Any] | None] = []
    if scope.opportunity_ids:
        filter_sets.append({"opportunity_id": scope.opportunity_ids})
    if scope.account_ids:
        filter_sets.append({"account_id": scope.account_ids})
    if not scope.scoped:
        filter_sets.append(None)
    return [
        hits
        for filters in filter_sets
        for how in ("text", "vector")
        for hits in _note_search(store, tenant_id, how, query, vector, filters, scope)
    ]


def _note_search(
    store: Store,
    tenant_id: str,
    how: str,
    query: str,
    vector: np.ndarray,
    filters: dict[str, Any] | None,
    scope: _Scope,
) -> list[list[tuple[str, Evidence]]]:
    if filters is None and how == "text":
        hits = store.search_notes_text(tenant_id, query, limit=CANDIDATES_PER_LIST)
    elif filters is None:
        hits = store.search_notes_vector(tenant_id, vector, limit=CANDIDATES_PER_LIST)
    elif how == "text":
        hits = _text_in_scope(_scope_notes(store, tenant_id, scope), query, filters)
    else:
        hits = _nearest_in_scope(_scope_notes(store, tenant_id, scope), vector, filters)
    return [[(f"note:{row['crm_id']}", _note_evidence(row, scope)) for row in hits]]


def _nearest_in_scope(
    notes: _NoteMatrix, vector: np.ndarray, filters: dict[str, Any]
) -> list[dict[str, Any]]:
    """Nearest notes among a scope's notes, by cosine computed here over the held matrix.

    LanceDB's flat vector search with a prefilter still cost about as much as an unfiltered search
    over the whole table (measured 180 ms at 100k notes for a one-deal filter), and reading the
    scope's vectors for each question cost 35 ms; :class:`_NoteMatrix` holds them between writes.
    """
    rows = notes.rows_where(filters)
    if rows.size == 0:
        return []
    scores = notes.vectors[rows] @ np.asarray(vector, dtype=np.float32)
    take = min(CANDIDATES_PER_LIST, rows.size)
    best = np.argpartition(-scores, take - 1)[:take]
    best = best[np.argsort(-scores[best], kind="stable")]
    found = notes.records.take(pa.array(rows[best])).to_pylist()
    for row, score in zip(found, scores[best], strict=True):
        row["_distance"] = float(1.0 - score)
    return found


def _text_in_scope(notes: _NoteMatrix, query: str, filters: dict[str, Any]) -> list[dict[str, Any]]:
    """Best BM25 matches among a scope's notes, scored here over the held lower-cased text.

    LanceDB's full-text search prefiltered to a scope cost 20 to 25 ms at 100k notes whatever the
    scope's size; a scope holds at most a few thousand notes, and counting the query's words in
    them with Arrow kernels costs a few milliseconds. IDF is the scope's own, as for activities.
    """
    rows = notes.rows_where(filters)
    terms = sorted(set(_terms(query)))
    if rows.size == 0 or not terms:
        return []
    texts = notes.text.take(pa.array(rows))
    lengths = notes.lengths[rows]
    average = float(lengths.mean()) or 1.0
    scores = np.zeros(rows.size, dtype=np.float64)
    k1, b = 1.2, 0.75
    for term in terms:
        tf = np.asarray(pc.count_substring_regex(texts, _term_pattern(term)), dtype=np.float64)
        with_term = int(np.count_nonzero(tf))
        if not with_term:
            continue
        idf = math.log(1 + (rows.size - with_term + 0.5) / (with_term + 0.5))
        scores += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * lengths / average))
    matched = np.flatnonzero(scores > 0)
    if matched.size == 0:
        return []
    order = matched[np.lexsort((rows[matched], -scores[matched]))][:CANDIDATES_PER_LIST]
    found = notes.records.take(pa.array(rows[order])).to_pylist()
    for row, score in zip(found, scores[order], strict=True):
        row["_score"] = float(score)
    return found


def _term_pattern(term: str) -> str:
    """A whole-word pattern for a term and its plain inflections (price: prices, priced, pricing)."""
    stem = term[:-1] if term.endswith("e") and len(term) > 3 else term
    suffixes = "(?:e|es|ed|ing)?" if stem != term else "(?:s|es|ed|ing)?"
    return rf"\b{re.escape(stem)}{suffixes}\b"


class _NoteMatrix:
    """A tenant's vector-bearing notes held in memory: records, text, vectors, row lookups.

    Built from one columnar read per version of the notes table (``Store.memo``), so a question
    costs a dictionary lookup and one small matrix product instead of a filtered scan. At 100k
    notes it holds about 150 MB of vectors and 60 MB of text.
    """

    def __init__(self, table: pa.Table) -> None:
        table = table.filter(pc.is_valid(table["vector"]))  # consent-withheld notes: no vector
        self.records = table.drop_columns(["vector"]).combine_chunks()
        titled = pc.binary_join_element_wise(
            pc.fill_null(self.records["title"], ""), pc.fill_null(self.records["body"], ""), " "
        )
        self.text = pc.utf8_lower(titled.combine_chunks())
        self.lengths = np.asarray(pc.count_substring_regex(self.text, r"\w+"), dtype=np.float64)
        flat = table["vector"].combine_chunks().flatten() if table.num_rows else pa.array([])
        self.vectors = np.asarray(flat, dtype=np.float32).reshape(table.num_rows, -1)
        self.by_column = {
            column: _positions_by_value(table[column])
            for column in ("opportunity_id", "account_id")
        }

    def rows_where(self, filters: Mapping[str, Any]) -> np.ndarray:
        """Positions of the notes whose column holds one of the given values (all filters)."""
        chosen: np.ndarray | None = None
        for column, values in filters.items():
            index = self.by_column[column]
            wanted = [values] if isinstance(values, str) else values
            parts = [index[v] for v in wanted if v in index]
            rows = np.concatenate(parts) if parts else np.empty(0, dtype=np.int64)
            chosen = rows if chosen is None else np.intersect1d(chosen, rows)
        return np.sort(chosen) if chosen is not None else np.arange(self.records.num_rows)


def _positions_by_value(column: pa.ChunkedArray) -> dict[str, np.ndarray]:
    """Row positions per distinct non-null value of a string column."""
    encoded = pc.dictionary_encode(column.combine_chunks())
    codes = np.asarray(pc.fill_null(encoded.indices, -1), dtype=np.int64)
    order = np.argsort(codes, kind="stable")
    bounds = np.searchsorted(codes[order], np.arange(len(encoded.dictionary) + 1))
    return {
        value: order[bounds[code] : bounds[code + 1]]
        for code, value in enumerate(encoded.dictionary.to_pylist())
    }


def _scope_notes(store: Store, tenant_id: str, scope: _Scope) -> _NoteMatrix:
    """The held notes, looked up once per question (each lookup checks the table's version)."""
    if scope.held_notes is None:
        scope.held_notes = _note_matrix(store, tenant_id)
    return scope.held_notes


def _note_matrix(store: Store, tenant_id: str) -> _NoteMatrix:
    return store.memo(
        tenant_id,
        ("retrieval.notes",),
        [TABLES["note"]],
        lambda: _NoteMatrix(store.to_arrow(tenant_id, "note", columns=list(_NOTE_COLUMNS))),
    )


def _activity_list(
    store: Store, tenant_id: str, terms: list[str], scope: _Scope
) -> list[list[tuple[str, Evidence]]]:
    columns = ["crm_id", "type", "subject", "body", "occurred_at", "opportunity_id", "account_id"]
    rows: list[dict[str, Any]] = []
    if scope.opportunity_ids:
        rows += store.query(
            tenant_id,
            "activity",
            filters={"opportunity_id": scope.opportunity_ids},
            columns=columns,
            limit=MAX_ACTIVITY_SCAN,
        )
    if scope.account_ids:
        rows += store.query(
            tenant_id,
            "activity",
            filters={"account_id": scope.account_ids},
            columns=columns,
            limit=MAX_ACTIVITY_SCAN,
        )
    unique = {row["crm_id"]: row for row in rows}
    docs = list(unique.values())
    texts = [_activity_text(row) for row in docs]
    order = bm25_rank(terms, texts)[:CANDIDATES_PER_LIST]
    return [[(f"activity:{docs[i]['crm_id']}", _activity_evidence(docs[i], scope)) for i in order]]


def _intel_lists(
    store: Store, tenant_id: str, terms: list[str], vector: np.ndarray, scope: _Scope
) -> list[list[tuple[str, Evidence]]]:
    from copilot.intel import read_chunks

    chunks = read_chunks(store, tenant_id, competitor=scope.competitor, with_vectors=True)
    if not chunks:
        return []
    evidence = [(f"intel:{c['doc_id']}#{c['chunk']}", _intel_evidence(c)) for c in chunks]
    by_text = bm25_rank(terms, [f"{c['title'] or ''} {c['text']}" for c in chunks])
    matrix = np.asarray([c["vector"] for c in chunks], dtype=np.float32)
    by_vector = list(np.argsort(-(matrix @ vector.astype(np.float32)), kind="stable"))
    return [
        [evidence[i] for i in by_text[:CANDIDATES_PER_LIST]],
        [evidence[int(i)] for i in by_vector[:CANDIDATES_PER_LIST]],
    ]


def bm25_rank(
    terms: Sequence[str], texts: Sequence[str], k1: float = 1.2, b: float = 0.75
) -> list[int]:
    """Indices of ``texts`` that share a term with the query, best BM25 score first.

    Args:
        terms: the query's terms (see :func:`_terms`).
        texts: the documents.
        k1: term-frequency saturation.
        b: length normalisation.

    Returns:
        Indices into ``texts``; documents with no query term are left out.
    """
    if not terms or not texts:
        return []
    tokenised = [_terms(t) for t in texts]
    n_docs = len(tokenised)
    average = sum(len(t) for t in tokenised) / n_docs or 1.0
    wanted = set(terms)
    frequency: Counter[str] = Counter()
    for tokens in tokenised:
        frequency.update(wanted.intersection(tokens))
    scores: list[tuple[float, int]] = []
    for index, tokens in enumerate(tokenised):
        counts = Counter(tok for tok in tokens if tok in wanted)
        if not counts:
            continue
        score = 0.0
        for term, tf in counts.items():
            idf = math.log(1 + (n_docs - frequency[term] + 0.5) / (frequency[term] + 0.5))
            score += idf * tf * (k1 + 1) / (tf + k1 * (1 - b + b * len(tokens) / average))
        scores.append((-score, index))
    return [index for _, index in sorted(scores)]


def _terms(text: str) -> list[str]:
    return [w for w in _WORD.findall(text.casefold()) if w not in _STOPWORDS]


# --------------------------------------------------------------------------------------------------
# Evidence and fusion


def _deal_facets(deal_id: str | None, scope: _Scope) -> dict[str, str]:
    deal = scope.deals.get(deal_id or "")
    if deal is None:
        return {"opportunity_id": deal_id} if deal_id else {}
    labels = {"opportunity_id": deal_id or "", "outcome": outcome_of(deal), "stage": deal["stage"]}
    if deal["competitors"]:
        labels["competitor"] = "; ".join(deal["competitors"])
    if deal["account_id"]:
        labels["account_id"] = deal["account_id"]
    return labels


def _note_evidence(row: Mapping[str, Any], scope: _Scope) -> Evidence:
    text = row["body"] if not row.get("title") else f"{row['title']}: {row['body']}"
    labels = _deal_facets(row.get("opportunity_id"), scope)
    if row.get("account_id"):
        labels.setdefault("account_id", row["account_id"])
    return Evidence(f"note:{row['crm_id']}", "note", _iso_date(row.get("created_at")), text, labels)


def _activity_text(row: Mapping[str, Any]) -> str:
    return ": ".join(part for part in (row.get("subject"), row.get("body")) if part)


def _activity_evidence(row: Mapping[str, Any], scope: _Scope) -> Evidence:
    labels = _deal_facets(row.get("opportunity_id"), scope)
    labels["type"] = row["type"]
    if row.get("account_id"):
        labels.setdefault("account_id", row["account_id"])
    return Evidence(
        f"activity:{row['crm_id']}",
        "activity",
        _iso_date(row.get("occurred_at")),
        _activity_text(row),
        labels,
    )


def _intel_evidence(chunk: Mapping[str, Any]) -> Evidence:
    text = chunk["text"] if not chunk.get("title") else f"{chunk['title']}: {chunk['text']}"
    labels = {"competitor": chunk["competitor"], "source": chunk.get("source") or ""}
    return Evidence(
        f"intel:{chunk['doc_id']}#{chunk['chunk']}",
        "intel",
        _iso_date(chunk.get("added_at")),
        text,
        labels,
    )


def _fuse(
    ranked: Sequence[Sequence[tuple[str, Evidence]]],
    matcher: CompetitorMatcher | None,
    limit: int,
) -> list[Evidence]:
    scores: dict[str, float] = {}
    items: dict[str, Evidence] = {}
    for hits in ranked:
        for rank, (ref, evidence) in enumerate(hits):
            scores[ref] = scores.get(ref, 0.0) + 1.0 / (RRF_K + rank + 1)
            items.setdefault(ref, evidence)
    today = datetime.now(UTC).date()
    for ref, evidence in items.items():
        if evidence.date:
            age = max((today - date.fromisoformat(evidence.date)).days, 0)
            scores[ref] += RECENCY_WEIGHT * 0.5 ** (age / RECENCY_HALF_LIFE_DAYS)
        if matcher is not None and evidence.kind != "intel" and matcher.find(evidence.text):
            scores[ref] += ALIAS_WEIGHT
    best = sorted(scores, key=lambda ref: (-scores[ref], ref))[:limit]
    return [items[ref] for ref in best]


def _iso_date(value: Any) -> str | None:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return None

"""The LanceDB store: every read and write of synced CRM data goes through here.

One table per entity (``leads``, ``contacts``, ``accounts``, ``opportunities``, ``activities``,
``notes``, ``users``), each with columns derived from the canonical schema in ``core.schemas``. Rows
are keyed by ``(tenant_id, crm_id)``. Upserts use LanceDB's ``merge_insert`` with a guard so a row is
replaced only by a strictly newer ``updated_at``: re-delivered or late, older events change nothing.
``notes`` also carries an embedding column and a full-text index for retrieval.

Every function takes the tenant id first and refuses to run without one: there is no way to read
across tenants by accident.

Several writers (web processes, ``fieldwise worker`` processes, the CLI) share the tables; this is
what keeps that safe:

* Local folder (the default, and a shared POSIX volume): every write is a new table version,
  committed by atomically creating the next manifest file, which the filesystem lets only one writer
  win. A loser re-reads the new version, checks its change against what was committed in between and
  commits again; ``merge_insert`` does this itself (``MergeResult.num_attempts`` counts the tries).
  A commit that only inserts touches no existing rows, so two writers that both found a key absent
  would both insert it; every table merged on a key therefore declares that key as its primary key
  (``keyed_schema``), which makes Lance refuse the second insert and ``merge_insert`` retry it as an
  update (``tests/reliability/test_concurrent_inserts.py``; tables of older stores are declared when
  first opened, after the copies such races left in them are removed, keeping the last inserted).
  Measured with three processes merging overlapping keys into one table: 120 concurrent upserts, no
  exception, at most 2 attempts each; and in ``tests/reliability/test_concurrent_workers.py``, three
  workers syncing one tenant. Readers see each other's commits because the connection checks for a
  newer version before every read (``read_consistency_interval=0``). Upserts are idempotent (keyed,
  newer-only), so a job retried after a crash writes nothing twice.
* Object storage (``s3://``): S3 has no atomic "create if absent" for the manifest, so two
  writers committing to one table at once can overwrite each other's version. Either configure
  LanceDB's DynamoDB commit store (a ``s3+ddb://bucket/path?ddbTableName=...`` URI; the table's
  commits then go through a conditional DynamoDB write), or run one writer per table (a single
  worker process for the sync queues). The local guarantees above do not carry over otherwise.
* The connection is opened lazily (see ``_db``): a process that forks after LanceDB has started
  (rq's work horses) must not inherit its runtime.
"""

from __future__ import annotations

import contextlib
import contextvars
import hashlib
import json
import logging
import threading
import warnings
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import lancedb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from lancedb.index import FTS, BTree
from lancedb.query import ColumnOrdering
from marshmallow import fields as mfields

from core.config import Config
from core.embeddings import DIMENSION, MODEL_ID, Embedder, get_embedder
from core.schemas import SCHEMAS, TENANT_ID_PATTERN, load_records

log = logging.getLogger(__name__)

TABLES: dict[str, str] = {
    "lead": "leads",
    "contact": "contacts",
    "account": "accounts",
    "opportunity": "opportunities",
    "activity": "activities",
    "note": "notes",
    "user": "users",
}
"""Entity name to table name."""

KEY_COLUMNS = ("tenant_id", "crm_id")
MEMO_ENTRIES = 32
COMPACT_AT_FRAGMENTS = 32
"""A write that leaves its table with this many fragments compacts it (``Table.optimize``).

Every LanceDB write adds at least one fragment (a data file), and scans pay per fragment: at
75,000 leads in 377 fragments (a backfill's 200-record pages) a read of 1,000 ids took 1.4 s, and
0.07 s after compaction to one fragment, which took 1.1 s. Compaction also folds new rows into the
indexes, which otherwise cover only the rows present when they were built. LanceDB's docs advise
compacting after about 20 writes ("Table.optimize", python API reference)."""
INDEXES: dict[str, tuple[tuple[str, Any], ...]] = {
    "note": (("body", FTS(with_position=False)),),
    "activity": (("opportunity_id", BTree()), ("account_id", BTree())),
}
"""Indexed columns per entity, each with its LanceDB index: the notes' full text (BM25 search
needs it), and the ids a deal's or account's activities are looked up by (without them LanceDB
scans the whole table: about 40 ms at 200k activities, 3 ms with)."""
_stale_reads: contextvars.ContextVar[list[tuple[Any, ...]] | None] = contextvars.ContextVar(
    "fieldwise_stale_reads", default=None
)
"""Inside :meth:`Store.stale_ok`: the memo slots answered from out-of-date values."""
_OUT_OF_DATE: tuple[int, ...] = (-1,)
"""The versions of a memo value built from out-of-date inputs: no table has version -1."""
"""Derived values :meth:`Store.memo` keeps per store."""
_NEWER_ONLY = "target.updated_at < source.updated_at"
_EXTRA_NOTE_COLUMNS = {"vector": pa.list_(pa.float32(), DIMENSION), "embedding_model": pa.string()}


PRIMARY_KEY_METADATA = b"lance-schema:unenforced-primary-key"
"""Field metadata that declares a column part of a table's primary key to Lance."""


def keyed_schema(schema: pa.Schema, key: Sequence[str]) -> pa.Schema:
    """``schema`` with the columns ``key`` declared as the table's primary key.

    ``merge_insert`` decides "absent, so insert" against the version it read. Two processes
    inserting the same new key at once therefore both commit, and the table holds the key twice,
    unless the key columns are declared as the primary key: then each commit carries the keys it
    inserted and Lance refuses the second as a conflict, and ``merge_insert`` retries it against the
    new version, where the key now matches (lance-format/lance#4585 and #5633). Measured with two
    processes merging the same 50 new keys 20 times over: without the declaration every key was
    doubled; with it, none was, at 1.3 to 1.6 attempts per merge. Lance checks no uniqueness
    beyond that ("unenforced"), and key columns must be non-null.
    """
    fields = [
        field.with_nullable(False).with_metadata(
            {**(field.metadata or {}), PRIMARY_KEY_METADATA: b"true"}
        )
        if field.name in key
        else field
        for field in schema
    ]
    return pa.schema(fields, metadata=schema.metadata)


def _declares_key(schema: pa.Schema) -> list[str]:
    """The columns ``schema`` declares as its primary key, in order."""
    return [f.name for f in schema if (f.metadata or {}).get(PRIMARY_KEY_METADATA) == b"true"]


TENANT_SCHEMA = keyed_schema(
    pa.schema(
        [
            pa.field("tenant_id", pa.string()),
            pa.field("crm", pa.string()),
            pa.field("external_id", pa.string()),
            pa.field("instance_url", pa.string()),
            pa.field("scopes", pa.list_(pa.string())),
            pa.field("status", pa.string()),
            pa.field("status_reason", pa.string()),
            pa.field("integration_user_id", pa.string()),
            pa.field("settings_json", pa.string()),
            pa.field("access_token_enc", pa.string()),
            pa.field("refresh_token_enc", pa.string()),
            pa.field("token_expires_at", pa.timestamp("us", tz="UTC")),
            pa.field("installed_at", pa.timestamp("us", tz="UTC")),
            pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    ["tenant_id"],
)
"""The registry row of one installed org or portal; tokens are stored sealed (``core.crypto``)."""

SYNC_STATE_SCHEMA = keyed_schema(
    pa.schema(
        [
            pa.field("tenant_id", pa.string()),
            pa.field("stream", pa.string()),
            pa.field("checkpoint_json", pa.string()),
            pa.field("updated_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    ["tenant_id", "stream"],
)
"""Where each tenant's backfill and reconciliation streams have got to."""

PARKED_JOB_SCHEMA = keyed_schema(
    pa.schema(
        [
            pa.field("tenant_id", pa.string()),
            pa.field("job_id", pa.string()),
            pa.field("func", pa.string()),
            pa.field("args_json", pa.string()),
            pa.field("reason", pa.string()),
            pa.field("parked_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    ["tenant_id", "job_id"],
)
"""Jobs held while their tenant needs re-authorisation; queued again after the next install."""

ERASURE_SCHEMA = keyed_schema(
    pa.schema(
        [
            pa.field("tenant_id", pa.string()),
            pa.field("subject_hash", pa.string()),
            pa.field("erased_at", pa.timestamp("us", tz="UTC")),
            pa.field("counts_json", pa.string()),
        ]
    ),
    ["tenant_id", "subject_hash"],
)
"""The erasure log. It names the subject only by the SHA-256 of the normalised email or CRM id, so
the log holds no readable personal data, and it doubles as the suppression list that keeps an
erased person from being synced back in."""

WRITE_LEDGER_SCHEMA = keyed_schema(
    pa.schema(
        [
            pa.field("tenant_id", pa.string()),
            pa.field("object_name", pa.string()),
            pa.field("crm_id", pa.string()),
            pa.field("field", pa.string()),
            pa.field("value_json", pa.string()),
            pa.field("written_at", pa.timestamp("us", tz="UTC")),
        ]
    ),
    ["tenant_id", "object_name", "crm_id", "field"],
)
"""The last value Fieldwise wrote to each (record, field): write-back diffs against it."""

AUDIT_SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string()),
        pa.field("object_name", pa.string()),
        pa.field("crm_id", pa.string()),
        pa.field("field", pa.string()),
        pa.field("old_json", pa.string()),
        pa.field("new_json", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("reason", pa.string()),
        pa.field("outcome", pa.string()),
        pa.field("at", pa.timestamp("us", tz="UTC")),
    ]
)
"""Every write Fieldwise attempted: record, field, old and new value, model version, why, outcome."""

MODEL_SCHEMA = keyed_schema(
    pa.schema(
        [
            pa.field("tenant_id", pa.string()),
            pa.field("kind", pa.string()),
            pa.field("version", pa.string()),
            pa.field("seq", pa.int64()),
            pa.field("created_at", pa.timestamp("us", tz="UTC")),
            pa.field("rule_based", pa.bool_()),
            pa.field("is_current", pa.bool_()),
            pa.field("promoted_at", pa.timestamp("us", tz="UTC")),
            pa.field("metrics_json", pa.string()),
            pa.field("report_json", pa.string()),
            pa.field("meta_json", pa.string()),
            pa.field("holdout_ids_json", pa.string()),
            pa.field("monitoring_json", pa.string()),
            pa.field("artifact", pa.binary()),
        ]
    ),
    ["tenant_id", "kind", "version"],
)
"""One trained scoring model of a tenant (``scoring.registry`` owns the row shape). The model itself
is the ``artifact`` column (CatBoost ``cbm`` bytes, or the rule table as JSON), so a store on S3
holds its models too; ``is_current`` marks the one version per (tenant, kind) that scores."""

# --------------------------------------------------------------------------------------------------
# Scoring ledgers (``scoring.ledger`` owns the row shapes)

SCORE_LEDGER_SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string()),
        pa.field("kind", pa.string()),
        pa.field("crm_id", pa.string()),
        pa.field("scored_at", pa.timestamp("us", tz="UTC")),
        pa.field("old_score", pa.int64()),
        pa.field("new_score", pa.int64()),
        pa.field("old_grade", pa.string()),
        pa.field("new_grade", pa.string()),
        pa.field("crossing", pa.string()),
        pa.field("model_version", pa.string()),
        pa.field("reasons", pa.string()),
        pa.field("reasons_json", pa.string()),
        pa.field("next_step", pa.string()),
        pa.field("segment", pa.string()),
        pa.field("stale", pa.bool_()),
    ]
)
"""One material change of a record's score or grade (or the moment its score went stale)."""

ROUTING_LEDGER_SCHEMA = pa.schema(
    [
        pa.field("tenant_id", pa.string()),
        pa.field("crm_id", pa.string()),
        pa.field("suggested_at", pa.timestamp("us", tz="UTC")),
        pa.field("suggested_owner", pa.string()),
        pa.field("suggested_owner_name", pa.string()),
        pa.field("owner_at_suggestion", pa.string()),
        pa.field("auto_assigned", pa.bool_()),
        pa.field("manual_owner", pa.bool_()),
        pa.field("expected_conversion", pa.float64()),
        pa.field("reason", pa.string()),
    ]
)
"""One owner suggestion for a lead; ``manual_owner`` marks a person's choice Fieldwise kept."""

PERSON_ENTITIES = ("lead", "contact", "user")
"""Entities that are people, found by email or CRM id."""
PERSON_LINKS = ("lead_id", "contact_id")
"""Columns through which notes and activities belong to a person."""


def subject_hash(subject: str) -> str:
    """The erasure log's name for a person: SHA-256 of the trimmed, lower-cased email or id."""
    return hashlib.sha256(subject.strip().lower().encode("utf-8")).hexdigest()


class TenantRequiredError(TypeError):
    """A store function was called without a valid tenant id: a programming error, never data."""


@dataclass(frozen=True)
class UpsertResult:
    """What one upsert changed."""

    inserted: int
    updated: int
    skipped_stale: int
    """Rows in the batch that were not newer than what the store holds (or duplicates in it)."""
    embedded: int = 0


def arrow_schema(entity: str) -> pa.Schema:
    """The table layout for an entity, derived from its canonical schema."""
    declared = SCHEMAS[entity]._declared_fields
    ordered = list(KEY_COLUMNS) + [name for name in declared if name not in KEY_COLUMNS]
    columns = [pa.field(name, _arrow_type(declared[name])) for name in ordered]
    if entity == "note":
        columns += [pa.field(name, kind) for name, kind in _EXTRA_NOTE_COLUMNS.items()]
    return keyed_schema(pa.schema(columns), KEY_COLUMNS)


def _arrow_type(field: mfields.Field) -> pa.DataType:
    if isinstance(field, mfields.AwareDateTime | mfields.DateTime):
        return pa.timestamp("us", tz="UTC")
    if isinstance(field, mfields.Date):
        return pa.date32()
    if isinstance(field, mfields.Boolean):
        return pa.bool_()
    if isinstance(field, mfields.Integer):
        return pa.int64()
    if isinstance(field, mfields.Float):
        return pa.float64()
    if isinstance(field, mfields.List):
        return pa.list_(pa.string())
    # Strings, and the ``custom`` mapping, which is stored as JSON text.
    return pa.string()


class Store:
    """A connection to the LanceDB database holding every tenant's synced records."""

    def __init__(
        self,
        uri: str,
        storage_options: Mapping[str, str] | None = None,
        embedder: Embedder | None = None,
    ) -> None:
        self.uri = uri
        self._storage_options = dict(storage_options or {}) or None
        self._connection: Any = None
        self._connect_lock = threading.Lock()
        self._embedder = embedder
        self._tables: dict[str, Any] = {}
        self._lock = threading.Lock()
        self._suppression: dict[str, frozenset[str]] = {}
        self._memo: OrderedDict[tuple[Any, ...], tuple[tuple[int, ...], Any]] = OrderedDict()
        self._memo_lock = threading.Lock()
        self._indexed: set[str] = set()
        self._keyed: set[str] = set()

    @property
    def _db(self) -> Any:
        """The LanceDB connection, opened on first use.

        Not when the Store is built: ``fieldwise worker`` builds its services and then forks a
        work horse per job (rq), and a child forked after LanceDB's native runtime has started
        in the parent crashes (SIGSEGV, heap corruption) or reads garbage. Measured: with a
        connection opened before fork, 17 to 24 of 40 forked upserts failed; with none, 0 of 40.
        Connecting lazily keeps the worker's parent process free of LanceDB, so each horse opens
        its own connection.
        """
        if self._connection is None:
            with self._connect_lock:
                if self._connection is None:
                    # Web processes, workers and the CLI share tables: with a zero consistency
                    # interval every read first checks for a newer table version, so one process
                    # sees another's writes (the default never checks). Locally that check is one
                    # small manifest read.
                    self._connection = lancedb.connect(
                        self.uri,
                        storage_options=self._storage_options,
                        read_consistency_interval=timedelta(seconds=0),
                    )
        return self._connection

    @classmethod
    def from_config(cls, config: Config) -> Store:
        """Open the store named by ``FIELDWISE_LANCEDB_URI``."""
        return cls(config.lancedb_uri, config.lancedb_storage_options)

    # ----------------------------------------------------------------------------------------------
    # Writes

    def upsert(
        self,
        tenant_id: str,
        entity: str,
        records: Iterable[Mapping[str, Any]],
        *,
        unembedded: Collection[str] = (),
    ) -> UpsertResult:
        """Insert new records and replace older versions of existing ones.

        Records are validated against the canonical schema first; one bad record fails the whole
        batch and nothing is written. Within the batch, the newest version of each id wins. A record
        replaces a stored one only if its ``updated_at`` is strictly newer. Notes are embedded here,
        and only those that are new or changed.

        Args:
            tenant_id: the tenant every record must belong to.
            entity: one of ``lead contact account opportunity activity note user``.
            records: canonical records (``core.schemas``).
            unembedded: ids of notes to store without an embedding (their author or subject
                forbade processing); full-text search still finds them, vector search does not.

        Returns:
            Counts of inserted, updated and skipped rows.

        Raises:
            TenantRequiredError: no valid tenant id.
            RecordValidationError: a record is invalid (names the record and field).
            ValueError: a record belongs to another tenant.
        """
        _require_tenant(tenant_id)
        table_name = _table_name(entity)
        rows = load_records(entity, [dict(r) for r in records])
        for row in rows:
            if row["tenant_id"] != tenant_id:
                raise ValueError(
                    f"{entity} {row['crm_id']} belongs to tenant {row['tenant_id']!r}, "
                    f"not {tenant_id!r}; nothing was written"
                )
        suppressed = self._suppressed(tenant_id)
        if suppressed:
            kept = [row for row in rows if not _identities(row) & suppressed]
            duplicates_suppressed = len(rows) - len(kept)
            rows = kept
        else:
            duplicates_suppressed = 0
        newest: dict[str, dict[str, Any]] = {}
        for row in rows:
            held = newest.get(row["crm_id"])
            if held is None or held["updated_at"] < row["updated_at"]:
                newest[row["crm_id"]] = row
        batch = list(newest.values())
        duplicates = len(rows) - len(batch) + duplicates_suppressed
        if not batch:
            return UpsertResult(0, 0, duplicates)
        embedded = 0
        if entity == "note":
            batch, stale = self._drop_stale(tenant_id, entity, batch)
            duplicates += stale
            embedded = self._embed_notes([r for r in batch if r["crm_id"] not in unembedded])
            if not batch:
                return UpsertResult(0, 0, duplicates)
        table = self._table(entity, create=True)
        data = _to_arrow(entity, batch)
        result = (
            table.merge_insert(list(KEY_COLUMNS))
            .when_matched_update_all(where=_NEWER_ONLY)
            .when_not_matched_insert_all()
            # Notes withheld from embedding (consent) carry a null vector, which is allowed.
            .execute(data, on_bad_vectors="null")
        )
        inserted = int(result.num_inserted_rows)
        updated = int(result.num_updated_rows)
        if inserted:
            self._ensure_indexes(entity, table)
        self._compact_if_fragmented(table)
        log.debug("upsert %s/%s: %d inserted, %d updated", tenant_id, table_name, inserted, updated)
        return UpsertResult(
            inserted, updated, duplicates + len(batch) - inserted - updated, embedded
        )

    def delete(self, tenant_id: str, entity: str, crm_ids: Sequence[str]) -> int:
        """Delete records by CRM id; returns how many rows were removed."""
        return self.delete_where(tenant_id, entity, "crm_id", crm_ids)

    def clear_note_vectors(self, tenant_id: str, column: str, values: Sequence[str]) -> int:
        """Drop the embeddings of a tenant's notes linked through ``column`` to ``values``.

        Used when a person withdraws consent: their notes stay searchable by text only.
        """
        _require_tenant(tenant_id)
        table = self._table("note")
        if table is None or not values:
            return 0
        where = _where(tenant_id, arrow_schema("note"), {column: list(values)})
        where += " AND vector IS NOT NULL"
        cleared = table.count_rows(where)
        if cleared:
            table.update(where=where, values={"vector": None, "embedding_model": None})
        return int(cleared)

    def refresh_note_vectors(self, tenant_id: str, limit: int) -> tuple[int, int]:
        """Embed again, with the current model, notes whose vectors an older model made.

        Vectors of two models do not share one space, so a store that outlives an embedding model
        change is brought over a batch at a time (the reconcile sweep calls this). Notes without
        a vector (their person forbade processing) are left alone. A note changed or cleared
        since it was read keeps what it has now: each write requires the row's ``updated_at``
        and model to be unchanged.

        Args:
            tenant_id: the tenant whose notes to refresh.
            limit: at most this many notes (9-13 ms of CPU each on a 2-core EPYC).

        Returns:
            Notes refreshed, and notes still carrying an older model's vector.
        """
        _require_tenant(tenant_id)
        table = self._table("note")
        if limit < 1 or table is None:
            return 0, 0
        where = _older_vectors(tenant_id)
        stale = table.search().where(where).limit(limit).to_arrow()
        if not stale.num_rows:
            return 0, 0
        texts = [_note_text(row) for row in stale.select(["title", "body"]).to_pylist()]
        vectors = self._embedder_or_default().embed(texts)
        fresh = stale.set_column(
            stale.schema.get_field_index("vector"),
            stale.schema.field("vector"),
            pa.array(list(vectors.astype(np.float32)), type=stale.schema.field("vector").type),
        )
        fresh = fresh.set_column(
            fresh.schema.get_field_index("embedding_model"),
            fresh.schema.field("embedding_model"),
            pa.array([MODEL_ID] * fresh.num_rows, type=pa.string()),
        )
        result = (
            table.merge_insert(list(KEY_COLUMNS))
            .when_matched_update_all(
                where="target.updated_at = source.updated_at AND target.embedding_model IS NOT NULL"
                " AND target.embedding_model != source.embedding_model"
            )
            .execute(fresh)
        )
        refreshed = int(result.num_updated_rows)
        self._compact_if_fragmented(table)
        return refreshed, self.count_older_note_vectors(tenant_id)

    def count_older_note_vectors(self, tenant_id: str) -> int:
        """A tenant's notes whose vectors an older embedding model made (see refresh_note_vectors)."""
        _require_tenant(tenant_id)
        table = self._table("note")
        return 0 if table is None else int(table.count_rows(_older_vectors(tenant_id)))

    def delete_where(self, tenant_id: str, entity: str, column: str, values: Sequence[str]) -> int:
        """Delete a tenant's rows whose ``column`` is one of ``values`` (notes of a deleted lead)."""
        _require_tenant(tenant_id)
        table = self._table(entity)
        if table is None or not values:
            return 0
        where = _where(tenant_id, arrow_schema(entity), {column: list(values)})
        removed = table.count_rows(where)
        if removed:
            table.delete(where)
        return int(removed)

    def repoint(
        self, tenant_id: str, entity: str, column: str, old_ids: Sequence[str], new_id: str
    ) -> int:
        """Point rows that reference merged-away records at the surviving record.

        ``updated_at`` is left alone on purpose: it is the CRM's timestamp, and the next real change
        from the CRM must still count as newer.
        """
        _require_tenant(tenant_id)
        table = self._table(entity)
        if table is None or not old_ids:
            return 0
        where = _where(tenant_id, arrow_schema(entity), {column: list(old_ids)})
        moved = table.count_rows(where)
        if moved:
            table.update(where=where, values={column: new_id})
        return int(moved)

    # ----------------------------------------------------------------------------------------------
    # Reads

    def get(self, tenant_id: str, entity: str, crm_id: str) -> dict[str, Any] | None:
        """One record by CRM id, or None."""
        found = self.get_many(tenant_id, entity, [crm_id])
        return found[0] if found else None

    def get_many(self, tenant_id: str, entity: str, crm_ids: Sequence[str]) -> list[dict[str, Any]]:
        """Records by CRM id (missing ids are simply absent from the result)."""
        _require_tenant(tenant_id)
        if not crm_ids:
            return []
        return self.query(tenant_id, entity, filters={"crm_id": list(crm_ids)})

    def query(
        self,
        tenant_id: str,
        entity: str,
        *,
        filters: Mapping[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """A tenant's records matching equality filters (a list value means IN)."""
        table = self.to_arrow(tenant_id, entity, filters=filters, columns=columns, limit=limit)
        return [_from_row(row) for row in table.to_pylist()]

    def to_arrow(
        self,
        tenant_id: str,
        entity: str,
        *,
        filters: Mapping[str, Any] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """A tenant's records as an Arrow table (for feature building over many rows)."""
        _require_tenant(tenant_id)
        schema = arrow_schema(entity)
        table = self._table(entity)
        if table is None:
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        long_lists = {
            name: value
            for name, value in (filters or {}).items()
            if _is_list(value) and len(value) > IN_LIST_LIMIT and name in schema.names
        }
        where = _where(
            tenant_id, schema, {k: v for k, v in (filters or {}).items() if k not in long_lists}
        )
        query = table.search().where(where)
        if columns is not None:
            unknown = [c for c in columns if c not in schema.names]
            if unknown:
                raise ValueError(f"{entity} has no column {unknown[0]!r}")
            query = query.select(list(dict.fromkeys([*columns, *long_lists])))
        if long_lists:
            found = query.limit(None).to_arrow()
            for name, values in long_lists.items():
                found = _keep_in(found, name, values)
            found = found.select(list(columns)) if columns is not None else found
            return found.slice(0, limit) if limit is not None else found
        query = query.limit(limit) if limit is not None else query.limit(None)
        return query.to_arrow()

    def count(self, tenant_id: str, entity: str) -> int:
        """Number of a tenant's records of an entity."""
        _require_tenant(tenant_id)
        table = self._table(entity)
        return 0 if table is None else int(table.count_rows(_tenant_filter(tenant_id)))

    def search_notes_text(
        self,
        tenant_id: str,
        text: str,
        *,
        limit: int = 10,
        filters: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Full-text (BM25) search over a tenant's notes, best first, with ``_score``."""
        _require_tenant(tenant_id)
        table = self._table("note")
        if table is None or not text.strip():
            return []
        self._ensure_indexes("note", table)
        where = _where(tenant_id, arrow_schema("note"), filters)
        hits = (
            table.search(text, query_type="fts", fts_columns="body")
            .where(where, prefilter=True)
            .limit(limit)
            .to_arrow()
        )
        return [_from_row(row) for row in hits.drop_columns(["vector"]).to_pylist()]

    def search_notes_vector(
        self,
        tenant_id: str,
        query: str | np.ndarray,
        *,
        limit: int = 10,
        filters: Mapping[str, Any] | None = None,
    ) -> list[dict[str, Any]]:
        """Nearest notes by cosine distance to a text or vector, with ``_distance``."""
        _require_tenant(tenant_id)
        table = self._table("note")
        if table is None:
            return []
        vector = self._embedder_or_default().embed_one(query) if isinstance(query, str) else query
        where = _where(tenant_id, arrow_schema("note"), filters)
        hits = (
            table.search(np.asarray(vector, dtype=np.float32), vector_column_name="vector")
            .distance_type("cosine")
            .where(where, prefilter=True)
            .limit(limit)
            .to_arrow()
        )
        return [_from_row(row) for row in hits.drop_columns(["vector"]).to_pylist()]

    # ----------------------------------------------------------------------------------------------
    # Tenants: the registry of installed orgs and portals (``core.tenants`` owns the row shape).

    def put_tenant(self, row: Mapping[str, Any]) -> None:
        """Insert or replace one tenant's registry row."""
        _require_tenant(row.get("tenant_id"))
        data = pa.Table.from_pylist([{n: row.get(n) for n in TENANT_SCHEMA.names}], TENANT_SCHEMA)
        self._merge_on_key(
            "tenants", TENANT_SCHEMA
        ).when_matched_update_all().when_not_matched_insert_all().execute(data)

    def get_tenant(self, tenant_id: str) -> dict[str, Any] | None:
        """One tenant's registry row, or None."""
        _require_tenant(tenant_id)
        rows = self._tenant_rows(_tenant_filter(tenant_id))
        return rows[0] if rows else None

    def find_tenant(self, crm: str, external_id: str) -> dict[str, Any] | None:
        """The tenant for a Salesforce org id or HubSpot portal id (webhooks carry these)."""
        rows = self._tenant_rows(
            f"crm = {_sql_literal(crm)} AND external_id = {_sql_literal(external_id)}"
        )
        return rows[0] if rows else None

    def list_tenants(self) -> list[dict[str, Any]]:
        """Every tenant's registry row (for the admin console, health and schedulers)."""
        return self._tenant_rows(None)

    def _tenant_rows(self, where: str | None) -> list[dict[str, Any]]:
        if "tenants" not in _list_tables(self._db):
            return []
        query = self._system_table("tenants", TENANT_SCHEMA).search()
        if where:
            query = query.where(where)
        return [dict(row) for row in query.limit(None).to_arrow().to_pylist()]

    # ----------------------------------------------------------------------------------------------
    # Sync checkpoints and parked jobs

    def get_checkpoint(self, tenant_id: str, stream: str) -> dict[str, Any] | None:
        """The saved position of a tenant's stream (backfill or reconcile), or None."""
        _require_tenant(tenant_id)
        if "sync_state" not in _list_tables(self._db):
            return None
        rows = (
            self._system_table("sync_state", SYNC_STATE_SCHEMA)
            .search()
            .where(f"{_tenant_filter(tenant_id)} AND stream = {_sql_literal(stream)}")
            .limit(1)
            .to_arrow()
            .to_pylist()
        )
        return json.loads(rows[0]["checkpoint_json"]) if rows else None

    def put_checkpoint(self, tenant_id: str, stream: str, checkpoint: Mapping[str, Any]) -> None:
        """Save a stream position; call only after the records before it are written."""
        _require_tenant(tenant_id)
        row = {
            "tenant_id": tenant_id,
            "stream": stream,
            "checkpoint_json": json.dumps(checkpoint, sort_keys=True, default=str),
            "updated_at": datetime.now(UTC),
        }
        state = self._system_table("sync_state", SYNC_STATE_SCHEMA)
        (
            self._merge_on_key("sync_state", SYNC_STATE_SCHEMA)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist([row], SYNC_STATE_SCHEMA))
        )
        self._compact_if_fragmented(state)

    def park_job(
        self, tenant_id: str, job_id: str, func: str, args: Sequence[Any], reason: str
    ) -> None:
        """Keep a job that cannot run until the tenant is re-authorised; re-parking is idempotent."""
        _require_tenant(tenant_id)
        row = {
            "tenant_id": tenant_id,
            "job_id": job_id,
            "func": func,
            "args_json": json.dumps(list(args), default=str),
            "reason": reason,
            "parked_at": datetime.now(UTC),
        }
        (
            self._merge_on_key("parked_jobs", PARKED_JOB_SCHEMA)
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist([row], PARKED_JOB_SCHEMA))
        )

    def parked_jobs(self, tenant_id: str) -> list[dict[str, Any]]:
        """A tenant's parked jobs, oldest first, with ``args`` decoded."""
        _require_tenant(tenant_id)
        if "parked_jobs" not in _list_tables(self._db):
            return []
        rows = (
            self._system_table("parked_jobs", PARKED_JOB_SCHEMA)
            .search()
            .where(_tenant_filter(tenant_id))
            .limit(None)
            .to_arrow()
            .to_pylist()
        )
        for row in rows:
            row["args"] = json.loads(row.pop("args_json"))
        return sorted(rows, key=lambda r: r["parked_at"])

    def unpark_job(self, tenant_id: str, job_id: str) -> None:
        """Forget a parked job once it is queued again."""
        _require_tenant(tenant_id)
        if "parked_jobs" in _list_tables(self._db):
            self._system_table("parked_jobs", PARKED_JOB_SCHEMA).delete(
                f"{_tenant_filter(tenant_id)} AND job_id = {_sql_literal(job_id)}"
            )

    # ----------------------------------------------------------------------------------------------
    # Write-back ledger and audit

    def last_written(
        self, tenant_id: str, object_name: str, crm_ids: Sequence[str]
    ) -> dict[str, dict[str, str]]:
        """Per record, per field: the JSON of the value Fieldwise last wrote."""
        _require_tenant(tenant_id)
        if "write_ledger" not in _list_tables(self._db) or not crm_ids:
            return {}
        where = f"{_tenant_filter(tenant_id)} AND object_name = {_sql_literal(object_name)}"
        long_list = len(crm_ids) > IN_LIST_LIMIT
        if not long_list:
            where += f" AND crm_id IN ({_sql_list(crm_ids)})"
        found = (
            self._system_table("write_ledger", WRITE_LEDGER_SCHEMA)
            .search()
            .where(where)
            .select(["crm_id", "field", "value_json"])
            .limit(None)
            .to_arrow()
        )
        rows = (_keep_in(found, "crm_id", crm_ids) if long_list else found).to_pylist()
        held: dict[str, dict[str, str]] = {}
        for row in rows:
            held.setdefault(row["crm_id"], {})[row["field"]] = row["value_json"]
        return held

    def record_writes(
        self, tenant_id: str, object_name: str, written: Sequence[tuple[str, str, str]]
    ) -> None:
        """Remember ``(crm_id, field, value_json)`` as written now (replacing earlier values)."""
        _require_tenant(tenant_id)
        if not written:
            return
        now = datetime.now(UTC)
        rows = [
            {"tenant_id": tenant_id, "object_name": object_name, "crm_id": crm_id,
             "field": field, "value_json": value, "written_at": now}
            for crm_id, field, value in written
        ]  # fmt: skip
        ledger = self._system_table("write_ledger", WRITE_LEDGER_SCHEMA)
        (
            self._merge_on_key("write_ledger", WRITE_LEDGER_SCHEMA)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist(rows, WRITE_LEDGER_SCHEMA))
        )
        self._compact_if_fragmented(ledger)

    def append_audit(self, tenant_id: str, entries: Sequence[Mapping[str, Any]]) -> None:
        """Append write attempts to the audit log (see :data:`AUDIT_SCHEMA` for the fields)."""
        _require_tenant(tenant_id)
        if not entries:
            return
        now = datetime.now(UTC)
        rows = [{**{n: e.get(n) for n in AUDIT_SCHEMA.names}, "tenant_id": tenant_id,
                 "at": e.get("at") or now} for e in entries]  # fmt: skip
        audit = self._system_table("audit", AUDIT_SCHEMA)
        audit.add(pa.Table.from_pylist(rows, AUDIT_SCHEMA))
        self._compact_if_fragmented(audit)

    def audit(
        self, tenant_id: str, *, crm_id: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """A tenant's audit entries, newest first (optionally for one record)."""
        _require_tenant(tenant_id)
        if "audit" not in _list_tables(self._db):
            return []
        where = _tenant_filter(tenant_id)
        if crm_id is not None:
            where += f" AND crm_id = {_sql_literal(crm_id)}"
        rows = self._system_table("audit", AUDIT_SCHEMA).search().where(where).limit(None)
        entries = rows.to_arrow().to_pylist()
        return sorted(entries, key=lambda r: r["at"], reverse=True)[:limit]

    # ----------------------------------------------------------------------------------------------
    # Scoring ledgers: append-only system tables, read newest-per-record by ``scoring.ledger``

    def append_score_entries(self, tenant_id: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append score-ledger rows (``SCORE_LEDGER_SCHEMA``); returns how many."""
        return self._append_rows(tenant_id, "score_ledger", SCORE_LEDGER_SCHEMA, rows)

    def score_entries(
        self,
        tenant_id: str,
        kind: str,
        *,
        crm_ids: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """A tenant's score-ledger rows of one kind, oldest first."""
        where = f"{_tenant_filter(tenant_id)} AND kind = {_sql_literal(kind)}"
        return self._ledger_rows(
            "score_ledger", SCORE_LEDGER_SCHEMA, where, "scored_at", crm_ids, since
        )

    def append_routing_entries(self, tenant_id: str, rows: Sequence[Mapping[str, Any]]) -> int:
        """Append owner-suggestion rows (``ROUTING_LEDGER_SCHEMA``); returns how many."""
        return self._append_rows(tenant_id, "routing_ledger", ROUTING_LEDGER_SCHEMA, rows)

    def routing_entries(
        self,
        tenant_id: str,
        *,
        crm_ids: Sequence[str] | None = None,
        since: datetime | None = None,
    ) -> list[dict[str, Any]]:
        """A tenant's owner-suggestion rows, oldest first."""
        where = _tenant_filter(tenant_id)
        return self._ledger_rows(
            "routing_ledger", ROUTING_LEDGER_SCHEMA, where, "suggested_at", crm_ids, since
        )

    # ----------------------------------------------------------------------------------------------
    # Feature tables: tenant-scoped side tables whose schema lives with the feature that owns them
    # (copilot results, feedback, intel documents, ...). Each needs a ``tenant_id`` column; one with
    # a ``crm_id`` column is covered by :meth:`erase_record_history` without further code.

    def append_rows(
        self, tenant_id: str, name: str, schema: pa.Schema, rows: Sequence[Mapping[str, Any]]
    ) -> int:
        """Append rows to the feature table ``name``; returns how many.

        Raises:
            ValueError: a row belongs to another tenant.
        """
        return self._append_rows(tenant_id, name, schema, rows)

    def put_rows(
        self,
        tenant_id: str,
        name: str,
        schema: pa.Schema,
        rows: Sequence[Mapping[str, Any]],
        keys: Sequence[str],
    ) -> int:
        """Insert or replace rows of the feature table ``name``, matched on tenant and ``keys``."""
        _require_tenant(tenant_id)
        if not rows:
            return 0
        if any(row.get("tenant_id", tenant_id) != tenant_id for row in rows):
            raise ValueError(f"{name} rows must all belong to tenant {tenant_id!r}")
        keyed = keyed_schema(schema, ["tenant_id", *keys])
        data = pa.Table.from_pylist(
            [{n: row.get(n) for n in schema.names} | {"tenant_id": tenant_id} for row in rows],
            keyed,
        )
        table = self._system_table(name, keyed)
        self._merge_on_key(
            name, keyed
        ).when_matched_update_all().when_not_matched_insert_all().execute(data)
        self._compact_if_fragmented(table)
        return len(rows)

    def read_rows(
        self,
        tenant_id: str,
        name: str,
        schema: pa.Schema,
        filters: Mapping[str, Any] | None = None,
        *,
        since: tuple[str, datetime] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> list[dict[str, Any]]:
        """Rows of one tenant from the feature table ``name``.

        Args:
            tenant_id: whose rows.
            name: the table.
            schema: its schema (the table is not created by a read).
            filters: column -> value (a list means IN, None means IS NULL).
            since: ``(time column, earliest)`` to keep only rows at or after a time.
            columns: the columns to return (all when None).
            limit: at most this many rows (all when None).
        """
        return self.read_arrow(
            tenant_id, name, schema, filters, since=since, columns=columns, limit=limit
        ).to_pylist()

    def read_arrow(
        self,
        tenant_id: str,
        name: str,
        schema: pa.Schema,
        filters: Mapping[str, Any] | None = None,
        *,
        since: tuple[str, datetime] | None = None,
        columns: Sequence[str] | None = None,
        limit: int | None = None,
    ) -> pa.Table:
        """:meth:`read_rows` as an Arrow table, for numbers computed over many rows."""
        _require_tenant(tenant_id)
        if name not in _list_tables(self._db):
            return schema.empty_table() if columns is None else schema.empty_table().select(columns)
        where = _where(tenant_id, schema, filters)
        if since is not None:
            column, earliest = since
            if column not in schema.names:
                raise ValueError(f"cannot filter on {column!r}: not a column of {name}")
            where += f" AND {column} >= {_sql_literal(earliest)}"
        query = self._system_table(name, schema).search().where(where)
        if columns is not None:
            query = query.select(list(columns))
        return query.limit(limit).to_arrow()

    def read_sorted(
        self,
        tenant_id: str,
        name: str,
        schema: pa.Schema,
        filters: Mapping[str, Any] | None = None,
        *,
        order_by: Sequence[str],
        descending: bool = True,
        span: tuple[str, datetime | None, datetime | None] | None = None,
        present: Sequence[str] = (),
        columns: Sequence[str] | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> tuple[list[dict[str, Any]], int]:
        """One slice of a tenant's rows sorted by LanceDB, and how many rows match in all.

        LanceDB sorts and slices in the query (``order_by``, ``offset``, ``limit``), keeping only
        the top ``offset + limit`` rows while it scans, so a page of a large log costs one scan
        of the filter columns and reads full rows only for the page.

        Args:
            tenant_id: whose rows.
            name: the table.
            schema: its schema (the table is not created by a read).
            filters: column -> value, as for :meth:`read_rows`.
            order_by: the sort columns, the first one deciding most.
            descending: newest (largest) first.
            span: ``(time column, earliest, latest)``, both ends included, either may be None.
            present: columns that must not be null.
            columns: the columns to return (all when None).
            offset: rows to skip.
            limit: most rows to return.
        """
        _require_tenant(tenant_id)
        if name not in _list_tables(self._db):
            return [], 0
        where = _where(tenant_id, schema, filters)
        named = [*order_by, *present, *([span[0]] if span else [])]
        unknown = [c for c in named if c not in schema.names]
        if unknown:
            raise ValueError(f"{name} has no column {unknown[0]!r}")
        where += "".join(f" AND {column} IS NOT NULL" for column in present)
        if span is not None:
            column, earliest, latest = span
            if earliest is not None:
                where += f" AND {column} >= {_sql_literal(earliest)}"
            if latest is not None:
                where += f" AND {column} <= {_sql_literal(latest)}"
        table = self._system_table(name, schema)
        total = int(table.count_rows(where))
        if total <= offset:
            return [], total
        ordering = [
            ColumnOrdering(column_name=c, ascending=not descending, nulls_first=False)
            for c in order_by
        ]
        query = table.search().where(where).order_by(ordering).offset(offset).limit(limit)
        if columns is not None:
            query = query.select(list(dict.fromkeys([*columns, *order_by])))
        return query.to_arrow().to_pylist(), total

    def table_versions(self, names: Sequence[str]) -> tuple[int, ...]:
        """The current version of each table (0 for one not created yet).

        Every write to a LanceDB table, from any process, makes a new version, so an unchanged
        tuple means unchanged data; reading it is one small manifest check.
        """
        with self._lock:
            opened = set(self._tables) >= set(names)
        # Listing tables costs a round trip to LanceDB's event loop; an opened table needs none.
        existing = set(names) if opened else set(_list_tables(self._db))
        versions = []
        for name in names:
            if name not in existing:
                versions.append(0)
                continue
            with self._lock:
                table = self._tables.get(name)
                if table is None:
                    table = self._tables[name] = self._db.open_table(name)
            versions.append(int(table.version))
        return tuple(versions)

    def memo(
        self,
        tenant_id: str,
        key: tuple[Any, ...],
        tables: Sequence[str],
        build: Callable[[], Any],
    ) -> Any:
        """``build()``'s value for ``(tenant_id, key)``, kept while ``tables`` stay unchanged.

        For derived numbers that are costly to compute from many rows and cheap to keep: any write
        to one of ``tables`` (by this process or another) makes the next call build again. At most
        :data:`MEMO_ENTRIES` values are kept per store, least recently used dropped first.

        Inside :meth:`stale_ok`, a kept value whose tables have changed since is returned as it is,
        and a value built after that (so perhaps from such inputs) is kept as out of date too; the
        caller refreshes them by calling again outside :meth:`stale_ok`.
        """
        _require_tenant(tenant_id)
        versions = self.table_versions(tables)
        slot = (tenant_id, *key)
        served_stale = _stale_reads.get()
        with self._memo_lock:
            held = self._memo.get(slot)
            if held is not None and held[0] == versions:
                self._memo.move_to_end(slot)
                return held[1]
            if held is not None and served_stale is not None:
                served_stale.append(slot)
                return held[1]
        inputs_stale = bool(served_stale)
        value = build()
        with self._memo_lock:
            self._memo[slot] = (_OUT_OF_DATE if inputs_stale else versions, value)
            self._memo.move_to_end(slot)
            while len(self._memo) > MEMO_ENTRIES:
                self._memo.popitem(last=False)
        return value

    @contextlib.contextmanager
    def stale_ok(self) -> Iterator[list[tuple[Any, ...]]]:
        """Let :meth:`memo` answer from kept values that are out of date.

        For pages that must answer at once and can say their figures are being refreshed. Yields
        the list of memo slots answered out of date (empty when everything was current).
        """
        served: list[tuple[Any, ...]] = []
        token = _stale_reads.set(served)
        try:
            yield served
        finally:
            _stale_reads.reset(token)

    def delete_rows(
        self, tenant_id: str, name: str, schema: pa.Schema, filters: Mapping[str, Any]
    ) -> int:
        """Delete one tenant's rows of the feature table ``name`` that match ``filters``."""
        _require_tenant(tenant_id)
        if name not in _list_tables(self._db):
            return 0
        where = _where(tenant_id, schema, filters)
        table = self._system_table(name, schema)
        count = int(table.count_rows(where))
        if count:
            table.delete(where)
        return count

    def _append_rows(
        self, tenant_id: str, name: str, schema: pa.Schema, rows: Sequence[Mapping[str, Any]]
    ) -> int:
        _require_tenant(tenant_id)
        if not rows:
            return 0
        if any(row.get("tenant_id") != tenant_id for row in rows):
            raise ValueError(f"{name} rows must all belong to tenant {tenant_id!r}")
        data = pa.Table.from_pylist([{n: row.get(n) for n in schema.names} for row in rows], schema)
        table = self._system_table(name, schema)
        table.add(data)
        self._compact_if_fragmented(table)
        return len(rows)

    def _ledger_rows(
        self,
        name: str,
        schema: pa.Schema,
        where: str,
        time_column: str,
        crm_ids: Sequence[str] | None,
        since: datetime | None,
    ) -> list[dict[str, Any]]:
        if name not in _list_tables(self._db):
            return []
        long_list = crm_ids is not None and len(crm_ids) > IN_LIST_LIMIT
        if crm_ids is not None:
            if not crm_ids:
                return []
            if not long_list:
                where += f" AND crm_id IN ({_sql_list(crm_ids)})"
        if since is not None:
            where += f" AND {time_column} >= {_sql_literal(since)}"
        found = self._system_table(name, schema).search().where(where).limit(None).to_arrow()
        if long_list and crm_ids is not None:
            found = _keep_in(found, "crm_id", crm_ids)
        rows = found.to_pylist()
        return sorted(rows, key=lambda r: r[time_column])

    # ----------------------------------------------------------------------------------------------
    # Model registry (rows shaped by ``scoring.registry``)

    def put_model(self, tenant_id: str, row: Mapping[str, Any]) -> None:
        """Insert or replace one model version (keyed by tenant, kind and version)."""
        _require_tenant(tenant_id)
        data = {n: row.get(n) for n in MODEL_SCHEMA.names} | {"tenant_id": tenant_id}
        (
            self._merge_on_key("models", MODEL_SCHEMA)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist([data], MODEL_SCHEMA))
        )

    def get_models(
        self, tenant_id: str, kind: str, *, version: str | None = None, artifacts: bool = False
    ) -> list[dict[str, Any]]:
        """A tenant's model versions of one kind, oldest first; ``artifact`` only when asked."""
        _require_tenant(tenant_id)
        if "models" not in _list_tables(self._db):
            return []
        where = f"{_tenant_filter(tenant_id)} AND kind = {_sql_literal(kind)}"
        if version is not None:
            where += f" AND version = {_sql_literal(version)}"
        names = [n for n in MODEL_SCHEMA.names if artifacts or n != "artifact"]
        query = self._system_table("models", MODEL_SCHEMA).search().where(where).select(names)
        rows = query.limit(None).to_arrow().to_pylist()
        return sorted(rows, key=lambda r: r["seq"])

    def set_current_model(self, tenant_id: str, kind: str, version: str) -> None:
        """Make ``version`` the one current model of its kind (others stop being current).

        Raises:
            KeyError: the tenant has no such version.
        """
        _require_tenant(tenant_id)
        if not self.get_models(tenant_id, kind, version=version):
            raise KeyError(f"{tenant_id} has no {kind} model {version!r}")
        table = self._system_table("models", MODEL_SCHEMA)
        scope = f"{_tenant_filter(tenant_id)} AND kind = {_sql_literal(kind)}"
        table.update(where=f"{scope} AND version != {_sql_literal(version)}",
                     values={"is_current": False})  # fmt: skip
        table.update(where=f"{scope} AND version = {_sql_literal(version)}",
                     values={"is_current": True, "promoted_at": datetime.now(UTC)})  # fmt: skip

    def put_model_monitoring(
        self, tenant_id: str, kind: str, version: str, monitoring: Mapping[str, Any]
    ) -> None:
        """Attach the latest drift and decay check to a model version."""
        _require_tenant(tenant_id)
        if "models" not in _list_tables(self._db):
            return
        where = (
            f"{_tenant_filter(tenant_id)} AND kind = {_sql_literal(kind)}"
            f" AND version = {_sql_literal(version)}"
        )
        text = json.dumps(dict(monitoring), sort_keys=True, default=str)
        self._system_table("models", MODEL_SCHEMA).update(
            where=where, values={"monitoring_json": text}
        )

    # ----------------------------------------------------------------------------------------------
    # Erasure

    def find_person(self, tenant_id: str, subject: str) -> dict[str, list[str]]:
        """CRM ids of the leads, contacts and users whose email or CRM id is ``subject``."""
        _require_tenant(tenant_id)
        found: dict[str, list[str]] = {}
        literal = _sql_literal(subject.strip().lower())
        for entity in PERSON_ENTITIES:
            table = self._table(entity)
            if table is None:
                continue
            where = (
                f"{_tenant_filter(tenant_id)} AND (lower(email) = {literal} "
                f"OR crm_id = {_sql_literal(subject.strip())})"
            )
            rows = table.search().where(where).select(["crm_id"]).limit(None).to_arrow()
            ids = rows.column("crm_id").to_pylist()
            if ids:
                found[entity] = ids
        return found

    def delete_containing(self, tenant_id: str, entity: str, column: str, text: str) -> int:
        """Delete a tenant's rows whose text column contains ``text`` (notes quoting an email)."""
        _require_tenant(tenant_id)
        table = self._table(entity)
        if table is None or column not in arrow_schema(entity).names or not text:
            return 0
        pattern = text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        needle = _sql_literal("%" + pattern.lower() + "%")
        where = f"{_tenant_filter(tenant_id)} AND lower({column}) LIKE {needle}"
        removed = table.count_rows(where)
        if removed:
            table.delete(where)
        return int(removed)

    def record_erasure(self, tenant_id: str, subject: str, counts: Mapping[str, int]) -> None:
        """Log an erasure and suppress the subject (and the ids it covered) from future syncs."""
        _require_tenant(tenant_id)
        rows = [
            {"tenant_id": tenant_id, "subject_hash": subject_hash(subject),
             "erased_at": datetime.now(UTC), "counts_json": json.dumps(dict(counts), sort_keys=True)}
        ]  # fmt: skip
        (
            self._merge_on_key("erasures", ERASURE_SCHEMA)
            .when_matched_update_all()
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist(rows, ERASURE_SCHEMA))
        )
        self._suppression.pop(tenant_id, None)

    def suppress_ids(self, tenant_id: str, crm_ids: Sequence[str]) -> None:
        """Keep these record ids out of future syncs (the records of an erased person)."""
        _require_tenant(tenant_id)
        if not crm_ids:
            return
        now = datetime.now(UTC)
        rows = [
            {"tenant_id": tenant_id, "subject_hash": subject_hash(i), "erased_at": now,
             "counts_json": "{}"}
            for i in sorted(set(crm_ids))
        ]  # fmt: skip
        (
            self._merge_on_key("erasures", ERASURE_SCHEMA)
            .when_not_matched_insert_all()
            .execute(pa.Table.from_pylist(rows, ERASURE_SCHEMA))
        )
        self._suppression.pop(tenant_id, None)

    def erase_record_history(self, tenant_id: str, crm_ids: Sequence[str]) -> int:
        """Delete these records' rows from every side table keyed by ``crm_id``.

        That is the write ledger, the audit log, the score ledger and any later such table.

        Returns:
            How many rows were removed.
        """
        _require_tenant(tenant_id)
        if not crm_ids:
            return 0
        removed = 0
        entity_tables = set(TABLES.values())
        for name in _list_tables(self._db):
            if name in entity_tables:
                continue
            table = self._db.open_table(name)
            if "crm_id" not in table.schema.names or "tenant_id" not in table.schema.names:
                continue
            where = f"{_tenant_filter(tenant_id)} AND crm_id IN ({_sql_list(crm_ids)})"
            count = table.count_rows(where)
            if count:
                table.delete(where)
                removed += int(count)
        return removed

    def purge_history(self) -> None:
        """Drop every table's old versions, so deleted rows are gone from disk and indexes too.

        LanceDB keeps earlier versions for time travel; after an erasure they must not survive.
        """
        for name in _list_tables(self._db):
            with warnings.catch_warnings():
                # LanceDB warns that readers still on an old version will fail; for an erasure,
                # removing those versions is the point.
                warnings.simplefilter("ignore", UserWarning)
                self._db.open_table(name).optimize(
                    cleanup_older_than=timedelta(seconds=0), delete_unverified=True
                )

    def _suppressed(self, tenant_id: str) -> frozenset[str]:
        cached = self._suppression.get(tenant_id)
        if cached is not None:
            return cached
        hashes: frozenset[str] = frozenset()
        if "erasures" in _list_tables(self._db):
            table = self._system_table("erasures", ERASURE_SCHEMA)
            rows = table.search().where(_tenant_filter(tenant_id)).select(["subject_hash"])
            hashes = frozenset(rows.limit(None).to_arrow().column("subject_hash").to_pylist())
        self._suppression[tenant_id] = hashes
        return hashes

    def _system_table(self, name: str, schema: pa.Schema) -> Any:
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                table = self._tables[name] = self._open_or_create(name, schema)
        if name not in self._keyed:
            self._declare_key_once(name, table, schema)
        return table

    def _merge_on_key(self, name: str, schema: pa.Schema) -> Any:
        """A ``merge_insert`` into table ``name`` matched on the key ``schema`` declares."""
        return self._system_table(name, schema).merge_insert(_declares_key(schema))

    def _declare_key_once(self, name: str, table: Any, schema: pa.Schema) -> None:
        """Declare the key ``schema`` names on ``table`` (once per store; none: nothing to do).

        A table that ``schema`` gives no key is not remembered: the same feature table is read
        and appended with its plain schema and merged with a keyed one (:meth:`put_rows`).
        """
        key = _declares_key(schema)
        if key:
            self._declare_key(table, key)
            self._keyed.add(name)

    def _open_or_create(self, name: str, schema: pa.Schema) -> Any:
        if name in _list_tables(self._db):
            return self._db.open_table(name)
        try:
            return self._db.create_table(name, schema=schema, exist_ok=True)
        except ValueError:
            # Another process created it in between, in a layout from before the primary key
            # (``create_table`` refuses a schema that differs); ``_declare_key`` brings it up to date.
            # Any other refusal is the caller's to see.
            if name not in _list_tables(self._db):
                raise
            return self._db.open_table(name)

    def _declare_key(self, table: Any, key: list[str]) -> None:
        """Declare ``key`` as the primary key of a table created before keys were declared.

        Such a table (an older store) has nullable key columns and no key metadata, and LanceDB
        refuses to merge rows of the current layout into it. Declaring the key is two schema-only
        commits, made once per table by the first process that opens it.
        """
        stored = table.schema
        if _declares_key(stored) == key:
            return
        self._drop_duplicate_keys(table, key)
        marker = PRIMARY_KEY_METADATA.decode()
        try:
            nullable = [name for name in key if stored.field(name).nullable]
            if nullable:
                table.alter_columns(*({"path": name, "nullable": False} for name in nullable))
            table.update_field_metadata(
                *(
                    {
                        "path": field.name,
                        "metadata": {marker: "true" if field.name in key else None},
                    }
                    for field in stored
                    if field.name in key or (field.metadata or {}).get(PRIMARY_KEY_METADATA)
                )
            )
        except Exception:
            # Two processes opening an older table at once both try; the loser's commit fails
            # once the winner's has landed, and the key is then declared all the same.
            if _declares_key(table.schema) != key:
                raise
        log.info("table %s: declared primary key %s", table.name, ", ".join(key))

    def _drop_duplicate_keys(self, table: Any, key: list[str]) -> None:
        """Keep one row per key in a table from before keys were declared: the last inserted.

        Before the key was declared, two processes inserting the same new record could both
        commit, and such a table may hold a record twice; reads would then return it twice and
        a merge on the key would keep updating both copies. The twins come from one CRM record
        fetched twice, so the row inserted last (the highest row id) stands for it. Deleting by
        row id is safe to repeat, so a process that loses a commit race to another process doing
        the same repair scans again and finds nothing more to remove.
        """
        for attempt in range(3):
            try:
                keys = table.search().select(key).with_row_id(True).limit(None).to_arrow()
                for column in key:  # a row missing part of its key shares it with no other row
                    keys = keys.filter(pc.is_valid(keys[column]))
                if keys.num_rows == 0:
                    return
                kept = keys.group_by(key, use_threads=False).aggregate([("_rowid", "max")])
                extra = pc.filter(
                    keys["_rowid"],
                    pc.invert(pc.is_in(keys["_rowid"], value_set=kept["_rowid_max"])),
                ).to_pylist()
                if not extra:
                    return
                for start in range(0, len(extra), 1_000):
                    chunk = ", ".join(str(row_id) for row_id in extra[start : start + 1_000])
                    table.delete(f"_rowid IN ({chunk})")
                log.warning(
                    "table %s: removed %d duplicate rows (rows sharing a %s with a later row)",
                    table.name, len(extra), ", ".join(key),
                )  # fmt: skip
                return
            except Exception:
                if attempt == 2:
                    raise

    # ----------------------------------------------------------------------------------------------
    # Internals

    def table_names(self) -> list[str]:
        """Tables that exist (for health checks)."""
        return sorted(_list_tables(self._db))

    def _table(self, entity: str, create: bool = False) -> Any:
        name = _table_name(entity)
        with self._lock:
            table = self._tables.get(name)
            if table is None:
                if create:
                    table = self._open_or_create(name, arrow_schema(entity))
                elif name in _list_tables(self._db):
                    table = self._db.open_table(name)
                else:
                    return None
                self._tables[name] = table
        if name not in self._keyed:
            self._declare_key_once(name, table, arrow_schema(entity))
        return table

    def _drop_stale(
        self, tenant_id: str, entity: str, batch: list[dict[str, Any]]
    ) -> tuple[list[dict[str, Any]], int]:
        table = self._table(entity)
        if table is None:
            return batch, 0
        held = {
            row["crm_id"]: row["updated_at"]
            for row in self.to_arrow(
                tenant_id,
                entity,
                filters={"crm_id": [r["crm_id"] for r in batch]},
                columns=["crm_id", "updated_at"],
            ).to_pylist()
        }
        fresh = [r for r in batch if r["crm_id"] not in held or held[r["crm_id"]] < r["updated_at"]]
        return fresh, len(batch) - len(fresh)

    def _embed_notes(self, batch: list[dict[str, Any]]) -> int:
        if not batch:
            return 0
        texts = [_note_text(r) for r in batch]
        vectors = self._embedder_or_default().embed(texts)
        for row, vector in zip(batch, vectors, strict=True):
            row["vector"] = vector.tolist()
            row["embedding_model"] = MODEL_ID
        return len(batch)

    def _embedder_or_default(self) -> Embedder:
        if self._embedder is None:
            self._embedder = get_embedder()
        return self._embedder

    def _compact_if_fragmented(self, table: Any) -> None:
        """Compact a table this process just wrote once it has :data:`COMPACT_AT_FRAGMENTS`."""
        try:
            fragments = int(table.stats()["fragment_stats"]["num_fragments"])
            if fragments < COMPACT_AT_FRAGMENTS:
                return
            table.optimize()
        except Exception as exc:
            # A concurrent write committed first (LanceDB: "Retryable commit conflict"): the
            # writers win and nothing changed; the next write to the table tries again.
            log.info("compaction of %s left for a later write: %s", table.name, exc)

    def _ensure_indexes(self, entity: str, table: Any) -> None:
        # An index is created once, after the first rows arrive. LanceDB's indexes also serve rows
        # added after they were built (a flat scan of the unindexed part) until a compaction
        # (:meth:`_compact_if_fragmented`) folds those in. Two processes may race to create one;
        # the loser's commit fails and changes nothing, and the winner's index serves both.
        if entity in self._indexed or entity not in INDEXES:
            return
        present = {column for idx in table.list_indices() for column in idx.columns}
        for column, config in INDEXES[entity]:
            if column in present:
                continue
            try:
                table.create_index(column, config=config)
            except Exception as exc:  # never fail a write for an index: the next one tries again
                log.warning("no %s index on %s yet: %s", column, TABLES[entity], exc)
                return
        self._indexed.add(entity)


def _list_tables(db: Any) -> list[str]:
    listed = db.list_tables()
    return list(getattr(listed, "tables", listed))


def _table_name(entity: str) -> str:
    if entity not in TABLES:
        raise KeyError(f"unknown entity {entity!r}; expected one of {', '.join(TABLES)}")
    return TABLES[entity]


def _require_tenant(tenant_id: Any) -> None:
    if not isinstance(tenant_id, str) or not TENANT_ID_PATTERN.match(tenant_id):
        raise TenantRequiredError(
            f"store calls need a tenant id (letters, digits, _.:-), got {tenant_id!r}"
        )


def _sql_literal(value: Any) -> str:
    if value is None:
        return "NULL"
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, int | float):
        return repr(value)
    if isinstance(value, datetime):
        return f"TIMESTAMP '{value.isoformat()}'"
    if isinstance(value, date):
        return f"DATE '{value.isoformat()}'"
    return "'" + str(value).replace("'", "''") + "'"


IN_LIST_LIMIT = 1000
"""Values up to which an ``IN`` filter goes into LanceDB's where clause. Lance's cost there grows
with the list: on 100,000 leads, 1,000 ids took 0.9 s, 10,000 took 6.3 s and 2.5 GB, and 85,000
took a process past 12 GB. Longer lists are applied to the scanned rows in Arrow instead (a hash
set: 0.9 s for 10,000 ids)."""


def _is_list(value: Any) -> bool:
    return isinstance(value, list | tuple | set | frozenset)


def _keep_in(table: pa.Table, column: str, values: Collection[Any]) -> pa.Table:
    """The rows of ``table`` whose ``column`` is one of ``values``."""
    value_set = pa.array(list(values), type=table.schema.field(column).type)
    return table.filter(pc.is_in(table[column], value_set=value_set))


def _sql_list(values: Iterable[Any]) -> str:
    return ", ".join(_sql_literal(v) for v in values)


def _tenant_filter(tenant_id: str) -> str:
    return f"tenant_id = {_sql_literal(tenant_id)}"


def _where(tenant_id: str, schema: pa.Schema, filters: Mapping[str, Any] | None) -> str:
    clauses = [_tenant_filter(tenant_id)]
    for name, value in (filters or {}).items():
        if name not in schema.names or name == "tenant_id":
            raise ValueError(f"cannot filter on {name!r}: not a column of this table")
        if _is_list(value):
            if not value:
                return "FALSE"
            clauses.append(f"{name} IN ({_sql_list(value)})")
        elif value is None:
            clauses.append(f"{name} IS NULL")
        else:
            clauses.append(f"{name} = {_sql_literal(value)}")
    return " AND ".join(clauses)


def _older_vectors(tenant_id: str) -> str:
    """Where a tenant's notes carry a vector made by another embedding model than the current."""
    return (
        f"{_where(tenant_id, arrow_schema('note'), None)} AND embedding_model IS NOT NULL"
        f" AND embedding_model != {_sql_literal(MODEL_ID)}"
    )


def _note_text(note: Mapping[str, Any]) -> str:
    """What a note's vector is made from: its title and body."""
    return " ".join(part for part in (note.get("title"), note.get("body")) if part)


def _to_arrow(entity: str, rows: list[dict[str, Any]]) -> pa.Table:
    schema = arrow_schema(entity)
    prepared = []
    for row in rows:
        out = dict(row)
        out["custom"] = json.dumps(row.get("custom") or {}, sort_keys=True, default=str)
        prepared.append({name: out.get(name) for name in schema.names})
    return pa.Table.from_pylist(prepared, schema=schema)


def _identities(row: Mapping[str, Any]) -> set[str]:
    """Hashes by which a row could belong to an erased person."""
    found = {subject_hash(str(row["crm_id"]))}
    if row.get("email"):
        found.add(subject_hash(str(row["email"])))
    for link in PERSON_LINKS:
        if row.get(link):
            found.add(subject_hash(str(row[link])))
    return found


def _from_row(row: dict[str, Any]) -> dict[str, Any]:
    if isinstance(row.get("custom"), str):
        row["custom"] = json.loads(row["custom"])
    return row

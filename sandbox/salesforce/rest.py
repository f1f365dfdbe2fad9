"""The REST API under ``/services/data/vXX.X/``: one dispatcher shared by direct calls and composite.

Resources: the version root, ``limits``, ``sobjects`` (describe global), ``sobjects/<type>`` (basic
info, create), ``sobjects/<type>/describe``, ``sobjects/<type>/<id>`` (get with ``?fields=``, PATCH,
DELETE), ``sobjects/<type>/<externalIdField>/<value>`` (upsert, get, delete),
``sobjects/<type>/deleted`` and ``.../updated``, ``query``/``queryAll`` with 2,000-record pages,
``composite/sobjects`` (create, update, delete, retrieve; 200 records; ``allOrNone``), ``composite``
(25 subrequests, ``@{ref.path}`` references, ``allOrNone``) and ``tooling/sobjects/CustomField``.
Every error is a :class:`SalesforceError`, answered in the documented array shape.
"""

from __future__ import annotations

import collections
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qsl, urlsplit

from sandbox.salesforce import metadata as md
from sandbox.salesforce.errors import ALL_OR_NONE_ROLLED_BACK, SalesforceError, not_found
from sandbox.salesforce.ids import format_datetime, parse_datetime, to18
from sandbox.salesforce.records import CallContext, RecordEngine, Transaction
from sandbox.salesforce.schema import ObjectDef, Schema
from sandbox.salesforce.soql import Evaluator, parse

PAGE_SIZE = 2000
COLLECTION_LIMIT = 200
COMPOSITE_LIMIT = 25
VERSIONS = [f"{major}.0" for major in range(31, 63)]
_REFERENCE = re.compile(r"@\{([A-Za-z0-9_]+)\.([^}]+)\}")


@dataclass
class ApiRequest:
    """One REST call, already authenticated."""

    method: str
    path: str
    """The part after ``/services/data/vXX.X/``, without surrounding slashes."""
    args: dict[str, str]
    body: Any
    context: CallContext
    headers: dict[str, str] = field(default_factory=dict)
    tx: Transaction | None = None
    """Set when the call runs inside a composite request's transaction."""


@dataclass
class ApiResponse:
    """A REST answer before it becomes an HTTP response."""

    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


class _RolledBack(Exception):
    """Raised inside a transaction to undo it while keeping the computed answer."""

    def __init__(self, response: ApiResponse) -> None:
        super().__init__("rolled back")
        self.response = response


class RestApi:
    """Serves the REST resources for one org.

    Args:
        engine: the record engine.
        schema: the org schema.
        limits: returns the ``limits`` resource body.
    """

    def __init__(
        self, engine: RecordEngine, schema: Schema, limits: Callable[[], dict[str, Any]]
    ) -> None:
        self.engine = engine
        self.schema = schema
        self.limits = limits
        self._cursors: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()
        self._cursor_lock = threading.Lock()

    def handle(self, req: ApiRequest) -> ApiResponse:
        """Serve one request, turning errors into the documented error array."""
        try:
            return self.route(req)
        except SalesforceError as exc:
            return ApiResponse(exc.status, exc.rest_body())

    # ----------------------------------------------------------------------------------------------
    # Routing

    def route(self, req: ApiRequest) -> ApiResponse:
        """Dispatch on path and method.

        Raises:
            SalesforceError: NOT_FOUND for unknown resources, METHOD_NOT_ALLOWED for wrong verbs.
        """
        parts = [p for p in req.path.split("/") if p]
        method = req.method
        version = req.context.api_version
        if not parts:
            self._allow(method, "GET")
            names = ["sobjects", "query", "queryAll", "limits", "composite", "tooling", "search"]
            return ApiResponse(200, {n: f"/services/data/v{version}/{n}" for n in names})
        head = parts[0]
        if head == "limits" and len(parts) == 1:
            self._allow(method, "GET")
            return ApiResponse(200, self.limits())
        if head in {"query", "queryAll"}:
            self._allow(method, "GET")
            if len(parts) == 1:
                return self.query(req, include_deleted=head == "queryAll")
            if len(parts) == 2:
                return self.query_more(req, parts[1], head)
        if head == "sobjects":
            return self.sobjects(req, parts[1:])
        if head == "composite":
            if len(parts) == 1:
                self._allow(method, "POST")
                return self.composite(req)
            if parts[1] == "sobjects":
                return self.collections(req, parts[2:])
        if head == "tooling" and len(parts) >= 3 and parts[1] == "sobjects":
            return self.tooling(req, parts[2:])
        raise not_found()

    @staticmethod
    def _allow(method: str, *allowed: str) -> None:
        if method not in allowed:
            raise SalesforceError(
                405,
                "METHOD_NOT_ALLOWED",
                f"HTTP Method '{method}' not allowed. Allowed are {','.join(allowed)}",
            )

    def _run(
        self, req: ApiRequest, work: Callable[[Transaction], ApiResponse], all_or_none: bool = True
    ) -> ApiResponse:
        if req.tx is not None:
            return work(req.tx)
        try:
            with self.engine.transaction(req.context, all_or_none) as tx:
                return work(tx)
        except _RolledBack as rolled:
            return rolled.response

    # ----------------------------------------------------------------------------------------------
    # sObjects

    def sobjects(self, req: ApiRequest, parts: list[str]) -> ApiResponse:
        """``sobjects`` and everything under it."""
        version = req.context.api_version
        method = req.method
        if not parts:
            self._allow(method, "GET")
            return ApiResponse(
                200,
                {
                    "encoding": "UTF-8",
                    "maxBatchSize": 200,
                    "sobjects": [
                        o.describe_global_entry(version) for o in self.schema.objects.values()
                    ],
                },
            )
        obj = self.engine.object_or_404(parts[0])
        if len(parts) == 1:
            self._allow(method, "GET", "POST")
            if method == "GET":
                recent = [
                    self._shape(obj, r, ["Id", "Name"] if obj.field("Name") else ["Id"], version)
                    for _, r in list(self.engine.store.iter(obj.name))[-10:]
                ]
                return ApiResponse(
                    200,
                    {"objectDescribe": obj.describe_global_entry(version), "recentItems": recent},
                )
            return self._run(
                req, lambda tx: self._created(obj, self.engine.create(tx, obj, req.body))
            )
        second = parts[1]
        if len(parts) == 2 and second == "describe":
            self._allow(method, "GET")
            return ApiResponse(200, obj.describe(version))
        if len(parts) == 2 and second in {"deleted", "updated"}:
            self._allow(method, "GET")
            return self.replication(req, obj, second)
        if len(parts) == 2:
            self._allow(method, "GET", "PATCH", "DELETE")
            if method == "GET":
                record = self.engine.get(obj, second)
                names = self._field_names(obj, req.args.get("fields"))
                return ApiResponse(200, self._shape(obj, record, names, version))
            if method == "PATCH":

                def patch(tx: Transaction) -> ApiResponse:
                    self.engine.update(tx, obj, second, req.body)
                    return ApiResponse(204)

                return self._run(req, patch)

            def remove(tx: Transaction) -> ApiResponse:
                self.engine.delete(tx, obj, second)
                return ApiResponse(204)

            return self._run(req, remove)
        if len(parts) == 3:
            return self.by_external_id(req, obj, parts[1], parts[2])
        raise not_found()

    def _created(self, obj: ObjectDef, record_id: str) -> ApiResponse:
        return ApiResponse(201, {"id": record_id, "success": True, "errors": []})

    def by_external_id(
        self, req: ApiRequest, obj: ObjectDef, field_name: str, value: str
    ) -> ApiResponse:
        """GET, PATCH (upsert) or DELETE ``sobjects/<type>/<field>/<value>``."""
        self._allow(req.method, "GET", "PATCH", "DELETE")
        fdef = obj.field(field_name)
        if fdef is None or not (fdef.external_id or fdef.type == "id"):
            raise SalesforceError(
                404,
                "NOT_FOUND",
                f"Provided external ID field does not exist or is not accessible: {field_name}",
            )
        if req.method == "PATCH":

            def upsert(tx: Transaction) -> ApiResponse:
                record_id, created = self.engine.upsert(tx, obj, fdef.name, value, req.body)
                body = {"id": record_id, "success": True, "errors": [], "created": created}
                if created:
                    return ApiResponse(201, body)
                if float(req.context.api_version) >= 46.0:
                    return ApiResponse(200, body)
                return ApiResponse(204)

            return self._run(req, upsert)
        matches = (
            [self.engine.get(obj, value)]
            if fdef.type == "id"
            else self.engine.find_by_field(obj, fdef, value)
        )
        if not matches:
            raise not_found()
        if len(matches) > 1:
            urls = [
                f"/services/data/v{req.context.api_version}/sobjects/{obj.name}/{m['Id']}"
                for m in matches
            ]
            return ApiResponse(300, urls)
        if req.method == "GET":
            names = self._field_names(obj, req.args.get("fields"))
            return ApiResponse(200, self._shape(obj, matches[0], names, req.context.api_version))

        def remove(tx: Transaction) -> ApiResponse:
            self.engine.delete(tx, obj, matches[0]["Id"])
            return ApiResponse(204)

        return self._run(req, remove)

    def _field_names(self, obj: ObjectDef, fields_param: str | None) -> list[str]:
        if not fields_param:
            return [f.name for f in obj.fields.values()]
        names = []
        for raw in fields_param.split(","):
            name = raw.strip()
            if not name:
                continue
            fdef = obj.field(name)
            if fdef is None:
                raise SalesforceError(
                    400,
                    "INVALID_FIELD",
                    f"No such column '{name}' on entity '{obj.name}'. If you are attempting to use"
                    " a custom field, be sure to append the '__c' after the custom field name."
                    " Please reference your WSDL or the describe call for the appropriate names.",
                )
            names.append(fdef.name)
        return names

    @staticmethod
    def _shape(
        obj: ObjectDef, record: dict[str, Any], names: list[str], version: str
    ) -> dict[str, Any]:
        out: dict[str, Any] = {
            "attributes": {
                "type": obj.name,
                "url": f"/services/data/v{version}/sobjects/{obj.name}/{record['Id']}",
            }
        }
        for name in names:
            out[name] = record.get(name)
        return out

    # ----------------------------------------------------------------------------------------------
    # getDeleted / getUpdated

    def replication(self, req: ApiRequest, obj: ObjectDef, kind: str) -> ApiResponse:
        """``sobjects/<type>/deleted`` and ``sobjects/<type>/updated``."""
        bounds = {}
        for name in ("start", "end"):
            raw = req.args.get(name)
            if not raw:
                raise SalesforceError(400, "MISSING_ARGUMENT", f"{name} date not specified")
            parsed = parse_datetime(raw.replace(" ", "+"))
            if parsed is None:
                raise SalesforceError(
                    400,
                    "MALFORMED_QUERY",
                    f"{name}: invalid date/time format: {raw}",
                )
            bounds[name] = parsed
        start, end = bounds["start"], bounds["end"]
        now = datetime.now(UTC)
        if end < start:
            raise SalesforceError(
                400, "INVALID_REPLICATION_DATE", "end date cannot be before start date"
            )
        window_days = 15 if kind == "deleted" else 30
        earliest = now - timedelta(days=window_days)
        if start < earliest - timedelta(minutes=1):
            raise SalesforceError(
                400,
                "INVALID_REPLICATION_DATE",
                f"startDate cannot be more than {window_days} days ago",
            )
        covered = min(end, now).replace(second=0, microsecond=0)
        if kind == "deleted":
            rows = self.engine.store.deleted_between(obj.name, start.timestamp(), end.timestamp())
            return ApiResponse(
                200,
                {
                    "deletedRecords": [
                        {"id": rid, "deletedDate": format_datetime(datetime.fromtimestamp(t, UTC))}
                        for rid, t in rows
                    ],
                    "earliestDateAvailable": format_datetime(
                        earliest.replace(second=0, microsecond=0)
                    ),
                    "latestDateCovered": format_datetime(covered),
                },
            )
        ids = []
        for record_id, record in self.engine.store.iter(obj.name, include_deleted=True):
            stamp = parse_datetime(record.get("SystemModstamp") or "")
            if stamp is not None and start <= stamp < end and not record.get("IsDeleted"):
                ids.append(record_id)
        return ApiResponse(200, {"ids": ids, "latestDateCovered": format_datetime(covered)})

    # ----------------------------------------------------------------------------------------------
    # Query

    def query(self, req: ApiRequest, include_deleted: bool) -> ApiResponse:
        """``query`` / ``queryAll`` with ``?q=``."""
        text = req.args.get("q")
        if text is None:
            raise SalesforceError(400, "MALFORMED_QUERY", "A query string has to be specified")
        parsed = parse(text)
        store = self.engine.store

        def fetch_all(object_name: str, deleted: bool) -> Any:
            return (record for _, record in store.iter(object_name, include_deleted=deleted))

        def fetch_one(record_id: str) -> dict[str, Any] | None:
            obj = self.schema.object_for_id(record_id)
            return store.get(obj.name, record_id, include_deleted=True) if obj else None

        evaluator = Evaluator(self.schema, fetch_all, fetch_one, req.context.api_version)
        total, records = evaluator.run(parsed, include_deleted)
        size = self._batch_size(req.headers)
        kind = "queryAll" if include_deleted else "query"
        return ApiResponse(
            200, self._page(records, total, 0, size, None, kind, req.context.api_version)
        )

    @staticmethod
    def _batch_size(headers: dict[str, str]) -> int:
        options = headers.get("Sforce-Query-Options", "")
        match = re.search(r"batchSize\s*=\s*(\d+)", options)
        if not match:
            return PAGE_SIZE
        return max(200, min(PAGE_SIZE, int(match.group(1))))

    def _page(
        self,
        records: list[dict[str, Any]],
        total: int,
        position: int,
        size: int,
        locator: str | None,
        kind: str,
        version: str,
    ) -> dict[str, Any]:
        page = records[position : position + size]
        body: dict[str, Any] = {"totalSize": total, "done": True, "records": page}
        nxt = position + size
        if nxt < len(records):
            if locator is None:
                locator = "01g" + secrets.token_hex(6).upper() + "IAW"
                with self._cursor_lock:
                    self._cursors[locator] = {
                        "records": records,
                        "total": total,
                        "size": size,
                        "created": time.time(),
                    }
                    while len(self._cursors) > 500:
                        self._cursors.popitem(last=False)
            body["done"] = False
            body["nextRecordsUrl"] = f"/services/data/v{version}/{kind}/{locator}-{nxt}"
        elif locator is not None:
            with self._cursor_lock:
                self._cursors.pop(locator, None)
        return body

    def query_more(self, req: ApiRequest, token: str, kind: str) -> ApiResponse:
        """``query/<locator>-<position>``."""
        locator, _, position = token.rpartition("-")
        with self._cursor_lock:
            cursor = self._cursors.get(locator)
        if cursor is None or not position.isdigit():
            raise SalesforceError(400, "INVALID_QUERY_LOCATOR", "invalid query locator")
        return ApiResponse(
            200,
            self._page(
                cursor["records"],
                cursor["total"],
                int(position),
                cursor["size"],
                locator,
                kind,
                req.context.api_version,
            ),
        )

    # ----------------------------------------------------------------------------------------------
    # sObject Collections

    def collections(self, req: ApiRequest, parts: list[str]) -> ApiResponse:
        """``composite/sobjects``: POST create, PATCH update, DELETE ``?ids=``, GET retrieve."""
        if parts:
            self._allow(req.method, "GET", "POST")
            obj = self.engine.object_or_404(parts[0])
            return self._retrieve_many(req, obj)
        self._allow(req.method, "POST", "PATCH", "DELETE")
        if req.method == "DELETE":
            ids = [i for i in (req.args.get("ids") or "").split(",") if i]
            if not ids:
                raise SalesforceError(400, "MISSING_ARGUMENT", "ids parameter not specified")
            all_or_none = (req.args.get("allOrNone") or "false").lower() == "true"
            items: list[Any] = ids
        else:
            body = req.body
            if not isinstance(body, dict) or not isinstance(body.get("records"), list):
                raise SalesforceError(
                    400, "JSON_PARSER_ERROR", "The request body must contain a 'records' array"
                )
            items = body["records"]
            all_or_none = bool(body.get("allOrNone", False))
        if len(items) > COLLECTION_LIMIT:
            raise SalesforceError(
                400,
                "EXCEEDED_ID_LIMIT",
                f"record limit reached. cannot submit more than {COLLECTION_LIMIT} records into"
                " this call",
            )
        return self._run(
            req, lambda tx: self._collection_items(req, tx, items, all_or_none), all_or_none
        )

    def _collection_items(
        self, req: ApiRequest, tx: Transaction, items: list[Any], all_or_none: bool
    ) -> ApiResponse:
        results: list[dict[str, Any]] = []
        failed = False
        for item in items:
            if failed and all_or_none:
                results.append(
                    {"id": None, "success": False, "errors": [ALL_OR_NONE_ROLLED_BACK.item_error()]}
                )
                continue
            mark = self._mark(tx)
            try:
                record_id = self._collection_one(req, tx, item)
                results.append({"id": record_id, "success": True, "errors": []})
            except SalesforceError as exc:
                self._undo_to(tx, mark)
                failed = True
                item_id = (
                    item
                    if isinstance(item, str)
                    else (item.get("Id") if isinstance(item, dict) else None)
                )
                results.append(
                    {
                        "id": item_id if req.method != "POST" else None,
                        "success": False,
                        "errors": [exc.item_error()],
                    }
                )
        if failed and all_or_none:
            for result in results:
                if result["success"]:
                    result.update(
                        {
                            "id": None,
                            "success": False,
                            "errors": [ALL_OR_NONE_ROLLED_BACK.item_error()],
                        }
                    )
            response = ApiResponse(200, results)
            if req.tx is not None:
                raise SalesforceError(
                    400, "ALL_OR_NONE_OPERATION_ROLLED_BACK", ALL_OR_NONE_ROLLED_BACK.message
                )
            raise _RolledBack(response)
        return ApiResponse(200, results)

    @staticmethod
    def _mark(tx: Transaction) -> tuple[int, int]:
        return len(tx.undo), len(tx.changes)

    def _undo_to(self, tx: Transaction, mark: tuple[int, int]) -> None:
        partial = Transaction(tx.context, undo=tx.undo[mark[0] :])
        del tx.undo[mark[0] :]
        del tx.changes[mark[1] :]
        self.engine.rollback(partial)

    def _collection_one(self, req: ApiRequest, tx: Transaction, item: Any) -> str:
        if req.method == "DELETE":
            obj = self.schema.object_for_id(item) if to18(item) else None
            if obj is None:
                raise SalesforceError(400, "MALFORMED_ID", f"invalid record id: {item}", ["Id"])
            self.engine.delete(tx, obj, item)
            return to18(item) or item
        if not isinstance(item, dict):
            raise SalesforceError(400, "JSON_PARSER_ERROR", "each record must be a JSON object")
        attributes = item.get("attributes")
        type_name = attributes.get("type") if isinstance(attributes, dict) else None
        if not type_name:
            raise SalesforceError(400, "INVALID_TYPE", "No SObject Type defined in the JSON")
        obj = self.schema.object(type_name)
        if obj is None:
            raise SalesforceError(
                400, "INVALID_TYPE", f"sObject type '{type_name}' is not supported."
            )
        values = {k: v for k, v in item.items() if k != "attributes"}
        if req.method == "POST":
            return self.engine.create(tx, obj, values)
        record_id = next((v for k, v in values.items() if k.lower() == "id"), None)
        if not record_id:
            raise SalesforceError(
                400, "MISSING_ARGUMENT", "Id not specified in an update call", ["Id"]
            )
        values = {k: v for k, v in values.items() if k.lower() != "id"}
        self.engine.update(tx, obj, record_id, values)
        return to18(record_id) or record_id

    def _retrieve_many(self, req: ApiRequest, obj: ObjectDef) -> ApiResponse:
        if req.method == "POST":
            body = req.body if isinstance(req.body, dict) else {}
            ids = body.get("ids") or []
            fields = ",".join(body.get("fields") or [])
        else:
            ids = [i for i in (req.args.get("ids") or "").split(",") if i]
            fields = req.args.get("fields") or ""
        if not ids or not fields:
            raise SalesforceError(400, "MISSING_ARGUMENT", "ids and fields are required")
        names = self._field_names(obj, fields)
        out: list[Any] = []
        for raw in ids:
            normal = to18(raw)
            record = self.engine.store.get(obj.name, normal) if normal else None
            out.append(self._shape(obj, record, names, req.context.api_version) if record else None)
        return ApiResponse(200, out)

    # ----------------------------------------------------------------------------------------------
    # Composite

    def composite(self, req: ApiRequest) -> ApiResponse:
        """``composite``: up to 25 subrequests in one transaction, with references."""
        body = req.body
        if not isinstance(body, dict) or not isinstance(body.get("compositeRequest"), list):
            raise SalesforceError(
                400, "JSON_PARSER_ERROR", "The request body must contain a 'compositeRequest' array"
            )
        subs = body["compositeRequest"]
        if len(subs) > COMPOSITE_LIMIT:
            raise SalesforceError(
                400,
                "LIMIT_EXCEEDED",
                f"Number of subrequests cannot exceed {COMPOSITE_LIMIT}.",
            )
        seen: set[str] = set()
        for sub in subs:
            ref = sub.get("referenceId") if isinstance(sub, dict) else None
            if not isinstance(ref, str) or not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", ref):
                raise SalesforceError(400, "INVALID_INPUT", "referenceId is missing or invalid")
            if ref in seen:
                raise SalesforceError(400, "INVALID_INPUT", f"Duplicate referenceId '{ref}'")
            seen.add(ref)
        all_or_none = bool(body.get("allOrNone", False))

        def work(tx: Transaction) -> ApiResponse:
            results: list[dict[str, Any]] = []
            bodies: dict[str, Any] = {}
            failed = False
            for sub in subs:
                ref = sub["referenceId"]
                if failed and all_or_none:
                    results.append(
                        self._halted(
                            ref,
                            "The transaction was rolled back since"
                            " another operation in the same transaction"
                            " failed.",
                        )
                    )
                    continue
                try:
                    resolved_url = self._resolve(sub.get("url", ""), bodies)
                    resolved_body = self._resolve(sub.get("body"), bodies)
                except KeyError as missing:
                    results.append(
                        self._halted(
                            ref,
                            f"Invalid reference specified. No value for"
                            f" {missing.args[0]} found in the results of"
                            " earlier subrequests.",
                        )
                    )
                    failed = True
                    continue
                mark = self._mark(tx)
                response = self._subrequest(req, tx, sub, resolved_url, resolved_body)
                if response.status >= 400:
                    failed = True
                    self._undo_to(tx, mark)
                else:
                    bodies[ref] = response.body
                results.append(
                    {
                        "body": response.body,
                        "httpHeaders": response.headers,
                        "httpStatusCode": response.status,
                        "referenceId": ref,
                    }
                )
            if failed and all_or_none:
                for result in results:
                    if result["httpStatusCode"] < 400:
                        result.update(
                            self._halted(
                                result["referenceId"],
                                "The transaction was rolled back since another operation in the same"
                                " transaction failed.",
                            )
                        )
                raise _RolledBack(ApiResponse(200, {"compositeResponse": results}))
            return ApiResponse(200, {"compositeResponse": results})

        return self._run(req, work)

    @staticmethod
    def _halted(ref: str, message: str) -> dict[str, Any]:
        return {
            "body": [{"errorCode": "PROCESSING_HALTED", "message": message}],
            "httpHeaders": {},
            "httpStatusCode": 400,
            "referenceId": ref,
        }

    def _subrequest(
        self, req: ApiRequest, tx: Transaction, sub: dict[str, Any], url: str, body: Any
    ) -> ApiResponse:
        split = urlsplit(url)
        match = re.match(r"^/services/data/v(\d+\.\d)(/.*)?$", split.path)
        if not match:
            return ApiResponse(
                400, [{"errorCode": "INVALID_INPUT", "message": f"Invalid URL: {url}"}]
            )
        method = str(sub.get("method", "GET")).upper()
        context = CallContext(
            req.context.user_id, match.group(1), req.context.client, req.context.api
        )
        inner = ApiRequest(
            method,
            (match.group(2) or "").strip("/"),
            dict(parse_qsl(split.query)),
            body,
            context,
            req.headers,
            tx,
        )
        if inner.path.startswith("composite"):
            return ApiResponse(
                400,
                [
                    {
                        "errorCode": "INVALID_INPUT",
                        "message": "composite subrequests cannot be nested",
                    }
                ],
            )
        response = self.handle(inner)
        if response.status == 201 and isinstance(response.body, dict) and "id" in response.body:
            obj_path = inner.path.split("/")
            response.headers = {
                "Location": f"/services/data/v{context.api_version}/sobjects/{obj_path[1]}/"
                f"{response.body['id']}"
            }
        return response

    def _resolve(self, value: Any, bodies: dict[str, Any]) -> Any:
        if isinstance(value, str):

            def swap(match: re.Match[str]) -> str:
                ref, path = match.group(1), match.group(2)
                if ref not in bodies:
                    raise KeyError(f"{ref}.{path}")
                return str(_walk(bodies[ref], path, f"{ref}.{path}"))

            whole = _REFERENCE.fullmatch(value)
            if whole and whole.group(1) in bodies:
                return _walk(bodies[whole.group(1)], whole.group(2), value)
            return _REFERENCE.sub(swap, value)
        if isinstance(value, dict):
            return {k: self._resolve(v, bodies) for k, v in value.items()}
        if isinstance(value, list):
            return [self._resolve(v, bodies) for v in value]
        return value

    # ----------------------------------------------------------------------------------------------
    # Tooling

    def tooling(self, req: ApiRequest, parts: list[str]) -> ApiResponse:
        """``tooling/sobjects/CustomField`` create, read and delete."""
        if parts[0].lower() != "customfield":
            raise not_found()
        if len(parts) == 1:
            self._allow(req.method, "POST")
            body = req.body if isinstance(req.body, dict) else {}
            full_name = body.get("FullName")
            meta = body.get("Metadata")
            if not isinstance(full_name, str) or not isinstance(meta, dict):
                raise SalesforceError(
                    400,
                    "REQUIRED_FIELD_MISSING",
                    "Required fields are missing: [FullName, Metadata]",
                    ["FullName", "Metadata"],
                )
            object_name, fdef = md.field_from_metadata(self.schema, full_name, meta)
            if self.schema.custom_field(object_name, fdef.name) is not None:
                raise SalesforceError(
                    400,
                    "DUPLICATE_DEVELOPER_NAME",
                    f"There is already a field named {fdef.name} on {object_name}.",
                )
            self.schema.add_custom_fields([(object_name, fdef)])
            return ApiResponse(
                201,
                {
                    "id": fdef.metadata["id"],
                    "success": True,
                    "errors": [],
                    "warnings": [],
                    "infos": [],
                },
            )
        self._allow(req.method, "GET", "DELETE")
        found = md.find_field_by_id(self.schema, parts[1])
        if found is None:
            raise not_found()
        object_name, fdef = found
        if req.method == "DELETE":
            self.schema.remove_custom_field(object_name, fdef.name)
            return ApiResponse(204)
        version = req.context.api_version
        return ApiResponse(
            200,
            {
                "attributes": {
                    "type": "CustomField",
                    "url": f"/services/data/v{version}/tooling/sobjects/CustomField/{parts[1]}",
                },
                "Id": fdef.metadata["id"],
                "DeveloperName": fdef.name.removesuffix("__c"),
                "FullName": f"{object_name}.{fdef.name}",
                "TableEnumOrId": object_name,
                "Metadata": md.metadata_dict(fdef),
            },
        )


def _walk(body: Any, path: str, ref: str) -> Any:
    current = body
    for token in re.findall(r"[^.\[\]]+|\[\d+\]", path):
        if token.startswith("["):
            index = int(token[1:-1])
            if not isinstance(current, list) or index >= len(current):
                raise KeyError(ref)
            current = current[index]
        else:
            if not isinstance(current, dict) or token not in current:
                raise KeyError(ref)
            current = current[token]
    return current

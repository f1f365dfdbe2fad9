"""The CRM REST routes: objects (basic, batch, search, merge), properties, owners and associations.

Paths and shapes follow what ``hubspot-api-client`` 12 calls (``/crm/v3/objects/{objectType}``,
``/crm/v3/properties/{objectType}``, ``/crm/v3/owners/``, ``/crm/v4/objects/.../associations``,
``/crm/v3|v4/associations/{from}/{to}/batch/...``). Authentication, scopes and rate limits are
checked in :mod:`sandbox.hubspot.server` before these handlers run.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any
from urllib.parse import urlencode

from flask import Flask, Response, g, request

from sandbox.hubspot import associations as assoc_types
from sandbox.hubspot.errors import HubSpotError, json_response, missing_scopes, validation_error
from sandbox.hubspot.objects import ChangeSource
from sandbox.hubspot.properties import ENGAGEMENTS, OBJECT_TYPE_IDS, canonical_type, now_iso
from sandbox.hubspot.search import SearchIndex, SearchRequest

if TYPE_CHECKING:
    from sandbox.hubspot.server import HubSpotSandbox

MAX_BATCH = 100
MAX_BATCH_WITH_HISTORY = 50
MAX_PAGE = 100
MAX_PAGE_WITH_HISTORY = 50


# --------------------------------------------------------------------------------------------------
# Request helpers


def body_json() -> Any:
    """The request's JSON body, or HubSpot's 400 for a body that is not JSON."""
    raw = request.get_data(cache=True)
    if not raw:
        raise validation_error("Invalid input JSON on line 1, column 1: empty body")
    try:
        return json.loads(raw)
    except ValueError as exc:
        raise validation_error(f"Invalid input JSON on line 1, column 1: {exc}") from None


def body_object() -> dict[str, Any]:
    """The request's JSON body when it is an object, or HubSpot's 400."""
    body = body_json()
    if not isinstance(body, dict):
        raise validation_error("Invalid input JSON: the body must be an object")
    return body


def list_arg(name: str) -> list[str]:
    """A list query parameter given repeated (``a=1&a=2``) or comma-separated (``a=1,2``)."""
    values: list[str] = []
    for raw in request.args.getlist(name):
        values.extend(v.strip() for v in raw.split(",") if v.strip())
    return values


def bool_arg(name: str) -> bool:
    """A boolean query parameter (``true``/``false``)."""
    return request.args.get(name, "false").lower() == "true"


def int_arg(name: str, default: int) -> int:
    """An integer query parameter, or HubSpot's 400."""
    raw = request.args.get(name)
    if raw is None or raw == "":
        return default
    try:
        return int(raw)
    except ValueError:
        raise validation_error(f"Query parameter {name}={raw!r} is not a number") from None


def object_type_of(name: str) -> str:
    """Canonical object type for a path segment, or HubSpot's 400 for an unknown one."""
    object_type = canonical_type(name)
    if object_type is None:
        raise validation_error(f"Unable to infer object type from: {name}")
    return object_type


def source() -> ChangeSource:
    """The change source of the current request: the authenticated app's integration."""
    return g.change_source


def require_scope(*scopes: str) -> None:
    """Answer 403 MISSING_SCOPES unless the token carries one of ``scopes``."""
    granted = set(g.token.get("scopes", [])) if getattr(g, "token", None) else set()
    if not granted & set(scopes):
        raise missing_scopes(list(scopes))


def object_scope(object_type: str, access: str) -> None:
    """Check the object scope HubSpot requires (engagements ride on the contacts scopes)."""
    base = "contacts" if object_type in ENGAGEMENTS else object_type
    require_scope(f"crm.objects.{base}.{access}")


def schema_scope(object_type: str, access: str) -> None:
    """Check the schema scope the properties API requires."""
    base = "contacts" if object_type in ENGAGEMENTS else object_type
    scopes = [f"crm.schemas.{base}.{access}"]
    if access == "read":
        scopes.append(f"crm.objects.{base}.read")
    require_scope(*scopes)


def inputs_of(body: Any, limit: int = MAX_BATCH) -> list[Any]:
    """The ``inputs`` list of a batch body, with HubSpot's 400 for a missing or oversized one."""
    if not isinstance(body, dict) or not isinstance(body.get("inputs"), list):
        raise validation_error("Invalid input JSON: inputs is required and must be a list")
    inputs = body["inputs"]
    if len(inputs) > limit:
        if limit == MAX_BATCH_WITH_HISTORY:
            raise validation_error(
                "The maximum number of inputs supported in a batch request for property histories"
                f" is {limit}. Please reduce the number of items and try again"
            )
        raise validation_error(
            f"The maximum number of inputs supported in a batch request is {limit}."
            " Please reduce the number of items and try again"
        )
    return inputs


def batch_body(
    results: list[Any], errors: list[dict[str, Any]], started: str, status: int = 200
) -> Response:
    """A batch answer; 207 Multi-Status with ``errors``/``numErrors`` when some inputs failed."""
    body: dict[str, Any] = {"status": "COMPLETE", "results": results}
    if errors:
        body["numErrors"] = len(errors)
        body["errors"] = errors
        status = 207
    body["startedAt"] = started
    body["completedAt"] = now_iso()
    return json_response(body, status)


def batch_error(category: str, message: str, context: dict[str, list[str]]) -> dict[str, Any]:
    """One entry of a batch answer's ``errors``, as ``StandardError``."""
    return {
        "status": "error",
        "category": category,
        "message": message,
        "context": context,
        "errors": [],
        "links": {},
    }


def _paging_link(path: str, after: str, extra: dict[str, str]) -> str:
    query = urlencode({**extra, "after": after})
    return f"{request.host_url.rstrip('/')}{path}?{query}"


# --------------------------------------------------------------------------------------------------
# Routes


def register(app: Flask, sb: HubSpotSandbox) -> None:
    """Add the CRM routes to the sandbox app."""
    repo = sb.repo
    registry = sb.registry
    search_index = SearchIndex(repo)

    def read_options() -> dict[str, Any]:
        return {
            "properties": list_arg("properties"),
            "with_history": list_arg("propertiesWithHistory"),
            "associations": list_arg("associations"),
        }

    # -- objects: basic -----------------------------------------------------------------------

    @app.get("/crm/v3/objects/<object_type>")
    def objects_list(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "read")
        options = read_options()
        cap = MAX_PAGE_WITH_HISTORY if options["with_history"] else MAX_PAGE
        limit = max(1, min(int_arg("limit", 10), cap))
        after = int_arg("after", 0)
        records = repo.all(object_type, archived=bool_arg("archived"))
        remaining = [r for r in records if int(r["id"]) >= after]
        page = remaining[:limit]
        body: dict[str, Any] = {"results": [repo.to_wire(object_type, r, **options) for r in page]}
        if len(remaining) > limit:
            next_after = str(int(remaining[limit]["id"]))
            extra = {"limit": str(limit)}
            body["paging"] = {
                "next": {"after": next_after, "link": _paging_link(request.path, next_after, extra)}
            }
        return json_response(body)

    @app.get("/crm/v3/objects/<object_type>/<object_id>")
    def objects_get(object_type: str, object_id: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "read")
        id_property = request.args.get("idProperty")
        if bool_arg("archived"):
            rec = repo.get(object_type, object_id, archived=True)
        else:
            rec = repo.resolve(object_type, object_id, id_property)
        if rec is None:
            raise HubSpotError(
                404, "OBJECT_NOT_FOUND", "Object not found.  objectId are usually numeric."
            )
        return json_response(repo.to_wire(object_type, rec, **read_options()))

    @app.post("/crm/v3/objects/<object_type>")
    def objects_create(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        body = body_json()
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise validation_error("Invalid input JSON: properties is required")
        rec = repo.create(
            object_type, body["properties"], source(), associations=body.get("associations") or []
        )
        props = list(body["properties"])
        return json_response(repo.to_wire(object_type, rec, properties=props), 201)

    @app.patch("/crm/v3/objects/<object_type>/<object_id>")
    def objects_update(object_type: str, object_id: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        body = body_json()
        if not isinstance(body, dict) or not isinstance(body.get("properties"), dict):
            raise validation_error("Invalid input JSON: properties is required")
        rec = repo.update(
            object_type,
            object_id,
            body["properties"],
            source(),
            id_property=request.args.get("idProperty"),
        )
        return json_response(repo.to_wire(object_type, rec, properties=list(body["properties"])))

    @app.delete("/crm/v3/objects/<object_type>/<object_id>")
    def objects_archive(object_type: str, object_id: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        repo.archive(object_type, object_id, source())
        return Response(status=204)

    @app.post("/crm/v3/objects/<object_type>/merge")
    def objects_merge(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        if object_type not in ("contacts", "companies", "deals"):
            raise validation_error(f"Merging is not supported for {object_type}")
        body = body_json()
        if (
            not isinstance(body, dict)
            or not body.get("primaryObjectId")
            or not body.get("objectIdToMerge")
        ):
            raise validation_error(
                "Invalid input JSON: primaryObjectId and objectIdToMerge are required"
            )
        rec = repo.merge(
            object_type, str(body["primaryObjectId"]), str(body["objectIdToMerge"]), source()
        )
        return json_response(repo.to_wire(object_type, rec))

    # -- objects: batch -----------------------------------------------------------------------

    @app.post("/crm/v3/objects/<object_type>/batch/read")
    def objects_batch_read(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "read")
        started = now_iso()
        body = body_json()
        history = (body.get("propertiesWithHistory") or []) if isinstance(body, dict) else []
        inputs = inputs_of(body, MAX_BATCH_WITH_HISTORY if history else MAX_BATCH)
        id_property = body.get("idProperty")
        archived = bool_arg("archived")
        results, missing = [], []
        for item in inputs:
            key = str(item.get("id", "")) if isinstance(item, dict) else ""
            if archived:
                rec = repo.get(object_type, key, archived=True)
            else:
                rec = repo.resolve(object_type, key, id_property)
            if rec is None:
                missing.append(key)
                continue
            results.append(
                repo.to_wire(
                    object_type,
                    rec,
                    properties=[str(p) for p in body.get("properties") or []],
                    with_history=[str(p) for p in history],
                )
            )
        errors = []
        if missing:
            label = object_type[:-1].upper() if object_type != "companies" else "COMPANY"
            errors.append(
                batch_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not get some {label} objects, they may be deleted or not exist."
                    " Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return batch_body(results, errors, started)

    @app.post("/crm/v3/objects/<object_type>/batch/create")
    def objects_batch_create(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        started = now_iso()
        inputs = inputs_of(body_json())
        for item in inputs:
            if not isinstance(item, dict) or not isinstance(item.get("properties"), dict):
                raise validation_error("Invalid input JSON: each input needs properties")
            registry.normalize_values(object_type, item["properties"], sb.portal_id, creating=True)
        _check_duplicates_in_batch(sb, object_type, inputs)
        results = []
        for item in inputs:
            rec = repo.create(
                object_type,
                item["properties"],
                source(),
                associations=item.get("associations") or [],
            )
            wire = repo.to_wire(object_type, rec, properties=list(item["properties"]))
            if item.get("objectWriteTraceId"):
                wire["objectWriteTraceId"] = str(item["objectWriteTraceId"])
            results.append(wire)
        return batch_body(results, [], started, 201)

    @app.post("/crm/v3/objects/<object_type>/batch/update")
    def objects_batch_update(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        started = now_iso()
        inputs = inputs_of(body_json())
        for item in inputs:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("properties"), dict)
                or ("id" not in item)
            ):
                raise validation_error("Invalid input JSON: each input needs id and properties")
            registry.normalize_values(object_type, item["properties"], sb.portal_id, creating=False)
        ids = [str(item["id"]) for item in inputs]
        if len(set(ids)) != len(ids):
            raise validation_error(
                "Duplicate IDs found in batch input: "
                + ", ".join(sorted(set(i for i in ids if ids.count(i) > 1)))
            )
        results, missing = [], []
        for item in inputs:
            id_property = item.get("idProperty")
            if repo.resolve(object_type, str(item["id"]), id_property) is None:
                missing.append(str(item["id"]))
                continue
            rec = repo.update(
                object_type, str(item["id"]), item["properties"], source(), id_property=id_property
            )
            wire = repo.to_wire(object_type, rec, properties=list(item["properties"]))
            if item.get("objectWriteTraceId"):
                wire["objectWriteTraceId"] = str(item["objectWriteTraceId"])
            results.append(wire)
        errors = []
        if missing:
            errors.append(
                batch_error(
                    "OBJECT_NOT_FOUND",
                    f"Could not update some {object_type} objects, they may be deleted or not"
                    " exist. Check that ids are valid.",
                    {"ids": missing},
                )
            )
        return batch_body(results, errors, started)

    @app.post("/crm/v3/objects/<object_type>/batch/upsert")
    def objects_batch_upsert(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        started = now_iso()
        inputs = inputs_of(body_json())
        unique = registry.unique_properties(object_type) - {"hs_object_id"}
        for item in inputs:
            if (
                not isinstance(item, dict)
                or not isinstance(item.get("properties"), dict)
                or ("id" not in item)
            ):
                raise validation_error("Invalid input JSON: each input needs id and properties")
            id_property = item.get("idProperty")
            if id_property not in unique:
                raise validation_error(
                    f"idProperty {id_property!r} is not a unique-value property of {object_type};"
                    f" use one of {sorted(unique)}"
                )
            registry.normalize_values(object_type, item["properties"], sb.portal_id, creating=True)
        results = []
        for item in inputs:
            id_property, key = item["idProperty"], str(item["id"])
            existing = repo.find_unique(object_type, id_property, key)
            if existing is None:
                props = {**item["properties"], id_property: key}
                rec, new = repo.create(object_type, props, source()), True
            else:
                rec = repo.update(object_type, existing["id"], item["properties"], source())
                new = False
            wire = repo.to_wire(object_type, rec, properties=[*item["properties"], id_property])
            wire["new"] = new
            results.append(wire)
        return batch_body(results, [], started)

    @app.post("/crm/v3/objects/<object_type>/batch/archive")
    def objects_batch_archive(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "write")
        for item in inputs_of(body_json()):
            if isinstance(item, dict) and "id" in item:
                repo.archive(object_type, str(item["id"]), source())
        return Response(status=204)

    # -- search -------------------------------------------------------------------------------

    @app.post("/crm/v3/objects/<object_type>/search")
    def objects_search(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        object_scope(object_type, "read")
        search = SearchRequest(registry, object_type, body_json())
        page, total, next_after = search_index.run(search)
        body: dict[str, Any] = {
            "total": total,
            "results": [repo.to_wire(object_type, r, properties=search.properties) for r in page],
        }
        if next_after is not None:
            body["paging"] = {"next": {"after": str(next_after)}}
        return json_response(body)

    # -- properties ---------------------------------------------------------------------------

    @app.get("/crm/v3/properties/<object_type>")
    def properties_list(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "read")
        return json_response({"results": registry.all(object_type, archived=bool_arg("archived"))})

    @app.post("/crm/v3/properties/<object_type>")
    def properties_create(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        body = body_object()
        return json_response(registry.create(object_type, body), 201)

    @app.get("/crm/v3/properties/<object_type>/<name>")
    def properties_get(object_type: str, name: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "read")
        prop = registry.get(object_type, name, include_archived=bool_arg("archived"))
        if prop is None:
            raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Unable to find property {name}")
        return json_response(prop)

    @app.patch("/crm/v3/properties/<object_type>/<name>")
    def properties_update(object_type: str, name: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        body = body_object()
        return json_response(registry.update(object_type, name, body))

    @app.delete("/crm/v3/properties/<object_type>/<name>")
    def properties_archive(object_type: str, name: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        registry.archive(object_type, name)
        return Response(status=204)

    @app.post("/crm/v3/properties/<object_type>/batch/create")
    def properties_batch_create(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        started = now_iso()
        results, errors = [], []
        for item in inputs_of(body_json()):
            if not isinstance(item, dict):
                raise validation_error("Invalid input JSON: each input must be an object")
            try:
                results.append(registry.create(object_type, item))
            except HubSpotError as exc:
                if exc.status != 409:
                    raise
                errors.append(
                    batch_error(exc.category, exc.message, {"name": [str(item.get("name"))]})
                )
        return batch_body(results, errors, started, 201)

    @app.post("/crm/v3/properties/<object_type>/batch/read")
    def properties_batch_read(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "read")
        started = now_iso()
        body = body_json()
        results, missing = [], []
        for item in inputs_of(body):
            name = str(item.get("name", "")) if isinstance(item, dict) else ""
            prop = registry.get(object_type, name, include_archived=bool(body.get("archived")))
            if prop is None:
                missing.append(name)
            else:
                results.append(prop)
        errors = (
            [batch_error("OBJECT_NOT_FOUND", "Some properties were not found", {"names": missing})]
            if missing
            else []
        )
        return batch_body(results, errors, started)

    @app.post("/crm/v3/properties/<object_type>/batch/archive")
    def properties_batch_archive(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        for item in inputs_of(body_json()):
            if isinstance(item, dict) and registry.get(object_type, str(item.get("name"))):
                registry.archive(object_type, str(item["name"]))
        return Response(status=204)

    @app.get("/crm/v3/properties/<object_type>/groups")
    def groups_list(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "read")
        return json_response({"results": registry.groups(object_type)})

    @app.post("/crm/v3/properties/<object_type>/groups")
    def groups_create(object_type: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        body = body_object()
        return json_response(registry.create_group(object_type, body), 201)

    @app.get("/crm/v3/properties/<object_type>/groups/<name>")
    def groups_get(object_type: str, name: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "read")
        return json_response(registry.get_group(object_type, name))

    @app.patch("/crm/v3/properties/<object_type>/groups/<name>")
    def groups_update(object_type: str, name: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        body = body_object()
        return json_response(registry.update_group(object_type, name, body))

    @app.delete("/crm/v3/properties/<object_type>/groups/<name>")
    def groups_archive(object_type: str, name: str) -> Response:
        object_type = object_type_of(object_type)
        schema_scope(object_type, "write")
        registry.archive_group(object_type, name)
        return Response(status=204)

    # -- owners -------------------------------------------------------------------------------

    @app.get("/crm/v3/owners/")
    @app.get("/crm/v3/owners")
    def owners_list() -> Response:
        require_scope("crm.objects.owners.read")
        owners = sb.owners(archived=bool_arg("archived"))
        email = request.args.get("email")
        if email:
            owners = [o for o in owners if (o.get("email") or "").lower() == email.lower()]
        limit = max(1, min(int_arg("limit", 100), 500))
        after = int_arg("after", 0)
        page = owners[after : after + limit]
        body: dict[str, Any] = {"results": page}
        if after + limit < len(owners):
            next_after = str(after + limit)
            body["paging"] = {
                "next": {
                    "after": next_after,
                    "link": _paging_link("/crm/v3/owners/", next_after, {"limit": str(limit)}),
                }
            }
        return json_response(body)

    @app.get("/crm/v3/owners/<owner_id>")
    def owners_get(owner_id: str) -> Response:
        require_scope("crm.objects.owners.read")
        id_property = request.args.get("idProperty", "id")
        if id_property not in ("id", "userId"):
            raise validation_error("idProperty must be id or userId")
        for owner in sb.owners(archived=bool_arg("archived")):
            if str(owner.get(id_property)) == owner_id:
                return json_response(owner)
        raise HubSpotError(404, "OBJECT_NOT_FOUND", f"Owner {owner_id} not found")

    # -- associations v4 ----------------------------------------------------------------------

    def v4_types(type_ids: list[int]) -> list[dict[str, Any]]:
        return [
            {
                "category": "HUBSPOT_DEFINED",
                "typeId": t,
                "label": assoc_types.TYPES[t].label if t in assoc_types.TYPES else None,
            }
            for t in type_ids
        ]

    def require_record(object_type: str, object_id: str) -> dict[str, Any]:
        rec = repo.get(object_type, object_id)
        if rec is None:
            raise HubSpotError(
                404, "OBJECT_NOT_FOUND", f"No {object_type} with ID {object_id} exist"
            )
        return rec

    @app.get("/crm/v4/objects/<object_type>/<object_id>/associations/<to_type>")
    def v4_list(object_type: str, object_id: str, to_type: str) -> Response:
        object_type, to_type = object_type_of(object_type), object_type_of(to_type)
        object_scope(object_type, "read")
        rec = require_record(object_type, object_id)
        limit = max(1, min(int_arg("limit", 500), 500))
        after = int_arg("after", 0)
        linked = sorted(rec["associations"].get(to_type, {}).items(), key=lambda kv: int(kv[0]))
        page = linked[after : after + limit]
        body: dict[str, Any] = {
            "results": [
                {"toObjectId": int(to_id), "associationTypes": v4_types(type_ids)}
                for to_id, type_ids in page
            ]
        }
        if after + limit < len(linked):
            body["paging"] = {"next": {"after": str(after + limit)}}
        return json_response(body)

    def labels_pair(
        from_type: str, from_id: str, to_type: str, to_id: str, type_ids: list[int]
    ) -> dict:
        return {
            "fromObjectTypeId": OBJECT_TYPE_IDS[from_type],
            "fromObjectId": int(from_id),
            "toObjectTypeId": OBJECT_TYPE_IDS[to_type],
            "toObjectId": int(to_id),
            "labels": [assoc_types.TYPES[t].label for t in type_ids if assoc_types.TYPES[t].label],
        }

    def specs_to_ids(specs: Any) -> list[int]:
        if not isinstance(specs, list) or not specs:
            raise validation_error("Invalid input JSON: a list of association specs is required")
        ids = []
        for spec in specs:
            if not isinstance(spec, dict) or "associationTypeId" not in spec:
                raise validation_error(
                    "Each association spec needs associationCategory and associationTypeId"
                )
            try:
                ids.append(int(spec["associationTypeId"]))
            except (TypeError, ValueError):
                raise validation_error("associationTypeId must be a number") from None
        return ids

    @app.put("/crm/v4/objects/<object_type>/<object_id>/associations/<to_type>/<to_id>")
    def v4_create(object_type: str, object_id: str, to_type: str, to_id: str) -> Response:
        object_type, to_type = object_type_of(object_type), object_type_of(to_type)
        object_scope(object_type, "write")
        type_ids = specs_to_ids(body_json())
        all_ids = repo.associate(object_type, object_id, to_type, to_id, type_ids, source())
        return json_response(labels_pair(object_type, object_id, to_type, to_id, all_ids), 201)

    @app.put("/crm/v4/objects/<object_type>/<object_id>/associations/default/<to_type>/<to_id>")
    def v4_create_default(object_type: str, object_id: str, to_type: str, to_id: str) -> Response:
        object_type, to_type = object_type_of(object_type), object_type_of(to_type)
        object_scope(object_type, "write")
        started = now_iso()
        default = assoc_types.default_type(object_type, to_type)
        if default is None:
            raise validation_error(f"{object_type} cannot be associated with {to_type}")
        repo.associate(object_type, object_id, to_type, to_id, [default.type_id], source())
        return batch_body([_default_result(object_id, to_id, default.type_id)], [], started)

    @app.delete("/crm/v4/objects/<object_type>/<object_id>/associations/<to_type>/<to_id>")
    def v4_delete(object_type: str, object_id: str, to_type: str, to_id: str) -> Response:
        object_type, to_type = object_type_of(object_type), object_type_of(to_type)
        object_scope(object_type, "write")
        repo.disassociate(object_type, object_id, to_type, to_id, None, source())
        return Response(status=204)

    @app.post("/crm/v4/associations/<from_type>/<to_type>/batch/read")
    def v4_batch_read(from_type: str, to_type: str) -> Response:
        from_type, to_type = object_type_of(from_type), object_type_of(to_type)
        object_scope(from_type, "read")
        started = now_iso()
        results, errors = [], []
        for item in inputs_of(body_json(), 1000):
            from_id = str(item.get("id", "")) if isinstance(item, dict) else ""
            rec = repo.get(from_type, from_id)
            linked = rec["associations"].get(to_type, {}) if rec else {}
            if not linked:
                errors.append(_no_associations(from_type, from_id, to_type))
                continue
            results.append(
                {
                    "from": {"id": from_id},
                    "to": [
                        {"toObjectId": int(t), "associationTypes": v4_types(ids)}
                        for t, ids in sorted(linked.items(), key=lambda kv: int(kv[0]))
                    ],
                }
            )
        return batch_body(results, errors, started)

    @app.post("/crm/v4/associations/<from_type>/<to_type>/batch/create")
    def v4_batch_create(from_type: str, to_type: str) -> Response:
        from_type, to_type = object_type_of(from_type), object_type_of(to_type)
        object_scope(from_type, "write")
        started = now_iso()
        results = []
        for item in inputs_of(body_json(), 2000):
            from_id, to_id = _pair_ids(item)
            type_ids = specs_to_ids(item.get("types"))
            all_ids = repo.associate(from_type, from_id, to_type, to_id, type_ids, source())
            results.append(labels_pair(from_type, from_id, to_type, to_id, all_ids))
        return batch_body(results, [], started, 201)

    @app.post("/crm/v4/associations/<from_type>/<to_type>/batch/associate/default")
    def v4_batch_default(from_type: str, to_type: str) -> Response:
        from_type, to_type = object_type_of(from_type), object_type_of(to_type)
        object_scope(from_type, "write")
        started = now_iso()
        default = assoc_types.default_type(from_type, to_type)
        if default is None:
            raise validation_error(f"{from_type} cannot be associated with {to_type}")
        results = []
        for item in inputs_of(body_json(), 2000):
            from_id, to_id = _pair_ids(item)
            repo.associate(from_type, from_id, to_type, to_id, [default.type_id], source())
            results.append(_default_result(from_id, to_id, default.type_id))
        return batch_body(results, [], started)

    @app.post("/crm/v4/associations/<from_type>/<to_type>/batch/archive")
    def v4_batch_archive(from_type: str, to_type: str) -> Response:
        from_type, to_type = object_type_of(from_type), object_type_of(to_type)
        object_scope(from_type, "write")
        for item in inputs_of(body_json(), 2000):
            if not isinstance(item, dict) or not isinstance(item.get("from"), dict):
                raise validation_error("Invalid input JSON: each input needs from and to")
            targets = item.get("to") or []
            for target in targets if isinstance(targets, list) else [targets]:
                repo.disassociate(
                    from_type,
                    str(item["from"].get("id")),
                    to_type,
                    str(target.get("id")),
                    None,
                    source(),
                )
        return Response(status=204)

    # -- associations v3 ----------------------------------------------------------------------

    @app.post("/crm/v3/associations/<from_type>/<to_type>/batch/create")
    def v3_batch_create(from_type: str, to_type: str) -> Response:
        from_type, to_type = object_type_of(from_type), object_type_of(to_type)
        object_scope(from_type, "write")
        started = now_iso()
        results = []
        for item in inputs_of(body_json(), 2000):
            from_id, to_id = _pair_ids(item)
            assoc = assoc_types.by_v3_name(from_type, to_type, str(item.get("type", "")))
            if assoc is None:
                raise validation_error(
                    f"Unknown association type {item.get('type')!r} for {from_type} to {to_type}"
                )
            repo.associate(from_type, from_id, to_type, to_id, [assoc.type_id], source())
            results.append({"from": {"id": from_id}, "to": {"id": to_id}, "type": assoc.v3_name})
        return batch_body(results, [], started, 201)

    @app.post("/crm/v3/associations/<from_type>/<to_type>/batch/read")
    def v3_batch_read(from_type: str, to_type: str) -> Response:
        from_type, to_type = object_type_of(from_type), object_type_of(to_type)
        object_scope(from_type, "read")
        started = now_iso()
        results, errors = [], []
        for item in inputs_of(body_json(), 1000):
            from_id = str(item.get("id", "")) if isinstance(item, dict) else ""
            rec = repo.get(from_type, from_id)
            linked = rec["associations"].get(to_type, {}) if rec else {}
            if not linked:
                errors.append(_no_associations(from_type, from_id, to_type))
                continue
            results.append(
                {
                    "from": {"id": from_id},
                    "to": [
                        {"id": t, "type": assoc_types.TYPES[i].v3_name}
                        for t, ids in sorted(linked.items(), key=lambda kv: int(kv[0]))
                        for i in ids
                    ],
                }
            )
        return batch_body(results, errors, started)

    @app.post("/crm/v3/associations/<from_type>/<to_type>/batch/archive")
    def v3_batch_archive(from_type: str, to_type: str) -> Response:
        from_type, to_type = object_type_of(from_type), object_type_of(to_type)
        object_scope(from_type, "write")
        for item in inputs_of(body_json(), 2000):
            from_id, to_id = _pair_ids(item)
            assoc = assoc_types.by_v3_name(from_type, to_type, str(item.get("type", "")))
            repo.disassociate(
                from_type, from_id, to_type, to_id, [assoc.type_id] if assoc else None, source()
            )
        return Response(status=204)


def _pair_ids(item: Any) -> tuple[str, str]:
    try:
        return str(item["from"]["id"]), str(item["to"]["id"])
    except (KeyError, TypeError):
        raise validation_error("Invalid input JSON: each input needs from.id and to.id") from None


def _default_result(from_id: str, to_id: str, type_id: int) -> dict[str, Any]:
    return {
        "from": {"id": from_id},
        "to": {"id": to_id},
        "associationSpec": {"associationCategory": "HUBSPOT_DEFINED", "associationTypeId": type_id},
    }


def _no_associations(from_type: str, from_id: str, to_type: str) -> dict[str, Any]:
    error = batch_error(
        "OBJECT_NOT_FOUND",
        f"No {to_type[:-1] if to_type != 'companies' else 'company'} is associated with"
        f" {from_type[:-1] if from_type != 'companies' else 'company'} {from_id}.",
        {"fromObjectId": [from_id], "toObjectType": [to_type]},
    )
    error["subCategory"] = "crm.associations.NO_ASSOCIATIONS_FOUND"
    return error


def _check_duplicates_in_batch(sb: HubSpotSandbox, object_type: str, inputs: list[Any]) -> None:
    """A batch create that repeats a unique value, or reuses an existing one, fails as a whole."""
    for prop in sb.registry.unique_properties(object_type) - {"hs_object_id"}:
        seen: dict[str, int] = {}
        for item in inputs:
            value = str(item["properties"].get(prop) or "").strip().lower()
            if not value:
                continue
            if value in seen:
                raise validation_error(f"Duplicate {prop} in batch input: {value}")
            seen[value] = 1
            existing = sb.repo.find_unique(object_type, prop, value)
            if existing is not None:
                label = "Contact" if object_type == "contacts" else object_type[:-1].capitalize()
                raise HubSpotError(
                    409, "CONFLICT", f"{label} already exists. Existing ID: {existing['id']}"
                )

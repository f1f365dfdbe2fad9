"""Data for the in-CRM widgets, and the feedback reps give through them.

``GET /cards/hubspot`` (HubSpot app card, via ``hubspot.fetch``) and ``GET /cards/salesforce/<id>``
(Lightning component, via Apex and the Named Credential) answer one JSON object per record, keyed
by the manifests' result names: the score, grade and reasons with their evidence, the suggested
owner, the next step, the copilot's battle card, forecast note, risk flags, segment and follow-up
draft (their structured detail, with which were generated offline), the model version and
staleness, and the calling user's own feedback. ``POST /cards/<crm>/followup`` asks the copilot
for a follow-up draft on demand; ``POST /feedback`` stores a thumbs up or down, a "not a fit" or
an override.

Every route first authenticates the call (:mod:`handlers.widget_auth`); the tenant comes from the
signature, and a record of any other tenant is simply not found (404), so nothing leaks across
tenants. :func:`build_widget_projects` renders the widget sources with the deployment's public URL.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from flask import Blueprint, Response, jsonify, request
from marshmallow import RAISE, Schema, ValidationError, fields, validate, validates_schema

from copilot.llm import GenerationFailed
from copilot.next_steps import FollowupError, draft_followup
from copilot.results import RESULTS as COPILOT_RESULTS
from copilot.results import load_results
from core.services import Services
from handlers import context
from handlers.errors import ApiError
from handlers.widget_auth import WidgetCaller, authenticate
from scoring.feedback import VOTES, Feedback, feedback_state, record_feedback
from scoring.predict import RESULTS as SCORE_RESULTS
from scoring.predict import latest_results

bp = Blueprint("widgets", __name__)

PUBLIC_URL_PLACEHOLDER = "__FIELDWISE_PUBLIC_URL__"
"""Stands for ``Config.public_url`` in the widget sources under ``manifests/``."""
MANIFESTS = Path(__file__).resolve().parent.parent / "manifests"
_PROJECTS = {"hubspot": "app-project", "salesforce": "force-app"}
_TEXT_SUFFIXES = {".json", ".jsx", ".js", ".html", ".xml", ".cls"}

_HUBSPOT_ENTITIES = {
    "0-1": ("lead", "contact"), "contacts": ("lead", "contact"), "contact": ("lead", "contact"),
    "0-2": ("account",), "companies": ("account",), "company": ("account",),
    "0-3": ("opportunity",), "deals": ("opportunity",), "deal": ("opportunity",),
}  # fmt: skip
_SALESFORCE_ENTITIES = {
    "lead": ("lead",), "contact": ("contact",), "opportunity": ("opportunity",),
    "account": ("account",),
}  # fmt: skip
_SALESFORCE_PREFIXES = {"00Q": "lead", "003": "contact", "006": "opportunity", "001": "account"}
_DETAIL_RESULTS = ("battle_card", "forecast_note", "risk_flags", "followup_draft")
"""Copilot results the widget shows in their structured form; the others are one line of text."""
FEEDBACK_RESULTS = tuple(dict.fromkeys([*SCORE_RESULTS, *COPILOT_RESULTS]))


# --------------------------------------------------------------------------------------------------
# Finding the record in the caller's tenant


def _entities_for(crm: str, object_type: str | None, record_id: str) -> tuple[str, ...]:
    if crm == "hubspot":
        found = _HUBSPOT_ENTITIES.get((object_type or "").strip().lower())
        if found is None:
            raise ApiError(
                400, "unknown_object_type",
                f"objectTypeId {object_type!r} is not a contact (0-1), company (0-2) or deal (0-3)",
            )  # fmt: skip
        return found
    if object_type:
        found = _SALESFORCE_ENTITIES.get(object_type.strip().lower())
        if found is None:
            raise ApiError(
                400, "unknown_object_type",
                f"object_type {object_type!r} is not Lead, Contact, Opportunity or Account",
            )  # fmt: skip
        return found
    by_prefix = _SALESFORCE_PREFIXES.get(record_id[:3])
    return (by_prefix,) if by_prefix else ("lead", "contact", "opportunity", "account")


def find_record(
    services: Services, caller: WidgetCaller, object_type: str | None, record_id: str
) -> str:
    """The canonical entity of a record of the caller's tenant.

    Raises:
        ApiError: 404 when the tenant has no such record (another tenant's records included).
    """
    if not record_id or len(record_id) > 64 or not record_id.isalnum():
        raise ApiError(400, "bad_record_id", f"{record_id!r} is not a CRM record id")
    tenant_id = caller.tenant.tenant_id
    for entity in _entities_for(caller.crm, object_type, record_id):
        if services.store.get(tenant_id, entity, record_id) is not None:
            return entity
    raise ApiError(404, "record_not_found", f"no record {record_id} in this {caller.crm} account")


# --------------------------------------------------------------------------------------------------
# The card


def card_data(
    services: Services, caller: WidgetCaller, entity: str, record_id: str
) -> dict[str, Any]:
    """The widget's JSON for one record: score results, copilot results and the user's feedback."""
    store, tenant_id = services.store, caller.tenant.tenant_id
    card: dict[str, Any] = {
        "crm": caller.crm,
        "entity": entity,
        "record_id": record_id,
        "scored": False,
        "score": None,
        "grade": None,
        "reasons": [],
        "suggested_owner": None,
        "match_reason": None,
        "next_step": None,
        "segment": None,
        "model_version": None,
        "stale": False,
        "score_changed_at": None,
        "generated_offline": {},
        "generated_at": {},
    }
    if entity in ("lead", "opportunity"):
        scored = latest_results(store, tenant_id, entity, [record_id]).get(record_id)
        if scored is not None:
            card.update(
                scored=True,
                score=scored.score,
                grade=scored.grade,
                reasons=scored.reasons_detail
                or [{"text": line} for line in scored.reasons.splitlines() if line.strip()],
                suggested_owner=scored.suggested_owner,
                match_reason=scored.match_reason,
                next_step=scored.next_step,
                segment=scored.segment,
                model_version=scored.model_version,
                stale=scored.stale,
                score_changed_at=_iso(scored.score_changed_at),
            )
    for name in _DETAIL_RESULTS:
        card[name] = None
    copilot = load_results(store, tenant_id, entity, [record_id]).get(record_id, {})
    for name, result in copilot.items():
        if name in _DETAIL_RESULTS:
            card[name] = result.detail or ({"text": result.value} if result.value else None)
        elif result.value:
            card[name] = result.value
        card["generated_offline"][name] = result.offline
        card["generated_at"][name] = _iso(result.generated_at)
    card["feedback"] = feedback_state(store, tenant_id, entity, record_id, caller.user_id)
    return card


def _iso(moment: Any) -> str | None:
    return None if moment is None else moment.isoformat()


@bp.get("/cards/hubspot")
def hubspot_card() -> Response:
    """The card of the HubSpot record the app card is shown on."""
    services = context.services()
    caller = authenticate(services, "hubspot")
    object_type = request.args.get("objectTypeId") or request.args.get("objectType")
    record_id = request.args.get("objectId", "")
    entity = find_record(services, caller, object_type, record_id)
    return jsonify(card_data(services, caller, entity, record_id))


@bp.get("/cards/salesforce/<record_id>")
def salesforce_card(record_id: str) -> Response:
    """The card of the Salesforce record the Lightning component is shown on."""
    services = context.services()
    caller = authenticate(services, "salesforce")
    entity = find_record(services, caller, request.args.get("objectType"), record_id)
    return jsonify(card_data(services, caller, entity, record_id))


# --------------------------------------------------------------------------------------------------
# Follow-up drafts on demand


class FollowupSchema(Schema):
    """Which record a follow-up draft is asked for."""

    class Meta:
        """A misspelt field is an error, not silently ignored."""

        unknown = RAISE

    object_type = fields.String(load_default=None, validate=validate.Length(max=40))
    record_id = fields.String(required=True, validate=validate.Length(min=1, max=64))


@bp.post("/cards/<crm>/followup")
def followup(crm: str) -> tuple[Response, int]:
    """Ask the copilot for a follow-up draft for one record and return it.

    A record that gets no draft (an account, a person who opted out of processing) is answered
    422 ``followup_refused`` with the reason; a model that kept failing, 502 ``generation_failed``.
    """
    if crm not in _PROJECTS:
        raise ApiError(404, "unknown_crm", f"no widget for {crm!r}")
    services = context.services()
    caller = authenticate(services, crm)
    body = _load(FollowupSchema(), "invalid_followup_request")
    entity = find_record(services, caller, body["object_type"], body["record_id"])
    # A refusal (no drafts for accounts, or the person opted out of processing) is the answer to
    # this request, not a server fault; so is a model that kept failing, which is worth a retry.
    try:
        drafted = draft_followup(services, caller.tenant.tenant_id, entity, body["record_id"])
    except FollowupError as exc:
        raise ApiError(422, "followup_refused", str(exc)) from None
    except GenerationFailed as exc:
        raise ApiError(
            502, "generation_failed", f"no draft could be written, try again later: {exc}"
        ) from None
    return jsonify({"record_id": body["record_id"], "followup_draft": _plain(drafted)}), 200


def _plain(drafted: Any) -> Any:
    if drafted is None or isinstance(drafted, (str, dict, list)):
        return drafted
    if hasattr(drafted, "detail"):
        return {
            "value": getattr(drafted, "value", None),
            "detail": drafted.detail,
            "offline": getattr(drafted, "offline", None),
            "generated_at": _iso(getattr(drafted, "generated_at", None)),
        }
    return str(drafted)


# --------------------------------------------------------------------------------------------------
# Feedback


class FeedbackSchema(Schema):
    """A rep's feedback on one result of one record, as the widgets send it."""

    class Meta:
        """A misspelt field is an error, not silently ignored."""

        unknown = RAISE

    crm = fields.String(load_default=None, validate=validate.OneOf(tuple(_PROJECTS)))
    object_type = fields.String(load_default=None, validate=validate.Length(max=40))
    record_id = fields.String(required=True, validate=validate.Length(min=1, max=64))
    result = fields.String(required=True, validate=validate.OneOf(FEEDBACK_RESULTS))
    vote = fields.String(required=True, validate=validate.OneOf(VOTES))
    reason = fields.String(load_default=None, validate=validate.Length(min=1, max=1000))
    override_owner = fields.String(load_default=None, validate=validate.Length(min=1, max=64))
    override_score = fields.Integer(
        load_default=None, strict=True, validate=validate.Range(min=0, max=100)
    )
    user_id = fields.String(load_default=None, validate=validate.Length(max=64))

    @validates_schema
    def _consistent(self, data: dict[str, Any], **_: Any) -> None:
        vote = data["vote"]
        owner, score, reason = data["override_owner"], data["override_score"], data["reason"]
        if vote == "not_a_fit" and not reason:
            raise ValidationError("a reason is required with not_a_fit", "reason")
        if vote == "override":
            if owner is None and score is None:
                raise ValidationError(
                    "an override needs override_owner or override_score", "override_owner"
                )
            if owner is not None and data["result"] != "suggested_owner":
                raise ValidationError("override_owner goes with result suggested_owner", "result")
            if score is not None and data["result"] != "score":
                raise ValidationError("override_score goes with result score", "result")
            if score is not None and not reason:
                raise ValidationError("a reason is required with override_score", "reason")
        elif owner is not None or score is not None:
            field_name = "override_owner" if owner is not None else "override_score"
            raise ValidationError("overrides need vote override", field_name)


def _load(schema: Schema, code: str) -> dict[str, Any]:
    try:
        payload = json.loads(request.get_data(cache=True) or b"null")
    except ValueError as exc:
        raise ApiError(400, "malformed_json", f"the body is not JSON: {exc}") from None
    if not isinstance(payload, dict):
        raise ApiError(400, "malformed_body", "the body must be a JSON object")
    try:
        loaded: dict[str, Any] = schema.load(payload)
    except ValidationError as exc:
        named = ", ".join(sorted(str(k) for k in exc.messages_dict))
        raise ApiError(400, code, f"invalid field(s): {named}", fields=exc.messages_dict) from None
    return loaded


@bp.post("/feedback")
def feedback() -> tuple[Response, int]:
    """Store a rep's thumbs up or down, "not a fit" or override from a widget."""
    services = context.services()
    caller = authenticate(services)
    body = _load(FeedbackSchema(), "invalid_feedback")
    if body["crm"] is not None and body["crm"] != caller.crm:
        raise ApiError(
            400, "invalid_feedback", f"crm is {body['crm']!r} but the call is signed by {caller.crm}",
            fields={"crm": ["does not match the signed caller"]},
        )  # fmt: skip
    user_id = caller.user_id or body["user_id"]
    if caller.user_id and body["user_id"] and body["user_id"] != caller.user_id:
        raise ApiError(
            400, "invalid_feedback", "user_id differs from the user the CRM signed for",
            fields={"user_id": ["does not match the signed user"]},
        )  # fmt: skip
    entity = find_record(services, caller, body["object_type"], body["record_id"])
    entry = Feedback(
        entity=entity,
        crm_id=body["record_id"],
        result=body["result"],
        vote=body["vote"],
        user_id=user_id,
        reason=body["reason"],
        override_owner=body["override_owner"],
        override_score=body["override_score"],
    )
    tenant_id = caller.tenant.tenant_id
    record_feedback(services.store, tenant_id, [entry])
    state = feedback_state(services.store, tenant_id, entity, body["record_id"], user_id)
    return jsonify({"stored": 1, "feedback": state}), 201


# --------------------------------------------------------------------------------------------------
# Widget sources with the deployment's URL


def build_widget_projects(public_url: str, out: Path) -> dict[str, Path]:
    """Write the HubSpot project and the Salesforce source with ``public_url`` filled in.

    The sources under ``manifests/`` name the Fieldwise host as a placeholder; the copies under
    ``out`` name ``public_url`` in the card's fetch URL, ``permittedUrls.fetch``, the OAuth
    redirect URL and the Named Credential's endpoint.

    Args:
        public_url: ``Config.public_url`` (no trailing slash).
        out: the folder to write ``hubspot/app-project`` and ``salesforce/force-app`` into.

    Returns:
        CRM -> the written project folder.

    Raises:
        ValueError: ``public_url`` is not an http(s) URL.
    """
    url = public_url.rstrip("/")
    if not url.startswith(("https://", "http://")) or any(c in url for c in "\"'<>\\ "):
        raise ValueError(f"{public_url!r} is not an http(s) URL")
    written = {}
    for crm, folder in _PROJECTS.items():
        source = MANIFESTS / crm / folder
        target = out / crm / folder
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("node_modules", ".*"))
        for path in target.rglob("*"):
            if path.is_file() and path.suffix in _TEXT_SUFFIXES:
                text = path.read_text(encoding="utf-8")
                if PUBLIC_URL_PLACEHOLDER in text:
                    path.write_text(text.replace(PUBLIC_URL_PLACEHOLDER, url), encoding="utf-8")
        written[crm] = target
    return written

"""Marshmallow schemas that validate a manifest after its ``$ref`` blocks are resolved.

One schema per CRM. Field-level rules (types, API-name syntax, type parameters) live on the nested
schemas; rules that need the whole document (a subscription must not listen to a field Fieldwise
writes, every result maps to one field per object, scopes cover what each feature touches) live in
:meth:`ManifestSchema.check_document` and are reported under the path of the offending entry.
"""

from __future__ import annotations

import re
from typing import Any, ClassVar

from marshmallow import (
    RAISE,
    Schema,
    ValidationError,
    fields,
    validate,
    validates_schema,
)

from core.schemas import SCHEMAS

FEATURES = ("scoring", "routing", "battle_cards", "forecast_notes", "segments", "sync")
"""Every feature a manifest must describe; ``sync`` owns no fields but needs read scopes."""

RESULTS = (
    "score",
    "grade",
    "reasons",
    "score_changed_at",
    "suggested_owner",
    "match_reason",
    "battle_card",
    "forecast_note",
    "risk_flags",
    "segment",
    "next_step",
    "followup_draft",
    "model_version",
)
"""Every result write-back can write; each maps to at most one owned field per CRM object."""

ENTITIES = tuple(SCHEMAS)
"""Canonical entities of :mod:`core.schemas` a CRM object can map to."""

SALESFORCE_TYPES = ("Number", "Picklist", "LongTextArea", "Html", "Checkbox", "DateTime", "Text")
"""Metadata API ``FieldType`` values Fieldwise creates."""

HUBSPOT_TYPE_COMBOS: dict[str, tuple[str, ...]] = {
    "number": ("number",),
    "enumeration": ("select", "radio", "checkbox"),
    "string": ("text", "textarea", "html"),
    "datetime": ("date",),
    "date": ("date",),
    "bool": ("booleancheckbox",),
}
"""The property ``type`` -> allowed ``fieldType`` pairs (Properties API) Fieldwise may declare."""

SF_API_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]*__c$")
SF_NAME = re.compile(r"^[A-Za-z][A-Za-z0-9_]{0,39}$")
HUBSPOT_NAME = re.compile(r"^[a-z][a-z0-9_]*$")
SCOPE = re.compile(r"^[A-Za-z0-9_.\-]+$")
ENDPOINT = re.compile(r"^/[a-z0-9_/\-]+$")

SALESFORCE_ECHO_FIELDS = frozenset(
    {"SystemModstamp", "LastModifiedDate", "LastModifiedById", "LastActivityDate"}
)
"""Salesforce fields that change on Fieldwise's own writes; listening to them would echo forever."""

HUBSPOT_ECHO_PROPERTIES = frozenset(
    {"lastmodifieddate", "hs_lastmodifieddate", "hs_updated_by_user_id", "notes_last_updated"}
)
"""HubSpot properties that change on Fieldwise's own writes; listening to them would echo forever."""


def salesforce_api_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid custom-field API name, or None when it is."""
    if not SF_API_NAME.match(name):
        return "must be letters, digits and underscores, start with a letter and end with __c"
    base = name[: -len("__c")]
    if len(base) > 40:
        return f"has {len(base)} characters before __c; Salesforce allows 40"
    if "__" in base:
        return "must not contain a double underscore before the __c suffix"
    if base.endswith("_"):
        return "must not end with an underscore before the __c suffix"
    return None


def hubspot_name_problem(name: str) -> str | None:
    """Why ``name`` is not a valid custom property name, or None when it is."""
    if not HUBSPOT_NAME.match(name):
        return "must be lowercase letters, digits and underscores, starting with a letter"
    if len(name) > 100:
        return f"has {len(name)} characters; HubSpot allows 100"
    if name.startswith("hs_"):
        return "must not start with hs_ (reserved for HubSpot's own properties)"
    return None


class StrictSchema(Schema):
    """Unknown keys are errors: a misspelt key in a manifest must not be silently ignored."""

    class Meta:
        """Reject unknown keys; keep document order."""

        unknown = RAISE
        ordered = True


def _text(max_len: int) -> fields.String:
    return fields.String(required=True, validate=validate.Length(min=1, max=max_len))


class PicklistValueSchema(StrictSchema):
    """One value of a picklist (Salesforce) or option of an enumeration (HubSpot)."""

    value = _text(255)
    label = _text(255)


class FieldBaseSchema(StrictSchema):
    """What every owned field declares, whatever the CRM."""

    api_name = fields.String(required=True)
    label = _text(40)
    help_text = _text(255)
    result = fields.String(required=True, validate=validate.OneOf(RESULTS))
    feature = fields.String(
        required=True, validate=validate.OneOf([f for f in FEATURES if f != "sync"])
    )
    type = fields.String(required=True)


class SalesforceFieldSchema(FieldBaseSchema):
    """A custom field, with the Metadata API ``CustomField`` parameters its type requires."""

    precision = fields.Integer(validate=validate.Range(min=1, max=18))
    scale = fields.Integer(validate=validate.Range(min=0, max=17))
    length = fields.Integer(validate=validate.Range(min=1, max=131072))
    visible_lines = fields.Integer(validate=validate.Range(min=1, max=50))
    values = fields.List(fields.Nested(PicklistValueSchema))
    restricted = fields.Boolean()
    default = fields.Boolean()

    REQUIRED: ClassVar[dict[str, tuple[str, ...]]] = {
        "Number": ("precision", "scale"),
        "Picklist": ("values",),
        "LongTextArea": ("length", "visible_lines"),
        "Html": ("length", "visible_lines"),
        "Checkbox": ("default",),
        "DateTime": (),
        "Text": ("length",),
    }
    PARAMS = ("precision", "scale", "length", "visible_lines", "values", "restricted", "default")

    @validates_schema
    def _type_parameters(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        problem = salesforce_api_name_problem(data["api_name"])
        if problem:
            errors["api_name"] = [f"{data['api_name']!r} {problem}"]
        ftype = data["type"]
        if ftype not in self.REQUIRED:
            errors["type"] = [f"unknown type {ftype!r}; expected one of {', '.join(self.REQUIRED)}"]
            raise ValidationError(errors)
        required = self.REQUIRED[ftype]
        allowed = set(required) | ({"restricted"} if ftype == "Picklist" else set())
        for name in required:
            if name not in data:
                errors.setdefault(name, []).append(f"required for type {ftype}")
        for name in self.PARAMS:
            if name in data and name not in allowed:
                errors.setdefault(name, []).append(f"not a parameter of type {ftype}")
        if ftype == "Number" and data.get("scale", 0) > data.get("precision", 18):
            errors.setdefault("scale", []).append("must not exceed precision")
        if ftype == "Text" and data.get("length", 0) > 255:
            errors.setdefault("length", []).append("Text fields hold at most 255 characters")
        if ftype in ("LongTextArea", "Html") and data.get("length", 256) < 256:
            errors.setdefault("length", []).append(f"{ftype} fields need at least 256 characters")
        if "values" in data:
            _check_values(data["values"], errors)
        if errors:
            raise ValidationError(errors)


class HubSpotFieldSchema(FieldBaseSchema):
    """A custom property, with the ``type``/``fieldType`` pair and options HubSpot requires."""

    field_type = fields.String(required=True)
    options = fields.List(fields.Nested(PicklistValueSchema))

    @validates_schema
    def _type_combination(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, list[str]] = {}
        problem = hubspot_name_problem(data["api_name"])
        if problem:
            errors["api_name"] = [f"{data['api_name']!r} {problem}"]
        ptype, field_type = data["type"], data["field_type"]
        if ptype not in HUBSPOT_TYPE_COMBOS:
            errors["type"] = [
                f"unknown type {ptype!r}; expected one of {', '.join(HUBSPOT_TYPE_COMBOS)}"
            ]
        elif field_type not in HUBSPOT_TYPE_COMBOS[ptype]:
            allowed = ", ".join(HUBSPOT_TYPE_COMBOS[ptype])
            errors["field_type"] = [
                f"{ptype}/{field_type} is not a valid combination; {ptype} takes {allowed}"
            ]
        elif ptype == "enumeration" and not data.get("options"):
            errors["options"] = ["required for enumeration properties"]
        elif ptype != "enumeration" and "options" in data:
            errors["options"] = [f"not a parameter of type {ptype}"]
        if "options" in data:
            _check_values(data["options"], errors, key="options")
        if errors:
            raise ValidationError(errors)


def _check_values(
    values: list[dict[str, str]], errors: dict[str, Any], key: str = "values"
) -> None:
    if not values:
        errors.setdefault(key, []).append("must list at least one value")
        return
    seen = [v["value"] for v in values]
    duplicates = sorted({v for v in seen if seen.count(v) > 1})
    if duplicates:
        errors.setdefault(key, []).append(f"duplicate values: {', '.join(duplicates)}")


class FeatureSchema(StrictSchema):
    """A feature and the OAuth scopes it needs beyond the manifest's ``base_scopes``."""

    description = _text(500)
    scopes = fields.List(fields.String(validate=validate.Regexp(SCOPE)), required=True)


class ObjectBaseSchema(StrictSchema):
    """A CRM object: the canonical entity it feeds, what Fieldwise reads, and what it owns."""

    entity = fields.String(required=True, validate=validate.OneOf(ENTITIES))
    read_scopes = fields.List(fields.String(validate=validate.Regexp(SCOPE)), required=True)
    write_scopes = fields.List(fields.String(validate=validate.Regexp(SCOPE)), load_default=list)
    inputs = fields.Dict(
        keys=fields.String(validate=validate.Length(min=1)),
        values=fields.String(allow_none=True),
        required=True,
        validate=validate.Length(min=1),
    )
    """CRM field -> canonical attribute it feeds (``custom`` for the record's custom map, null
    when it is read only for bookkeeping such as echo detection)."""
    assign_owner_field = fields.String(load_default=None)
    """The CRM's owner field, which routing writes when a tenant turns auto-assign on. It is one of
    the inputs (Fieldwise reads it to see a manager's manual changes) and never a field Fieldwise
    creates."""

    @validates_schema
    def _owner_field_is_an_input(self, data: dict[str, Any], **kwargs: Any) -> None:
        owner = data.get("assign_owner_field")
        if owner is not None and owner not in data["inputs"]:
            raise ValidationError(
                f"{owner!r} must also be listed in inputs: routing must see manual owner changes",
                "assign_owner_field",
            )

    @validates_schema
    def _canonical_attributes(self, data: dict[str, Any], **kwargs: Any) -> None:
        known = set(SCHEMAS[data["entity"]]().fields)
        bad = {
            name: [f"{target!r} is not an attribute of canonical entity {data['entity']!r}"]
            for name, target in data["inputs"].items()
            if target is not None and target not in known
        }
        if bad:
            raise ValidationError({"inputs": bad})


class SalesforceObjectSchema(ObjectBaseSchema):
    """A Salesforce sObject."""

    fields_ = fields.List(
        fields.Nested(SalesforceFieldSchema), data_key="fields", load_default=list
    )


class HubSpotObjectSchema(ObjectBaseSchema):
    """A HubSpot object type."""

    type_id = fields.String(validate=validate.Regexp(r"^\d+-\d+$"))
    """objectTypeId (``0-1``); required for objects with webhook subscriptions."""
    singular = fields.String(validate=validate.Regexp(r"^[a-z_]+$"))
    """The singular name webhook configs use (``contact``); required with subscriptions."""
    fields_ = fields.List(fields.Nested(HubSpotFieldSchema), data_key="fields", load_default=list)


class HubSpotSubscriptionSchema(StrictSchema):
    """Webhook subscriptions for one object: lifecycle events plus per-property changes."""

    object = fields.String(required=True)
    events = fields.List(
        fields.String(
            validate=validate.OneOf(
                ("creation", "deletion", "merge", "restore", "associationChange")
            )
        ),
        load_default=list,
    )
    property_changes = fields.List(fields.String(), load_default=list)


class SalesforceSubscriptionSchema(StrictSchema):
    """An Outbound Message (workflow/Flow) or a change-event relay listening to input fields."""

    kind = fields.String(
        required=True, validate=validate.OneOf(("outbound_message", "change_event"))
    )
    object = fields.String(required=True)
    name = fields.String(required=True)
    endpoint = fields.String(required=True, validate=validate.Regexp(ENDPOINT))
    fields_ = fields.List(
        fields.String(), data_key="fields", required=True, validate=validate.Length(min=1)
    )
    exclude_integration_user = fields.Boolean(required=True)

    @validates_schema
    def _name_shape(self, data: dict[str, Any], **kwargs: Any) -> None:
        if data["kind"] == "outbound_message" and not SF_NAME.match(data["name"]):
            raise ValidationError(
                "must be a Salesforce API name (letters, digits, _; 40 at most)", "name"
            )
        if data["kind"] == "change_event" and data["name"] != f"/data/{data['object']}ChangeEvent":
            raise ValidationError(
                f"the change-event channel of {data['object']} is /data/{data['object']}ChangeEvent",
                "name",
            )
        if not data["exclude_integration_user"]:
            raise ValidationError(
                "must be true: changes made by Fieldwise's integration user would echo back",
                "exclude_integration_user",
            )


class WidgetSchema(StrictSchema):
    """An in-CRM widget shipped as source files beside the manifest."""

    name = fields.String(required=True, validate=validate.Regexp(r"^[A-Za-z][A-Za-z0-9_\-]*$"))
    kind = fields.String(
        required=True, validate=validate.OneOf(("hubspot_app_card", "salesforce_lwc"))
    )
    description = _text(2000)
    objects = fields.List(fields.String(), required=True, validate=validate.Length(min=1))
    shows = fields.List(
        fields.String(validate=validate.OneOf(RESULTS)),
        required=True,
        validate=validate.Length(min=1),
    )
    data_endpoint = fields.String(required=True, validate=validate.Regexp(ENDPOINT))
    feedback_endpoint = fields.String(required=True, validate=validate.Regexp(ENDPOINT))
    data_path = _text(1000)
    """How the widget reaches Fieldwise, and why that way."""
    files = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[a-z_]+$")),
        values=fields.String(validate=validate.Length(min=1)),
        required=True,
        validate=validate.Length(min=1),
    )
    """Role -> path relative to the manifest's folder."""
    named_credential = fields.String(validate=validate.Regexp(SF_NAME))
    apex_class = fields.String(validate=validate.Regexp(SF_NAME))

    REQUIRED_FILES: ClassVar[dict[str, tuple[str, ...]]] = {
        "hubspot_app_card": ("project", "app_config", "card_config", "card_component"),
        "salesforce_lwc": ("component_js", "component_html", "component_meta", "apex_class"),
    }

    @validates_schema
    def _files_for_kind(self, data: dict[str, Any], **kwargs: Any) -> None:
        errors: dict[str, Any] = {}
        missing = [r for r in self.REQUIRED_FILES[data["kind"]] if r not in data["files"]]
        if missing:
            errors["files"] = [f"a {data['kind']} needs files: {', '.join(missing)}"]
        for role, rel in data["files"].items():
            if rel.startswith("/") or ".." in rel.split("/"):
                errors.setdefault("files", {})[role] = ["must be a path inside the manifest folder"]
        if data["kind"] == "salesforce_lwc":
            for key in ("named_credential", "apex_class"):
                if key not in data:
                    errors[key] = ["required for a salesforce_lwc"]
        if errors:
            raise ValidationError(errors)


class PermissionSetSchema(StrictSchema):
    """A Salesforce permission set granting access to every owned field."""

    name = fields.String(required=True, validate=validate.Regexp(SF_NAME))
    label = _text(80)
    description = _text(255)
    field_access = fields.String(required=True, validate=validate.OneOf(("read", "edit")))
    assign_to = fields.String(required=True, validate=validate.OneOf(("reps", "integration_user")))
    apex_classes = fields.List(fields.String(validate=validate.Regexp(SF_NAME)), load_default=list)
    external_credential_principals = fields.List(fields.String(), load_default=list)


class PropertyGroupSchema(StrictSchema):
    """The HubSpot property group every owned property is created in."""

    name = fields.String(required=True, validate=validate.Regexp(r"^[a-z][a-z0-9_]*$"))
    label = _text(100)
    display_order = fields.Integer(load_default=-1)


class ManifestSchema(StrictSchema):
    """What both CRMs' manifests share; subclasses add the CRM-specific sections."""

    crm = fields.String(required=True)
    version = fields.String(
        required=True, validate=validate.Regexp(r"^\d{4}\.\d{1,2}\.\d+$", error="must be YYYY.M.N")
    )
    base_scopes = fields.List(
        fields.String(validate=validate.Regexp(SCOPE)),
        required=True,
        validate=validate.Length(min=1),
    )
    features = fields.Dict(
        keys=fields.String(validate=validate.OneOf(FEATURES)),
        values=fields.Nested(FeatureSchema),
        required=True,
    )
    widgets = fields.List(fields.Nested(WidgetSchema), load_default=list)
    consent_opt_out_fields = fields.List(
        fields.String(validate=validate.Length(min=1)),
        required=True,
        validate=validate.Length(min=1),
    )

    CRM: ClassVar[str] = ""
    ECHO_FIELDS: ClassVar[frozenset[str]] = frozenset()

    @validates_schema
    def check_document(self, data: dict[str, Any], **kwargs: Any) -> None:
        """Cross-entry rules; every problem is reported under the path of the entry at fault."""
        errors: dict[str, Any] = {}
        if data["crm"] != self.CRM:
            _add(errors, ("crm",), f"must be {self.CRM!r} in this manifest")
        missing = [f for f in FEATURES if f not in data["features"]]
        if missing:
            _add(errors, ("features",), f"missing features: {', '.join(missing)}")
        objects: dict[str, dict[str, Any]] = data["objects"]
        self._check_owned_fields(data, objects, errors)
        self._check_scopes(data, objects, errors)
        self._check_subscriptions(data, objects, errors)
        self._check_widgets(data, objects, errors)
        self._check_access(data, objects, errors)
        if errors:
            raise ValidationError(errors)

    def _check_owned_fields(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        owners: dict[str, tuple[str, int]] = {}
        for obj_name, obj in objects.items():
            seen_results: dict[str, int] = {}
            for i, spec in enumerate(obj["fields_"]):
                path = ("objects", obj_name, "fields", i)
                if spec["result"] in seen_results:
                    _add(
                        errors,
                        (*path, "result"),
                        f"result {spec['result']!r} already maps to field "
                        f"{seen_results[spec['result']]} of {obj_name}; one field per result",
                    )
                seen_results.setdefault(spec["result"], i)
                if spec["api_name"] in obj["inputs"]:
                    _add(
                        errors,
                        (*path, "api_name"),
                        f"{spec['api_name']} is owned by Fieldwise and must not also be an input",
                    )
                key = f"{obj_name}.{spec['api_name']}"
                if key in owners:
                    _add(errors, (*path, "api_name"), f"{spec['api_name']} is declared twice")
                owners[key] = (obj_name, i)

    def _check_scopes(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        granted = {
            name: set(data["base_scopes"]) | set(feature["scopes"])
            for name, feature in data["features"].items()
        }
        for obj_name, obj in objects.items():
            needed = set(obj["read_scopes"])
            for i, spec in enumerate(obj["fields_"]):
                have = granted.get(spec["feature"], set())
                lacking = sorted((needed | set(obj["write_scopes"])) - have)
                if lacking:
                    _add(
                        errors,
                        ("objects", obj_name, "fields", i, "feature"),
                        f"feature {spec['feature']!r} writes {obj_name} but lacks scopes "
                        f"{', '.join(lacking)}",
                    )
            lacking = sorted(needed - granted.get("sync", set()))
            if lacking:
                _add(
                    errors,
                    ("features", "sync", "scopes"),
                    f"sync reads {obj_name} but lacks scopes {', '.join(lacking)}",
                )

    def _check_listened(
        self,
        obj_name: str,
        names: list[str],
        objects: dict[str, dict[str, Any]],
        path: tuple[Any, ...],
        errors: dict[str, Any],
    ) -> None:
        """Each listened-to field must be an input, never an owned or echo-prone field."""
        obj = objects.get(obj_name)
        if obj is None:
            return
        owned = {spec["api_name"] for spec in obj["fields_"]}
        for j, name in enumerate(names):
            if name in owned:
                _add(
                    errors,
                    (*path, j),
                    f"{obj_name}.{name} is a field Fieldwise writes; listening to it would "
                    "turn every write-back into a new event",
                )
            elif name in self.ECHO_FIELDS:
                _add(
                    errors,
                    (*path, j),
                    f"{obj_name}.{name} changes on every write, including Fieldwise's own",
                )
            elif name not in obj["inputs"]:
                _add(errors, (*path, j), f"{obj_name}.{name} is not a declared input")

    def _check_subscriptions(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        """Subscription rules; the CRM's schema defines them (their shapes differ)."""
        raise NotImplementedError(f"{type(self).__name__} must define subscription rules")

    def _check_widgets(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        for i, widget in enumerate(data["widgets"]):
            expected_kind = "hubspot_app_card" if self.CRM == "hubspot" else "salesforce_lwc"
            if widget["kind"] != expected_kind:
                _add(errors, ("widgets", i, "kind"), f"a {self.CRM} widget is a {expected_kind}")
            shown: set[str] = set()
            for j, obj_name in enumerate(widget["objects"]):
                if obj_name not in objects:
                    _add(errors, ("widgets", i, "objects", j), f"unknown object {obj_name!r}")
                    continue
                shown |= {spec["result"] for spec in objects[obj_name]["fields_"]}
            for j, result in enumerate(widget["shows"]):
                if result not in shown:
                    _add(
                        errors,
                        ("widgets", i, "shows", j),
                        f"no object of this widget carries result {result!r}",
                    )

    def _check_access(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        """Access rules (permission sets or property group); the CRM's schema defines them."""
        raise NotImplementedError(f"{type(self).__name__} must define access rules")


class SalesforceManifestSchema(ManifestSchema):
    """The Salesforce manifest."""

    objects = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[A-Z][A-Za-z0-9_]*$")),
        values=fields.Nested(SalesforceObjectSchema),
        required=True,
    )
    subscriptions = fields.List(fields.Nested(SalesforceSubscriptionSchema), load_default=list)
    permission_sets = fields.List(
        fields.Nested(PermissionSetSchema), required=True, validate=validate.Length(min=1)
    )

    CRM = "salesforce"
    ECHO_FIELDS = SALESFORCE_ECHO_FIELDS

    def _check_subscriptions(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        for i, sub in enumerate(data["subscriptions"]):
            if sub["object"] not in objects:
                _add(errors, ("subscriptions", i, "object"), f"unknown object {sub['object']!r}")
                continue
            self._check_listened(
                sub["object"], sub["fields_"], objects, ("subscriptions", i, "fields"), errors
            )

    def _check_access(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        editors = [p for p in data["permission_sets"] if p["assign_to"] == "integration_user"]
        if len(editors) != 1 or editors[0]["field_access"] != "edit":
            _add(
                errors,
                ("permission_sets",),
                "exactly one permission set must grant edit to the integration user",
            )
        for i, pset in enumerate(data["permission_sets"]):
            if pset["assign_to"] == "reps" and pset["field_access"] != "read":
                _add(
                    errors,
                    ("permission_sets", i, "field_access"),
                    "reps get read access; only Fieldwise writes its fields",
                )
        rep_classes = {c for p in data["permission_sets"] for c in p["apex_classes"]}
        for i, widget in enumerate(data["widgets"]):
            if widget.get("apex_class") and widget["apex_class"] not in rep_classes:
                _add(
                    errors,
                    ("widgets", i, "apex_class"),
                    f"no permission set grants access to Apex class {widget['apex_class']}",
                )


class HubSpotManifestSchema(ManifestSchema):
    """The HubSpot manifest."""

    objects = fields.Dict(
        keys=fields.String(validate=validate.Regexp(r"^[a-z_]+$")),
        values=fields.Nested(HubSpotObjectSchema),
        required=True,
    )
    subscriptions = fields.List(fields.Nested(HubSpotSubscriptionSchema), load_default=list)
    property_group = fields.Nested(PropertyGroupSchema, required=True)

    CRM = "hubspot"
    ECHO_FIELDS = HUBSPOT_ECHO_PROPERTIES

    def _check_subscriptions(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        for i, sub in enumerate(data["subscriptions"]):
            if sub["object"] not in objects:
                _add(errors, ("subscriptions", i, "object"), f"unknown object {sub['object']!r}")
                continue
            missing = [k for k in ("type_id", "singular") if not objects[sub["object"]].get(k)]
            if missing:
                _add(
                    errors,
                    ("subscriptions", i, "object"),
                    f"{sub['object']} needs {' and '.join(missing)} to be subscribed to",
                )
            if not sub["events"] and not sub["property_changes"]:
                _add(errors, ("subscriptions", i), "subscribes to nothing")
            self._check_listened(
                sub["object"],
                sub["property_changes"],
                objects,
                ("subscriptions", i, "property_changes"),
                errors,
            )

    def _check_access(
        self, data: dict[str, Any], objects: dict[str, dict[str, Any]], errors: dict[str, Any]
    ) -> None:
        group = data["property_group"]["name"]
        if group.startswith("hs_"):
            _add(errors, ("property_group", "name"), "must not start with hs_")


def _add(errors: dict[str, Any], path: tuple[Any, ...], message: str) -> None:
    """Put ``message`` into marshmallow's nested error shape at ``path``."""
    node = errors
    for depth, key in enumerate(path[:-1]):
        child = node.setdefault(key, {})
        if isinstance(child, list):  # messages already sit at this level: keep the full path
            rest = ".".join(str(k) for k in path[depth + 1 :])
            child.append(f"{rest}: {message}")
            return
        node = child
    leaf = node.setdefault(path[-1], [])
    if isinstance(leaf, list):
        leaf.append(message)
    else:
        leaf.setdefault("_schema", []).append(message)


SCHEMAS_BY_CRM: dict[str, type[ManifestSchema]] = {
    "salesforce": SalesforceManifestSchema,
    "hubspot": HubSpotManifestSchema,
}
"""The schema that validates each CRM's manifest."""

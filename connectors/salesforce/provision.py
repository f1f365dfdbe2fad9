"""Install and uninstall Fieldwise in an org from the manifest, through the Metadata API.

What an install creates, in this order (later steps refer to earlier ones):

1. the custom fields of every object (``CustomField``; at most 10 components per call, the
   Metadata API's limit for create/read/update/delete:
   https://developer.salesforce.com/docs/atlas.en-us.api_meta.meta/api_meta/meta_createMetadata.htm);
2. the permission sets that grant field-level security on them (``PermissionSet``): a new field is
   invisible to everyone, the integration user included, until a profile or permission set grants it;
3. the outbound messages that push changes of the listened fields to
   ``{public_url}/webhooks/salesforce/outbound`` (``WorkflowOutboundMessage``);
4. the record-page widget, which is not created here: the LWC bundle, its Apex controller and the
   Named Credential are source deployed with the Salesforce CLI from ``manifests/salesforce/force-app``
   (CRUD Metadata calls cannot create bundles), so the plan lists it as a manual step.

Each run reads what exists first (``readMetadata``) and compares it with the manifest: missing
components are created, changed ones updated, equal ones kept. :meth:`Provisioner.plan` is exactly
the list :meth:`Provisioner.install` then applies, so a dry run shows the real change, a second
install is all ``keep`` and a half-finished install is completed. Uninstall deletes only the
manifest's components that exist, in reverse order.

Change events (``kind: change_event`` subscriptions) need no component from Fieldwise in the org
beyond enabling Change Data Capture for the objects, which admins do in Setup; this module
provisions the outbound-message path only.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from simple_salesforce.format import format_soql
from zeep.helpers import serialize_object

from connectors.base import InstallPlan, PlanItem
from manifests.loader import FieldSpec, PermissionSetSpec, SalesforceSubscription

if TYPE_CHECKING:
    from connectors.salesforce.client import MetadataApi, SalesforceConnector

METADATA_CHUNK = 10
"""Components per create/read/update/delete call."""
OUTBOUND_API_VERSION = 62.0
"""API version outbound messages are created with (the SOAP notification format version)."""

Action = Literal["create", "update", "delete", "keep"]


@dataclass
class Step:
    """One planned change: the plan item an admin sees and the metadata that carries it out."""

    item: PlanItem
    type_name: str
    """The Metadata API type (``CustomField``, ``PermissionSet``, ``WorkflowOutboundMessage``)."""
    full_name: str
    metadata: dict[str, Any] | None = None


# --------------------------------------------------------------------------------------------------
# What the manifest wants


def field_metadata(spec: FieldSpec) -> dict[str, Any]:
    """The CustomField metadata for an owned field."""
    meta: dict[str, Any] = {
        "fullName": f"{spec.object_name}.{spec.api_name}",
        "label": spec.label,
        "inlineHelpText": spec.help_text,
        "description": f"Written by Fieldwise ({spec.feature}); edits are overwritten.",
        "type": spec.type,
    }
    if spec.type in {"Number", "Currency", "Percent"}:
        meta.update(precision=spec.precision, scale=spec.scale or 0)
    elif spec.type in {"Text", "TextArea"}:
        meta["length"] = spec.length
    elif spec.type in {"LongTextArea", "Html"}:
        meta.update(length=spec.length, visibleLines=spec.visible_lines)
    elif spec.type == "Checkbox":
        meta["defaultValue"] = "true" if spec.default else "false"
    elif spec.is_picklist:
        meta["valueSet"] = {
            "restricted": spec.restricted,
            "valueSetDefinition": {
                "sorted": False,
                "value": [
                    {"fullName": v.value, "label": v.label, "default": False} for v in spec.values
                ],
            },
        }
    return meta


def permission_set_metadata(spec: PermissionSetSpec, fields: Iterable[FieldSpec]) -> dict[str, Any]:
    """The PermissionSet metadata: read (or edit) on every owned field, plus the widget's access."""
    edit = spec.field_access == "edit"
    return {
        "fullName": spec.name,
        "label": spec.label,
        "description": spec.description,
        "fieldPermissions": [
            {"field": f"{f.object_name}.{f.api_name}", "readable": True, "editable": edit}
            for f in fields
        ],
        "classAccesses": [{"apexClass": name, "enabled": True} for name in spec.apex_classes],
        "externalCredentialPrincipalAccesses": [
            {"externalCredentialPrincipal": name, "enabled": True}
            for name in spec.external_credential_principals
        ],
    }


def outbound_metadata(
    sub: SalesforceSubscription, public_url: str, username: str | None
) -> dict[str, Any]:
    """The WorkflowOutboundMessage for a subscription, sent as the integration user."""
    meta: dict[str, Any] = {
        "fullName": f"{sub.object_name}.{sub.name}",
        "name": sub.name,
        "apiVersion": OUTBOUND_API_VERSION,
        "endpointUrl": public_url.rstrip("/") + sub.endpoint,
        # LastModifiedById rides along in every notification (it selects nothing: sending a field
        # in the message is not listening to it) so the receiver can tell Fieldwise's own writes
        # from a person's: without it, an org whose outbound rule has no "not the integration
        # user" criterion sent each AI write back as a change Fieldwise fetched again.
        "fields": list(dict.fromkeys(["Id", "LastModifiedById", *sub.fields])),
        "includeSessionId": False,
        "protected": False,
        "description": f"Tells Fieldwise when a {sub.object_name} it reads changes.",
    }
    if username:
        meta["integrationUser"] = username
    return meta


# --------------------------------------------------------------------------------------------------
# Comparing with what exists


def _plain(value: Any) -> Any:
    """A zeep object (or anything) as plain dicts and lists."""
    return serialize_object(value, dict)


def _field_shape(meta: Mapping[str, Any]) -> dict[str, Any]:
    """The parts of a CustomField Fieldwise owns, in a comparable form."""
    shape: dict[str, Any] = {
        "label": meta.get("label"),
        "inlineHelpText": meta.get("inlineHelpText"),
        "type": meta.get("type"),
    }
    for key in ("precision", "scale", "length", "visibleLines"):
        if meta.get(key) is not None:
            shape[key] = int(meta[key])
    value_set = meta.get("valueSet") or {}
    if value_set:
        definition = value_set.get("valueSetDefinition") or {}
        values = definition.get("value") or []
        values = values if isinstance(values, list) else [values]
        shape["values"] = [(v.get("fullName"), v.get("label")) for v in values]
        shape["restricted"] = bool(value_set.get("restricted"))
    return shape


def _permission_shape(meta: Mapping[str, Any]) -> dict[str, Any]:
    def listed(key: str) -> list[Mapping[str, Any]]:
        value = meta.get(key) or []
        return value if isinstance(value, list) else [value]

    return {
        "label": meta.get("label"),
        "description": meta.get("description"),
        "fields": sorted(
            (str(p.get("field")), bool(p.get("readable")), bool(p.get("editable")))
            for p in listed("fieldPermissions")
        ),
        "classes": sorted(
            str(c.get("apexClass")) for c in listed("classAccesses") if c.get("enabled")
        ),
        "principals": sorted(
            str(c.get("externalCredentialPrincipal"))
            for c in listed("externalCredentialPrincipalAccesses")
            if c.get("enabled")
        ),
    }


def _outbound_shape(meta: Mapping[str, Any]) -> dict[str, Any]:
    fields = meta.get("fields") or []
    return {
        "endpointUrl": meta.get("endpointUrl"),
        "fields": sorted(fields if isinstance(fields, list) else [fields]),
    }


def _differences(want: Mapping[str, Any], have: Mapping[str, Any]) -> list[str]:
    return [key for key in want if want[key] != have.get(key)]


def _field_detail(spec: FieldSpec) -> str:
    if spec.type in {"Number", "Currency", "Percent"}:
        return f"{spec.type}({spec.precision},{spec.scale or 0}): {spec.label}"
    if spec.is_picklist:
        restricted = ", restricted" if spec.restricted else ""
        values = ", ".join(v.value for v in spec.values)
        return f"{spec.type} [{values}{restricted}]: {spec.label}"
    if spec.length:
        return f"{spec.type}({spec.length}): {spec.label}"
    return f"{spec.type}: {spec.label}"


class Provisioner:
    """Plans and applies the manifest in one org, through its connector's metadata calls.

    Args:
        connector: the tenant's connector (tokens, budget and error mapping come with it).
    """

    def __init__(self, connector: SalesforceConnector) -> None:
        self.connector = connector
        self.manifest = connector.manifest
        self.public_url = connector.config.public_url

    # ----------------------------------------------------------------------------------------------
    # Reading and writing metadata in chunks

    def _read(self, type_name: str, names: Sequence[str]) -> dict[str, dict[str, Any]]:
        """Existing components by full name (missing ones are absent from the result)."""
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(names), METADATA_CHUNK):
            chunk = list(names[start : start + METADATA_CHUNK])

            def read(api: MetadataApi, chunk: list[str] = chunk) -> Any:
                return getattr(api, type_name).read(chunk)

            answer = self.connector.metadata(f"read {type_name}", read)
            # simple-salesforce unwraps a one-element answer; Salesforce answers a component that
            # does not exist with an empty record (no fullName).
            for record in answer if isinstance(answer, list) else [answer]:
                plain = _plain(record)
                if isinstance(plain, dict) and plain.get("fullName"):
                    found[str(plain["fullName"])] = plain
        return found

    def _apply(self, type_name: str, action: Action, steps: Sequence[Step]) -> None:
        for start in range(0, len(steps), METADATA_CHUNK):
            chunk = steps[start : start + METADATA_CHUNK]

            def run(api: MetadataApi, chunk: Sequence[Step] = chunk) -> None:
                kind = getattr(api, type_name)
                if action == "delete":
                    kind.delete([step.full_name for step in chunk])
                    return
                components = [kind(**(step.metadata or {})) for step in chunk]
                getattr(kind, action)(components)

            self.connector.metadata(f"{action} {type_name}", run)

    def _username(self) -> str | None:
        user_id = self.connector.tenant.integration_user_id
        if not user_id:
            return None
        rows = self.connector.query(
            format_soql("SELECT Username FROM User WHERE Id = {user_id}", user_id=user_id)
        )["records"]
        return str(rows[0]["Username"]) if rows else None

    def _fields(self) -> list[FieldSpec]:
        return [spec for obj in self.manifest.objects for spec in self.manifest.owned_fields(obj)]

    def _outbound(self) -> list[SalesforceSubscription]:
        return [
            sub
            for sub in self.manifest.subscriptions
            if isinstance(sub, SalesforceSubscription) and sub.kind == "outbound_message"
        ]

    # ----------------------------------------------------------------------------------------------
    # Install

    def _widget_items(self, uninstall: bool = False) -> list[PlanItem]:
        items = []
        for widget in self.manifest.widgets:
            verb = "delete" if uninstall else "deploy"
            items.append(
                PlanItem(
                    "widget",
                    widget.name,
                    "keep",
                    f"manual step, not done by this {'uninstall' if uninstall else 'install'}: "
                    f"{verb} the Lightning component {widget.name}, Apex class "
                    f"{widget.apex_class} and Named Credential {widget.named_credential} with the "
                    "Salesforce CLI (sf project "
                    f"{'delete source' if uninstall else 'deploy start'} --source-dir "
                    "manifests/salesforce/force-app); the Metadata API calls Fieldwise makes "
                    "cannot deploy component bundles.",
                )
            )
        return items

    def _install_steps(self) -> list[Step]:
        steps: list[Step] = []
        specs = self._fields()
        wanted_fields = {f"{s.object_name}.{s.api_name}": s for s in specs}
        existing = self._read("CustomField", list(wanted_fields))
        for full_name, spec in wanted_fields.items():
            meta = field_metadata(spec)
            action, detail = self._compare(
                _field_shape(meta), existing.get(full_name), _field_shape
            )
            steps.append(
                Step(
                    PlanItem("field", full_name, action, detail or _field_detail(spec)),
                    "CustomField",
                    full_name,
                    meta,
                )
            )
        sets = {p.name: p for p in self.manifest.permission_sets}
        existing = self._read("PermissionSet", list(sets))
        for name, pspec in sets.items():
            meta = permission_set_metadata(pspec, specs)
            action, detail = self._compare(
                _permission_shape(meta), existing.get(name), _permission_shape
            )
            access = "edit" if pspec.field_access == "edit" else "read"
            steps.append(
                Step(
                    PlanItem(
                        "permission_set",
                        name,
                        action,
                        detail
                        or f"{access} access to {len(specs)} Fieldwise fields; assign it to "
                        + (
                            "the integration user"
                            if pspec.assign_to == "integration_user"
                            else "reps"
                        ),
                    ),
                    "PermissionSet",
                    name,
                    meta,
                )
            )
        subs = {f"{s.object_name}.{s.name}": s for s in self._outbound()}
        existing = self._read("WorkflowOutboundMessage", list(subs))
        username = self._username() if subs else None
        for full_name, sub in subs.items():
            meta = outbound_metadata(sub, self.public_url, username)
            action, detail = self._compare(
                _outbound_shape(meta), existing.get(full_name), _outbound_shape
            )
            steps.append(
                Step(
                    PlanItem(
                        "outbound_message",
                        full_name,
                        action,
                        detail
                        or f"sends {len(meta['fields'])} fields of changed {sub.object_name} records "
                        f"to {meta['endpointUrl']}",
                    ),
                    "WorkflowOutboundMessage",
                    full_name,
                    meta,
                )
            )
        return steps

    @staticmethod
    def _compare(
        want: Mapping[str, Any], have: Mapping[str, Any] | None, shape: Any
    ) -> tuple[Action, str]:
        if have is None:
            return "create", ""
        changed = _differences(want, shape(have))
        if changed:
            return "update", "differs in " + ", ".join(changed)
        return "keep", "already as the manifest says"

    def _plan(self, items: list[PlanItem], applied: bool) -> InstallPlan:
        return InstallPlan(
            crm="salesforce",
            tenant_id=self.connector.tenant_id,
            manifest_version=self.manifest.version,
            items=items,
            applied=applied,
        )

    def plan(self) -> InstallPlan:
        """What :meth:`install` would do now; nothing is changed."""
        steps = self._install_steps()
        return self._plan([s.item for s in steps] + self._widget_items(), applied=False)

    def install(self) -> InstallPlan:
        """Create what is missing and update what differs; returns what was done."""
        steps = self._install_steps()
        for type_name in ("CustomField", "PermissionSet", "WorkflowOutboundMessage"):
            for action in ("create", "update"):
                todo = [s for s in steps if s.type_name == type_name and s.item.action == action]
                if todo:
                    self._apply(type_name, action, todo)
        return self._plan([s.item for s in steps] + self._widget_items(), applied=True)

    # ----------------------------------------------------------------------------------------------
    # Uninstall

    def uninstall(self, keep_data_fields: bool = False) -> InstallPlan:
        """Delete the manifest's components that exist, outbound messages first, fields last.

        Args:
            keep_data_fields: keep the custom fields and the values in them; remove the rest.
        """
        steps: list[Step] = []
        subs = [f"{s.object_name}.{s.name}" for s in self._outbound()]
        for name in self._read("WorkflowOutboundMessage", subs):
            steps.append(
                Step(PlanItem("outbound_message", name, "delete"), "WorkflowOutboundMessage", name)
            )
        sets = [p.name for p in self.manifest.permission_sets]
        for name in self._read("PermissionSet", sets):
            steps.append(Step(PlanItem("permission_set", name, "delete"), "PermissionSet", name))
        fields = [f"{s.object_name}.{s.api_name}" for s in self._fields()]
        for name in self._read("CustomField", fields):
            action: Action = "keep" if keep_data_fields else "delete"
            detail = "kept with its data (keep_data_fields)" if keep_data_fields else ""
            steps.append(Step(PlanItem("field", name, action, detail), "CustomField", name))
        for type_name in ("WorkflowOutboundMessage", "PermissionSet", "CustomField"):
            todo = [s for s in steps if s.type_name == type_name and s.item.action == "delete"]
            if todo:
                self._apply(type_name, "delete", todo)
        return self._plan([s.item for s in steps] + self._widget_items(uninstall=True), True)

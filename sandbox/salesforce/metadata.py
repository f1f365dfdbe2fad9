"""Custom fields through the Metadata API (SOAP, as ``sf.mdapi`` sends it) and the Tooling API.

SOAP endpoint: ``POST /services/Soap/m/<version>`` with the session id in ``SessionHeader``.
Operations: ``createMetadata``, ``updateMetadata``, ``upsertMetadata``, ``readMetadata``,
``deleteMetadata`` and ``listMetadata`` for ``CustomField``; ``createMetadata``/``upsertMetadata``
also accept ``PermissionSet`` (stored, field-level security is not enforced) and
``WorkflowOutboundMessage`` (becomes an outbound-message configuration that fires on every create
and update of its object); ``readMetadata`` and ``deleteMetadata`` accept both as well. Answers are
``SaveResult`` / ``UpsertResult`` / ``DeleteResult`` / ``ReadResult`` envelopes in the
``http://soap.sforce.com/2006/04/metadata`` namespace; a missing or bad session or a malformed
envelope is a SOAP fault.

Supported field types: Number, Currency, Percent, Checkbox, Date, DateTime, Text, TextArea,
LongTextArea, Html, Email, Phone, Url, Picklist and MultiselectPicklist.
"""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any
from xml.etree import ElementTree as ET
from xml.sax.saxutils import escape

from sandbox.salesforce.errors import SalesforceError
from sandbox.salesforce.ids import now_string
from sandbox.salesforce.schema import FieldDef, Schema

SOAP_NS = "http://schemas.xmlsoap.org/soap/envelope/"
MD_NS = "http://soap.sforce.com/2006/04/metadata"
XSI_NS = "http://www.w3.org/2001/XMLSchema-instance"
MAX_COMPONENTS = 10
_NAME_RE = re.compile(r"^[A-Za-z][A-Za-z0-9]*(?:_[A-Za-z0-9]+)*__c$")

# Metadata type -> (describe type, extraTypeInfo)
FIELD_TYPES: dict[str, tuple[str, str | None]] = {
    "Number": ("double", None),
    "Currency": ("currency", None),
    "Percent": ("percent", None),
    "Checkbox": ("boolean", None),
    "Date": ("date", None),
    "DateTime": ("datetime", None),
    "Text": ("string", None),
    "TextArea": ("textarea", "plaintextarea"),
    "LongTextArea": ("textarea", "plaintextarea"),
    "Html": ("textarea", "richtextarea"),
    "Email": ("email", None),
    "Phone": ("phone", None),
    "Url": ("url", None),
    "Picklist": ("picklist", None),
    "MultiselectPicklist": ("multipicklist", None),
}
_INT_KEYS = {"length", "precision", "scale", "visibleLines"}
_BOOL_KEYS = {
    "externalId",
    "unique",
    "required",
    "restricted",
    "sorted",
    "default",
    "caseSensitive",
    "trackHistory",
}


def _error(code: str, message: str, fields: list[str] | None = None) -> SalesforceError:
    return SalesforceError(400, code, message, fields)


def normalise(value: Any, key: str = "") -> Any:
    """Turn SOAP strings (``"5"``, ``"true"``) into the JSON types the Tooling API uses."""
    if isinstance(value, dict):
        return {k: normalise(v, k) for k, v in value.items()}
    if isinstance(value, list):
        return [normalise(v, key) for v in value]
    if isinstance(value, str):
        if key in _INT_KEYS and re.fullmatch(r"-?\d+", value.strip()):
            return int(value)
        if key in _BOOL_KEYS and value.lower() in {"true", "false"}:
            return value.lower() == "true"
    return value


def _picklist_values(meta: dict[str, Any]) -> tuple[list[str], bool]:
    value_set = meta.get("valueSet")
    if not isinstance(value_set, dict):
        return [], False
    definition = value_set.get("valueSetDefinition") or {}
    values = definition.get("value") if isinstance(definition, dict) else None
    if isinstance(values, dict):
        values = [values]
    names = []
    for item in values or []:
        name = item.get("fullName") if isinstance(item, dict) else item
        if isinstance(name, str) and name:
            names.append(name)
    return names, bool(value_set.get("restricted", False))


def field_from_metadata(
    schema: Schema, full_name: str, meta: dict[str, Any], field_id: str | None = None
) -> tuple[str, FieldDef]:
    """Validate CustomField metadata and build the field it describes.

    Args:
        schema: the org schema (the object must exist).
        full_name: ``Object.Field__c``.
        meta: the CustomField metadata (SOAP strings or Tooling JSON).
        field_id: keep this Tooling id (for updates); a new ``00N`` id otherwise.

    Returns:
        ``(object name, field)``.

    Raises:
        SalesforceError: with the status code the Metadata API reports for the problem.
    """
    meta = normalise(dict(meta))
    if not isinstance(full_name, str) or "." not in full_name:
        raise _error(
            "INVALID_CROSS_REFERENCE_KEY",
            f"In field: fullName - no CustomObject named {full_name} found",
            ["fullName"],
        )
    object_name, field_name = full_name.split(".", 1)
    obj = schema.object(object_name)
    if obj is None or obj.name == "OpportunityFieldHistory":
        raise _error(
            "INVALID_CROSS_REFERENCE_KEY",
            f"In field: fullName - no CustomObject named {object_name} found",
            ["fullName"],
        )
    if not _NAME_RE.match(field_name) or len(field_name) > 43:
        raise _error(
            "FIELD_INTEGRITY_EXCEPTION",
            f"The API name {field_name} is not valid: custom field names end in __c, start"
            " with a letter and use only letters, digits and single underscores.",
            ["fullName"],
        )
    label = meta.get("label")
    if not isinstance(label, str) or not label.strip():
        raise _error("REQUIRED_FIELD_MISSING", "Required field is missing: label", ["label"])
    type_name = meta.get("type")
    if type_name not in FIELD_TYPES:
        raise _error(
            "FIELD_INTEGRITY_EXCEPTION",
            f"Invalid field type: {type_name}. Supported here: {', '.join(FIELD_TYPES)}",
            ["type"],
        )
    kind, extra = FIELD_TYPES[type_name]
    length = int(meta.get("length") or 0)
    precision = int(meta.get("precision") or 0)
    scale = int(meta.get("scale") or 0)
    picklist: list[str] = []
    restricted = False
    if type_name in {"Number", "Currency", "Percent"}:
        if not precision:
            raise _error(
                "FIELD_INTEGRITY_EXCEPTION", "Precision: you must enter a value", ["precision"]
            )
        if not 1 <= precision <= 18 or not 0 <= scale <= precision:
            raise _error(
                "FIELD_INTEGRITY_EXCEPTION",
                "The sum of the length and decimal places must be an integer less than or"
                " equal to 18",
                ["precision", "scale"],
            )
    elif type_name == "Text":
        if not 1 <= length <= 255:
            raise _error(
                "FIELD_INTEGRITY_EXCEPTION",
                "Length: the length must be between 1 and 255",
                ["length"],
            )
    elif type_name in {"LongTextArea", "Html"}:
        if not 256 <= length <= 131072:
            raise _error(
                "FIELD_INTEGRITY_EXCEPTION",
                "Length: the length must be between 256 and 131,072",
                ["length"],
            )
        if not meta.get("visibleLines"):
            raise _error(
                "FIELD_INTEGRITY_EXCEPTION",
                "Visible Lines: you must enter a value",
                ["visibleLines"],
            )
    elif type_name in {"Picklist", "MultiselectPicklist"}:
        picklist, restricted = _picklist_values(meta)
        if not picklist:
            raise _error(
                "FIELD_INTEGRITY_EXCEPTION", "Picklist must have at least one value", ["valueSet"]
            )
    elif type_name == "TextArea":
        length = 255
    elif type_name in {"Email", "Phone", "Url"}:
        length = 80 if type_name == "Email" else 40 if type_name == "Phone" else 255
    elif type_name == "Checkbox":
        default = meta.get("defaultValue", "false")
        if str(default).lower() not in {"true", "false"}:
            raise _error(
                "FIELD_INTEGRITY_EXCEPTION",
                "Default Value: a checkbox needs true or false",
                ["defaultValue"],
            )
    stored = {k: v for k, v in meta.items() if v is not None}
    stored["fullName"] = f"{obj.name}.{field_name}"
    stored["id"] = field_id or "00N" + secrets.token_hex(6).upper()[:12]
    fdef = FieldDef(
        name=field_name,
        type=kind,
        label=label.strip(),
        length=length
        if kind in {"string", "textarea", "email", "phone", "url"}
        else (4099 if kind == "multipicklist" else 255 if kind == "picklist" else 0),
        precision=precision,
        scale=scale,
        nillable=kind != "boolean",
        default=(str(meta.get("defaultValue", "false")).lower() == "true")
        if kind == "boolean"
        else None,
        custom=True,
        picklist=picklist,
        restricted=restricted,
        external_id=bool(meta.get("externalId", False)),
        unique=bool(meta.get("unique", False)),
        extra_type_info=extra,
        metadata=stored,
    )
    return obj.name, fdef


def find_field_by_id(schema: Schema, field_id: str) -> tuple[str, FieldDef] | None:
    """The custom field with a Tooling id (15 or 18 characters), or None."""
    for obj in schema.objects.values():
        for fdef in obj.fields.values():
            known = fdef.metadata.get("id") if fdef.custom else None
            if known and field_id[:15] == known[:15]:
                return obj.name, fdef
    return None


def metadata_dict(fdef: FieldDef) -> dict[str, Any]:
    """The CustomField metadata of a custom field, as read back."""
    return {k: v for k, v in fdef.metadata.items() if k != "id"}


# --------------------------------------------------------------------------------------------------
# SOAP


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _to_value(element: ET.Element) -> Any:
    children = list(element)
    if not children:
        if element.get(f"{{{XSI_NS}}}nil") == "true":
            return None
        return element.text or ""
    out: dict[str, Any] = {}
    for child in children:
        key = _local(child.tag)
        value = _to_value(child)
        if key in out:
            if not isinstance(out[key], list):
                out[key] = [out[key]]
            out[key].append(value)
        else:
            out[key] = value
    return out


def _xml(name: str, value: Any) -> str:
    if isinstance(value, list):
        return "".join(_xml(name, v) for v in value)
    if isinstance(value, dict):
        return f"<{name}>{''.join(_xml(k, v) for k, v in value.items())}</{name}>"
    if isinstance(value, bool):
        value = "true" if value else "false"
    return f"<{name}>{escape(str(value))}</{name}>"


def envelope(body: str) -> str:
    """Wrap a body in a SOAP envelope whose default namespace is the Metadata API's."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns="{MD_NS}" xmlns:xsi="{XSI_NS}">'
        f"<soapenv:Body>{body}</soapenv:Body></soapenv:Envelope>"
    )


def fault(code: str, message: str) -> str:
    """A SOAP fault envelope (``sf:`` codes for API faults, ``soapenv:Client`` for bad input)."""
    return (
        '<?xml version="1.0" encoding="UTF-8"?>'
        f'<soapenv:Envelope xmlns:soapenv="{SOAP_NS}" xmlns:sf="{MD_NS}">'
        "<soapenv:Body><soapenv:Fault>"
        f"<faultcode>{escape(code)}</faultcode><faultstring>{escape(message)}</faultstring>"
        "</soapenv:Fault></soapenv:Body></soapenv:Envelope>"
    )


class SoapFault(Exception):
    """A request the Metadata API answers with a SOAP fault (HTTP 500)."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


class MetadataApi:
    """Serves the Metadata SOAP operations for CustomField, PermissionSet and outbound messages.

    Args:
        schema: the org schema.
        store_meta: ``(key, default) -> value`` reader of the key-value table.
        save_meta: ``(key, value)`` writer of the key-value table.
        outbound: ``(config dict) -> None``, registers an outbound message from
            WorkflowOutboundMessage metadata.
        user_name: the display name for ``listMetadata``.
    """

    def __init__(
        self,
        schema: Schema,
        store_meta: Callable[[str, Any], Any],
        save_meta: Callable[[str, Any], None],
        outbound: Callable[[dict[str, Any]], Any],
        find_username: Callable[[str], dict[str, Any] | None],
    ) -> None:
        self.schema = schema
        self.get_meta = store_meta
        self.set_meta = save_meta
        self.outbound = outbound
        self.find_username = find_username

    @staticmethod
    def parse(raw: bytes) -> tuple[str | None, str, ET.Element]:
        """Return ``(session id, operation name, operation element)``.

        Raises:
            SoapFault: for XML that is not a SOAP envelope with one operation.
        """
        try:
            root = ET.fromstring(raw)
        except ET.ParseError as exc:
            raise SoapFault(
                "soapenv:Client", f"Unable to parse the request envelope: {exc}"
            ) from None
        if root.tag != f"{{{SOAP_NS}}}Envelope":
            raise SoapFault("soapenv:VersionMismatch", "Expected a SOAP 1.1 Envelope")
        session = root.find(f"{{{SOAP_NS}}}Header/{{{MD_NS}}}SessionHeader/{{{MD_NS}}}sessionId")
        body = root.find(f"{{{SOAP_NS}}}Body")
        operations = list(body) if body is not None else []
        if len(operations) != 1:
            raise SoapFault("soapenv:Client", "The SOAP Body must hold exactly one operation")
        return (
            (session.text if session is not None else None),
            _local(operations[0].tag),
            operations[0],
        )

    def handle(self, operation: str, element: ET.Element) -> str:
        """Run one operation and return the response envelope.

        Raises:
            SoapFault: for unknown operations and over-limit requests.
        """
        handlers = {
            "createMetadata": self._create,
            "updateMetadata": self._update,
            "upsertMetadata": self._upsert,
            "readMetadata": self._read,
            "deleteMetadata": self._delete,
            "listMetadata": self._list,
        }
        handler = handlers.get(operation)
        if handler is None:
            raise SoapFault(
                "soapenv:Client", f"No operation available for request {{{MD_NS}}}{operation}"
            )
        return envelope(f"<{operation}Response>{handler(element)}</{operation}Response>")

    # ----------------------------------------------------------------------------------------------

    def _components(self, element: ET.Element) -> list[tuple[str, dict[str, Any]]]:
        items = [child for child in element if _local(child.tag) == "metadata"]
        if len(items) > MAX_COMPONENTS:
            raise SoapFault(
                "sf:EXCEEDED_MAX_SIZE_REQUEST",
                f"EXCEEDED_MAX_SIZE_REQUEST: You can create, update or delete at most"
                f" {MAX_COMPONENTS} metadata components per call; got {len(items)}",
            )
        out = []
        for item in items:
            xsi_type = (item.get(f"{{{XSI_NS}}}type") or "").split(":")[-1]
            value = _to_value(item)
            out.append((xsi_type, value if isinstance(value, dict) else {}))
        return out

    @staticmethod
    def _result(full_name: str, error: SalesforceError | None, extra: str = "") -> str:
        if error is None:
            return f"<result>{extra}<fullName>{escape(full_name)}</fullName><success>true</success></result>"
        fields = "".join(f"<fields>{escape(f)}</fields>" for f in error.fields)
        return (
            f"<result>{extra}<errors>{fields}<message>{escape(error.message)}</message>"
            f"<statusCode>{escape(error.code)}</statusCode></errors>"
            f"<fullName>{escape(full_name)}</fullName><success>false</success></result>"
        )

    def _apply(self, type_name: str, meta: dict[str, Any], mode: str) -> bool:
        """Create/update/upsert one component; returns True when it was created."""
        full_name = str(meta.get("fullName") or "")
        if type_name == "CustomField":
            obj_name = full_name.split(".", 1)[0]
            existing = (
                self.schema.custom_field(obj_name, full_name.split(".", 1)[-1])
                if "." in full_name
                else None
            )
            if mode == "create" and existing is not None:
                raise _error(
                    "DUPLICATE_DEVELOPER_NAME",
                    f"There is already a field named {existing.name} on {obj_name}.",
                    ["fullName"],
                )
            if mode == "update" and existing is None:
                raise _error(
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"In field: fullName - no CustomField named {full_name} found",
                    ["fullName"],
                )
            if existing is not None:
                merged = {**metadata_dict(existing), **meta}
                obj, fdef = field_from_metadata(
                    self.schema, full_name, merged, existing.metadata.get("id")
                )
                self.schema.add_custom_fields([(obj, fdef)], replace=True)
                return False
            obj, fdef = field_from_metadata(self.schema, full_name, meta)
            self.schema.add_custom_fields([(obj, fdef)])
            return True
        if type_name == "PermissionSet":
            if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", full_name):
                raise _error(
                    "FIELD_INTEGRITY_EXCEPTION", "fullName is not a valid API name", ["fullName"]
                )
            sets = self.get_meta("salesforce.permission_sets", {})
            created = full_name not in sets
            if mode == "create" and not created:
                raise _error(
                    "DUPLICATE_DEVELOPER_NAME",
                    f"There is already a permission set named {full_name}",
                    ["fullName"],
                )
            sets[full_name] = normalise(meta)
            self.set_meta("salesforce.permission_sets", sets)
            return created
        if type_name == "WorkflowOutboundMessage":
            object_name, _, name = full_name.partition(".")
            if not name or self.schema.object(object_name) is None:
                raise _error(
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"In field: fullName - no CustomObject named {object_name} found",
                    ["fullName"],
                )
            endpoint = meta.get("endpointUrl")
            if not isinstance(endpoint, str) or not endpoint.startswith(("http://", "https://")):
                raise _error(
                    "FIELD_INTEGRITY_EXCEPTION", "Endpoint URL: invalid URL", ["endpointUrl"]
                )
            fields = meta.get("fields") or []
            fields = fields if isinstance(fields, list) else [fields]
            user = self.find_username(str(meta.get("integrationUser") or ""))
            config = {
                "name": name,
                "object": object_name,
                "fields": fields,
                "endpoint_url": endpoint,
                "integration_user_id": user["Id"] if user else None,
                "include_session_id": str(meta.get("includeSessionId")).lower() == "true",
            }
            self.outbound(config)
            return True
        raise _error(
            "INVALID_TYPE",
            f"Metadata type {type_name or '(none)'} is not supported by the sandbox for this call",
            ["type"],
        )

    def _save_all(self, element: ET.Element, mode: str) -> str:
        out = []
        for type_name, meta in self._components(element):
            full_name = str(meta.get("fullName") or "")
            try:
                created = self._apply(type_name, meta, mode)
                extra = (
                    f"<created>{'true' if created else 'false'}</created>"
                    if mode == "upsert"
                    else ""
                )
                out.append(self._result(full_name, None, extra))
            except SalesforceError as exc:
                extra = "<created>false</created>" if mode == "upsert" else ""
                out.append(self._result(full_name, exc, extra))
        return "".join(out)

    def _create(self, element: ET.Element) -> str:
        return self._save_all(element, "create")

    def _update(self, element: ET.Element) -> str:
        return self._save_all(element, "update")

    def _upsert(self, element: ET.Element) -> str:
        return self._save_all(element, "upsert")

    @staticmethod
    def _names(element: ET.Element) -> tuple[str, list[str]]:
        type_el = next((c for c in element if _local(c.tag) == "type"), None)
        names = [c.text or "" for c in element if _local(c.tag) == "fullNames"]
        if len(names) > MAX_COMPONENTS:
            raise SoapFault(
                "sf:EXCEEDED_MAX_SIZE_REQUEST",
                f"EXCEEDED_MAX_SIZE_REQUEST: at most {MAX_COMPONENTS} names per call",
            )
        return (type_el.text or "" if type_el is not None else ""), names

    def _read(self, element: ET.Element) -> str:
        type_name, names = self._names(element)
        records: list[str] = []
        for full_name in names:
            found = len(records)
            if type_name == "CustomField" and "." in full_name:
                obj_name, field_name = full_name.split(".", 1)
                fdef = self.schema.custom_field(obj_name, field_name)
                if fdef is not None:
                    body = "".join(_xml(k, v) for k, v in metadata_dict(fdef).items())
                    records.append(f'<records xsi:type="CustomField">{body}</records>')
            elif type_name == "PermissionSet":
                sets = self.get_meta("salesforce.permission_sets", {})
                if full_name in sets:
                    body = "".join(_xml(k, v) for k, v in sets[full_name].items())
                    records.append(f'<records xsi:type="PermissionSet">{body}</records>')
            elif type_name == "WorkflowOutboundMessage":
                config = self._outbound_config(full_name)
                if config is not None:
                    meta = {
                        "fullName": full_name,
                        "endpointUrl": config["endpoint_url"],
                        "fields": config["fields"],
                        "includeSessionId": config["include_session_id"],
                        "name": config["name"],
                    }
                    body = "".join(_xml(k, v) for k, v in meta.items())
                    records.append(f'<records xsi:type="WorkflowOutboundMessage">{body}</records>')
            if len(records) == found:
                # Salesforce answers a name that does not exist with an empty component (no
                # fullName) in its place, so the answer always has one record per name asked.
                records.append(f'<records xsi:type="{escape(type_name)}"/>')
        return f"<result>{''.join(records)}</result>"

    def _outbound_config(self, full_name: str) -> dict[str, Any] | None:
        """The outbound-message configuration ``Object.Name`` refers to, or None."""
        object_name, _, name = full_name.partition(".")
        configs = self.outbound({}).get("outbound_messages", [])
        return next(
            (
                c
                for c in configs
                if c["name"] == name and str(c["object"]).lower() == object_name.lower()
            ),
            None,
        )

    def _delete(self, element: ET.Element) -> str:
        type_name, names = self._names(element)
        out = []
        for full_name in names:
            error = None
            removed = False
            if type_name == "CustomField" and "." in full_name:
                obj_name, field_name = full_name.split(".", 1)
                removed = self.schema.remove_custom_field(obj_name, field_name)
            elif type_name == "PermissionSet":
                sets = self.get_meta("salesforce.permission_sets", {})
                removed = sets.pop(full_name, None) is not None
                self.set_meta("salesforce.permission_sets", sets)
            elif type_name == "WorkflowOutboundMessage":
                config = self._outbound_config(full_name)
                if config is not None:
                    self.outbound({"delete": config["name"]})
                    removed = True
            if not removed:
                error = _error(
                    "INVALID_CROSS_REFERENCE_KEY",
                    f"In field: fullName - no {type_name} named {full_name} found",
                    ["fullName"],
                )
            out.append(self._result(full_name, error))
        return "".join(out)

    def _list(self, element: ET.Element) -> str:
        wanted = set()
        for query in element:
            if _local(query.tag) == "queries":
                value = _to_value(query)
                if isinstance(value, dict):
                    wanted.add(value.get("type"))
        out = []
        now = now_string()
        if "CustomField" in wanted:
            for obj in self.schema.objects.values():
                for fdef in obj.fields.values():
                    if not fdef.custom:
                        continue
                    out.append(
                        "<result><createdById>005000000000000AAA</createdById>"
                        "<createdByName>Integration User</createdByName>"
                        f"<createdDate>{now}</createdDate>"
                        f"<fileName>objects/{obj.name}.object</fileName>"
                        f"<fullName>{escape(obj.name)}.{escape(fdef.name)}</fullName>"
                        f"<id>{escape(str(fdef.metadata.get('id', '')))}</id>"
                        "<lastModifiedById>005000000000000AAA</lastModifiedById>"
                        "<lastModifiedByName>Integration User</lastModifiedByName>"
                        f"<lastModifiedDate>{now}</lastModifiedDate>"
                        "<type>CustomField</type></result>"
                    )
        return "".join(out)

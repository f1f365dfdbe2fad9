"""Load, resolve and validate a CRM's manifest into frozen dataclasses.

``load_manifest("salesforce")`` reads ``manifests/salesforce/manifest.yaml``, replaces every
``$ref`` with the block it names under ``definitions``, validates the result with the CRM's
marshmallow schema, checks the widget source files it names, and returns a :class:`Manifest`.
Problems raise :class:`ManifestError` naming the file and the path inside it (and, for content that
came from a ``$ref``, the definition it came from).

``$ref`` rules: ``{"$ref": "#/definitions/a/b"}`` is replaced by a copy of that block; sibling keys
beside ``$ref`` override keys of a referenced mapping; a list item that is only a ``$ref`` to a list
is spliced in, so a shared block of fields can open an object's field list.
"""

from __future__ import annotations

import copy
import functools
import json
import types
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from marshmallow import ValidationError

from manifests.schema import SCHEMAS_BY_CRM

MANIFEST_DIR = Path(__file__).resolve().parent
"""Where the per-CRM folders live (``<crm>/manifest.yaml``)."""

CRMS = ("salesforce", "hubspot")
_DICT_FIELDS = frozenset({"features", "objects", "inputs", "files"})
"""Keys whose values marshmallow validates as ``Dict`` (errors come wrapped in key/value)."""
_SF_META_NS = "{http://soap.sforce.com/2006/04/metadata}"

KeyPath = tuple[str | int, ...]


class ManifestError(ValueError):
    """A manifest is malformed; ``problems`` lists ``(path, message)`` pairs, the text names the file."""

    def __init__(self, file: Path | str, problems: list[tuple[str, str]]) -> None:
        self.file = str(file)
        self.problems = problems
        details = "\n".join(f"  {path or '<document>'}: {message}" for path, message in problems)
        super().__init__(f"{self.file}: invalid manifest\n{details}")


@dataclass(frozen=True)
class PicklistValue:
    """One picklist value (Salesforce) or enumeration option (HubSpot)."""

    value: str
    label: str


@dataclass(frozen=True)
class FieldSpec:
    """A field or property Fieldwise creates and writes one result into.

    ``type`` is the CRM's own type name (Salesforce ``Number``; HubSpot ``number``). The type
    parameters that do not apply to it are None (or empty).
    """

    object_name: str
    api_name: str
    label: str
    help_text: str
    type: str
    result: str
    feature: str
    field_type: str | None = None
    """HubSpot ``fieldType`` (``number``, ``select``, ``textarea``, ...)."""
    precision: int | None = None
    scale: int | None = None
    length: int | None = None
    visible_lines: int | None = None
    values: tuple[PicklistValue, ...] = ()
    """Picklist values (Salesforce) or enumeration options (HubSpot)."""
    restricted: bool = False
    default: bool | None = None

    @property
    def is_picklist(self) -> bool:
        """Whether the field holds one of a fixed list of values."""
        return self.type in ("Picklist", "enumeration")


@dataclass(frozen=True)
class FeatureSpec:
    """A feature and the scopes it adds to the manifest's base scopes."""

    name: str
    description: str
    scopes: tuple[str, ...]


@dataclass(frozen=True)
class ObjectSpec:
    """A CRM object as Fieldwise sees it."""

    name: str
    entity: str
    inputs: Mapping[str, str | None]
    """CRM field -> canonical attribute (``custom`` for the custom map; None: bookkeeping only)."""
    fields: tuple[FieldSpec, ...]
    read_scopes: tuple[str, ...]
    write_scopes: tuple[str, ...]
    type_id: str | None = None
    """HubSpot objectTypeId (``0-1``); None for Salesforce."""
    assign_owner_field: str | None = None
    """The owner field routing writes when auto-assign is on (a standard field, never created)."""
    singular: str | None = None
    """HubSpot's singular object name (``contact``) used in webhook configs; None for Salesforce."""


@dataclass(frozen=True)
class HubSpotSubscription:
    """One HubSpot webhook subscription (generic ``object.*`` form)."""

    object_name: str
    object_type: str
    object_type_id: str
    event: str
    property_name: str | None = None

    @property
    def subscription_type(self) -> str:
        """``object.creation``, ``object.propertyChange``, ..."""
        return f"object.{self.event}"


@dataclass(frozen=True)
class SalesforceSubscription:
    """An Outbound Message or change-event relay: which object, which fields trigger and are sent."""

    kind: str
    """``outbound_message`` or ``change_event``."""
    object_name: str
    name: str
    """The outbound message's API name, or the change-event channel (``/data/LeadChangeEvent``)."""
    endpoint: str
    """Fieldwise's route that receives it."""
    fields: tuple[str, ...]
    exclude_integration_user: bool


Subscription = HubSpotSubscription | SalesforceSubscription


@dataclass(frozen=True)
class WidgetSpec:
    """An in-CRM widget and its source files (absolute paths)."""

    name: str
    kind: str
    description: str
    objects: tuple[str, ...]
    shows: tuple[str, ...]
    data_endpoint: str
    feedback_endpoint: str
    data_path: str
    files: Mapping[str, Path]
    named_credential: str | None = None
    apex_class: str | None = None


@dataclass(frozen=True)
class PermissionSetSpec:
    """A Salesforce permission set covering every owned field."""

    name: str
    label: str
    description: str
    field_access: str
    assign_to: str
    apex_classes: tuple[str, ...]
    external_credential_principals: tuple[str, ...]


@dataclass(frozen=True)
class PropertyGroupSpec:
    """The HubSpot property group owned properties are created in."""

    name: str
    label: str
    display_order: int


@dataclass(frozen=True)
class Manifest:
    """One CRM's validated manifest. Build it with :func:`load_manifest`."""

    crm: str
    version: str
    path: Path
    base_scopes: tuple[str, ...]
    features: Mapping[str, FeatureSpec]
    object_specs: Mapping[str, ObjectSpec]
    subscriptions: tuple[Subscription, ...]
    widgets: tuple[WidgetSpec, ...]
    permission_sets: tuple[PermissionSetSpec, ...] = ()
    property_group: PropertyGroupSpec | None = None
    consent_opt_out_fields: tuple[str, ...] = ()
    """Fields whose true value means the person forbade profiling or processing: such records are
    not scored, not embedded and never sent to an LLM."""
    _by_result: Mapping[tuple[str, str], FieldSpec] = field(default_factory=dict, repr=False)

    @property
    def objects(self) -> list[str]:
        """CRM object names, in manifest order."""
        return list(self.object_specs)

    @property
    def permission_set(self) -> PermissionSetSpec | None:
        """The permission set reps get (read access); None for HubSpot."""
        return next((p for p in self.permission_sets if p.assign_to == "reps"), None)

    def scopes(self, features: Iterable[str] | None = None) -> list[str]:
        """OAuth scopes for ``features`` (all when None): base scopes first, deduplicated, stable.

        Raises:
            KeyError: a feature the manifest does not define.
        """
        names = list(self.features) if features is None else list(features)
        unknown = [n for n in names if n not in self.features]
        if unknown:
            raise KeyError(
                f"unknown features {', '.join(unknown)}; expected some of {', '.join(self.features)}"
            )
        ordered = list(self.base_scopes)
        for name in self.features:  # manifest order, whatever order the caller passed
            if name in names:
                ordered.extend(self.features[name].scopes)
        return list(dict.fromkeys(ordered))

    def object(self, object_name: str) -> ObjectSpec:
        """The object's spec.

        Raises:
            KeyError: the manifest does not know the object.
        """
        try:
            return self.object_specs[object_name]
        except KeyError:
            raise KeyError(
                f"{self.crm} manifest has no object {object_name!r}; "
                f"known: {', '.join(self.object_specs)}"
            ) from None

    def owned_fields(self, object_name: str) -> list[FieldSpec]:
        """The fields Fieldwise creates and writes on ``object_name`` (empty for read-only ones)."""
        return list(self.object(object_name).fields)

    def owned_field_names(self, object_name: str) -> frozenset[str]:
        """API names of the owned fields, for dropping echoes of Fieldwise's own writes."""
        return frozenset(f.api_name for f in self.object(object_name).fields)

    def assignment_field(self, object_name: str) -> FieldSpec | None:
        """The owner field auto-assign writes on an object (result ``assign_owner``), if any.

        It is not an owned field: provisioning never creates or removes it.
        """
        owner = self.object(object_name).assign_owner_field
        if owner is None:
            return None
        return FieldSpec(
            object_name=object_name,
            api_name=owner,
            label="Owner",
            help_text="Set by Fieldwise routing when the tenant turns on auto-assign.",
            type="Lookup" if self.crm == "salesforce" else "string",
            result="assign_owner",
            feature="routing",
        )

    def writable_fields(self, object_name: str) -> list[FieldSpec]:
        """Every field write-back may write on an object: the owned ones and the owner field."""
        assignment = self.assignment_field(object_name)
        return self.owned_fields(object_name) + ([assignment] if assignment else [])

    def field_for(self, object_name: str, result: str) -> FieldSpec | None:
        """The field ``result`` is written to on ``object_name``; None where it does not apply."""
        self.object(object_name)
        return self._by_result.get((object_name, result))

    def input_fields(self, object_name: str) -> list[str]:
        """The fields/properties Fieldwise reads from ``object_name``."""
        return list(self.object(object_name).inputs)

    def input_map(self, object_name: str) -> dict[str, str | None]:
        """CRM input field -> canonical attribute it feeds (None: read only for bookkeeping)."""
        return dict(self.object(object_name).inputs)

    def canonical_entity(self, object_name: str) -> str:
        """The canonical entity (``lead``, ``opportunity``, ...) an object maps to."""
        return self.object(object_name).entity

    def objects_for_entity(self, entity: str) -> list[str]:
        """The CRM objects that map to a canonical entity (several activities map to one)."""
        return [name for name, spec in self.object_specs.items() if spec.entity == entity]

    def subscriptions_for(self, object_name: str) -> list[Subscription]:
        """The subscriptions that listen to ``object_name``."""
        self.object(object_name)
        return [s for s in self.subscriptions if s.object_name == object_name]


def manifest_path(crm: str) -> Path:
    """Where ``crm``'s manifest file lives.

    Raises:
        ValueError: ``crm`` is not a supported CRM.
    """
    if crm not in CRMS:
        raise ValueError(f"unknown CRM {crm!r}; expected one of {', '.join(CRMS)}")
    return MANIFEST_DIR / crm / "manifest.yaml"


@functools.cache
def load_manifest(crm: str) -> Manifest:
    """The validated manifest for ``crm`` (``salesforce`` or ``hubspot``), cached per process.

    Raises:
        ValueError: ``crm`` is not a supported CRM.
        ManifestError: the manifest or a widget file it names is malformed.
    """
    return load_manifest_file(manifest_path(crm), crm)


def load_manifest_file(path: Path, crm: str) -> Manifest:
    """Read and validate one manifest file (not cached; tests use it on modified copies)."""
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except OSError as exc:
        raise ManifestError(path, [("", f"cannot read: {exc.strerror or exc}")]) from None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise ManifestError(path, [(where, f"not valid YAML: {exc}")]) from None
    return build_manifest(raw, path, crm)


def build_manifest(raw: Any, path: Path, crm: str) -> Manifest:
    """Resolve, validate and freeze an already-parsed manifest document.

    ``path`` names the file in errors; widget file paths are resolved against its folder.

    Raises:
        ManifestError: naming ``path`` and the path of each problem inside it.
    """
    if not isinstance(raw, dict):
        raise ManifestError(path, [("", "the document must be a mapping")])
    resolved, origins = resolve_refs(raw, path)
    try:
        data = SCHEMAS_BY_CRM[crm]().load(resolved)
    except ValidationError as exc:
        problems: list[tuple[KeyPath, str]] = []
        _flatten(exc.messages, (), problems)
        raise ManifestError(path, [(_describe(p, origins), m) for p, m in problems]) from None
    widgets = _widgets(data, path.parent)
    file_problems: list[tuple[KeyPath, str]] = []
    for i, widget in enumerate(widgets):
        file_problems.extend(((("widgets", i, *p)), m) for p, m in _check_widget_files(widget))
    manifest = _freeze(data, path, widgets)
    file_problems.extend(_check_widget_contents(manifest))
    if file_problems:
        raise ManifestError(path, [(_describe(p, origins), m) for p, m in file_problems])
    return manifest


def resolve_refs(
    doc: dict[str, Any], file: Path | str
) -> tuple[dict[str, Any], dict[KeyPath, str]]:
    """Replace every ``$ref`` with a copy of its target; drop ``definitions``.

    Returns:
        The resolved document and, for each node copied from a definition, the path it came from.

    Raises:
        ManifestError: a ``$ref`` that is malformed, points nowhere, or refers to itself.
    """
    origins: dict[KeyPath, str] = {}

    def lookup(ref: Any, at: KeyPath) -> tuple[Any, str]:
        if not isinstance(ref, str) or not ref.startswith("#/definitions/"):
            raise ManifestError(
                file, [(_dotted(at), f"$ref {ref!r} must start with #/definitions/")]
            )
        node: Any = doc
        parts = ref[2:].split("/")
        for depth, part in enumerate(parts):
            if not isinstance(node, dict) or part not in node:
                known = ", ".join(sorted(node)) if isinstance(node, dict) else "nothing"
                where = "/".join(parts[:depth]) or "#"
                raise ManifestError(
                    file,
                    [(_dotted(at), f"$ref {ref!r}: {where} has no {part!r} (it has {known})")],
                )
            node = node[part]
        return node, ".".join(parts)

    def walk(node: Any, at: KeyPath, chain: tuple[str, ...]) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                ref = node["$ref"]
                if ref in chain:
                    cycle = " -> ".join((*chain, ref))
                    raise ManifestError(file, [(_dotted(at), f"$ref cycle: {cycle}")])
                target, source = lookup(ref, at)
                overrides = {k: v for k, v in node.items() if k != "$ref"}
                if overrides and not isinstance(target, dict):
                    raise ManifestError(
                        file,
                        [(_dotted(at), f"$ref {ref!r} has sibling keys but names a non-mapping")],
                    )
                merged = {**target, **overrides} if overrides else target
                origins[at] = source  # innermost definition wins: that is where the text lives
                return walk(copy.deepcopy(merged), at, (*chain, ref))
            return {key: walk(value, (*at, key), chain) for key, value in node.items()}
        if isinstance(node, list):
            out: list[Any] = []
            for item in node:
                if isinstance(item, dict) and set(item) == {"$ref"}:
                    ref = item["$ref"]
                    target, source = lookup(ref, (*at, len(out)))
                    if isinstance(target, list):
                        if ref in chain:
                            cycle = " -> ".join((*chain, ref))
                            raise ManifestError(
                                file, [(_dotted((*at, len(out))), f"$ref cycle: {cycle}")]
                            )
                        for j, sub in enumerate(target):
                            origins[(*at, len(out))] = f"{source}[{j}]"
                            out.append(walk(copy.deepcopy(sub), (*at, len(out)), (*chain, ref)))
                        continue
                out.append(walk(item, (*at, len(out)), chain))
            return out
        return node

    resolved = {k: walk(v, (k,), ()) for k, v in doc.items() if k != "definitions"}
    return resolved, origins


def _flatten(
    messages: Any, at: KeyPath, out: list[tuple[KeyPath, str]], in_dict: bool = False
) -> None:
    """Turn marshmallow's nested error messages into ``(path, message)`` pairs."""
    if isinstance(messages, dict):
        for key, value in messages.items():
            if in_dict and isinstance(value, dict) and value and set(value) <= {"key", "value"}:
                for part in ("key", "value"):
                    if part in value:
                        _flatten(value[part], (*at, key), out)
                continue
            sub = at if key == "_schema" else (*at, key)
            _flatten(value, sub, out, in_dict=not in_dict and key in _DICT_FIELDS)
    elif isinstance(messages, list) and all(isinstance(m, str) for m in messages):
        out.append((at, "; ".join(m.rstrip(".") for m in messages)))
    elif isinstance(messages, list):
        for item in messages:
            _flatten(item, at, out)
    else:
        out.append((at, str(messages)))


def _dotted(at: KeyPath) -> str:
    text = ""
    for part in at:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text


def _describe(at: KeyPath, origins: Mapping[KeyPath, str]) -> str:
    """The dotted path, plus the definition it came from when a ``$ref`` supplied it."""
    for cut in range(len(at), 0, -1):
        if at[:cut] in origins:
            rest = _dotted(("x", *at[cut:]))[1:]
            source = f"definitions.{origins[at[:cut]].removeprefix('definitions.')}{rest}"
            return f"{_dotted(at)} (from {source})"
    return _dotted(at)


def _widgets(data: dict[str, Any], base: Path) -> tuple[WidgetSpec, ...]:
    return tuple(
        WidgetSpec(
            name=w["name"],
            kind=w["kind"],
            description=w["description"],
            objects=tuple(w["objects"]),
            shows=tuple(w["shows"]),
            data_endpoint=w["data_endpoint"],
            feedback_endpoint=w["feedback_endpoint"],
            data_path=w["data_path"],
            files=types.MappingProxyType({r: (base / p).resolve() for r, p in w["files"].items()}),
            named_credential=w.get("named_credential"),
            apex_class=w.get("apex_class"),
        )
        for w in data["widgets"]
    )


def _freeze(data: dict[str, Any], path: Path, widgets: tuple[WidgetSpec, ...]) -> Manifest:
    objects: dict[str, ObjectSpec] = {}
    by_result: dict[tuple[str, str], FieldSpec] = {}
    for name, obj in data["objects"].items():
        specs = tuple(_field(name, f) for f in obj["fields_"])
        for spec in specs:
            by_result[(name, spec.result)] = spec
        objects[name] = ObjectSpec(
            name=name,
            entity=obj["entity"],
            inputs=types.MappingProxyType(dict(obj["inputs"])),
            fields=specs,
            read_scopes=tuple(obj["read_scopes"]),
            write_scopes=tuple(obj["write_scopes"]),
            type_id=obj.get("type_id"),
            singular=obj.get("singular"),
            assign_owner_field=obj.get("assign_owner_field"),
        )
    subscriptions: list[Subscription] = []
    for sub in data["subscriptions"]:
        if data["crm"] == "hubspot":
            obj = objects[sub["object"]]
            assert obj.type_id is not None and obj.singular is not None  # schema requires both
            base = (obj.name, obj.singular, obj.type_id)
            subscriptions.extend(HubSpotSubscription(*base, event) for event in sub["events"])
            subscriptions.extend(
                HubSpotSubscription(*base, "propertyChange", prop)
                for prop in sub["property_changes"]
            )
        else:
            subscriptions.append(
                SalesforceSubscription(
                    kind=sub["kind"],
                    object_name=sub["object"],
                    name=sub["name"],
                    endpoint=sub["endpoint"],
                    fields=tuple(sub["fields_"]),
                    exclude_integration_user=sub["exclude_integration_user"],
                )
            )
    group = data.get("property_group")
    return Manifest(
        crm=data["crm"],
        version=data["version"],
        path=path,
        base_scopes=tuple(data["base_scopes"]),
        consent_opt_out_fields=tuple(data["consent_opt_out_fields"]),
        features=types.MappingProxyType(
            {
                name: FeatureSpec(name, f["description"], tuple(f["scopes"]))
                for name, f in data["features"].items()
            }
        ),
        object_specs=types.MappingProxyType(objects),
        subscriptions=tuple(subscriptions),
        widgets=widgets,
        permission_sets=tuple(
            PermissionSetSpec(
                name=p["name"],
                label=p["label"],
                description=p["description"],
                field_access=p["field_access"],
                assign_to=p["assign_to"],
                apex_classes=tuple(p["apex_classes"]),
                external_credential_principals=tuple(p["external_credential_principals"]),
            )
            for p in data.get("permission_sets", [])
        ),
        property_group=PropertyGroupSpec(group["name"], group["label"], group["display_order"])
        if group
        else None,
        _by_result=types.MappingProxyType(by_result),
    )


def _field(object_name: str, f: dict[str, Any]) -> FieldSpec:
    values = f.get("values", f.get("options", []))
    return FieldSpec(
        object_name=object_name,
        api_name=f["api_name"],
        label=f["label"],
        help_text=f["help_text"],
        type=f["type"],
        result=f["result"],
        feature=f["feature"],
        field_type=f.get("field_type"),
        precision=f.get("precision"),
        scale=f.get("scale"),
        length=f.get("length"),
        visible_lines=f.get("visible_lines"),
        values=tuple(PicklistValue(v["value"], v["label"]) for v in values),
        restricted=f.get("restricted", False),
        default=f.get("default"),
    )


def _check_widget_files(widget: WidgetSpec) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    for role, file in widget.files.items():
        if not file.is_file():
            problems.append((("files", role), f"{file} does not exist"))
        elif file.stat().st_size == 0:
            problems.append((("files", role), f"{file} is empty"))
    return problems


def _check_widget_contents(manifest: Manifest) -> list[tuple[KeyPath, str]]:
    """Cross-check widget sources against the manifest so the two cannot drift apart."""
    problems: list[tuple[KeyPath, str]] = []
    for i, widget in enumerate(manifest.widgets):
        if any(not f.is_file() for f in widget.files.values()):
            continue  # already reported as missing
        checker = _check_hubspot_card if widget.kind == "hubspot_app_card" else _check_lwc
        problems.extend((("widgets", i, *p), m) for p, m in checker(widget, manifest))
    return problems


def _read_json(file: Path, role: str) -> tuple[Any, list[tuple[KeyPath, str]]]:
    try:
        return json.loads(file.read_text(encoding="utf-8")), []
    except json.JSONDecodeError as exc:
        return None, [(("files", role), f"{file.name} is not valid JSON: {exc}")]


def _mentions(widget: WidgetSpec, role: str, needles: Iterable[str]) -> list[tuple[KeyPath, str]]:
    text = widget.files[role].read_text(encoding="utf-8")
    return [
        (("files", role), f"{widget.files[role].name} never mentions {needle!r}")
        for needle in needles
        if needle not in text
    ]


def _check_hubspot_card(widget: WidgetSpec, manifest: Manifest) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    project, errs = _read_json(widget.files["project"], "project")
    problems += errs
    if isinstance(project, dict):
        src = widget.files["project"].parent / str(project.get("srcDir", ""))
        if not project.get("srcDir") or not src.is_dir():
            problems.append((("files", "project"), "srcDir must name an existing folder"))
    app, errs = _read_json(widget.files["app_config"], "app_config")
    problems += errs
    if isinstance(app, dict):
        declared = app.get("config", {}).get("auth", {}).get("requiredScopes", [])
        needed = manifest.scopes()
        missing = [s for s in needed if s not in declared]
        extra = [s for s in declared if s not in needed]
        if missing or extra:
            problems.append(
                (
                    ("files", "app_config"),
                    "config.auth.requiredScopes must equal the manifest's scopes()"
                    + (f"; missing {', '.join(missing)}" if missing else "")
                    + (f"; not needed {', '.join(extra)}" if extra else ""),
                )
            )
    card, errs = _read_json(widget.files["card_config"], "card_config")
    problems += errs
    if isinstance(card, dict):
        config = card.get("config", {})
        if sorted(config.get("objectTypes", [])) != sorted(widget.objects):
            problems.append(
                (("files", "card_config"), f"config.objectTypes must be {list(widget.objects)}")
            )
        entry = str(config.get("entrypoint", ""))
        app_root = widget.files["app_config"].parent.parent  # src/app/app-hsmeta.json -> src
        if (app_root / entry.lstrip("/")).resolve() != widget.files["card_component"]:
            problems.append(
                (("files", "card_config"), f"config.entrypoint {entry!r} is not the card component")
            )
    problems += _mentions(
        widget, "card_component", ("hubspot.fetch", widget.data_endpoint, widget.feedback_endpoint)
    )
    return problems


def _check_lwc(widget: WidgetSpec, manifest: Manifest) -> list[tuple[KeyPath, str]]:
    problems: list[tuple[KeyPath, str]] = []
    meta = widget.files["component_meta"]
    try:
        root = ET.parse(meta).getroot()
    except ET.ParseError as exc:
        return [(("files", "component_meta"), f"{meta.name} is not well-formed XML: {exc}")]
    targets = {t.text for t in root.iter(f"{_SF_META_NS}target")}
    if "lightning__RecordPage" not in targets:
        problems.append((("files", "component_meta"), "must target lightning__RecordPage"))
    objects = sorted(o.text or "" for o in root.iter(f"{_SF_META_NS}object"))
    if objects != sorted(widget.objects):
        problems.append(
            (("files", "component_meta"), f"targetConfig objects must be {list(widget.objects)}")
        )
    if (root.findtext(f"{_SF_META_NS}isExposed") or "").strip() != "true":
        problems.append((("files", "component_meta"), "isExposed must be true"))
    problems += _mentions(
        widget,
        "apex_class",
        (
            f"class {widget.apex_class}",
            f"callout:{widget.named_credential}",
            widget.data_endpoint,
            widget.feedback_endpoint,
        ),
    )
    problems += _mentions(widget, "component_js", (f"@salesforce/apex/{widget.apex_class}.",))
    return problems

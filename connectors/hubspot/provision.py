"""Install and uninstall what the HubSpot manifest declares, with a dry run that is the real plan.

What Fieldwise creates, all read from :func:`manifests.loader.load_manifest`:

* per portal: the property group and every owned property on each object (properties API);
* per app: the webhook target ``{public_url}/webhooks/hubspot`` and the subscriptions (webhooks API,
  with the developer API key). HubSpot keeps webhooks per app, not per portal, so they serve every
  portal the app is installed in: install completes them, uninstall removes them only when no other
  HubSpot portal still has Fieldwise installed;
* the record app card: a UI extension HubSpot deploys from the project in
  ``manifests/hubspot/app-project`` (``hs project upload``); there is no API to register it (the
  classic CRM cards API is deprecated), so the plan lists it as kept, with how it gets there.

:meth:`Provisioner.plan` reads the portal and lists one :class:`~connectors.base.PlanItem` per
thing: ``create`` what is missing, ``update`` what differs (label, help text, options, type, group),
``keep`` what matches. :meth:`Provisioner.install` computes the same plan and carries out exactly its
changes, so a dry run shows what an install does, a second install is all ``keep``, and an install
cut short is completed by the next one.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from hubspot.crm.properties import (
    OptionInput,
    PropertyCreate,
    PropertyGroupCreate,
    PropertyGroupUpdate,
    PropertyUpdate,
)
from hubspot.webhooks import (
    SettingsChangeRequest,
    SubscriptionCreateRequest,
    SubscriptionPatchRequest,
    ThrottlingSettings,
)

from connectors.base import InstallPlan, PlanItem, SkippableError
from core.config import Config
from manifests.loader import FieldSpec, HubSpotSubscription, Manifest

if TYPE_CHECKING:
    from connectors.hubspot.client import HubSpotApi

WEBHOOK_PATH = "/webhooks/hubspot"
"""Fieldwise's route for HubSpot webhook batches."""
MAX_CONCURRENT_REQUESTS = 10
"""Webhook deliveries HubSpot may have in flight to Fieldwise at once (HubSpot allows 5 to 100)."""
CARD_DEPLOYMENT = (
    "App card (UI extension) built from manifests/hubspot/app-project and deployed with the HubSpot "
    "CLI (`hs project upload`): HubSpot has no API to register app cards, and the classic CRM cards "
    "API they replace is deprecated. It shows in every portal that installs the app."
)


@dataclass
class _Step:
    """A plan item and, when it changes something, the call that does it."""

    item: PlanItem
    apply: Callable[[], None] | None = None


class Provisioner:
    """Plans and applies the manifest against one portal.

    Args:
        api: the portal's API (properties with its OAuth token, webhooks with the developer key).
        manifest: the HubSpot manifest.
        config: for the public URL webhooks are sent to.
        other_installs: whether another HubSpot portal has Fieldwise installed (app-level webhooks
            must then stay on uninstall); asked lazily.
    """

    def __init__(
        self,
        api: HubSpotApi,
        manifest: Manifest,
        config: Config,
        other_installs: Callable[[], bool] | None = None,
    ) -> None:
        self.api = api
        self.manifest = manifest
        self.config = config
        self._other_installs = other_installs or (lambda: False)

    # -- public ------------------------------------------------------------------------------

    def plan(self) -> InstallPlan:
        """What installing would do; changes nothing."""
        return self._plan_of(self._install_steps(), applied=False)

    def install(self) -> InstallPlan:
        """Carry out the install plan; returns it with ``applied`` set."""
        steps = self._install_steps()
        for step in steps:
            if step.apply is not None:
                step.apply()
        return self._plan_of(steps, applied=True)

    def uninstall(self, keep_data_fields: bool = False) -> InstallPlan:
        """Remove what Fieldwise created in the portal (and the app's webhooks, when last).

        Args:
            keep_data_fields: keep the properties (and their group) with the values written, for
                an admin who wants the history after Fieldwise is gone.
        """
        steps = self._uninstall_steps(keep_data_fields)
        for step in steps:
            if step.apply is not None:
                step.apply()
        return self._plan_of(steps, applied=True)

    # -- install -----------------------------------------------------------------------------

    def _install_steps(self) -> list[_Step]:
        steps: list[_Step] = []
        for object_type in self._owning_objects():
            steps.append(self._group_step(object_type))
            existing = self._properties(object_type)
            for spec in self.manifest.owned_fields(object_type):
                steps.append(self._property_step(object_type, spec, existing.get(spec.api_name)))
        steps.append(self._settings_step())
        current = self._subscriptions()
        for sub in self.manifest.subscriptions:
            assert isinstance(sub, HubSpotSubscription)
            steps.append(self._subscription_step(sub, current.get(_sub_key(sub))))
        steps.extend(self._widget_steps("Deployed with the app, not by this install."))
        return steps

    def _group_step(self, object_type: str) -> _Step:
        group = self.manifest.property_group
        assert group is not None, "the HubSpot manifest declares a property group"
        target = f"{object_type}.group:{group.name}"
        existing = self._groups(object_type).get(group.name)
        if existing is None:
            body = PropertyGroupCreate(
                name=group.name, label=group.label, display_order=group.display_order
            )
            return _Step(
                PlanItem("property_group", target, "create", group.label),
                lambda: self._create(
                    f"property group creation on {object_type}",
                    lambda hs: hs.crm.properties.groups_api.create(
                        object_type, body, _preload_content=False
                    ),
                ),
            )
        if (existing.get("label"), existing.get("displayOrder")) == (
            group.label,
            group.display_order,
        ):
            return _Step(PlanItem("property_group", target, "keep", group.label))
        update = PropertyGroupUpdate(label=group.label, display_order=group.display_order)
        return _Step(
            PlanItem("property_group", target, "update", f"label/order -> {group.label}"),
            lambda: self._oauth(
                f"property group update on {object_type}",
                lambda hs: hs.crm.properties.groups_api.update(
                    object_type, group.name, update, _preload_content=False
                ),
            ),
        )

    def _property_step(
        self, object_type: str, spec: FieldSpec, existing: Mapping[str, Any] | None
    ) -> _Step:
        target = f"{object_type}.{spec.api_name}"
        wanted = self._definition(spec)
        if existing is None:
            body = PropertyCreate(name=spec.api_name, **_model_args(wanted))
            return _Step(
                PlanItem(
                    "field", target, "create", f"{spec.label} ({spec.type}/{spec.field_type})"
                ),
                lambda: self._create(
                    f"creation of property {spec.api_name} on {object_type}",
                    lambda hs: hs.crm.properties.core_api.create(
                        object_type, body, _preload_content=False
                    ),
                ),
            )
        differences = _differences(wanted, existing)
        if not differences:
            return _Step(PlanItem("field", target, "keep", spec.label))
        update = PropertyUpdate(**_model_args(wanted))
        return _Step(
            PlanItem("field", target, "update", f"differs in {', '.join(differences)}"),
            lambda: self._oauth(
                f"update of property {spec.api_name} on {object_type}",
                lambda hs: hs.crm.properties.core_api.update(
                    object_type, spec.api_name, update, _preload_content=False
                ),
            ),
        )

    def _settings_step(self) -> _Step:
        target_url = self.config.public_url.rstrip("/") + WEBHOOK_PATH
        current = self._settings()
        item_target = "webhooks.targetUrl"
        body = SettingsChangeRequest(
            target_url=target_url,
            throttling=ThrottlingSettings(max_concurrent_requests=MAX_CONCURRENT_REQUESTS),
        )

        def configure() -> None:
            self._developer(
                "webhook settings",
                lambda hs: hs.webhooks.settings_api.configure(
                    int(self.api.app_id), body, _preload_content=False
                ),
            )

        if current is None:
            return _Step(PlanItem("setting", item_target, "create", target_url), configure)
        throttling = current.get("throttling") or {}
        if (current.get("targetUrl"), throttling.get("maxConcurrentRequests")) == (
            target_url,
            MAX_CONCURRENT_REQUESTS,
        ):
            return _Step(PlanItem("setting", item_target, "keep", target_url))
        return _Step(
            PlanItem(
                "setting", item_target, "update", f"{current.get('targetUrl')} -> {target_url}"
            ),
            configure,
        )

    def _subscription_step(
        self, sub: HubSpotSubscription, existing: Mapping[str, Any] | None
    ) -> _Step:
        target = _sub_target(sub)
        app_id = int(self.api.app_id)
        if existing is None:
            body = SubscriptionCreateRequest(
                event_type=sub.subscription_type,
                object_type_id=sub.object_type_id,
                property_name=sub.property_name,
                active=True,
            )
            return _Step(
                PlanItem("subscription", target, "create"),
                lambda: self._developer(
                    f"subscription {target}",
                    lambda hs: hs.webhooks.subscriptions_api.create(
                        app_id, body, _preload_content=False
                    ),
                ),
            )
        if existing.get("active"):
            return _Step(PlanItem("subscription", target, "keep"))
        sub_id = int(existing["id"])
        return _Step(
            PlanItem("subscription", target, "update", "paused -> active"),
            lambda: self._developer(
                f"subscription {target}",
                lambda hs: hs.webhooks.subscriptions_api.update(
                    sub_id, app_id, SubscriptionPatchRequest(active=True), _preload_content=False
                ),
            ),
        )

    def _widget_steps(self, when: str) -> list[_Step]:
        return [
            _Step(
                PlanItem(
                    "widget",
                    f"{widget.name} ({', '.join(widget.objects)})",
                    "keep",
                    f"{CARD_DEPLOYMENT} {when}",
                )
            )
            for widget in self.manifest.widgets
        ]

    # -- uninstall ---------------------------------------------------------------------------

    def _uninstall_steps(self, keep_data_fields: bool) -> list[_Step]:
        steps: list[_Step] = []
        app_id = int(self.api.app_id)
        shared = self._other_installs()
        current = self._subscriptions()
        for sub in self.manifest.subscriptions:
            assert isinstance(sub, HubSpotSubscription)
            existing = current.get(_sub_key(sub))
            if existing is None:
                continue
            target = _sub_target(sub)
            if shared:
                steps.append(
                    _Step(PlanItem("subscription", target, "keep", "other portals still use it"))
                )
                continue
            steps.append(
                _Step(
                    PlanItem("subscription", target, "delete"),
                    self._archive_subscription(int(existing["id"]), target),
                )
            )
        settings = self._settings()
        if settings is not None:
            target_url = self.config.public_url.rstrip("/") + WEBHOOK_PATH
            if shared or settings.get("targetUrl") != target_url:
                reason = "other portals still use it" if shared else "not Fieldwise's target"
                steps.append(_Step(PlanItem("setting", "webhooks.targetUrl", "keep", reason)))
            else:
                steps.append(
                    _Step(
                        PlanItem("setting", "webhooks.targetUrl", "delete", target_url),
                        lambda: self._developer(
                            "removal of webhook settings",
                            lambda hs: hs.webhooks.settings_api.clear(
                                app_id, _preload_content=False
                            ),
                        ),
                    )
                )
        group = self.manifest.property_group
        assert group is not None
        for object_type in self._owning_objects():
            existing = self._properties(object_type)
            for spec in self.manifest.owned_fields(object_type):
                if spec.api_name not in existing:
                    continue
                target = f"{object_type}.{spec.api_name}"
                if keep_data_fields:
                    steps.append(_Step(PlanItem("field", target, "keep", "kept with its values")))
                    continue
                steps.append(
                    _Step(
                        PlanItem("field", target, "delete", spec.label),
                        self._archive_property(object_type, spec.api_name),
                    )
                )
            if group.name in self._groups(object_type):
                target = f"{object_type}.group:{group.name}"
                foreign = sorted(
                    name
                    for name, p in existing.items()
                    if p.get("groupName") == group.name
                    and name not in self.manifest.owned_field_names(object_type)
                )
                if keep_data_fields or foreign:
                    why = (
                        "holds kept properties"
                        if keep_data_fields
                        else (f"holds properties Fieldwise did not create: {', '.join(foreign)}")
                    )
                    steps.append(_Step(PlanItem("property_group", target, "keep", why)))
                    continue
                steps.append(
                    _Step(
                        PlanItem("property_group", target, "delete", group.label),
                        self._archive_group(object_type, group.name),
                    )
                )
        steps.extend(self._widget_steps("Removed when an admin uninstalls the app in HubSpot."))
        return steps

    def _archive_subscription(self, sub_id: int, target: str) -> Callable[[], None]:
        app_id = int(self.api.app_id)
        return lambda: self._developer(
            f"removal of subscription {target}",
            lambda hs: hs.webhooks.subscriptions_api.archive(
                sub_id, app_id, _preload_content=False
            ),
        )

    def _archive_property(self, object_type: str, name: str) -> Callable[[], None]:
        return lambda: self._oauth(
            f"removal of property {name} on {object_type}",
            lambda hs: hs.crm.properties.core_api.archive(
                object_type, name, _preload_content=False
            ),
        )

    def _archive_group(self, object_type: str, name: str) -> Callable[[], None]:
        return lambda: self._oauth(
            f"removal of property group {name} on {object_type}",
            lambda hs: hs.crm.properties.groups_api.archive(
                object_type, name, _preload_content=False
            ),
        )

    # -- reads -------------------------------------------------------------------------------

    def _owning_objects(self) -> list[str]:
        return [o for o in self.manifest.objects if self.manifest.owned_fields(o)]

    def _properties(self, object_type: str) -> dict[str, dict[str, Any]]:
        data = self.api.call_json(
            f"property list of {object_type}",
            lambda hs: hs.crm.properties.core_api.get_all(
                object_type, archived=False, _preload_content=False
            ),
        )
        return {p["name"]: p for p in data.get("results", [])}

    def _groups(self, object_type: str) -> dict[str, dict[str, Any]]:
        data = self.api.call_json(
            f"property group list of {object_type}",
            lambda hs: hs.crm.properties.groups_api.get_all(object_type, _preload_content=False),
        )
        return {g["name"]: g for g in data.get("results", []) if not g.get("archived")}

    def _settings(self) -> dict[str, Any] | None:
        try:
            data = self.api.developer_call_json(
                "webhook settings lookup",
                lambda hs: hs.webhooks.settings_api.get_all(
                    int(self.api.app_id), _preload_content=False
                ),
            )
        except SkippableError:
            # 404: the app has no webhook settings yet.
            return None
        return data or None

    def _subscriptions(self) -> dict[tuple[str, str | None, str | None], dict[str, Any]]:
        data = self.api.developer_call_json(
            "webhook subscription list",
            lambda hs: hs.webhooks.subscriptions_api.get_all(
                int(self.api.app_id), _preload_content=False
            ),
        )
        found: dict[tuple[str, str | None, str | None], dict[str, Any]] = {}
        for sub in data.get("results", []):
            key = (str(sub["eventType"]), sub.get("propertyName"), sub.get("objectTypeId"))
            found[key] = sub
        return found

    # -- writes ------------------------------------------------------------------------------

    def _definition(self, spec: FieldSpec) -> dict[str, Any]:
        group = self.manifest.property_group
        assert group is not None
        return {
            "label": spec.label,
            "description": spec.help_text,
            "groupName": group.name,
            "type": spec.type,
            "fieldType": spec.field_type or _default_field_type(spec.type),
            "options": [
                {"label": v.label, "value": v.value, "displayOrder": i, "hidden": False}
                for i, v in enumerate(spec.values)
            ],
        }

    def _create(self, operation: str, request: Callable[[Any], Any]) -> None:
        try:
            self._oauth(operation, request)
        except SkippableError as exc:
            # 409: created by a concurrent install since the plan was read; nothing left to do.
            if exc.status != 409:
                raise

    def _oauth(self, operation: str, request: Callable[[Any], Any]) -> None:
        self.api.call_json(operation, request)

    def _developer(self, operation: str, request: Callable[[Any], Any]) -> None:
        self.api.developer_call_json(operation, request)

    def _plan_of(self, steps: list[_Step], applied: bool) -> InstallPlan:
        return InstallPlan(
            crm="hubspot",
            tenant_id=self.api.tenant_id,
            manifest_version=self.manifest.version,
            items=[step.item for step in steps],
            applied=applied,
        )


def _sub_key(sub: HubSpotSubscription) -> tuple[str, str | None, str | None]:
    return (sub.subscription_type, sub.property_name, sub.object_type_id)


def _sub_target(sub: HubSpotSubscription) -> str:
    base = f"{sub.object_type}.{sub.event}"
    return f"{base}:{sub.property_name}" if sub.property_name else base


def _default_field_type(hubspot_type: str) -> str:
    return {
        "number": "number",
        "enumeration": "select",
        "datetime": "date",
        "date": "date",
        "bool": "booleancheckbox",
    }.get(hubspot_type, "text")


def _differences(wanted: Mapping[str, Any], existing: Mapping[str, Any]) -> list[str]:
    """Which of label, help text, group, type, field type and options differ."""
    names = {"description": "help text", "groupName": "group", "fieldType": "field type"}
    out = [
        names.get(key, key)
        for key in ("label", "description", "groupName", "type", "fieldType")
        if str(existing.get(key) or "") != str(wanted[key] or "")
    ]
    have = [(o.get("value"), o.get("label")) for o in existing.get("options") or []]
    want = [(o["value"], o["label"]) for o in wanted["options"]]
    if have != want:
        out.append("options")
    return out


def _model_args(definition: Mapping[str, Any]) -> dict[str, Any]:
    """Keyword arguments of ``PropertyCreate``/``PropertyUpdate`` for a wire definition.

    ``fieldType: html`` (rich text) is outside the library's enum, but its client-side validation
    is off by default, so the value goes through as the API expects it.
    """
    return {
        "label": definition["label"],
        "description": definition["description"],
        "group_name": definition["groupName"],
        "type": definition["type"],
        "field_type": definition["fieldType"],
        "options": [
            OptionInput(
                label=o["label"], value=o["value"], display_order=o["displayOrder"], hidden=False
            )
            for o in definition["options"]
        ],
    }

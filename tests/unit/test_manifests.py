from __future__ import annotations

import copy
import json
import shutil
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml

from manifests.loader import (
    HubSpotSubscription,
    Manifest,
    ManifestError,
    SalesforceSubscription,
    build_manifest,
    load_manifest,
    manifest_path,
)
from manifests.schema import (
    RESULTS,
    SALESFORCE_ECHO_FIELDS,
    hubspot_name_problem,
    salesforce_api_name_problem,
)

CRMS = ("salesforce", "hubspot")

EXPECTED_RESULTS: dict[str, dict[str, set[str]]] = {
    "salesforce": {
        "Lead": {
            "score",
            "grade",
            "reasons",
            "score_changed_at",
            "suggested_owner",
            "match_reason",
            "segment",
            "next_step",
            "followup_draft",
            "model_version",
        },
        "Contact": {
            "score",
            "grade",
            "reasons",
            "score_changed_at",
            "segment",
            "next_step",
            "followup_draft",
            "model_version",
        },
        "Account": {"segment"},
        "Opportunity": {
            "score",
            "grade",
            "reasons",
            "score_changed_at",
            "battle_card",
            "forecast_note",
            "risk_flags",
            "next_step",
            "followup_draft",
            "model_version",
        },
    },
    "hubspot": {
        "contacts": {
            "score",
            "grade",
            "reasons",
            "score_changed_at",
            "suggested_owner",
            "match_reason",
            "segment",
            "next_step",
            "followup_draft",
            "model_version",
        },
        "companies": {"segment"},
        "deals": {
            "score",
            "grade",
            "reasons",
            "score_changed_at",
            "battle_card",
            "forecast_note",
            "risk_flags",
            "next_step",
            "followup_draft",
            "model_version",
        },
    },
}


def raw_manifest(crm: str) -> dict[str, Any]:
    return yaml.safe_load(manifest_path(crm).read_text(encoding="utf-8"))


def load_modified(crm: str, mutate: Callable[[dict[str, Any]], None]) -> Manifest:
    raw = copy.deepcopy(raw_manifest(crm))
    mutate(raw)
    return build_manifest(raw, manifest_path(crm), crm)


def error_of(crm: str, mutate: Callable[[dict[str, Any]], None]) -> str:
    with pytest.raises(ManifestError) as info:
        load_modified(crm, mutate)
    assert str(manifest_path(crm)) in str(info.value)
    return str(info.value)


# --- both manifests load --------------------------------------------------------------------


@pytest.mark.parametrize("crm", CRMS)
def test_manifest_loads_validates_and_is_cached(crm: str) -> None:
    m = load_manifest(crm)
    assert isinstance(m, Manifest)
    assert m.crm == crm
    assert m.version == "2026.11.1"
    assert load_manifest(crm) is m
    assert set(EXPECTED_RESULTS[crm]) <= set(m.objects)


def test_unknown_crm_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown CRM 'pipedrive'"):
        load_manifest("pipedrive")


@pytest.mark.parametrize("crm", CRMS)
def test_every_writeback_result_maps_to_exactly_one_field_where_it_applies(crm: str) -> None:
    m = load_manifest(crm)
    used: set[str] = set()
    for obj in m.objects:
        fields = m.owned_fields(obj)
        results = [f.result for f in fields]
        assert len(results) == len(set(results)), f"{obj} maps a result twice"
        assert set(results) == EXPECTED_RESULTS[crm].get(obj, set())
        for result in RESULTS:
            spec = m.field_for(obj, result)
            if result in results:
                assert spec is not None and spec.result == result and spec.object_name == obj
            else:
                assert spec is None
        used |= set(results)
    assert used == set(RESULTS)


@pytest.mark.parametrize("crm", CRMS)
def test_api_names_follow_crm_rules(crm: str) -> None:
    m = load_manifest(crm)
    check = salesforce_api_name_problem if crm == "salesforce" else hubspot_name_problem
    names = [f.api_name for obj in m.objects for f in m.owned_fields(obj)]
    assert names
    for name in names:
        assert check(name) is None, name
        if crm == "salesforce":
            assert name.startswith("Fieldwise_AI_")
        else:
            assert name.startswith("fieldwise_ai_")


@pytest.mark.parametrize(
    "name",
    [
        "Fieldwise_AI_Score",  # no suffix
        "Fieldwise__AI_Score__c",  # double underscore inside
        "Fieldwise_AI_Score___c",  # trailing underscore before suffix
        "1Fieldwise_Score__c",  # starts with a digit
        "Fieldwise-Score__c",  # hyphen
        "F" * 41 + "__c",  # 41 characters before the suffix
    ],
)
def test_salesforce_name_rule_rejects_bad_names(name: str) -> None:
    assert salesforce_api_name_problem(name) is not None
    assert salesforce_api_name_problem("F" * 40 + "__c") is None


@pytest.mark.parametrize(
    "name", ["Fieldwise_ai_score", "hs_ai_score", "fieldwise-ai-score", "9score", "a" * 101]
)
def test_hubspot_name_rule_rejects_bad_names(name: str) -> None:
    assert hubspot_name_problem(name) is not None
    assert hubspot_name_problem("a" * 100) is None


@pytest.mark.parametrize("crm", CRMS)
def test_picklists_have_values_and_every_field_has_help_text_and_label(crm: str) -> None:
    m = load_manifest(crm)
    grade_fields = [m.field_for(obj, "grade") for obj in m.objects if m.field_for(obj, "grade")]
    assert grade_fields
    for obj in m.objects:
        for spec in m.owned_fields(obj):
            assert spec.help_text.strip() and spec.label.strip()
            assert not any(word in spec.help_text.lower() for word in ("todo", "lorem"))
            if spec.is_picklist:
                assert spec.values
    for spec in grade_fields:
        assert spec is not None
        assert [v.value for v in spec.values] == ["Hot", "Warm", "Cold"]


def test_salesforce_field_types_carry_their_parameters() -> None:
    m = load_manifest("salesforce")
    score = m.field_for("Opportunity", "score")
    assert score is not None and (score.type, score.precision, score.scale) == ("Number", 3, 0)
    card = m.field_for("Opportunity", "battle_card")
    assert card is not None and card.type == "Html" and card.length and card.visible_lines
    reasons = m.field_for("Lead", "reasons")
    assert reasons is not None and reasons.type == "LongTextArea" and reasons.visible_lines
    changed = m.field_for("Lead", "score_changed_at")
    assert changed is not None and changed.type == "DateTime"


def test_hubspot_properties_use_valid_type_pairs_and_the_group() -> None:
    m = load_manifest("hubspot")
    pairs = {
        "score": ("number", "number"),
        "grade": ("enumeration", "select"),
        "reasons": ("string", "textarea"),
        "score_changed_at": ("datetime", "date"),
        "battle_card": ("string", "html"),
        "next_step": ("string", "text"),
    }
    for result, pair in pairs.items():
        spec = m.field_for("deals", result)
        assert spec is not None and (spec.type, spec.field_type) == pair
    assert m.property_group is not None
    assert (m.property_group.name, m.property_group.label) == ("fieldwise", "Fieldwise AI")
    assert m.permission_set is None and m.permission_sets == ()


def test_salesforce_permission_sets_split_read_for_reps_and_edit_for_integration() -> None:
    m = load_manifest("salesforce")
    assert m.property_group is None
    assert m.permission_set is not None
    assert (m.permission_set.name, m.permission_set.field_access) == ("Fieldwise_AI_Fields", "read")
    editors = [p for p in m.permission_sets if p.assign_to == "integration_user"]
    assert [p.field_access for p in editors] == ["edit"]
    assert "FieldwiseCardController" in m.permission_set.apex_classes


def test_shared_block_override_changes_only_that_object() -> None:
    sf = load_manifest("salesforce")
    lead_step, opp_step = (
        sf.field_for("Lead", "next_step"),
        sf.field_for("Opportunity", "next_step"),
    )
    assert lead_step is not None and opp_step is not None
    assert (lead_step.feature, opp_step.feature) == ("scoring", "forecast_notes")
    assert lead_step.api_name == opp_step.api_name == "Fieldwise_AI_Next_Step__c"
    lead_score, opp_score = sf.field_for("Lead", "score"), sf.field_for("Opportunity", "score")
    assert lead_score is not None and opp_score is not None
    assert lead_score.api_name == opp_score.api_name and lead_score.object_name == "Lead"


@pytest.mark.parametrize(
    ("crm", "expected"),
    [
        (
            "salesforce",
            {"Lead": "lead", "Contact": "contact", "Account": "account", "Opportunity": "opportunity",
             "Task": "activity", "Event": "activity", "Note": "note", "User": "user"},
        ),
        (
            "hubspot",
            {"contacts": "lead", "companies": "account", "deals": "opportunity", "notes": "note",
             "calls": "activity", "owners": "user"},
        ),
    ],
)  # fmt: skip
def test_canonical_entity_maps_crm_objects(crm: str, expected: dict[str, str]) -> None:
    m = load_manifest(crm)
    for obj, entity in expected.items():
        assert m.canonical_entity(obj) == entity
    with pytest.raises(KeyError, match="no object 'Widget'"):
        m.canonical_entity("Widget")


def test_input_fields_are_read_and_never_owned() -> None:
    for crm in CRMS:
        m = load_manifest(crm)
        for obj in m.objects:
            inputs = m.input_fields(obj)
            assert inputs
            assert not set(inputs) & m.owned_field_names(obj)
    assert "StageName" in load_manifest("salesforce").input_fields("Opportunity")
    assert load_manifest("hubspot").input_map("contacts")["firstname"] == "first_name"


# --- subscriptions ------------------------------------------------------------------------------


def test_no_subscription_listens_to_an_owned_field() -> None:
    hs = load_manifest("hubspot")
    assert hs.subscriptions
    for sub in hs.subscriptions:
        assert isinstance(sub, HubSpotSubscription)
        if sub.property_name is not None:
            assert sub.property_name not in hs.owned_field_names(sub.object_name)
            assert sub.property_name in hs.input_fields(sub.object_name)
    sf = load_manifest("salesforce")
    assert sf.subscriptions
    for sf_sub in sf.subscriptions:
        assert isinstance(sf_sub, SalesforceSubscription)
        assert not set(sf_sub.fields) & sf.owned_field_names(sf_sub.object_name)
        assert not set(sf_sub.fields) & SALESFORCE_ECHO_FIELDS
        assert set(sf_sub.fields) <= set(sf.input_fields(sf_sub.object_name))
        assert sf_sub.exclude_integration_user


def test_hubspot_subscriptions_cover_lifecycle_associations_and_engagements() -> None:
    hs = load_manifest("hubspot")
    kinds = {(s.object_name, s.subscription_type) for s in hs.subscriptions}
    for obj in ("contacts", "companies", "deals"):
        for event in ("creation", "deletion", "merge", "associationChange"):
            assert (obj, f"object.{event}") in kinds
    for obj in ("notes", "calls", "emails", "meetings", "tasks"):
        assert (obj, "object.creation") in kinds
    changes = {s.property_name for s in hs.subscriptions_for("deals") if s.property_name}
    assert {"dealstage", "amount", "closedate"} <= changes
    contact = next(s for s in hs.subscriptions if s.object_name == "contacts")
    assert (contact.object_type, contact.object_type_id) == ("contact", "0-1")


def test_salesforce_offers_outbound_messages_and_change_events_for_the_same_fields() -> None:
    sf = load_manifest("salesforce")
    by_kind: dict[str, dict[str, tuple[str, ...]]] = {}
    for sub in sf.subscriptions:
        assert isinstance(sub, SalesforceSubscription)
        by_kind.setdefault(sub.kind, {})[sub.object_name] = sub.fields
    assert by_kind["outbound_message"] == by_kind["change_event"]
    assert {"Lead", "Contact", "Account", "Opportunity"} <= set(by_kind["change_event"])


def _subscribe_hubspot_to_owned(raw: dict[str, Any]) -> None:
    raw["subscriptions"][0]["property_changes"].append("fieldwise_ai_score")


def _subscribe_salesforce_to_owned(raw: dict[str, Any]) -> None:
    raw["subscriptions"][0]["fields"] = ["FirstName", "Fieldwise_AI_Grade__c"]


def test_subscription_to_owned_field_is_rejected_naming_the_field() -> None:
    message = error_of("hubspot", _subscribe_hubspot_to_owned)
    assert "contacts.fieldwise_ai_score is a field Fieldwise writes" in message
    assert "subscriptions[0].property_changes[17]" in message
    message = error_of("salesforce", _subscribe_salesforce_to_owned)
    assert "Lead.Fieldwise_AI_Grade__c is a field Fieldwise writes" in message
    assert "subscriptions[0].fields[1]" in message


def test_subscription_to_echo_prone_or_undeclared_field_is_rejected() -> None:
    def echo(raw: dict[str, Any]) -> None:
        raw["subscriptions"][1]["fields"] = ["SystemModstamp"]

    assert "Contact.SystemModstamp changes on every write" in error_of("salesforce", echo)

    def undeclared(raw: dict[str, Any]) -> None:
        raw["subscriptions"][2]["property_changes"] = ["hs_pipeline_velocity"]

    assert "deals.hs_pipeline_velocity is not a declared input" in error_of("hubspot", undeclared)


def test_subscription_that_does_not_exclude_integration_user_is_rejected() -> None:
    def include(raw: dict[str, Any]) -> None:
        raw["subscriptions"][0]["exclude_integration_user"] = False

    assert "subscriptions[0].exclude_integration_user" in error_of("salesforce", include)


# --- bad manifests --------------------------------------------------------------------------


def test_unknown_type_is_rejected_with_its_path_and_definition() -> None:
    def bad_type(raw: dict[str, Any]) -> None:
        raw["definitions"]["fields"]["score"]["type"] = "Percentage"

    message = error_of("salesforce", bad_type)
    assert "objects.Lead.fields[0].type (from definitions.fields.score.type)" in message
    assert "unknown type 'Percentage'" in message


def test_missing_label_is_rejected() -> None:
    def no_label(raw: dict[str, Any]) -> None:
        del raw["definitions"]["properties"]["segment"]["label"]

    message = error_of("hubspot", no_label)
    assert (
        "objects.companies.fields[0].label (from definitions.properties.segment.label)" in message
    )
    assert "Missing data for required field" in message


def test_missing_type_parameter_is_rejected() -> None:
    def no_values(raw: dict[str, Any]) -> None:
        del raw["definitions"]["fields"]["grade"]["values"]

    assert (
        "fields[1].values (from definitions.fields.grade.values): required for type Picklist"
        in (error_of("salesforce", no_values))
    )


def test_invalid_hubspot_type_field_type_combination_is_rejected() -> None:
    def bad_pair(raw: dict[str, Any]) -> None:
        raw["definitions"]["properties"]["score"]["field_type"] = "textarea"

    message = error_of("hubspot", bad_pair)
    assert "objects.contacts.fields[0].field_type" in message
    assert "number/textarea is not a valid combination" in message


def test_misspelt_key_is_rejected() -> None:
    def typo(raw: dict[str, Any]) -> None:
        raw["objects"]["Account"]["feilds"] = []

    assert "objects.Account.feilds: Unknown field" in error_of("salesforce", typo)


def test_widget_file_missing_is_rejected() -> None:
    def missing(raw: dict[str, Any]) -> None:
        raw["widgets"][0]["files"]["component_html"] = "force-app/main/default/lwc/gone.html"

    message = error_of("salesforce", missing)
    assert "widgets[0].files.component_html" in message and "gone.html does not exist" in message


def test_widget_path_outside_the_folder_is_rejected() -> None:
    def escape(raw: dict[str, Any]) -> None:
        raw["widgets"][0]["files"]["card_package"] = "../../pyproject.toml"

    assert "must be a path inside the manifest folder" in error_of("hubspot", escape)


@pytest.mark.parametrize(
    ("ref", "expected"),
    [
        ("#/definitions/fields/scroe", "definitions/fields has no 'scroe'"),
        ("definitions/fields/score", "must start with #/definitions/"),
    ],
)
def test_bad_ref_is_rejected_naming_where_it_is(ref: str, expected: str) -> None:
    def bad_ref(raw: dict[str, Any]) -> None:
        raw["objects"]["Account"]["fields"] = [{"$ref": ref}]

    message = error_of("salesforce", bad_ref)
    assert "objects.Account.fields[0]" in message and expected in message


def test_ref_cycle_is_rejected() -> None:
    def cycle(raw: dict[str, Any]) -> None:
        raw["definitions"]["loop"] = {"$ref": "#/definitions/loop"}
        raw["objects"]["Account"]["read_scopes"] = {"$ref": "#/definitions/loop"}

    assert "$ref cycle" in error_of("salesforce", cycle)


def test_two_fields_for_one_result_are_rejected() -> None:
    def twice(raw: dict[str, Any]) -> None:
        raw["objects"]["companies"]["fields"].append(
            {"$ref": "#/definitions/properties/segment", "api_name": "fieldwise_ai_segment_2"}
        )

    assert "result 'segment' already maps to field 0 of companies" in error_of("hubspot", twice)


def test_feature_without_the_scopes_it_writes_with_is_rejected() -> None:
    def drop(raw: dict[str, Any]) -> None:
        raw["features"]["battle_cards"]["scopes"].remove("crm.objects.deals.write")

    message = error_of("hubspot", drop)
    assert "feature 'battle_cards' writes deals but lacks scopes crm.objects.deals.write" in message


def test_input_mapped_to_unknown_canonical_attribute_is_rejected() -> None:
    def bad_input(raw: dict[str, Any]) -> None:
        raw["objects"]["Lead"]["inputs"]["Rating"] = "temperature"

    assert "objects.Lead.inputs.Rating: 'temperature' is not an attribute" in error_of(
        "salesforce", bad_input
    )


def test_yaml_syntax_error_names_the_line(tmp_path: Path) -> None:
    broken = tmp_path / "manifest.yaml"
    broken.write_text("crm: hubspot\nversion: [unclosed\n", encoding="utf-8")
    from manifests.loader import load_manifest_file

    with pytest.raises(ManifestError, match=r"manifest.yaml: invalid manifest\n  line 3"):
        load_manifest_file(broken, "hubspot")


# --- scopes and widgets ---------------------------------------------------------------------


@pytest.mark.parametrize("crm", CRMS)
def test_scopes_for_a_feature_are_a_subset_of_all_scopes(crm: str) -> None:
    m = load_manifest(crm)
    every = m.scopes()
    assert len(every) == len(set(every))
    assert every[: len(m.base_scopes)] == list(m.base_scopes)
    for feature in m.features:
        assert set(m.scopes(features=[feature])) <= set(every)
    assert set(m.scopes(features=["scoring"])) <= set(every)
    assert m.scopes(["sync", "scoring"]) == m.scopes(["scoring", "sync"])
    with pytest.raises(KeyError, match="unknown features telepathy"):
        m.scopes(["telepathy"])


def test_hubspot_scoring_scopes_are_narrower_than_all() -> None:
    hs = load_manifest("hubspot")
    scoring = hs.scopes(features=["scoring"])
    assert "crm.objects.contacts.write" in scoring and "crm.schemas.deals.write" in scoring
    assert "crm.objects.owners.read" not in scoring
    assert set(scoring) < set(hs.scopes())
    assert load_manifest("salesforce").scopes() == ["api", "refresh_token"]


@pytest.mark.parametrize("crm", CRMS)
def test_widget_files_exist_and_are_not_empty(crm: str) -> None:
    m = load_manifest(crm)
    assert m.widgets
    for widget in m.widgets:
        assert widget.feedback_endpoint == "/feedback"
        for file in widget.files.values():
            assert file.is_absolute() and file.is_file() and file.stat().st_size > 0


def test_lwc_meta_targets_record_pages_of_lead_opportunity_contact() -> None:
    (widget,) = load_manifest("salesforce").widgets
    root = ET.parse(widget.files["component_meta"]).getroot()
    ns = "{http://soap.sforce.com/2006/04/metadata}"
    assert [t.text for t in root.iter(f"{ns}target")] == ["lightning__RecordPage"]
    assert {o.text for o in root.iter(f"{ns}object")} == {"Lead", "Opportunity", "Contact"}
    assert widget.files["apex_class"].read_text().count("callout:Fieldwise_API") == 2


def test_hubspot_card_fetches_cards_and_posts_feedback() -> None:
    (widget,) = load_manifest("hubspot").widgets
    source = widget.files["card_component"].read_text()
    assert "hubspot.fetch" in source and "/cards/hubspot" in source and "/feedback" in source
    card = json.loads(widget.files["card_config"].read_text())
    assert card["type"] == "card" and card["config"]["objectTypes"] == ["contacts", "deals"]
    project = json.loads(widget.files["project"].read_text())
    assert project["srcDir"] == "src"


def _copy_hubspot(tmp_path: Path) -> Path:
    folder = tmp_path / "hubspot"
    shutil.copytree(manifest_path("hubspot").parent, folder)
    return folder


def test_app_config_scopes_that_drift_from_the_manifest_are_rejected(tmp_path: Path) -> None:
    folder = _copy_hubspot(tmp_path)
    app_file = folder / "app-project/src/app/app-hsmeta.json"
    app = json.loads(app_file.read_text())
    app["config"]["auth"]["requiredScopes"].remove("sales-email-read")
    app["config"]["auth"]["requiredScopes"].append("tickets")
    app_file.write_text(json.dumps(app))
    with pytest.raises(ManifestError) as info:
        build_manifest(raw_manifest("hubspot"), folder / "manifest.yaml", "hubspot")
    message = str(info.value)
    assert "widgets[0].files.app_config" in message
    assert "missing sales-email-read" in message and "not needed tickets" in message


def test_lwc_meta_without_record_page_target_is_rejected(tmp_path: Path) -> None:
    folder = tmp_path / "salesforce"
    shutil.copytree(manifest_path("salesforce").parent, folder)
    meta = folder / "force-app/main/default/lwc/fieldwiseInsights/fieldwiseInsights.js-meta.xml"
    meta.write_text(meta.read_text().replace("lightning__RecordPage", "lightning__AppPage"))
    with pytest.raises(ManifestError, match="must target lightning__RecordPage"):
        build_manifest(raw_manifest("salesforce"), folder / "manifest.yaml", "salesforce")


def test_consent_opt_out_fields_come_from_each_manifest_and_block_scoring():
    from scoring.features import consent_blocked

    for crm in ("salesforce", "hubspot"):
        fields = load_manifest(crm).consent_opt_out_fields
        assert fields
        assert consent_blocked({"crm": crm, "custom": {fields[0]: True}})
        assert not consent_blocked({"crm": crm, "custom": {fields[0]: False}})


def test_the_auto_assign_owner_field_must_be_read_too_and_is_never_provisioned() -> None:
    def unread_owner(raw: dict[str, Any]) -> None:
        raw["objects"]["Lead"]["assign_owner_field"] = "Owner_Not_Read__c"

    message = error_of("salesforce", unread_owner)
    assert "objects.Lead.assign_owner_field" in message and "inputs" in message
    for crm, obj, owner in (
        ("salesforce", "Lead", "OwnerId"),
        ("hubspot", "contacts", "hubspot_owner_id"),
    ):
        manifest = load_manifest(crm)
        assignment = manifest.assignment_field(obj)
        assert assignment is not None and assignment.api_name == owner
        assert assignment.result == "assign_owner"
        assert owner not in {f.api_name for f in manifest.owned_fields(obj)}
        assert owner in {f.api_name for f in manifest.writable_fields(obj)}

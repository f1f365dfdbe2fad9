"""Contract: widget sources render with the public URL; card keys and feedback labels hold."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from core.store import Store
from handlers.widgets import MANIFESTS, PUBLIC_URL_PLACEHOLDER, build_widget_projects
from scoring.features import build_features
from scoring.feedback import Feedback, record_feedback, with_feedback_labels

URL = "https://fieldwise.acme.example"


def test_hubspot_project_renders_the_public_url_in_fetch_and_permitted_urls(tmp_path: Path) -> None:
    written = build_widget_projects(URL + "/", tmp_path)
    app = json.loads((written["hubspot"] / "src/app/app-hsmeta.json").read_text())
    assert app["config"]["permittedUrls"]["fetch"] == [URL]
    assert app["config"]["auth"]["redirectUrls"] == [f"{URL}/oauth/hubspot/callback"]
    card = (written["hubspot"] / "src/app/cards/FieldwiseCard.jsx").read_text()
    assert f'const FIELDWISE_URL = "{URL}";' in card
    credential = next((written["salesforce"] / "main/default/namedCredentials").iterdir())
    assert f"<parameterValue>{URL}</parameterValue>" in credential.read_text()
    leftovers = [p for p in tmp_path.rglob("*") if p.is_file()
                 and PUBLIC_URL_PLACEHOLDER in p.read_text(errors="ignore")]  # fmt: skip
    assert leftovers == []
    with pytest.raises(ValueError, match="not an http"):
        build_widget_projects("javascript:alert(1)", tmp_path)


def test_manifest_sources_keep_the_placeholder_not_a_host() -> None:
    sources = [p for folder in ("hubspot/app-project", "salesforce/force-app")
               for p in (MANIFESTS / folder).rglob("*") if p.is_file()]  # fmt: skip
    assert sources and not [p for p in sources if "app.fieldwise.ai" in p.read_text()]
    assert any(PUBLIC_URL_PLACEHOLDER in p.read_text() for p in sources)


def test_card_keys_cover_every_result_the_manifests_show() -> None:
    from handlers.widgets import _DETAIL_RESULTS, FEEDBACK_RESULTS

    shown = {name for crm in ("hubspot", "salesforce")
             for w in yaml.safe_load((MANIFESTS / crm / "manifest.yaml").read_text())["widgets"]
             for name in w["shows"]}  # fmt: skip
    assert shown <= set(FEEDBACK_RESULTS)
    assert set(_DETAIL_RESULTS) <= set(FEEDBACK_RESULTS)


def _lead(crm_id: str, created: datetime, converted: bool) -> dict[str, object]:
    return {"tenant_id": "hubspot-1", "crm": "hubspot", "crm_id": crm_id, "last_name": "L",
            "company": "C", "created_at": created, "updated_at": created,
            "is_converted": converted, "converted_at": created + timedelta(days=3) if converted
            else None}  # fmt: skip


def test_not_a_fit_turns_an_open_lead_into_a_negative_and_keeps_conversions(tmp_path: Path) -> None:
    store = Store(str(tmp_path / "lancedb"))
    now = datetime.now(UTC)
    store.upsert("hubspot-1", "lead", [
        _lead("old", now - timedelta(days=400), False),
        _lead("won", now - timedelta(days=300), True),
        _lead("fresh", now - timedelta(days=2), False),
    ])  # fmt: skip
    frame = build_features(store, "hubspot-1", "lead", for_training=True)
    assert set(frame.frame.index) == {"old", "won"}
    record_feedback(store, "hubspot-1", [
        Feedback("lead", "fresh", "score", "not_a_fit", "7", reason="student"),
        Feedback("lead", "won", "score", "not_a_fit", "7", reason="looked wrong"),
        Feedback("lead", "old", "score", "down", "7"),
    ])  # fmt: skip
    labelled, info = with_feedback_labels(store, "hubspot-1", frame)
    assert info == {"added_negatives": 1, "kept_positive": 1, "already_negative": 0}
    assert labelled.labels is not None
    assert labelled.labels.to_dict() == {"old": 0.0, "won": 1.0, "fresh": 0.0}
    assert list(labelled.frame.columns) == list(frame.frame.columns)
    assert labelled.as_of.index.equals(labelled.frame.index)

from __future__ import annotations

import numpy as np
import pytest
from scoring_service_fixtures import TENANT, scoring_services

from scoring.grades import decide, grade_for, hysteresis_grade
from scoring.settings import (
    DEFAULT_GRADES,
    ScoringSettings,
    ScoringSettingsError,
    load_settings,
    parse_settings,
    save_settings,
)

BANDS = DEFAULT_GRADES
MARGIN = 5.0


def _away_from_edges(rng: np.random.Generator, n: int) -> np.ndarray:
    """Scores more than the margin away from every band edge (70 and 40)."""
    zones = [(0.0, 34.9), (45.1, 64.9), (75.1, 100.0)]
    picks = rng.integers(len(zones), size=n)
    return np.array([rng.uniform(*zones[p]) for p in picks])


def test_rescoring_1000_records_with_noise_below_the_margin_changes_no_grade():
    rng = np.random.default_rng(11)
    scores = _away_from_edges(rng, 1000)
    grades = [decide(s, None, None, BANDS, MARGIN, 5).grade for s in scores]
    changes = 0
    for _ in range(25):
        noisy = np.clip(
            scores + rng.uniform(-MARGIN + 0.01, MARGIN - 0.01, size=scores.size), 0, 100
        )
        for i, score in enumerate(noisy):
            decision = decide(float(score), grades[i], float(scores[i]), BANDS, MARGIN, 5)
            changes += decision.crossed
            grades[i] = decision.grade
    assert changes == 0
    assert set(grades) == {"Hot", "Warm", "Cold"}


def _hot_triggers(scores: list[float], margin: float) -> int:
    """A workflow 'grade changed to Hot' fires on each transition into Hot."""
    grade, fired = None, 0
    for score in scores:
        decision = decide(score, grade, None, BANDS, margin, 5)
        fired += decision.crossed and decision.grade == "Hot"
        grade = decision.grade
    return fired


def test_a_score_oscillating_around_the_hot_edge_fires_once_per_real_crossing():
    # Rises through 70, wobbles around it, really falls (below 65), rises again and wobbles.
    path = [55, 62, 68, 71, 69, 72, 67.5, 70.5, 66, 69.9, 74, 60, 58, 66, 71, 68, 70, 66.5, 72]
    assert _hot_triggers(path, MARGIN) == 2
    # Without hysteresis the same path fires on every wobble: the margin is what prevents it.
    assert _hot_triggers(path, 0.0) == 7


def test_the_upper_and_lower_bands_are_symmetrical():
    assert hysteresis_grade(66, "Hot", BANDS, MARGIN) == "Hot"
    assert hysteresis_grade(64.9, "Hot", BANDS, MARGIN) == "Warm"
    assert hysteresis_grade(36, "Warm", BANDS, MARGIN) == "Warm"
    assert hysteresis_grade(34.9, "Warm", BANDS, MARGIN) == "Cold"
    assert hysteresis_grade(40, "Cold", BANDS, MARGIN) == "Warm"
    assert hysteresis_grade(70, "Cold", BANDS, MARGIN) == "Hot"
    assert hysteresis_grade(30, "Hot", BANDS, MARGIN) == "Cold"
    assert grade_for(69.99, BANDS) == "Warm"


def test_material_changes_are_first_scores_crossings_and_big_moves():
    assert decide(50, None, None, BANDS, MARGIN, 5).material
    small = decide(52, "Warm", 50, BANDS, MARGIN, 5)
    assert not small.material and not small.crossed
    assert decide(56, "Warm", 50, BANDS, MARGIN, 5).material
    crossing = decide(70, "Warm", 68, BANDS, MARGIN, 5)
    assert crossing.material and crossing.crossing == "Warm->Hot"


def test_a_grade_from_renamed_bands_is_treated_as_no_previous_grade():
    assert hysteresis_grade(80, "A", BANDS, MARGIN) == "Hot"
    assert not decide(80, "A", 80, BANDS, MARGIN, 5).crossed


def test_settings_default_and_validate_with_clear_errors():
    assert parse_settings({}) == ScoringSettings()
    custom = parse_settings({"grades": [["A", 80], ["B", 60], ["C", 30], ["D", 0]]})
    assert custom.grade_labels == ("A", "B", "C", "D")
    with pytest.raises(ScoringSettingsError, match="grades: bands must be listed best first"):
        parse_settings({"grades": [["Hot", 40], ["Warm", 70], ["Cold", 0]]})
    with pytest.raises(ScoringSettingsError, match="hysteresis_margin"):
        parse_settings({"grades": [["Hot", 70], ["Warm", 65], ["Cold", 0]], "hysteresis_margin": 6})
    with pytest.raises(ScoringSettingsError, match="fairness_band"):
        parse_settings({"fairness_band": 3})
    with pytest.raises(ScoringSettingsError, match="bogus: Unknown field"):
        parse_settings({"bogus": 1})


def test_settings_are_saved_in_the_tenant_and_a_bad_change_saves_nothing(demo_config, tmp_path):
    services, _ = scoring_services(demo_config, str(tmp_path / "store"))
    saved = save_settings(services.registry, TENANT, {"auto_assign": True, "capacity_default": 25})
    assert saved.auto_assign and saved.capacity_default == 25
    with pytest.raises(ScoringSettingsError):
        save_settings(services.registry, TENANT, {"capacity_default": 0})
    loaded = load_settings(services.registry, TENANT)
    assert loaded.auto_assign and loaded.capacity_default == 25
    assert services.registry.get(TENANT).settings["scoring"] == {
        "auto_assign": True,
        "capacity_default": 25,
    }

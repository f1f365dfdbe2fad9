from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from scoring_fixtures import FAST, TENANT, loaded_store

from scoring.calibration import scores_from_probs
from scoring.features import build_features
from scoring.monitoring import Thresholds, check, drift, psi
from scoring.registry import ModelRegistry
from scoring.training import train


@pytest.fixture(scope="module")
def monitored(tmp_path_factory: pytest.TempPathFactory):
    store, history = loaded_store(Path(tmp_path_factory.mktemp("monitoring")), 2000)
    train(store, TENANT, "lead", task_type="CPU", as_of=history.now, params=FAST)
    frame = build_features(store, TENANT, "lead", as_of=history.now, for_training=True)
    return store, history, frame


def _scores(store: Any, frame: Any) -> Any:
    return scores_from_probs(ModelRegistry(store).current(TENANT, "lead").predict_proba(frame))


def test_psi_is_zero_for_equal_and_positive_for_different_shares() -> None:
    assert psi([0.5, 0.5], [0.5, 0.5]) == pytest.approx(0.0)
    assert psi([0.5, 0.5], [0.9, 0.1]) > 0.25


def test_given_the_training_population_when_checking_then_nothing_drifts(monitored) -> None:
    store, _, frame = monitored
    result = drift(store, TENANT, "lead", frame, _scores(store, frame))
    assert max(result["feature_psi"].values()) < 0.05
    assert result["score_psi"] < 0.05
    assert result["retrain_recommended"] is False and result["reasons"] == []
    assert result["realised"]["n_outcomes"] == len(frame.frame)


def test_given_a_shifted_feature_when_checking_then_it_is_flagged_with_a_reason(monitored) -> None:
    store, _, frame = monitored
    shifted = frame.subset(frame.frame.index)
    shifted.frame = shifted.frame.copy()
    shifted.frame["page_visits"] = shifted.frame["page_visits"] + 12
    result = drift(store, TENANT, "lead", shifted, _scores(store, shifted))
    assert result["feature_psi"]["page_visits"] > 0.25
    assert result["retrain_recommended"] is True
    assert any("page_visits" in reason for reason in result["reasons"])
    assert result["feature_psi"]["industry"] < 0.05


class _Queue:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []

    def enqueue(self, func: str, *args: Any, job_id: str | None = None, **_: Any) -> str:
        self.calls.append((func, args, job_id))
        return job_id or "job"


def test_given_drift_when_checking_then_retrain_is_queued_and_admin_sees_why(monitored) -> None:
    store, _, frame = monitored
    shifted = frame.subset(frame.frame.index)
    shifted.frame = shifted.frame.copy()
    shifted.frame["email_opens"] = shifted.frame["email_opens"] * 0
    queue = _Queue()
    result = check(store, TENANT, "lead", shifted, _scores(store, shifted), queue=queue,
                   thresholds=Thresholds(feature_psi=0.25))  # fmt: skip
    assert result["retrain_recommended"] is True
    assert queue.calls and queue.calls[0][0] == "scoring.training.train_job"
    assert queue.calls[0][1] == (TENANT, "lead")
    saved = ModelRegistry(store).report(TENANT, "lead")["monitoring"]
    assert saved["reasons"] == result["reasons"]

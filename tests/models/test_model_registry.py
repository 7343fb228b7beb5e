"""Model artifacts run code when unpickled: only a hashed artifact inside models/ loads."""

from __future__ import annotations

import hashlib
import json
import pickle
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pytest
from sklearn.linear_model import LogisticRegression

from pitstore.core.config import Settings
from pitstore.models.registry import ModelRegistryError, load_model, promote, save_model
from pitstore.serving.audit import AuditLog, new_decision_id
from pitstore.serving.explain import ExplainError, replay
from pitstore.serving.settings import ServingSettings

KEY = "an audit key for the tests, 32b!"
COLUMNS = ["a", "b"]


class Payload:
    """Unpickling this touches ``marker``: what a hostile artifact could do."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self) -> tuple[Any, ...]:
        return (Path.touch, (self.marker,))


def card(version: str) -> dict[str, Any]:
    return {
        "version": version,
        "feature_service": "fraud_v1",
        "spec_fingerprint": "t",
        "frame_fingerprint": "t",
        "training_window": "t",
        "label_cutoff": "t",
        "metrics": {},
        "threshold": 0.5,
        "review_band": [0.3, 0.7],
        "feature_columns": COLUMNS,
        "code_version": "t",
        "created_at": datetime(2026, 11, 23, tzinfo=UTC).isoformat(),
    }


@pytest.fixture
def saved(tmp_path: Path) -> Settings:
    settings = Settings(pitstore_home=tmp_path / "home")
    rng = np.random.default_rng(0)
    x, y = rng.random((60, 2)), np.array([0, 1] * 30)
    model = LogisticRegression().fit(x, y)
    save_model(settings, model, card("v1"), y, model.predict_proba(x)[:, 1])
    promote(settings, "v1")
    return settings


def hostile(folder: Path, marker: Path) -> None:
    """A version directory whose artifact runs code, with a card that matches it."""
    folder.mkdir(parents=True)
    data = pickle.dumps(Payload(marker))
    (folder / "model.joblib").write_bytes(data)
    (folder / "model_card.json").write_text(
        json.dumps({**card(folder.name), "artifact_sha256": hashlib.sha256(data).hexdigest()})
    )


def test_save_records_the_hash_and_load_checks_it(saved: Settings) -> None:
    folder = saved.home / "models" / "v1"
    recorded = json.loads((folder / "model_card.json").read_text())["artifact_sha256"]
    assert recorded == hashlib.sha256((folder / "model.joblib").read_bytes()).hexdigest()
    assert load_model(saved, "promoted").version == "v1"
    joblib.dump(LogisticRegression(), folder / "model.joblib")  # swapped after save
    with pytest.raises(ModelRegistryError, match="refusing to unpickle"):
        load_model(saved, "v1")


def test_a_hostile_artifact_runs_when_unpickled(tmp_path: Path) -> None:
    """The premise of the tests below: loading this file does run its code."""
    hostile(tmp_path / "evil", tmp_path / "ran")
    joblib.load(tmp_path / "evil" / "model.joblib")
    assert (tmp_path / "ran").exists()


@pytest.mark.parametrize(
    "version", ["../../evil", "../evil", "/tmp/evil", "a/b", "..", ".hidden", "v1\n", ""]
)
def test_malformed_version_ids_are_refused_before_any_read(saved: Settings, version: str) -> None:
    with pytest.raises(ModelRegistryError, match="invalid model version id"):
        load_model(saved, version)


def test_a_symlink_out_of_models_is_refused(saved: Settings, tmp_path: Path) -> None:
    marker = tmp_path / "ran"
    hostile(tmp_path / "outside" / "v2", marker)
    (saved.home / "models" / "v2").symlink_to(tmp_path / "outside" / "v2")
    with pytest.raises(ModelRegistryError, match="outside"):
        load_model(saved, "v2")
    v3 = saved.home / "models" / "v3"  # a real directory whose artifact links out
    v3.mkdir()
    (v3 / "model.joblib").symlink_to(tmp_path / "outside" / "v2" / "model.joblib")
    (v3 / "model_card.json").write_text(
        (tmp_path / "outside" / "v2" / "model_card.json").read_text()
    )
    with pytest.raises(ModelRegistryError, match="outside"):
        load_model(saved, "v3")
    assert not marker.exists()


def test_a_promoted_marker_naming_a_path_is_refused(saved: Settings, tmp_path: Path) -> None:
    hostile(tmp_path / "evil", tmp_path / "ran")
    (saved.home / "models" / "PROMOTED").write_text("../../evil\n")
    with pytest.raises(ModelRegistryError, match="invalid model version id"):
        load_model(saved, "promoted")
    assert not (tmp_path / "ran").exists()


def test_explain_never_loads_a_model_version_outside_models(
    saved: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A record naming ``../../evil`` (here even validly chained and signed, as a
    writer holding the key could make it) reaches the loader, which refuses it."""
    monkeypatch.setenv("PITSTORE_AUDIT_KEY", KEY)
    marker = tmp_path / "ran"
    hostile(tmp_path / "evil", marker)
    # models/../../evil from <tmp>/home/models is <tmp>/evil
    assert (saved.home / "models" / ".." / ".." / "evil").resolve() == tmp_path / "evil"
    settings = ServingSettings(home=saved.home)
    now = datetime.now(UTC)
    decision_id = new_decision_id(now)
    log = AuditLog(settings.resolved_audit_dir, key=KEY.encode())
    log.append(
        {
            "decision_id": decision_id,
            "decided_at": now.isoformat(),
            "request": {
                "transaction_id": "t-1",
                "account_id": "A1",
                "card_id": "C1",
                "merchant_id": "M1",
                "merchant_category": "online_retail",
                "amount": 2500,
                "currency": "GBP",
                "channel": "ecom",
                "country": "GB",
                "event_ts": now.isoformat(),
            },
            "fallback": None,
            "model_version": "../../evil",
            "decision": "approve",
        }
    )
    log.close()
    with pytest.raises(ExplainError, match="invalid model version id"):
        replay(settings, decision_id)
    assert not marker.exists()


def test_the_calibration_plot_is_zoomed_to_the_scores() -> None:
    from pitstore.models.registry import calibration_extent

    table = [{"mean_score": 0.001, "fraud_rate": 0.0}, {"mean_score": 0.026, "fraud_rate": 0.028}]
    assert calibration_extent(table) == pytest.approx(0.028 * 1.1)
    assert calibration_extent([]) > 0  # an empty table still draws


def test_promotion_is_per_service(saved: Settings) -> None:
    """A credit model promoted beside the fraud one replaces neither; a card
    without a service (every card before credit existed) is a fraud model."""
    from pitstore.models.registry import list_models, promoted_version

    old = saved.home / "models" / "v1" / "model_card.json"
    legacy = json.loads(old.read_text())
    legacy.pop("service")
    old.write_text(json.dumps(legacy))
    rng = np.random.default_rng(1)
    x, y = rng.random((60, 2)), np.array([0, 1] * 30)
    model = LogisticRegression().fit(x, y)
    credit = {**card("c1"), "service": "credit_v1", "feature_service": "credit_v1"}
    save_model(saved, model, credit, y, model.predict_proba(x)[:, 1])
    assert promoted_version(saved, "credit_v1") is None
    with pytest.raises(ModelRegistryError, match="no credit_v1 model is promoted"):
        load_model(saved, "promoted", service="credit_v1")
    assert promote(saved, "c1") == "credit_v1"
    assert promoted_version(saved) == "v1"  # fraud untouched
    assert load_model(saved, "promoted").version == "v1"
    assert load_model(saved, "promoted", service="credit_v1").version == "c1"
    rows = {m["version"]: (m["service"], m["promoted"]) for m in list_models(saved)}
    assert rows == {"v1": ("fraud_v1", True), "c1": ("credit_v1", True)}
    # A fraud marker edited to name the credit model does not serve it as fraud.
    (saved.home / "models" / "PROMOTED").write_text("c1\n")
    with pytest.raises(ModelRegistryError, match="is a credit_v1 model"):
        load_model(saved, "promoted")
    with pytest.raises(ModelRegistryError, match="invalid service id"):
        promoted_version(saved, "../x")

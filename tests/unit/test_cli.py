from __future__ import annotations

import json

from click.testing import CliRunner

from core.cli import main
from core.config import Config
from core.crypto import TokenCipher


def test_version_prints_the_package_version():
    result = CliRunner().invoke(main, ["--version"])
    assert result.exit_code == 0
    assert result.output.startswith("fieldwise, version ")


def test_status_prints_health_json_with_secrets_masked(tmp_path):
    env = {"FIELDWISE_LANCEDB_URI": str(tmp_path / "db"), "FIELDWISE_SECRET_KEY": "s" * 40}
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert report["status"] == "ok"
    assert report["config"]["secret_key"] == "********"
    assert "s" * 40 not in result.output


def test_status_exits_1_when_redis_is_down(tmp_path):
    env = {
        "FIELDWISE_LANCEDB_URI": str(tmp_path / "db"),
        "FIELDWISE_REDIS_URL": "redis://127.0.0.1:1/0",
    }
    result = CliRunner().invoke(main, ["status"], env=env)
    assert result.exit_code == 1
    assert json.loads(result.output)["redis"]["ok"] is False


def test_keygen_prints_keys_the_configuration_accepts():
    key = CliRunner().invoke(main, ["keygen"]).output.strip()
    secret = CliRunner().invoke(main, ["keygen", "--secret-key"]).output.strip()
    config = Config.from_env({"FIELDWISE_ENCRYPTION_KEY": key, "FIELDWISE_SECRET_KEY": secret})
    cipher = TokenCipher.from_config(config)
    assert cipher.decrypt(cipher.encrypt("t")) == "t"

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from core.config import Config, ConfigError, Secret
from core.crypto import generate_key

GOOD = {
    "FIELDWISE_SECRET_KEY": "x" * 40,
    "FIELDWISE_ENCRYPTION_KEY": generate_key(),
    "FIELDWISE_REDIS_URL": "redis://:hunter2hunter2@127.0.0.1:6379/3",
    "FIELDWISE_LANCEDB_URI": "s3://bucket/fieldwise",
    "FIELDWISE_HUBSPOT_CLIENT_SECRET": "hs-client-secret-value",
    "FIELDWISE_HUBSPOT_APP_ID": "123456",
    "FIELDWISE_CATBOOST_TASK_TYPE": "gpu",
    "ANTHROPIC_API_KEY": "sk-ant-test-value",
}


def test_given_valid_environment_when_read_then_values_are_typed():
    config = Config.from_env(GOOD)
    assert config.redis_url == GOOD["FIELDWISE_REDIS_URL"]
    assert config.lancedb_uri == "s3://bucket/fieldwise"
    assert config.catboost_task_type == "GPU"
    assert config.hubspot_app_id == "123456"
    assert isinstance(config.secret_key, Secret)
    assert config.anthropic_api_key is not None
    assert config.anthropic_api_key.reveal() == "sk-ant-test-value"


def test_given_no_environment_when_read_without_secrets_then_defaults_apply():
    config = Config.from_env({}, require_secrets=False)
    assert config.redis_url is None
    assert config.lancedb_uri == "./var/lancedb"
    assert config.catboost_task_type == "auto"


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("FIELDWISE_REDIS_URL", "http://127.0.0.1:6379", "FIELDWISE_REDIS_URL: "),
        ("FIELDWISE_REDIS_URL", "redis://127.0.0.1:notaport/0", "FIELDWISE_REDIS_URL: "),
        ("FIELDWISE_REDIS_URL", "redis://127.0.0.1:6379/zero", "must be a number"),
        ("FIELDWISE_LANCEDB_URI", "ftp://host/path", "unsupported scheme 'ftp'"),
        ("FIELDWISE_LANCEDB_URI", "s3:///no-bucket", "names no bucket"),
        ("FIELDWISE_ENCRYPTION_KEY", "not-a-fernet-key", "FIELDWISE_ENCRYPTION_KEY: key 1"),
        ("FIELDWISE_SECRET_KEY", "short", "too short"),
        ("FIELDWISE_CATBOOST_TASK_TYPE", "TPU", "must be one of auto, CPU, GPU"),
        ("FIELDWISE_HUBSPOT_APP_ID", "abc", "numeric HubSpot app id"),
        ("FIELDWISE_MAX_WEBHOOK_BYTES", "-5", "positive whole number"),
        ("FIELDWISE_LANCEDB_STORAGE_OPTIONS", "{not json", "not valid JSON"),
        ("FIELDWISE_SALESFORCE_LOGIN_URL", "login.salesforce.com", "not an http(s) URL"),
        ("FIELDWISE_REDIS_ULR", "redis://x", "FIELDWISE_REDIS_ULR is not a Fieldwise setting"),
    ],
)
def test_given_bad_value_when_read_then_error_names_variable_and_problem(variable, value, expected):
    with pytest.raises(ConfigError) as caught:
        Config.from_env({**GOOD, variable: value})
    assert expected in str(caught.value)
    assert variable in str(caught.value)


@pytest.mark.parametrize("missing", ["FIELDWISE_SECRET_KEY", "FIELDWISE_ENCRYPTION_KEY"])
def test_given_missing_secret_outside_demo_when_read_then_start_up_fails(missing):
    env = {k: v for k, v in GOOD.items() if k != missing}
    with pytest.raises(ConfigError, match=f"^{missing} is not set"):
        Config.from_env(env)


def test_secrets_never_appear_in_repr_str_format_or_describe():
    config = Config.from_env(GOOD)
    shown = [repr(config), str(config), f"{config.secret_key}", str(config.describe())]
    for text in shown:
        for secret in ("x" * 40, GOOD["FIELDWISE_ENCRYPTION_KEY"], "hunter2hunter2", "sk-ant-test"):
            assert secret not in text
    assert config.describe()["redis_url"] == "redis://:********@127.0.0.1:6379/3"


def test_demo_configuration_generates_fresh_secrets_per_run():
    first, second = Config.for_demo(), Config.for_demo()
    assert first.demo and first.secret_key and first.encryption_key
    assert first.secret_key != second.secret_key
    assert first.encryption_key != second.encryption_key


def _run_cli(args, env):
    clean = {k: v for k, v in os.environ.items() if not k.startswith("FIELDWISE_")}
    return subprocess.run(
        [sys.executable, "-m", "core", *args],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
    )


@pytest.mark.parametrize(
    ("command", "env", "expected"),
    [
        (["status"], {"FIELDWISE_REDIS_URL": "htp://localhost"}, "FIELDWISE_REDIS_URL"),
        (["serve"], {}, "FIELDWISE_SECRET_KEY is not set"),
        (
            ["worker"],
            {"FIELDWISE_SECRET_KEY": "y" * 32, "FIELDWISE_ENCRYPTION_KEY": generate_key()},
            "FIELDWISE_REDIS_URL is not set",
        ),
    ],
)
def test_given_bad_configuration_when_command_starts_then_one_clear_line_and_exit_2(
    command, env, expected
):
    result = _run_cli(command, env)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("fieldwise: configuration error: ")
    assert expected in lines[0]
    assert "Traceback" not in result.stderr + result.stdout

from __future__ import annotations

import json
import subprocess
import sys

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


def test_help_imports_no_job_module_and_the_worker_preload_imports_them_all_the_model_and_manifests():
    # `fieldwise --help` stays fast: only the worker command imports the job modules.
    probe = (
        "import sys\n"
        "from click.testing import CliRunner\n"
        "from core.cli import main\n"
        "assert CliRunner().invoke(main, ['--help']).exit_code == 0\n"
        "from core.queue import JOB_MODULES, preload_job_modules\n"
        "print(sorted(m for m in JOB_MODULES if m in sys.modules))\n"
        "preload_job_modules()\n"
        "print(sorted(m for m in JOB_MODULES if m not in sys.modules))\n"
        "from core.embeddings import integer_model\n"
        "print(integer_model.cache_info().currsize)\n"
        "from manifests.loader import load_manifest\n"
        "print(load_manifest.cache_info().currsize)\n"
    )
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    # The work horses inherit the rewritten embedding model and both CRMs' parsed manifests
    # instead of each building them.
    assert result.stdout.split() == ["[]", "[]", "1", "2"]


def test_worker_preloads_the_job_modules_before_it_starts_working(tmp_path, monkeypatch):
    from core import queue as job_queue

    calls: list[str] = []

    class StartedWorker:
        def work(self, burst: bool, with_scheduler: bool) -> None:
            calls.append("work")

    monkeypatch.setattr(job_queue, "preload_job_modules", lambda: calls.append("preload"))
    monkeypatch.setattr(job_queue.RedisQueue, "worker", lambda self: StartedWorker())
    env = {
        "FIELDWISE_LANCEDB_URI": str(tmp_path / "db"),
        "FIELDWISE_REDIS_URL": "redis://127.0.0.1:1/0",
        "FIELDWISE_SECRET_KEY": "s" * 40,
        "FIELDWISE_ENCRYPTION_KEY": CliRunner().invoke(main, ["keygen"]).output.strip(),
    }
    result = CliRunner().invoke(main, ["worker", "--burst"], env=env)
    assert result.exit_code == 0, result.output
    assert calls == ["preload", "work"]

"""docker-compose.yml is checked for what can be checked without a Docker engine: every
service's command exists in this repository, only real settings are passed, and the secrets
reach only the processes that need them."""

from __future__ import annotations

import importlib
import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from shared.settings import Settings

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
SETTING_NAMES = {f"CERTFLEET_{name.upper()}" for name in Settings.__dataclass_fields__}
SETTING_NAMES |= {"CERTFLEET_TEST_PG_ADMIN_URL"}


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    loaded = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(loaded, dict)
    return loaded


def test_services_and_dependencies(compose: dict[str, Any]) -> None:
    services = compose["services"]
    expected = {
        "redis",
        "postgres",
        "init",
        "api",
        "issuer",
        "distributor",
        "expiry-watcher",
        "beat",
    }
    assert expected <= set(services)
    for name in ("api", "issuer", "distributor", "expiry-watcher", "beat", "init"):
        depends = services[name]["depends_on"]
        assert depends["postgres"]["condition"] == "service_healthy"
        assert depends["redis"]["condition"] == "service_healthy"
    assert all("healthcheck" in services[n] for n in ("redis", "postgres", "api"))


def test_commands_point_at_real_code(compose: dict[str, Any]) -> None:
    services = compose["services"]
    api = services["api"]["command"]
    module, _, factory = api[-1].partition(":")
    assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))
    issuer = services["issuer"]["command"]
    tasks = importlib.import_module(issuer[issuer.index("-A") + 1])
    assert "certfleet.issuer.issue_batch" in tasks.app.tasks
    assert issuer[issuer.index("--queues") + 1] == "issue"
    assert services["init"]["command"] == ["certfleet", "init"]
    distributor = services["distributor"]["command"]
    tasks = importlib.import_module(distributor[distributor.index("-A") + 1])
    assert "certfleet.distributor.deliver" in tasks.app.tasks
    assert distributor[distributor.index("--queues") + 1] == "distribute"
    watcher = importlib.import_module(services["beat"]["command"][2])
    assert watcher.app.conf.beat_scheduler.endswith(":LockedScheduler")
    assert "certfleet.expiry.sweep" in watcher.app.tasks
    dockerfile = (ROOT / services["api"]["build"]["dockerfile"]).read_text()
    for copied in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (ROOT / copied).exists(), copied


def test_only_known_settings_and_secrets_where_needed(compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        env = service.get("environment", {})
        for key in env:
            if key.startswith("CERTFLEET_"):
                assert key in SETTING_NAMES, (name, key)
        assert ("CERTFLEET_CA_KEY_PASSPHRASE" in env) == (name in ("issuer", "init")), name
    text = COMPOSE.read_text()
    for secret in ("CERTFLEET_CA_KEY_PASSPHRASE", "CERTFLEET_DATA_KEY", "POSTGRES_PASSWORD"):
        # Secrets are required from the environment, never written into the file.
        assert re.search(rf"\$\{{{secret}:\?", text), secret


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
def test_docker_compose_config_validates_when_the_plugin_is_present() -> None:
    probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    if probe.returncode != 0:
        pytest.skip("the docker client has no compose plugin here")
    env = {
        "POSTGRES_PASSWORD": "x",
        "CERTFLEET_CA_KEY_PASSPHRASE": "x" * 12,
        "CERTFLEET_DATA_KEY": "y" * 12,
        "PATH": "/usr/bin:/bin",
    }
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE), "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0, result.stderr

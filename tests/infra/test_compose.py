"""docker-compose.yml is checked for what can be checked without a Docker engine: every
service's command exists in this repository, only real settings are passed, and the secrets
reach only the processes that need them."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.manifests import SETTING_NAMES, argv_of, component

ROOT = Path(__file__).parents[2]
COMPOSE = ROOT / "docker-compose.yml"
CERTFLEET_SERVICES = ("init", "api", "issuer", "distributor", "expiry-watcher", "beat")


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
    long_running = ("redis", "postgres", "api", "issuer", "distributor", "expiry-watcher", "beat")
    assert all("healthcheck" in services[n] for n in long_running)


def test_healthchecks_ask_the_service_itself(compose: dict[str, Any]) -> None:
    """A worker is healthy when it answers a ping over the broker, addressed to its own
    container; the beat while a beat holds the schedule lock."""
    services = compose["services"]
    for name in ("issuer", "distributor", "expiry-watcher"):
        module = argv_of(services[name]["command"])[2]
        probe = services[name]["healthcheck"]["test"]
        assert probe[0] == "CMD-SHELL", name
        assert probe[1].startswith(f"celery -A {module} inspect ping"), name
        assert "--destination celery@$$HOSTNAME" in probe[1], name
    assert services["beat"]["healthcheck"]["test"][1:] == [
        "python",
        "-m",
        "services.expiry_watcher.beat",
        "--check",
    ]
    assert "--check" in (ROOT / "services" / "expiry_watcher" / "beat.py").read_text()


def test_flower_is_optional_local_and_needs_a_password(compose: dict[str, Any]) -> None:
    flower = compose["services"]["flower"]
    assert flower["profiles"] == ["flower"]
    assert flower["ports"] == ["127.0.0.1:5555:5555"]
    assert "FLOWER_BASIC_AUTH" in flower["environment"]
    assert '[ -n "$$FLOWER_BASIC_AUTH" ] || {' in flower["command"][0]


def test_commands_point_at_real_code(compose: dict[str, Any]) -> None:
    services = compose["services"]
    started = {name: component(services[name]["command"]) for name in CERTFLEET_SERVICES}
    assert started == {
        "init": "init",
        "api": "api",
        "issuer": "issue",
        "distributor": "distribute",
        "expiry-watcher": "expiry",
        "beat": "beat",
    }
    dockerfile = (ROOT / services["api"]["build"]["dockerfile"]).read_text()
    for copied in re.findall(r"^COPY (\S+)", dockerfile, flags=re.M):
        assert (ROOT / copied).exists(), copied


def test_sentinel_profile_watches_the_master_the_services_ask_for(
    compose: dict[str, Any],
) -> None:
    services = compose["services"]
    sentinels = [n for n, s in services.items() if "sentinel" in s.get("profiles", [])]
    assert {"redis-replica", "sentinel-1", "sentinel-2", "sentinel-3"} == set(sentinels)
    master = services["api"]["environment"]["CERTFLEET_REDIS_SENTINEL_MASTER"]
    name = re.fullmatch(r"\$\{CERTFLEET_REDIS_SENTINEL_MASTER:-(\w+)\}", master)
    assert name is not None
    for sentinel in ("sentinel-1", "sentinel-2", "sentinel-3"):
        script = services[sentinel]["command"][0]
        assert f"sentinel monitor {name.group(1)} redis 6379 2" in script
    assert "--replicaof" in services["redis-replica"]["command"]


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


def compose_command() -> list[str] | None:
    """`docker compose` (the plugin), else `docker-compose` (which make test installs where
    the docker client is present), else None."""
    if shutil.which("docker"):
        probe = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
        if probe.returncode == 0:
            return ["docker", "compose"]
    return ["docker-compose"] if shutil.which("docker-compose") else None


@pytest.mark.skipif(shutil.which("docker") is None, reason="no docker client")
@pytest.mark.parametrize(
    ("path", "profiles"),
    [
        (COMPOSE, []),
        (COMPOSE, ["sentinel", "flower", "init"]),
        (ROOT / "infra" / "compose" / "workers.yml", []),
    ],
)
def test_docker_compose_config_validates(path: Path, profiles: list[str]) -> None:
    command = compose_command()
    if command is None:
        pytest.skip("neither docker compose nor docker-compose: apt-get install docker-compose")
    env = {
        "POSTGRES_PASSWORD": "x",
        "CERTFLEET_CA_KEY_PASSPHRASE": "x" * 12,
        "CERTFLEET_DATA_KEY": "y" * 12,
        "CERTFLEET_DATABASE_URL": "postgresql://certfleet:x@db.example:5432/certfleet",
        "CERTFLEET_REDIS_URL": "redis://redis.example:6379/0",
        "PATH": "/usr/bin:/bin:/usr/local/bin",
    }
    selected = [option for profile in profiles for option in ("--profile", profile)]
    result = subprocess.run(
        [*command, "-f", str(path), *selected, "config", "--quiet"],
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    broken = {k: v for k, v in env.items() if k != "POSTGRES_PASSWORD"}
    if path == COMPOSE:  # a missing secret is refused, not silently empty
        refused = subprocess.run(
            [*command, "-f", str(path), "config", "--quiet"],
            env=broken,
            capture_output=True,
            text=True,
            check=False,
            timeout=120,
        )
        assert refused.returncode != 0 and "POSTGRES_PASSWORD" in refused.stderr

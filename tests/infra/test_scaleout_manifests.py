"""The scale-out files, checked without a cluster or a Docker engine: the Kubernetes
manifests in infra/k8s and the worker-host compose file infra/compose/workers.yml start real
certfleet code, pass only real settings, keep secrets in Secrets (the CA passphrase only
where it is used) and spread the workers over nodes."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.infra.manifests import SETTING_NAMES, component

ROOT = Path(__file__).parents[2]
K8S = ROOT / "infra" / "k8s"
WORKERS = ROOT / "infra" / "compose" / "workers.yml"
SECRET_KEYS = {
    "CERTFLEET_DATABASE_URL",
    "CERTFLEET_REDIS_URL",
    "CERTFLEET_CA_KEY_PASSPHRASE",
    "CERTFLEET_DATA_KEY",
}


@pytest.fixture(scope="module")
def resources() -> list[dict[str, Any]]:
    kustomization = yaml.safe_load((K8S / "kustomization.yaml").read_text())
    directories = [r for r in kustomization["resources"] if (K8S / r).is_dir()]
    listed = [r for r in kustomization["resources"] if r not in directories]
    on_disk = {p.name for p in K8S.glob("*.yaml")} - {"kustomization.yaml"}
    # Everything but the example Secret is applied; nothing listed is missing.
    assert set(listed) == on_disk - {"secret.example.yaml"}
    assert all((K8S / d / "kustomization.yaml").is_file() for d in directories)
    docs = [d for name in listed for d in yaml.safe_load_all((K8S / name).read_text()) if d]
    assert all(d.get("metadata", {}).get("name") for d in docs)
    return docs


def pod_specs(resources: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    return {
        d["metadata"]["name"]: d["spec"]["template"]["spec"]
        for d in resources
        if d["kind"] in ("Deployment", "Job")
    }


def test_every_process_runs_real_code(resources: list[dict[str, Any]]) -> None:
    started = {
        name: component(spec["containers"][0]["command"])
        for name, spec in pod_specs(resources).items()
    }
    assert started == {
        "certfleet-init": "init",
        "certfleet-api": "api",
        "certfleet-issuer": "issue",
        "certfleet-distributor": "distribute",
        "certfleet-expiry-watcher": "expiry",
        "certfleet-beat": "beat",
    }


def test_settings_are_real_and_secrets_stay_in_the_secret(
    resources: list[dict[str, Any]],
) -> None:
    config = next(d for d in resources if d["kind"] == "ConfigMap")
    assert set(config["data"]) <= SETTING_NAMES
    assert not set(config["data"]) & SECRET_KEYS
    for name, spec in pod_specs(resources).items():
        env = {e["name"]: e for e in spec["containers"][0].get("env", [])}
        for key, entry in env.items():
            assert key in SETTING_NAMES | {"POD_NAME"}, (name, key)
            if key in SECRET_KEYS:
                assert entry["valueFrom"]["secretKeyRef"] == {"name": "certfleet", "key": key}
        assert {"CERTFLEET_DATABASE_URL", "CERTFLEET_REDIS_URL"} <= set(env), name
        holds_ca_key = "CERTFLEET_CA_KEY_PASSPHRASE" in env
        assert holds_ca_key == (name in ("certfleet-issuer", "certfleet-init")), name
        assert spec["securityContext"]["runAsNonRoot"] is True


def test_workers_scale_over_nodes_with_names_of_their_own(
    resources: list[dict[str, Any]],
) -> None:
    deployments = {d["metadata"]["name"]: d for d in resources if d["kind"] == "Deployment"}
    for name in ("certfleet-issuer", "certfleet-distributor", "certfleet-api"):
        deployment = deployments[name]
        assert deployment["spec"]["replicas"] >= 2
        spread = deployment["spec"]["template"]["spec"]["topologySpreadConstraints"][0]
        assert spread["topologyKey"] == "kubernetes.io/hostname"
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        assert spread["labelSelector"]["matchLabels"] == labels
        assert deployment["spec"]["selector"]["matchLabels"] == labels
    for name in ("certfleet-issuer", "certfleet-distributor"):
        command = deployments[name]["spec"]["template"]["spec"]["containers"][0]["command"]
        # Two pods with one Celery node name would confuse each other's control messages.
        assert "$(POD_NAME)" in command[command.index("--hostname") + 1]
    assert deployments["certfleet-beat"]["spec"]["replicas"] == 2  # one active, one standby
    service = next(d for d in resources if d["kind"] == "Service")
    assert service["spec"]["selector"] == {
        "app.kubernetes.io/name": "certfleet",
        "app.kubernetes.io/component": "api",
    }


def test_the_example_secret_holds_every_secret_key_and_no_real_value() -> None:
    example = yaml.safe_load((K8S / "secret.example.yaml").read_text())
    assert set(example["stringData"]) == SECRET_KEYS
    assert all("CHANGE-ME" in v or "redis://" in v for v in example["stringData"].values())


def test_worker_host_compose_runs_only_workers_against_given_urls() -> None:
    text = WORKERS.read_text()
    services = yaml.safe_load(text)["services"]
    assert {name: component(s["command"]) for name, s in services.items()} == {
        "issuer": "issue",
        "distributor": "distribute",
    }
    for name, service in services.items():
        env = service["environment"]
        assert set(env) <= SETTING_NAMES, name
        assert ("CERTFLEET_CA_KEY_PASSPHRASE" in env) == (name == "issuer")
    for required in SECRET_KEYS:  # from the environment, never defaulted or written here
        assert re.search(rf"\$\{{{required}:\?", text), required
    dockerfile = ROOT / "infra" / "Dockerfile"
    assert services["issuer"]["build"]["dockerfile"] == "infra/Dockerfile"
    assert (WORKERS.parent / services["issuer"]["build"]["context"]).resolve() == ROOT
    assert "USER 10001" in dockerfile.read_text()  # numeric, so runAsNonRoot can verify it


def test_workers_and_beat_have_liveness_probes_that_ask_themselves(
    resources: list[dict[str, Any]],
) -> None:
    """Each worker pod pings its own Celery node (the name its --hostname gives it); each beat
    pod asks whether some beat holds the schedule lock."""
    deployments = {d["metadata"]["name"]: d for d in resources if d["kind"] == "Deployment"}
    for name, module in (
        ("certfleet-issuer", "services.issuer.tasks"),
        ("certfleet-distributor", "services.distributor.tasks"),
        ("certfleet-expiry-watcher", "services.expiry_watcher.tasks"),
    ):
        container = deployments[name]["spec"]["template"]["spec"]["containers"][0]
        command = container["command"]
        node = command[command.index("--hostname") + 1] if "--hostname" in command else "celery@%h"
        expected = node.replace("$(POD_NAME)", "$POD_NAME").replace("%h", "$HOSTNAME")
        probe = container["livenessProbe"]["exec"]["command"]
        assert probe[:2] == ["sh", "-c"], name
        assert probe[2] == (
            f"exec celery -A {module} inspect ping --timeout 10 --destination {expected}"
        ), name
        assert command[command.index("-A") + 1] == module
    beat = deployments["certfleet-beat"]["spec"]["template"]["spec"]["containers"][0]
    assert beat["livenessProbe"]["exec"]["command"] == [
        "python",
        "-m",
        "services.expiry_watcher.beat",
        "--check",
    ]

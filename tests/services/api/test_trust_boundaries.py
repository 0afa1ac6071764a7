"""The reproductions of the trust-boundaries issue, each as it was tried: an operator token
scoped to one site (hq-copenhagen, "A") going after another site's (branch-aarhus, "B") keys,
names and hosts, and settings that name what lies on a worker's machine. Every one of these
succeeded before the one authorization layer (shared.access) and the typed delivery settings
(shared.delivery_settings); each must now fail, leaving nothing behind."""

from __future__ import annotations

import datetime as dt
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from services.distributor import service as distributor
from services.distributor.targets.directory import DirectoryTarget
from services.distributor.targets.ssh import SshTarget
from services.distributor.targets.webhook import WebhookTarget
from shared.db.models import Certificate, Delivery, Event, Host, Site
from shared.delivery_settings import secret_environ
from tests.services.api.conftest import ApiHarness
from tests.services.api.test_dashboard import sign_in

A, B = "hq-copenhagen", "branch-aarhus"
B_HOST = "aar-rec01"
PASSPHRASE_VALUE = "the-ca-passphrase-itself-0123"
DATA_KEY_VALUE = "the-data-key-itself-456789"


def host_of(api: ApiHarness, name: str) -> dict[str, Any]:
    return dict(api.get("/api/v1/hosts", query_string={"name": name}).get_json()["items"][0])


def site_of(api: ApiHarness, name: str) -> dict[str, Any]:
    return dict(api.get("/api/v1/sites", query_string={"name": name}).get_json()[0])


@pytest.fixture
def fleet(api: ApiHarness) -> ApiHarness:
    api.apply_inventory()
    return api


def put_inventory(api: ApiHarness, token: str, doc: dict[str, Any]) -> Any:
    return api.call("PUT", "/api/v1/inventory", token=token, json=doc)


# --- Inventory apply moved another site's host (and then its key was exported) ----------------


def test_inventory_cannot_move_another_sites_host_into_its_own(fleet: ApiHarness) -> None:
    api = fleet
    b_host = host_of(api, B_HOST)
    issued = api.post("/api/v1/issuance-requests", json={"host": B_HOST})
    assert issued.status_code == 202
    api.run_issuer()
    cert_id = api.get("/api/v1/certificates", query_string={"host": B_HOST}).get_json()["items"][0][
        "id"
    ]
    operator_a = api.token("operator", site=A)
    hijack = {
        "hosts": [
            {
                "name": B_HOST,
                "site": A,
                "dns_names": ["aar-rec01.hq.vms.nordbank.example"],
                "ip_addresses": ["10.10.9.9"],
            }
        ]
    }
    refused = put_inventory(api, operator_a, hijack)
    assert refused.status_code == 403, refused.get_json()
    assert B not in refused.get_data(as_text=True)
    assert host_of(api, B_HOST)["site"] == B and host_of(api, B_HOST)["id"] == b_host["id"]
    pfx = api.post(
        f"/api/v1/certificates/{cert_id}/pfx", token=operator_a, json={"password": "long-enough-1"}
    )
    assert pfx.status_code == 404
    assert api.get(f"/api/v1/certificates/{cert_id}/pem", token=operator_a).status_code == 404


def test_inventory_obeys_the_same_field_table_as_the_routes(fleet: ApiHarness) -> None:
    api = fleet
    operator_a = api.token("operator", site=A)
    unscoped = api.token("operator")
    own = {k: v for k, v in site_of(api, A).items() if k in ("name", "dns_suffixes")}
    widened = put_inventory(
        api, operator_a, {"sites": [{**own, "ip_ranges": ["0.0.0.0/0"]}]}
    )  # the routes' PATCH says 403 for the same change
    assert widened.status_code == 403, widened.get_json()
    assert site_of(api, A)["ip_ranges"] == ["10.10.0.0/16"]
    created = put_inventory(api, unscoped, {"sites": [{"name": "new-site"}]})
    assert created.status_code == 403, created.get_json()
    assert api.post("/api/v1/sites", token=unscoped, json={"name": "new-site"}).status_code == 403
    assert api.get("/api/v1/sites", query_string={"name": "new-site"}).get_json() == []
    with api.db.session() as session:
        # Another authority than the site's own would be needed to show a change; an unknown
        # one is refused before anything else, and the current one is no change at all.
        assert session.scalar(select(Site.authority_id).where(Site.name == A)) == 1


# --- Names: unique fleet-wide, policies widened only by an admin -----------------------------


def test_an_operator_cannot_register_or_get_certificates_for_another_sites_names(
    fleet: ApiHarness,
) -> None:
    api = fleet
    operator_a = api.token("operator", site=A)
    b_names = host_of(api, B_HOST)["dns_names"]
    for names in (b_names[1:], b_names[:1]):  # the short name, then the FQDN
        squat = api.post(
            "/api/v1/hosts",
            token=operator_a,
            json={"name": "squatter", "site": A, "dns_names": names, "ip_addresses": ["10.10.9.1"]},
        )
        assert squat.status_code in (409, 422), squat.get_json()
    patched = api.call(
        "PATCH",
        f"/api/v1/hosts/{host_of(api, 'hq-rec01')['id']}",
        token=operator_a,
        json={"dns_names": ["hq-rec01.hq.vms.nordbank.example", b_names[1]]},
    )
    assert patched.status_code == 409, patched.get_json()
    answer = patched.get_data(as_text=True)
    assert B not in answer and b_names[0] not in answer  # only what it sent itself
    site_a = site_of(api, A)
    for change in (
        {"dns_suffixes": ["aar.vms.nordbank.example"]},
        {"ip_ranges": ["0.0.0.0/0"]},
        {"allow_short_names": not site_a["allow_short_names"]},
    ):
        widened = api.call("PATCH", f"/api/v1/sites/{site_a['id']}", token=operator_a, json=change)
        assert widened.status_code == 403, (change, widened.get_json())
    assert site_of(api, A)["dns_suffixes"] == site_a["dns_suffixes"]
    # The CSR route checks the host's own names: none of B's can be asked for.
    with api.db.session() as session:
        assert session.scalar(select(Host.id).where(Host.name == "squatter")) is None


def test_an_admin_shares_a_name_explicitly(fleet: ApiHarness) -> None:
    api = fleet
    vip = "10.10.1.99"
    first = api.call(
        "PATCH",
        f"/api/v1/hosts/{host_of(api, 'hq-mgmt01')['id']}",
        json={"ip_addresses": ["10.10.1.10", vip]},
    )
    assert first.status_code == 200, first.get_json()
    second_host = host_of(api, "hq-event01")["id"]
    taken = api.call("PATCH", f"/api/v1/hosts/{second_host}", json={"ip_addresses": [vip]})
    assert taken.status_code == 409
    operator = api.token("operator")
    assert api.post("/api/v1/shared-names", token=operator, json={"name": vip}).status_code == 403
    assert api.post("/api/v1/shared-names", json={"name": vip}).status_code == 201
    shared = api.call("PATCH", f"/api/v1/hosts/{second_host}", json={"ip_addresses": [vip]})
    assert shared.status_code == 200, shared.get_json()
    assert api.call("DELETE", f"/api/v1/shared-names/{vip}").status_code == 409  # two carry it
    assert api.get("/api/v1/shared-names", token=operator).status_code == 403


# --- Delivery settings: typed, bounded, nothing of the distributor's machine -------------------


SSH_BASE = {
    "host": "10.10.2.11",
    "username": "certfleet",
    "path": "/etc/certfleet",
    "host_key": "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIGcmP0Q1OVbLkqRYQ+P3Jtwr9WsDxm8hrgGBq2kkLQCP",
    "key_file_env": "CERTFLEET_SECRET_SSH_KEY",
}


@pytest.mark.parametrize(
    ("method", "settings", "words"),
    [
        ("ssh", {**SSH_BASE, "key_file_env": "CERTFLEET_CA_KEY_PASSPHRASE"}, "CERTFLEET_SECRET_"),
        ("ssh", {**SSH_BASE, "key_file_env": "CERTFLEET_DATA_KEY"}, "CERTFLEET_SECRET_"),
        ("ssh", {**SSH_BASE, "key_file": "/root/.ssh/id_ed25519"}, "key_file"),
        ("ssh", {**SSH_BASE, "host": "10.20.1.11"}, "own names"),  # another site's server
        ("ssh", {**SSH_BASE, "host": "169.254.169.254"}, "own names"),
        ("ssh", {**SSH_BASE, "pahth": "/x"}, "pahth"),
        ("ssh", {**SSH_BASE, "reload_command": "x" * 5000}, "reload_command"),
        ("directory", {"path": "/etc/cron.d"}, "delivery root"),
        ("directory", {"path": "/var/../etc"}, "may not contain"),
        ("directory", {"path": "../../etc/cron.d"}, "may not contain"),  # relative to the root
        ("directory", {"path": "share/../../../etc"}, "may not contain"),
        ("directory", {"path": "a\u0000b"}, "may not contain"),
        ("directory", {"path": "/srv", "pfx_password_env": "CERTFLEET_CA_KEY_PASSPHRASE"}, "CERTF"),
        ("webhook", {"url": "https://hooks.example/x", "secret_env": "HOME"}, "CERTFLEET_SECRET_"),
        (
            "webhook",
            {"url": "https://169.254.169.254/latest", "secret_env": "CERTFLEET_SECRET_H"},
            "does not connect to",
        ),
        ("webhook", {"url": "https://[::1]/", "secret_env": "CERTFLEET_SECRET_H"}, "loopback"),
        (
            "webhook",
            {"url": "https://h.example/", "secret_env": "CERTFLEET_SECRET_H", "ca_file": "/x"},
            "ca_file",
        ),
        ("agent", {"path": "/srv"}, "path"),
        ("none", {"anything": 1}, "anything"),
    ],
)
def test_delivery_settings_that_reach_the_distributors_machine_are_refused(
    fleet: ApiHarness, method: str, settings: dict[str, Any], words: str
) -> None:
    api = fleet
    host = host_of(api, "hq-rec01")
    body = {"delivery": {"method": method, "settings": settings}}
    refused = api.call("PATCH", f"/api/v1/hosts/{host['id']}", json=body)
    assert refused.status_code == 422, refused.get_json()
    assert words in str(refused.get_json()), refused.get_json()
    assert host_of(api, "hq-rec01")["delivery"] == host["delivery"]
    via_inventory = put_inventory(
        api,
        api.admin_token,
        {
            "hosts": [
                {**{k: host[k] for k in ("name", "site", "dns_names", "ip_addresses")}, **body}
            ]
        },
    )
    assert via_inventory.status_code == 422, via_inventory.get_json()


def test_no_host_writes_into_another_hosts_delivery_directory(fleet: ApiHarness) -> None:
    api = fleet
    root = api.settings.delivery_limits.directory_roots[0]
    b_delivery = {"method": "directory", "settings": {"path": str(root / "share")}}
    b = api.call(
        "PATCH", f"/api/v1/hosts/{host_of(api, B_HOST)['id']}", json={"delivery": b_delivery}
    )
    assert b.status_code == 200, b.get_json()
    operator_a = api.token("operator", site=A)
    onto_b = {
        "method": "directory",
        "settings": {"path": str(root / "share" / B_HOST), "layout": "flat"},
    }
    a_host = host_of(api, "hq-rec01")["id"]
    refused = api.call(
        "PATCH", f"/api/v1/hosts/{a_host}", token=operator_a, json={"delivery": onto_b}
    )
    assert refused.status_code == 409, refused.get_json()
    beside = {
        "method": "directory",
        "settings": {"path": str(root / "share")},
    }  # its own subdirectory
    allowed = api.call(
        "PATCH", f"/api/v1/hosts/{a_host}", token=operator_a, json={"delivery": beside}
    )
    assert allowed.status_code == 200, allowed.get_json()


def test_a_relative_directory_lies_under_the_first_delivery_root(fleet: ApiHarness) -> None:
    """examples/inventory.yaml names `branch-aarhus`: stored as the first root's
    subdirectory, so the distributor writes where the deployment keeps its deliveries."""
    api = fleet
    root = api.settings.delivery_limits.directory_roots[0]
    host = host_of(api, "hq-rec01")
    body = {"delivery": {"method": "directory", "settings": {"path": "hq/servers"}}}
    saved = api.call("PATCH", f"/api/v1/hosts/{host['id']}", json=body)
    assert saved.status_code == 200, saved.get_json()
    assert saved.get_json()["delivery"]["settings"]["path"] == str(root / "hq" / "servers")
    # The same relative path again changes nothing (an inventory applied twice is unchanged).
    fields = ("name", "site", "dns_names", "ip_addresses", "roles", "service_account")
    item = {**{k: host[k] for k in fields}, "tls_endpoints": host["tls_endpoints"]}
    again = put_inventory(api, api.admin_token, {"hosts": [{**item, **body}]})
    assert again.status_code == 200 and again.get_json()["hosts"]["unchanged"] == ["hq-rec01"]
    # Another host naming the same relative directory, flat, is refused like an absolute one.
    flat = {"method": "directory", "settings": {"path": "hq/servers/hq-rec01", "layout": "flat"}}
    other = host_of(api, "hq-rec02")
    taken = api.call("PATCH", f"/api/v1/hosts/{other['id']}", json={"delivery": flat})
    assert taken.status_code == 409, taken.get_json()


def test_tls_endpoints_are_the_hosts_own(fleet: ApiHarness) -> None:
    api = fleet
    host = host_of(api, "hq-rec01")
    for endpoint in ("aar-rec01.aar.vms.nordbank.example:7563", "169.254.169.254:80"):
        refused = api.call(
            "PATCH", f"/api/v1/hosts/{host['id']}", json={"tls_endpoints": [endpoint]}
        )
        assert refused.status_code == 422, (endpoint, refused.get_json())


def stored_settings(api: ApiHarness, name: str, delivery: dict[str, Any]) -> int:
    """Settings written to the database directly (as a migration or a bug might), bypassing
    the API's checks; returns the certificate delivery planned for the host."""
    issued = api.post("/api/v1/issuance-requests", json={"host": name})
    assert issued.status_code == 202
    signed = api.run_issuer()
    with api.db.session() as session:
        host = session.scalars(select(Host).where(Host.name == name)).one()
        host.delivery = delivery
    return distributor.distribute_certificates(api.db, signed.certificate_ids, api.clock)[0]


def test_a_setting_naming_the_ca_passphrase_never_shows_its_value(
    fleet: ApiHarness, tmp_path: Path
) -> None:
    api = fleet
    process_env = {
        "CERTFLEET_CA_KEY_PASSPHRASE": PASSPHRASE_VALUE,
        "CERTFLEET_DATA_KEY": DATA_KEY_VALUE,
        "CERTFLEET_SECRET_SSH_KEY": "/nonexistent/keys/site-b",
    }
    environ = secret_environ(process_env)
    assert environ == {"CERTFLEET_SECRET_SSH_KEY": "/nonexistent/keys/site-b"}
    ctx = distributor.Context(
        {
            "ssh": SshTarget(environ=environ, timeout=1),
            "webhook": WebhookTarget(environ=environ, timeout=1),
            "directory": DirectoryTarget([tmp_path]),
        },
        api.clock,
        api.settings.data_key,
        environ,
    )
    cases = [
        {"method": "ssh", "settings": {**SSH_BASE, "key_file_env": "CERTFLEET_CA_KEY_PASSPHRASE"}},
        {"method": "ssh", "settings": {**SSH_BASE, "key_file_env": "CERTFLEET_SECRET_SSH_KEY"}},
        {
            "method": "webhook",
            "settings": {"url": "https://h.example/", "secret_env": "CERTFLEET_DATA_KEY"},
        },
        {
            "method": "directory",
            "settings": {"path": str(tmp_path), "pfx_password_env": "CERTFLEET_CA_KEY_PASSPHRASE"},
        },
    ]
    for index, delivery in enumerate(cases):
        name = ["hq-rec01", "hq-rec02", "hq-mgmt01", "hq-event01"][index]
        delivery_id = stored_settings(api, name, delivery)
        with api.db.session() as session:
            session.get(Delivery, delivery_id).method = delivery["method"]  # type: ignore[union-attr]
        assert distributor.attempt(api.db, delivery_id, ctx).status == "failed"
    with api.db.session() as session:
        errors = [d.last_error or "" for d in session.scalars(select(Delivery))]
        events = [str(e.data) for e in session.scalars(select(Event))]
    assert len([e for e in errors if e]) == len(cases)
    seen = "\n".join([*errors, *events, *api.get("/api/v1/deliveries").get_data(as_text=True)])
    for value in (PASSPHRASE_VALUE, DATA_KEY_VALUE, "/nonexistent/keys/site-b", "site-b"):
        assert value not in seen
    assert sign_in(api, api.admin_token).status_code == 303
    dashboard = api.client.get("/dashboard/hosts")
    assert dashboard.status_code == 200
    assert PASSPHRASE_VALUE not in dashboard.get_data(as_text=True)


# --- What a scoped operator reads ------------------------------------------------------------


def b_names(api: ApiHarness) -> set[str]:
    with api.db.session() as session:
        site = session.scalars(select(Site).where(Site.name == B)).one()
        hosts = session.scalars(select(Host).where(Host.site_id == site.id)).all()
        names = {B}
        for host in hosts:
            names |= {host.name, *host.dns_names, *host.ip_addresses}
    return names


def test_a_scoped_operator_reads_no_other_sites_campaigns_metrics_or_pages(
    fleet: ApiHarness,
) -> None:
    api = fleet
    for name in ("hq-rec01", B_HOST, "aar-rec02"):
        assert api.post("/api/v1/issuance-requests", json={"host": name}).status_code == 202
    api.run_issuer()
    b_campaign = api.post(
        "/api/v1/campaigns", json={"name": "b-only", "selector": {"sites": [B]}}
    ).get_json()["id"]
    fleetwide = api.post("/api/v1/campaigns", json={"name": "all", "selector": {"all": True}})
    assert fleetwide.status_code == 201
    operator_a = api.token("operator", site=A)
    auditor_a = api.token("auditor", site=A)
    names = b_names(api)
    for token in (operator_a, auditor_a):
        bodies = [
            api.get("/api/v1/campaigns", token=token),
            api.get("/metrics", token=token),
            api.get("/api/v1/certificates", token=token),
            api.get("/api/v1/reports/expiry", query_string={"within_days": 3650}, token=token),
            api.get("/api/v1/events", token=token),
            api.get("/api/v1/deliveries", token=token),
        ]
        assert sign_in(api, token).status_code == 303
        for page in (
            "/dashboard/",
            "/dashboard/campaigns",
            "/dashboard/hosts",
            "/dashboard/events",
        ):
            bodies.append(api.client.get(page))
        for response in bodies:
            assert response.status_code == 200, response.request.path
            text = response.get_data(as_text=True)
            leaked = sorted(n for n in names if n in text)
            assert not leaked, (response.request.path, leaked)
        assert api.get(f"/api/v1/campaigns/{b_campaign}", token=token).status_code == 404
        assert api.get("/api/v1/campaigns", token=token).get_json() == []
    metrics = api.get("/metrics", token=operator_a).get_data(as_text=True)
    assert 'site="hq-copenhagen"' in metrics  # its own site is there


def test_admin_tokens_are_never_scoped(api: ApiHarness) -> None:
    api.apply_inventory()
    refused = api.post("/api/v1/tokens", json={"name": "x", "role": "admin", "site": A})
    assert refused.status_code == 422


def test_a_certificate_is_valid_for_at_most_the_days_asked_backdating_included(
    fleet: ApiHarness,
) -> None:
    api = fleet
    made = api.post("/api/v1/issuance-requests", json={"host": "hq-rec01", "validity_days": 825})
    assert made.status_code == 202
    api.run_issuer()
    with api.db.session() as session:
        cert = session.scalars(select(Certificate)).one()
        assert cert.not_after - cert.not_before <= dt.timedelta(days=825)


def test_a_new_authority_has_a_crl_from_the_moment_it_exists(api: ApiHarness) -> None:
    from services.issuer import service as issuer
    from tests.conftest import TEST_CA_PASSPHRASE, TEST_DATA_KEY

    assert api.get("/api/v1/authorities/1/crl", token="").status_code == 200  # certfleet init
    made = api.post("/api/v1/authorities", json={"name": "Second Root", "key_bits": 2048})
    assert made.status_code == 202
    authority_id = made.get_json()["id"]
    secrets = issuer.Secrets(TEST_CA_PASSPHRASE, TEST_DATA_KEY)
    assert issuer.create_authority(api.db, authority_id, secrets=secrets, clock=api.clock) == (
        "active"
    )
    crl = api.get(f"/api/v1/authorities/{authority_id}/crl", token="")
    assert crl.status_code == 200
    pem = api.get(f"/api/v1/authorities/{authority_id}/certificate.pem", token="").data
    from cryptography import x509 as _x509

    parsed = _x509.load_der_x509_crl(crl.data)
    assert len(parsed) == 0
    assert parsed.is_signature_valid(_x509.load_pem_x509_certificate(pem).public_key())  # type: ignore[arg-type]

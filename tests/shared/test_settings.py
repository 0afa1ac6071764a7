"""Settings: one frozen object from an environment mapping; every bad value reported at once."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from shared.errors import ConfigError
from shared.settings import (
    DEFAULT_API_BIND,
    DEFAULT_DATABASE_URL,
    DEFAULT_REDIS_URL,
    Settings,
    normalize_database_url,
)


def test_defaults_from_an_empty_environment() -> None:
    settings = Settings.from_env({})
    assert settings == Settings()
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.redis_url == DEFAULT_REDIS_URL
    assert settings.api_bind == DEFAULT_API_BIND
    assert settings.ca_key_passphrase is None
    assert settings.data_key is None
    assert settings.var_dir == Path("var")
    assert settings.log_level == "INFO"
    assert settings.issue_batch_size == 100
    assert settings.smtp_port == 25


def test_values_are_read_and_converted() -> None:
    settings = Settings.from_env(
        {
            "CERTFLEET_DATABASE_URL": "postgresql://certfleet@db/certfleet",
            "CERTFLEET_REDIS_URL": "redis://cache:6380/2",
            "CERTFLEET_API_BIND": "0.0.0.0:9000",
            "CERTFLEET_CA_KEY_PASSPHRASE": "a-long-ca-passphrase",
            "CERTFLEET_DATA_KEY": "a-long-data-key-value",
            "CERTFLEET_VAR_DIR": "/srv/certfleet",
            "CERTFLEET_LOG_LEVEL": "debug",
            "CERTFLEET_ISSUE_BATCH_SIZE": "25",
            "CERTFLEET_SMTP_PORT": "2525",
            "UNRELATED": "ignored",
        }
    )
    assert settings.database_url == "postgresql+psycopg://certfleet@db/certfleet"
    assert settings.redis_url == "redis://cache:6380/2"
    assert settings.api_bind == "0.0.0.0:9000"
    assert settings.ca_key_passphrase == "a-long-ca-passphrase"
    assert settings.data_key == "a-long-data-key-value"
    assert settings.var_dir == Path("/srv/certfleet")
    assert settings.log_level == "DEBUG"
    assert settings.issue_batch_size == 25
    assert settings.smtp_port == 2525


def test_empty_strings_count_as_unset() -> None:
    settings = Settings.from_env({"CERTFLEET_DATABASE_URL": "", "CERTFLEET_DATA_KEY": ""})
    assert settings.database_url == DEFAULT_DATABASE_URL
    assert settings.data_key is None


def test_every_invalid_value_is_reported_in_one_error() -> None:
    env = {
        "CERTFLEET_DATABASE_URL": "mysql://db/x",
        "CERTFLEET_REDIS_URL": "http://cache",
        "CERTFLEET_API_BIND": "no-port",
        "CERTFLEET_CA_KEY_PASSPHRASE": "short",
        "CERTFLEET_DATA_KEY": "tiny",
        "CERTFLEET_LOG_LEVEL": "LOUD",
        "CERTFLEET_ISSUE_BATCH_SIZE": "many",
        "CERTFLEET_BULK_MAX_ITEMS": "0",
        "CERTFLEET_MAX_BODY_BYTES": "10",
    }
    with pytest.raises(ConfigError) as info:
        Settings.from_env(env)
    message = info.value.message
    for name in env:
        assert name in message, f"{name} missing from: {message}"
    assert "short" not in message
    assert "tiny" not in message
    assert info.value.code == "configuration_error"


@pytest.mark.parametrize("bind", ["127.0.0.1:0", "127.0.0.1:65536", ":8080", "host:http"])
def test_bad_api_bind_is_refused(bind: str) -> None:
    with pytest.raises(ConfigError, match="CERTFLEET_API_BIND"):
        Settings.from_env({"CERTFLEET_API_BIND": bind})


def test_secrets_are_absent_from_repr() -> None:
    settings = Settings.from_env(
        {
            "CERTFLEET_CA_KEY_PASSPHRASE": "ca-secret-passphrase",
            "CERTFLEET_DATA_KEY": "data-secret-key-value",
        }
    )
    text = repr(settings) + str(settings)
    assert "ca-secret-passphrase" not in text
    assert "data-secret-key-value" not in text
    assert "ca_key_passphrase" not in text
    assert "database_url" in text


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.database_url = "sqlite:///other.db"  # type: ignore[misc]


def test_required_secrets() -> None:
    empty = Settings.from_env({})
    with pytest.raises(ConfigError, match="CERTFLEET_CA_KEY_PASSPHRASE"):
        empty.require_ca_passphrase()
    with pytest.raises(ConfigError, match="CERTFLEET_DATA_KEY"):
        empty.require_data_key()
    full = Settings(ca_key_passphrase="p" * 12, data_key="d" * 12)
    assert full.require_ca_passphrase() == "p" * 12
    assert full.require_data_key() == "d" * 12


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("postgresql://u@h/db", "postgresql+psycopg://u@h/db"),
        ("postgresql+psycopg://u@h/db", "postgresql+psycopg://u@h/db"),
        ("sqlite:///var/x.db", "sqlite:///var/x.db"),
    ],
)
def test_normalize_database_url(url: str, expected: str) -> None:
    assert normalize_database_url(url) == expected


def test_crl_validity_days() -> None:
    assert Settings.from_env({}).crl_validity_days == 7
    assert Settings.from_env({"CERTFLEET_CRL_VALIDITY_DAYS": "3"}).crl_validity_days == 3
    with pytest.raises(ConfigError, match="CERTFLEET_CRL_VALIDITY_DAYS must be at least 1"):
        Settings.from_env({"CERTFLEET_CRL_VALIDITY_DAYS": "0"})


def test_renewal_tunables_come_from_the_environment() -> None:
    settings = Settings.from_env(
        {"CERTFLEET_RENEW_SCAN_LIMIT": "2000", "CERTFLEET_RENEW_PER_SITE": "12"}
    )
    assert (settings.renew_scan_limit, settings.renew_per_site) == (2000, 12)
    assert (Settings().renew_scan_limit, Settings().renew_per_site) == (500, 5)
    with pytest.raises(ConfigError, match="RENEW_PER_SITE"):
        Settings.from_env({"CERTFLEET_RENEW_PER_SITE": "0"})

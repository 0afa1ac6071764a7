"""Name policy: syntax, suffixes and IP ranges."""

from __future__ import annotations

import ipaddress

import pytest

from shared.errors import PolicyViolation, ValidationFailed
from shared.policy import (
    SitePolicy,
    normalize_dns_name,
    normalize_dns_suffix,
    parse_ip,
    parse_network,
)


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        ("Rec01.Site1.Example.COM", "rec01.site1.example.com"),
        ("rec01.site1.example.com.", "rec01.site1.example.com"),
        ("  rec01  ", "rec01"),
        ("a-b.c0", "a-b.c0"),
    ],
)
def test_dns_names_are_normalized(raw: str, expected: str) -> None:
    assert normalize_dns_name(raw) == expected


@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("", "empty"),
        (".", "empty"),
        ("*.example.com", "wildcards"),
        ("-rec.example.com", "bad label"),
        ("rec-.example.com", "bad label"),
        ("rec_01.example.com", "bad label"),
        ("a..b", "bad label"),
        ("x" * 64 + ".example.com", "bad label"),
        (("a" * 60 + ".") * 5, "longer than 253"),
    ],
)
def test_invalid_dns_names_are_refused(raw: str, why: str) -> None:
    with pytest.raises(ValidationFailed, match=why):
        normalize_dns_name(raw)


def test_suffix_may_have_a_leading_dot() -> None:
    assert normalize_dns_suffix(".Site1.Example.com") == "site1.example.com"


def test_ip_and_network_parsing() -> None:
    assert parse_ip(" 10.1.0.10 ") == ipaddress.ip_address("10.1.0.10")
    assert parse_ip("fd00::1") == ipaddress.ip_address("fd00::1")
    assert parse_network("10.1.2.3/16") == ipaddress.ip_network("10.1.0.0/16")
    with pytest.raises(ValidationFailed, match="invalid IP address"):
        parse_ip("10.1.0.300")
    with pytest.raises(ValidationFailed, match="invalid IP range"):
        parse_network("10.1.0.0/33")


@pytest.fixture
def policy() -> SitePolicy:
    return SitePolicy.build(
        ["Site1.Example.com", ".cams.example.net"], ["10.1.0.0/16", "fd00::/64"]
    )


@pytest.mark.parametrize(
    ("name", "allowed"),
    [
        ("rec01.site1.example.com", True),
        ("site1.example.com", True),
        ("deep.rec01.site1.example.com", True),
        ("cam7.cams.example.net", True),
        ("rec01", True),
        ("evilsite1.example.com", False),
        ("rec01.site1.example.com.attacker.org", False),
        ("rec01.site2.example.com", False),
        ("example.com", False),
    ],
)
def test_dns_suffix_matching(policy: SitePolicy, name: str, allowed: bool) -> None:
    assert policy.dns_name_allowed(name) is allowed


def test_short_names_can_be_forbidden() -> None:
    strict = SitePolicy.build(["site1.example.com"], [], allow_short_names=False)
    assert strict.dns_name_allowed("rec01") is False
    assert strict.dns_name_allowed("rec01.site1.example.com") is True


@pytest.mark.parametrize(
    ("ip", "allowed"),
    [
        ("10.1.0.10", True),
        ("10.1.255.255", True),
        ("10.2.0.1", False),
        ("192.168.1.1", False),
        ("fd00::10", True),
        ("fd00:0:0:1::10", False),
        ("::ffff:10.1.0.10", False),
    ],
)
def test_ip_range_matching(policy: SitePolicy, ip: str, allowed: bool) -> None:
    assert policy.ip_allowed(ipaddress.ip_address(ip)) is allowed


def test_empty_policy_allows_only_short_names() -> None:
    empty = SitePolicy.build([], [])
    assert empty.dns_name_allowed("rec01") is True
    assert empty.dns_name_allowed("rec01.example.com") is False
    assert empty.ip_allowed(ipaddress.ip_address("10.1.0.10")) is False


def test_violations_name_every_problem(policy: SitePolicy) -> None:
    problems = policy.violations(
        ["rec01.site1.example.com", "bad.other.org", "worse.other.org"],
        [ipaddress.ip_address("10.1.0.10"), ipaddress.ip_address("172.16.0.1")],
    )
    assert problems == [
        "DNS name 'bad.other.org' is outside the site's allowed suffixes",
        "DNS name 'worse.other.org' is outside the site's allowed suffixes",
        "IP address '172.16.0.1' is outside the site's allowed ranges",
    ]


def test_enforce_raises_with_all_problems(policy: SitePolicy) -> None:
    policy.enforce(["rec01.site1.example.com"], [ipaddress.ip_address("10.1.0.10")])
    with pytest.raises(PolicyViolation) as info:
        policy.enforce(["bad.other.org"], [ipaddress.ip_address("172.16.0.1")])
    assert info.value.code == "policy_violation"
    assert "bad.other.org" in info.value.message
    assert "172.16.0.1" in info.value.message
    assert info.value.errors is not None
    assert len(info.value.errors["names"]) == 2


def test_build_refuses_bad_policy_input() -> None:
    with pytest.raises(ValidationFailed):
        SitePolicy.build(["*.example.com"], [])
    with pytest.raises(ValidationFailed):
        SitePolicy.build([], ["not-a-range"])

"""The real app (tests.services.api.conftest's harness, on both databases) served over real
HTTP on loopback, for CLI commands that talk to it through requests."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from click.testing import CliRunner, Result

from services.cli.main import cli
from tests.services.api.conftest import ApiHarness, api, serving  # noqa: F401 (the fixture)


@dataclass
class ServedApi:
    harness: ApiHarness
    url: str

    def cli(self, *args: str, token: str | None = None) -> Result:
        """Run `certfleet ARGS` in this process against the served API."""
        options = ["--api-url", self.url, "--token", token or self.harness.admin_token]
        return CliRunner().invoke(cli, [*options, *args], catch_exceptions=False)


@pytest.fixture
def served(api: ApiHarness) -> Iterator[ServedApi]:  # noqa: F811
    with serving(api.app) as url:
        yield ServedApi(api, url)

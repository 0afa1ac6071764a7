"""A small client of the certfleet API. Errors come back as CliError with the server's
message, never a traceback."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import requests


class CliError(Exception):
    """Something the operator must see: printed without a traceback, exit code 1."""


@dataclass
class ApiClient:
    base_url: str
    token: str | None = field(default=None, repr=False)
    timeout: float = 60.0
    session: requests.Session = field(default_factory=requests.Session)

    def request(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = dict(kwargs.pop("headers", {}) or {})
        if self.token:
            headers["Authorization"] = f"Bearer {self.token}"
        url = self.base_url.rstrip("/") + path
        try:
            response = self.session.request(
                method, url, headers=headers, timeout=self.timeout, **kwargs
            )
        except requests.ConnectionError as exc:
            raise CliError(f"cannot reach the certfleet API at {self.base_url}") from exc
        if response.status_code >= 400:
            raise CliError(describe_error(response))
        return response

    def get_json(self, path: str, **params: Any) -> Any:
        clean = {k: v for k, v in params.items() if v is not None}
        return self.request("GET", path, params=clean).json()

    def post_json(self, path: str, body: Any, **kwargs: Any) -> Any:
        return self.request("POST", path, json=body, **kwargs).json()

    def paged(self, path: str, **params: Any) -> Iterator[dict[str, Any]]:
        """Every item of a cursor-paginated listing."""
        cursor = None
        while True:
            page = self.get_json(path, cursor=cursor, **params)
            yield from page["items"]
            cursor = page.get("next_cursor")
            if not cursor:
                return


def describe_error(response: requests.Response) -> str:
    try:
        payload = response.json()
    except ValueError:
        return f"HTTP {response.status_code}: {response.text[:200]}"
    message = f"{payload.get('message', 'error')} ({response.status_code} {payload.get('code')})"
    errors = payload.get("errors")
    if errors:
        message += "\n" + "\n".join(f"  - {k}: {v}" for k, v in flatten(errors))
    return message


def flatten(errors: Any, prefix: str = "") -> Iterator[tuple[str, Any]]:
    if isinstance(errors, dict):
        for key, value in errors.items():
            yield from flatten(value, f"{prefix}.{key}" if prefix else str(key))
    else:
        yield prefix or "error", errors

"""Who may read and change what: the one authorization layer.

Every read and write of a site-owned row (site, host, certificate, issuance request, delivery,
campaign, event, notification channel, agent enrolment) is decided here, for a `Principal`:
the token's role and, for a token scoped to one site, that site. Routes, inventory apply, the
dashboard and /metrics all ask these functions; none writes its own check.

- Reads: `scope(query, column, who)` filters a query to the rows the principal may see, and
  `require_read(who, site_id)` refuses one row outside them (404: a scoped reader learns
  nothing of another site, not even that the row exists).
- Writes: `require_write(who, site_id)` for the row as it is, and again for the row as it
  will be (a host moved between sites is checked on both sides).
- Fields: `FIELD_RULES` says which role may change each field of a site or a host;
  `require_fields(who, kind, fields)` refuses a change that touches a field above the role.
  Inventory apply calls exactly the same functions as the routes.

Roles rank agent < auditor < operator < admin. An admin is never scoped; an auditor or an
operator with a site reads (and, for an operator, writes) that site only.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Final, Literal, TypeVar

from sqlalchemy import false

from shared.errors import Forbidden, OutOfScope

ADMIN: Final = "admin"
OPERATOR: Final = "operator"
AUDITOR: Final = "auditor"
AGENT: Final = "agent"  # host-scoped; reaches only /api/v1/agent/*
ROLE_RANK = {AGENT: -1, AUDITOR: 0, OPERATOR: 1, ADMIN: 2}

Role = Literal["admin", "operator"]
Kind = Literal["site", "host"]

# Which role may change each field. "create" and "delete" are the row itself. Everything an
# operator may do, it does within the site(s) its token reaches; a site's authority and name
# policy decide which names its certificates may carry, so only an admin widens them.
FIELD_RULES: dict[Kind, dict[str, Role]] = {
    "site": {
        "create": ADMIN,
        "delete": ADMIN,
        "authority": ADMIN,
        "dns_suffixes": ADMIN,
        "ip_ranges": ADMIN,
        "allow_short_names": ADMIN,
        "description": OPERATOR,
        "maintenance_window": OPERATOR,
        "renew_at_fraction": OPERATOR,
        "default_validity_days": OPERATOR,
        "muted_until": OPERATOR,
    },
    "host": {
        "create": OPERATOR,
        "delete": OPERATOR,
        "site": OPERATOR,  # checked on the old site and on the new one
        "dns_names": OPERATOR,
        "ip_addresses": OPERATOR,
        "roles": OPERATOR,
        "failover_for": OPERATOR,
        "platform": OPERATOR,
        "service_account": OPERATOR,
        "delivery": OPERATOR,
        "tls_endpoints": OPERATOR,
    },
}


@dataclass(frozen=True)
class Principal:
    token_id: int
    name: str
    role: str
    site_id: int | None
    host_id: int | None = None

    @property
    def actor(self) -> str:
        return f"token:{self.token_id}:{self.name}"

    @property
    def scoped_site_id(self) -> int | None:
        """The one site this token reads and writes; None: every site (or, for an agent,
        none but its host's agent endpoints)."""
        return self.site_id if self.role in (AUDITOR, OPERATOR) else None

    def at_least(self, role: str) -> bool:
        return ROLE_RANK[self.role] >= ROLE_RANK[role]

    def can_read_site(self, site_id: int | None) -> bool:
        if self.role == AGENT:
            return False
        scoped = self.scoped_site_id
        return scoped is None or scoped == site_id

    def can_write_site(self, site_id: int | None) -> bool:
        if self.role == ADMIN:
            return True
        return self.role == OPERATOR and self.can_read_site(site_id)

    def require_read(self, site_id: int | None) -> None:
        """Refuse a row this principal may not see, as if it did not exist."""
        if not self.can_read_site(site_id):
            raise OutOfScope("no such object in this token's scope")

    def require_write(self, site_id: int | None) -> None:
        self.require_read(site_id)
        if self.role == AUDITOR:
            raise Forbidden("auditor tokens are read-only")
        if not self.can_write_site(site_id):
            raise Forbidden("this needs the operator role")

    def require_role(self, role: str) -> None:
        if not self.at_least(role):
            raise Forbidden(f"this needs the {role} role")


Q = TypeVar("Q")


def scope(query: Q, column: Any, who: Principal) -> Q:
    """`query` limited to the rows of the principal's site, for a scoped principal. `column`
    is the site ID column that owns the row (Host.site_id for a host's rows)."""
    if who.role == AGENT:
        return query.where(false())  # type: ignore[attr-defined,no-any-return]
    site_id = who.scoped_site_id
    return query if site_id is None else query.where(column == site_id)  # type: ignore[attr-defined]


def required_role(kind: Kind, fields: Iterable[str]) -> Role:
    """The highest role any of these fields needs (unknown fields need an admin)."""
    rules = FIELD_RULES[kind]
    return ADMIN if any(rules.get(f, ADMIN) == ADMIN for f in fields) else OPERATOR


def require_fields(who: Principal, kind: Kind, fields: Iterable[str]) -> None:
    """Refuse a change to `fields` of a `kind` row that the principal's role may not make."""
    wanted = sorted(set(fields))
    if not wanted:
        return
    if who.role not in (ADMIN, OPERATOR):
        raise Forbidden("this needs the operator role")
    above = [f for f in wanted if FIELD_RULES[kind].get(f, ADMIN) == ADMIN]
    if above and who.role != ADMIN:
        raise Forbidden(f"only an admin may {_change(kind, above)}")


def _change(kind: Kind, fields: list[str]) -> str:
    for verb in ("create", "delete"):
        if verb in fields:
            return f"{verb} a {kind}"
    return f"change a {kind}'s {', '.join(fields)}"


def require_change(
    who: Principal,
    kind: Kind,
    fields: Iterable[str],
    *,
    before_site_id: int | None,
    after_site_id: int | None,
) -> None:
    """A write to a site-owned row: the fields' rule, the row as it is (if it exists) and
    the row as it will be."""
    require_fields(who, kind, fields)
    if before_site_id is not None:
        who.require_write(before_site_id)
    who.require_write(after_site_id)

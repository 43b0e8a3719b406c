"""Tenants and API tokens (only SHA-256 digests are stored)."""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import asdict, dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session

from archscreen.store.db import utcnow
from archscreen.store.models import ApiToken, Tenant

TOKEN_PREFIX = "as_"


def hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def get_or_create_tenant(s: Session, name: str) -> Tenant:
    tenant = s.scalar(select(Tenant).where(Tenant.name == name))
    if tenant is None:
        tenant = Tenant(name=name)
        s.add(tenant)
        s.flush()
    return tenant


def create_token(s: Session, tenant_name: str, token_name: str = "") -> str:
    """A new token for ``tenant_name`` (created if missing); the plain token is returned once."""
    tenant = get_or_create_tenant(s, tenant_name)
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    s.add(ApiToken(tenant_id=tenant.id, token_hash=hash_token(token), prefix=token[:8], name=token_name))
    s.flush()
    return token


def tenant_for_token(s: Session, token: str) -> Tenant | None:
    row = s.scalar(
        select(ApiToken).where(ApiToken.token_hash == hash_token(token), ApiToken.revoked_at.is_(None))
    )
    return None if row is None else s.get(Tenant, row.tenant_id)


@dataclass(frozen=True)
class TokenInfo:
    """What may be shown of a token: never the token or its digest."""

    id: int
    tenant: str
    prefix: str
    name: str
    created_at: datetime
    revoked_at: datetime | None

    def as_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["created_at"] = self.created_at.isoformat() + "Z"
        out["revoked_at"] = self.revoked_at.isoformat() + "Z" if self.revoked_at else None
        return out


class TokenNotFound(LookupError):
    pass


def _info(token: ApiToken, tenant: str) -> TokenInfo:
    return TokenInfo(token.id, tenant, token.prefix, token.name, token.created_at, token.revoked_at)


def list_tokens(s: Session, *, tenant: str | None = None) -> list[TokenInfo]:
    query = select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id).order_by(ApiToken.id)
    if tenant is not None:
        query = query.where(Tenant.name == tenant)
    return [_info(token, name) for token, name in s.execute(query).all()]


def revoke_token(s: Session, id_or_prefix: str) -> TokenInfo:
    """Revoke one token, named by id or by its shown prefix (refused when the prefix is ambiguous).

    Revoking a revoked token is a no-op that returns it (safe to repeat)."""
    query = select(ApiToken, Tenant.name).join(Tenant, Tenant.id == ApiToken.tenant_id)
    if id_or_prefix.isdigit():
        rows = s.execute(query.where(ApiToken.id == int(id_or_prefix))).all()
    else:
        rows = s.execute(query.where(ApiToken.prefix == id_or_prefix)).all()
    if not rows:
        raise TokenNotFound(f"no token with id or prefix {id_or_prefix!r} (see `archscreen token list`)")
    if len(rows) > 1:
        ids = ", ".join(str(token.id) for token, _ in rows)
        raise TokenNotFound(f"prefix {id_or_prefix!r} matches tokens {ids}: revoke by id")
    token, tenant = rows[0]
    if token.revoked_at is None:
        token.revoked_at = utcnow()
        s.flush()
    return _info(token, tenant)

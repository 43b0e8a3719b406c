"""Tenants and API tokens (only SHA-256 digests are stored)."""

from __future__ import annotations

import hashlib
import secrets

from archscreen.store.models import ApiToken, Tenant
from sqlalchemy import select
from sqlalchemy.orm import Session

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

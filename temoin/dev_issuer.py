"""The built-in development issuer: an Ed25519 key pair under var/dev-issuer/ and its JWKS,
so that `make run` and the tests authenticate people exactly as production does with Keycloak
or ProConnect, without either. Production refuses it (services/config.py)."""

from __future__ import annotations

import base64
import json
import os
import uuid
from collections.abc import Iterable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from services.config import DEV_AUTH_ISSUER


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DevIssuer:
    def __init__(self, directory: Path, *, issuer: str = DEV_AUTH_ISSUER, audience: str = "temoin"):
        self.directory = directory
        self.issuer = issuer
        self.audience = audience
        self.key_path = directory / "private.pem"
        self.jwks_path = directory / "jwks.json"

    @property
    def jwks_url(self) -> str:
        return self.jwks_path.resolve().as_uri()

    def ensure_keys(self) -> DevIssuer:
        """Create the key pair and its JWKS once; later runs reuse them."""
        if self.key_path.exists() and self.jwks_path.exists():
            return self
        self.directory.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        fd = os.open(self.key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "wb") as handle:
            handle.write(pem)
        public = key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )
        jwk = {
            "kty": "OKP",
            "crv": "Ed25519",
            "x": _b64url(public),
            "kid": _b64url(public[:12]),
            "alg": "EdDSA",
            "use": "sig",
        }
        self.jwks_path.write_text(json.dumps({"keys": [jwk]}, indent=2))
        return self

    def _private_key(self) -> Ed25519PrivateKey:
        key = serialization.load_pem_private_key(self.key_path.read_bytes(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"{self.key_path} is not an Ed25519 key")
        return key

    def _kid(self) -> str:
        kid: str = json.loads(self.jwks_path.read_text())["keys"][0]["kid"]
        return kid

    def mint(
        self,
        subject: str,
        roles: Iterable[str],
        *,
        organisation_id: uuid.UUID | None = None,
        departement: str | None = None,
        name: str | None = None,
        ttl: timedelta = timedelta(hours=8),
        now: datetime | None = None,
    ) -> str:
        issued = now or datetime.now(UTC)
        claims: dict[str, object] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": int(issued.timestamp()),
            "exp": int((issued + ttl).timestamp()),
            "roles": sorted(set(roles)),
        }
        if organisation_id is not None:
            claims["org"] = str(organisation_id)
        if departement is not None:
            claims["departement"] = departement
        if name is not None:
            claims["name"] = name
        return jwt.encode(
            claims, self._private_key(), algorithm="EdDSA", headers={"kid": self._kid()}
        )

"""Station authentication: a signed assertion in, a short-lived bearer token out.

An assertion is refused when it is forged (signature), stale (clock too far from ours), replayed
(nonce already seen), or from an unknown or revoked station. The token is an HS256 JWT that only
ingest issues and checks; every use re-reads the station, so revoking it takes effect at once.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from sqlalchemy.ext.asyncio import AsyncSession

from services.ingest.stations.repository import StationKey, StationRepository
from services.ingest.stations.schemas import AssertionIn, StationToken
from shared.auth import decode_token
from shared.errors import Unauthenticated
from shared.inputs import parse_instant
from shared.signatures import StationAssertion, verify

TOKEN_ISSUER = "temoin-ingest"
TOKEN_AUDIENCE = "temoin-ingest-upload"
STATION_TOKEN = "the token a docking station gets from POST /v1/stations/token"
STATION_RENEW = (
    "get a new one with a freshly signed assertion (POST /v1/stations/token; `temoin dock` "
    "does it by itself)"
)


def _parse_timestamp(value: str) -> datetime:
    try:
        return parse_instant(value)
    except ValueError as exc:
        raise Unauthenticated(
            "the assertion's timestamp is not an RFC 3339 instant with its time zone"
        ) from exc


class StationAuthService:
    def __init__(
        self,
        session: AsyncSession,
        *,
        secret: str,
        token_ttl: timedelta,
        max_skew: timedelta,
    ) -> None:
        self.session = session
        self.repository = StationRepository(session)
        self.secret = secret
        self.token_ttl = token_ttl
        self.max_skew = max_skew

    async def exchange(self, data: AssertionIn, now: datetime | None = None) -> StationToken:
        now = now or datetime.now(UTC)
        station = await self.repository.station(data.station_id)
        if station is None:
            raise Unauthenticated(
                f"unknown station {data.station_id}: a maire or responsable must register it "
                "(`temoin station register`), and the dock use the key file it writes"
            )
        assertion = StationAssertion(
            station_id=str(data.station_id),
            timestamp=data.timestamp,
            nonce=data.nonce,
            signature=data.signature,
        )
        if not verify(station.public_key, assertion.message(), data.signature):
            raise Unauthenticated(
                "the assertion's signature does not verify with the station's registered key: "
                "the dock must sign with the key file written when it was registered"
            )
        if not station.active:
            raise Unauthenticated(
                "this station was revoked: a maire or responsable must register the dock again "
                "(`temoin station register`)"
            )
        moment = _parse_timestamp(data.timestamp)
        if abs(now - moment) > self.max_skew:
            raise Unauthenticated(
                f"the assertion's timestamp is more than {int(self.max_skew.total_seconds())} "
                "s from the server's clock: set the dock's clock right (NTP)"
            )
        # A nonce need only be remembered while its assertion could still pass the time check.
        if not await self.repository.use_nonce(
            station.station_id, data.nonce, moment + self.max_skew
        ):
            raise Unauthenticated(
                "assertion already used (replay): sign a new one, with a fresh nonce"
            )
        await self.repository.forget_nonces_before(now - self.max_skew)
        token = jwt.encode(
            {
                "iss": TOKEN_ISSUER,
                "aud": TOKEN_AUDIENCE,
                "sub": str(station.station_id),
                "org": str(station.organisation_id),
                "iat": int(now.timestamp()),
                "exp": int((now + self.token_ttl).timestamp()),
            },
            self.secret,
            algorithm="HS256",
        )
        return StationToken(access_token=token, expires_in=int(self.token_ttl.total_seconds()))

    async def authenticate(self, token: str) -> StationKey:
        """The station behind an upload token, which must still be active."""
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            issuer = None  # not a JWT: decode_token says so
        if issuer is not None and issuer != TOKEN_ISSUER:
            raise Unauthenticated(
                "this route takes a docking station's token, not a person's: a dock gets one "
                "from POST /v1/stations/token (`temoin dock` does it by itself)"
            )
        claims = decode_token(
            token,
            self.secret,
            algorithms=["HS256"],
            audience=TOKEN_AUDIENCE,
            issuer=TOKEN_ISSUER,
            required=["sub", "org"],
            kind="station token",
            renew=STATION_RENEW,
        )
        try:
            station_id = uuid.UUID(str(claims["sub"]))
        except ValueError as exc:
            raise Unauthenticated(
                f"invalid station token: its subject is not a station id; {STATION_RENEW}"
            ) from exc
        station = await self.repository.station(station_id)
        if station is None or not station.active:
            raise Unauthenticated(
                "this token's station is unknown or revoked: a maire or responsable must "
                "register the dock again (`temoin station register`)"
            )
        return station

"""People authenticate with OIDC bearer tokens; docking stations with an Ed25519-signed
assertion traded for a short-lived token. Everything else is refused with a 401 problem."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from nacl.signing import SigningKey

from shared.signatures import StationAssertion, b64encode
from temoin.dev_issuer import DevIssuer
from tests.fixtures.directory import World, station_token
from tests.fixtures.servers import Servers


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _assert_401(response_coro: object, *says: str) -> dict[str, object]:
    """A 401 problem whose detail holds each of ``says`` (the cause and what to do)."""
    response = await response_coro  # type: ignore[misc]
    assert response.status_code == 401, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    body: dict[str, object] = response.json()
    for words in says:
        assert words in str(body["detail"]), (words, body["detail"])
    return body


async def test_people_tokens_that_must_be_refused(
    world: World, servers: Servers, tmp_path: object
) -> None:
    issuer = servers.issuer
    org = world.own.id
    me = "/v1/me"
    await _assert_401(world.vault.get(me), "no token", "Authorization: Bearer <access token>")
    await _assert_401(
        world.vault.get(me, headers={"Authorization": "Basic dXNlcjpwdw=="}),
        "expected 'Authorization: Bearer <access token>'",
    )
    await _assert_401(
        world.vault.get(me, headers=_bearer("not.a.jwt")), "not a token (a JWT)", "access token"
    )

    expired = issuer.mint(
        "maire-x", ["maire"], organisation_id=org, now=datetime.now(UTC) - timedelta(hours=9)
    )
    await _assert_401(
        world.vault.get(me, headers=_bearer(expired)),
        "token expired: sign in again to get a new token from the identity provider",
    )

    # Signed by another key that claims the same kid: the signature fails.
    forger = DevIssuer(tmp_path / "forger").ensure_keys()  # type: ignore[operator]
    forged = jwt.encode(
        jwt.decode(issuer.mint("maire-x", ["maire"], organisation_id=org),
                   options={"verify_signature": False}),
        forger._private_key(),
        algorithm="EdDSA",
        headers={"kid": issuer._kid()},
    )  # fmt: skip
    await _assert_401(
        world.vault.get(me, headers=_bearer(forged)), "signature does not verify", "altered"
    )

    # Unknown kid, wrong issuer, wrong audience, no expiry, and alg "none".
    await _assert_401(
        world.vault.get(
            me, headers=_bearer(forger.mint("maire-x", ["maire"], organisation_id=org))
        ),
        "signing key is not among the identity provider's",
        "sign in again",
    )
    wrong_issuer = DevIssuer(issuer.directory, issuer="https://evil.example").mint(
        "maire-x", ["maire"], organisation_id=org
    )
    await _assert_401(
        world.vault.get(me, headers=_bearer(wrong_issuer)),
        "issued by 'https://evil.example'",
        f"from the identity provider {issuer.issuer!r}",
    )
    wrong_audience = DevIssuer(issuer.directory, audience="another-app").mint(
        "maire-x", ["maire"], organisation_id=org
    )
    await _assert_401(
        world.vault.get(me, headers=_bearer(wrong_audience)),
        "for another audience",
        "aud is 'temoin'",
    )
    no_exp = jwt.encode(
        {"iss": issuer.issuer, "aud": "temoin", "sub": "x", "iat": 1, "roles": ["maire"]},
        issuer._private_key(),
        algorithm="EdDSA",
        headers={"kid": issuer._kid()},
    )
    await _assert_401(
        world.vault.get(me, headers=_bearer(no_exp)), "lacks the claim 'exp'", "its issuer"
    )
    unsigned = jwt.encode(
        {"iss": issuer.issuer, "aud": "temoin", "sub": "x", "exp": 2**40, "iat": 1},
        None,
        algorithm="none",
        headers={"kid": issuer._kid()},
    )
    await _assert_401(world.vault.get(me, headers=_bearer(unsigned)), "algorithm")
    bad_org = issuer.mint("maire-x", ["maire"])
    claims = jwt.decode(bad_org, options={"verify_signature": False}) | {"org": "commune-94"}
    bad_org = jwt.encode(claims, issuer._private_key(), algorithm="EdDSA",
                         headers={"kid": issuer._kid()})  # fmt: skip
    await _assert_401(
        world.vault.get(me, headers=_bearer(bad_org)),
        "organisation (claim 'org') is not a UUID",
        "the organisation's id in Témoin",
    )
    no_subject = jwt.encode(
        {k: v for k, v in claims.items() if k != "sub"} | {"org": str(org)},
        issuer._private_key(),
        algorithm="EdDSA",
        headers={"kid": issuer._kid()},
    )
    await _assert_401(
        world.vault.get(me, headers=_bearer(no_subject)), "lacks the claim 'sub'", "its issuer"
    )


async def test_tokens_issued_in_the_future_are_refused(world: World, servers: Servers) -> None:
    """People's tokens (OIDC) and stations' (ingest's own) share one rule: an issue time
    beyond the clocks' tolerance is refused, within it accepted."""
    issuer, own = servers.issuer, world.own
    later = datetime.now(UTC) + timedelta(minutes=5)
    ahead = issuer.mint("maire-x", ["maire"], organisation_id=own.id, now=later)
    await _assert_401(
        world.vault.get("/v1/me", headers=_bearer(ahead)), "issued in the future", "clock"
    )
    slightly = datetime.now(UTC) + timedelta(seconds=10)
    skewed = issuer.mint("maire-x", ["maire"], organisation_id=own.id, now=slightly)
    assert (await world.vault.get("/v1/me", headers=_bearer(skewed))).status_code == 200

    claims = jwt.decode(own.tokens["station"], options={"verify_signature": False})
    secret = "temoin-dev-station-token-secret-change-me"
    for iat, status in ((int(later.timestamp()), 401), (int(slightly.timestamp()), 200)):
        token = jwt.encode(claims | {"iat": iat}, secret, algorithm="HS256")
        response = await world.ingest.get("/v1/stations/me", headers=_bearer(token))
        assert response.status_code == status, response.text
    for iat in ("1", None):
        spoiled = {k: v for k, v in (claims | {"iat": iat}).items() if v is not None}
        token = jwt.encode(spoiled, secret, algorithm="HS256")
        await _assert_401(world.ingest.get("/v1/stations/me", headers=_bearer(token)))


async def test_claims_the_database_cannot_hold_are_refused(world: World, servers: Servers) -> None:
    issuer = servers.issuer
    for subject in ("maire\x00x", "maire\ud800x"):
        token = issuer.mint(subject, ["maire"], organisation_id=world.own.id)
        await _assert_401(world.vault.get("/v1/me", headers=_bearer(token)))


async def test_keycloak_style_claims(servers: Servers) -> None:
    from services.config import ServiceSettings
    from shared.auth import ClaimNames, principal_from_claims

    principal = principal_from_claims(
        {
            "sub": "u1",
            "realm_access": {"roles": ["responsable", "offline_access", "station"]},
            "commune": str(uuid.UUID(int=1)),
        },
        ClaimNames(organisation="commune", roles="realm_access.roles"),
    )
    # Unknown roles are dropped, and a person can never hold the station role.
    assert {r.value for r in principal.roles} == {"responsable"}
    assert principal.organisation_id == uuid.UUID(int=1)
    assert ServiceSettings.model_fields["auth_roles_claim"].default == "roles"


# --- docking stations --------------------------------------------------------------------


async def test_station_flow_with_a_real_key_pair(world: World) -> None:
    own = world.own
    assert own.station_id is not None and own.station_key is not None
    token = await station_token(world.ingest, own.station_id, own.station_key)
    me = await world.ingest.get("/v1/stations/me", headers=_bearer(token))
    assert me.status_code == 200
    assert me.json() == {
        "station_id": str(own.station_id),
        "organisation_id": str(own.id),
        "name": me.json()["name"],
    }
    # A station token is for ingest only: the vault does not know it.
    await _assert_401(
        world.vault.get("/v1/me", headers=_bearer(token)),
        "issued by 'temoin-ingest'",
        "this service takes people's tokens",
    )
    # And a person's token is not a station token.
    await _assert_401(
        world.ingest.get("/v1/stations/me", headers=own.headers("responsable")),
        "takes a docking station's token, not a person's",
        "POST /v1/stations/token",
    )
    await _assert_401(
        world.ingest.get("/v1/stations/me"), "no token", "Authorization: Bearer <access token>"
    )


def _assertion(
    station_id: uuid.UUID, key: SigningKey, *, at: datetime | None = None
) -> dict[str, str]:
    return StationAssertion.sign(str(station_id), key, at or datetime.now(UTC)).__dict__


async def test_station_assertions_that_must_be_refused(world: World) -> None:
    own = world.own
    assert own.station_id is not None and own.station_key is not None
    url = "/v1/stations/token"

    fresh = _assertion(own.station_id, own.station_key)
    assert (await world.ingest.post(url, json=fresh)).status_code == 200
    await _assert_401(world.ingest.post(url, json=fresh), "replay", "fresh nonce")

    stale = _assertion(own.station_id, own.station_key, at=datetime.now(UTC) - timedelta(minutes=5))
    await _assert_401(world.ingest.post(url, json=stale), "server's clock", "NTP")
    future = _assertion(
        own.station_id, own.station_key, at=datetime.now(UTC) + timedelta(minutes=5)
    )
    await _assert_401(world.ingest.post(url, json=future))

    forged = _assertion(own.station_id, SigningKey.generate())
    await _assert_401(
        world.ingest.post(url, json=forged),
        "signature does not verify with the station's registered key",
        "key file",
    )
    tampered = {**_assertion(own.station_id, own.station_key), "nonce": "0" * 32}
    await _assert_401(world.ingest.post(url, json=tampered))
    garbage_signature = {**_assertion(own.station_id, own.station_key), "signature": "!!"}
    await _assert_401(world.ingest.post(url, json=garbage_signature))

    unknown = _assertion(uuid.uuid4(), own.station_key)
    await _assert_401(
        world.ingest.post(url, json=unknown), "unknown station", "temoin station register"
    )

    other_station = _assertion(world.other.station_id, own.station_key)  # type: ignore[arg-type]
    await _assert_401(world.ingest.post(url, json=other_station))

    ends = ("0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00", "2026-11-25T10:00:00")
    for moment in ends:  # the calendar's ends, and no time zone
        unsigned = StationAssertion(str(own.station_id), moment, "n" * 32)
        signature = b64encode(own.station_key.sign(unsigned.message()).signature)
        signed = {**unsigned.__dict__, "signature": signature}
        await _assert_401(world.ingest.post(url, json=signed))

    malformed = await world.ingest.post(url, json={"station_id": "x", "nonce": "short"})
    assert malformed.status_code == 422
    fields = {e["field"] for e in malformed.json()["errors"]}
    assert {"body.station_id", "body.nonce", "body.timestamp", "body.signature"} <= fields


async def test_revoking_a_station_refuses_its_token_at_once(world: World) -> None:
    own = world.own
    token = own.tokens["station"]
    assert (await world.ingest.get("/v1/stations/me", headers=_bearer(token))).status_code == 200
    revoked = await world.vault.post(
        f"{own.path}/stations/{own.station_id}/revoke",
        headers=own.headers("responsable"),
        json={"reason": "station volée"},
    )
    assert revoked.status_code == 200
    assert revoked.json()["status"] == "revoked"
    await _assert_401(
        world.ingest.get("/v1/stations/me", headers=_bearer(token)),
        "unknown or revoked",
        "register the dock again",
    )
    assert own.station_id is not None and own.station_key is not None
    await _assert_401(
        world.ingest.post("/v1/stations/token", json=_assertion(own.station_id, own.station_key)),
        "this station was revoked",
        "temoin station register",
    )


async def test_station_token_expiry_and_forgery(world: World) -> None:
    own = world.own
    for claims_change, secret, says in (
        (
            {"exp": int((datetime.now(UTC) - timedelta(minutes=1)).timestamp())},
            None,
            "station token expired: get a new one with a freshly signed assertion",
        ),
        ({}, "another-secret-that-is-long-enough-for-hs256", "signature does not verify"),
        ({"sub": str(uuid.uuid4())}, None, "register the dock again"),
        ({"sub": "dock-1"}, None, "its subject is not a station id"),
    ):
        claims = jwt.decode(own.tokens["station"], options={"verify_signature": False})
        token = jwt.encode(
            claims | claims_change,
            secret or "temoin-dev-station-token-secret-change-me",
            algorithm="HS256",
        )
        await _assert_401(world.ingest.get("/v1/stations/me", headers=_bearer(token)), says)


def test_assertion_signature_covers_every_field() -> None:
    key = SigningKey.generate()
    assertion = StationAssertion.sign("s1", key, datetime(2026, 11, 25, tzinfo=UTC))
    assert assertion.timestamp == "2026-11-25T00:00:00Z"
    from shared.signatures import verify

    public = b64encode(bytes(key.verify_key))
    assert verify(public, assertion.message(), assertion.signature)
    for field in ("station_id", "timestamp", "nonce"):
        changed = StationAssertion(**{**assertion.__dict__, field: "changed"})
        assert not verify(public, changed.message(), assertion.signature), field
    assert Ed25519PrivateKey  # the dev issuer's key type, imported for the forger above

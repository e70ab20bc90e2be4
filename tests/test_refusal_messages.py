"""Every refusal of a person (403, and the 404 of another organisation or département) names
its actual cause and what to do about it, in the answer and in the logged refusal: a role the
token claims but the directory withholds (no agent record, a deactivated one, one without that
role, no habilitation), a token naming no organisation or no département, a role not held."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable

import httpx
import pytest
from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncConnection

from shared.audit import entries
from tests.fixtures.directory import OrgKit, World
from tests.fixtures.servers import Servers


def _bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


async def _refused(response_coro: Awaitable[httpx.Response], status: int, *says: str) -> str:
    response = await response_coro
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    detail = str(response.json()["detail"])
    for words in says:
        assert words in detail, (words, detail)
    return detail


async def _agent(world: World, kit: OrgKit, subject: str, roles: list[str]) -> uuid.UUID:
    created = await world.vault.post(
        f"{kit.path}/agents",
        headers=kit.headers("maire"),
        json={
            "matricule": f"M-{uuid.uuid4().hex[:6]}",
            "first_name": "Camille",
            "last_name": "Test",
            "subject": subject,
            "roles": roles,
        },
    )
    assert created.status_code == 201, created.text
    return uuid.UUID(created.json()["id"])


async def test_a_responsable_whose_agent_record_is_missing_is_told_so(
    world: World, servers: Servers, connection: AsyncConnection
) -> None:
    kit = world.own
    token = servers.issuer.mint("resp-new", ["responsable"], organisation_id=kit.id)
    detail = await _refused(
        world.vault.get(f"{kit.path}/agents", headers=_bearer(token)),
        403,
        "this action needs one of the roles maire, responsable, dpo",
        f"this token's subject 'resp-new' has no agent record in organisation {kit.id}",
        "the maire (or another responsable) must register them as an agent with the role "
        "responsable",
        f"POST /v1/organisations/{kit.id}/agents, with subject 'resp-new'",
    )
    # /v1/me says it before any refusal, for the dashboard to show.
    me = (await world.vault.get("/v1/me", headers=_bearer(token))).json()
    assert me["roles"] == []
    assert me["withheld"]["responsable"] in detail
    # The refusal is logged with the same words (R241-14).
    reasons = await connection.scalars(
        select(entries.c.details["reason"].astext).where(
            entries.c.actor_subject == "resp-new", entries.c.action == "access_refused"
        )
    )
    assert list(reasons) == [detail]


async def test_each_reason_the_directory_withholds_a_role(world: World, servers: Servers) -> None:
    kit, mint = world.own, servers.issuer.mint
    agents = f"/v1/organisations/{kit.id}/agents"

    # An agent record without the role the token claims.
    plain = await _agent(world, kit, "resp-plain", ["agent"])
    token = mint("resp-plain", ["responsable"], organisation_id=kit.id)
    await _refused(
        world.vault.get(f"{kit.path}/agents", headers=_bearer(token)),
        403,
        f"the agent record of 'resp-plain' in organisation {kit.id} does not hold the role "
        "responsable",
        f"must add it to its roles (PATCH {agents}/{plain})",
    )

    # A deactivated record.
    off = await _agent(world, kit, "resp-off", ["responsable"])
    patched = await world.vault.patch(
        f"{agents}/{off}", headers=kit.headers("maire"), json={"active": False}
    )
    assert patched.status_code == 200, patched.text
    token = mint("resp-off", ["responsable"], organisation_id=kit.id)
    await _refused(
        world.vault.get(f"{kit.path}/agents", headers=_bearer(token)),
        403,
        f"the agent record of 'resp-off' in organisation {kit.id} is deactivated",
        f'must reactivate it (PATCH {agents}/{off}, "active": true)',
    )

    # A habilité with an agent record but no habilitation, and one with no record at all.
    waiting = await _agent(world, kit, "hab-waiting", ["agent"])
    token = mint("hab-waiting", ["habilite"], organisation_id=kit.id)
    await _refused(
        world.vault.get(f"{kit.path}/cameras", headers=_bearer(token)),
        403,
        f"'hab-waiting' holds no active habilitation in organisation {kit.id}",
        f"the responsable must designate them (R241-12) (POST {agents}/{waiting}/habilitations)",
    )
    token = mint("hab-nobody", ["habilite"], organisation_id=kit.id)
    await _refused(
        world.vault.get(f"{kit.path}/cameras", headers=_bearer(token)),
        403,
        "'hab-nobody' has no agent record",
        f"must register them as an agent (POST {agents}, with subject 'hab-nobody'), then "
        f"the responsable must designate them (POST {agents}/{{agent_id}}/habilitations)",
    )

    # A wearer with no record.
    token = mint("wearer-nobody", ["agent"], organisation_id=kit.id)
    await _refused(
        world.vault.get(f"{kit.path}/recordings", headers=_bearer(token)),
        403,
        "'wearer-nobody' has no agent record",
        "a maire or responsable must register them as an agent with the role agent",
    )


async def test_tokens_that_name_no_organisation_or_another(world: World, servers: Servers) -> None:
    kit, mint = world.own, servers.issuer.mint
    # A responsable's token without the organisation claim, on a route of no organisation.
    token = mint("resp-adrift", ["responsable"])
    await _refused(
        world.vault.post("/v1/audit/heads", headers=_bearer(token)),
        403,
        "this token names no organisation (claim 'org')",
        "the identity provider's administrator must add the claim",
    )
    # A maire's token without it, on a route of an organisation.
    token = mint("maire-adrift", ["maire"])
    await _refused(
        world.vault.get(f"{kit.path}/agents", headers=_bearer(token)),
        403,
        "this token names no organisation (claim 'org')",
        "with the organisation's id",
    )
    # Another organisation's, existing or not: the same 404, naming the caller's own only.
    for other in (world.other.id, uuid.uuid4()):
        detail = await _refused(
            world.vault.get(f"/v1/organisations/{other}/agents", headers=kit.headers("dpo")),
            404,
            f"organisation not found: this token acts for organisation {kit.id}",
        )
        assert str(other) not in detail


async def test_a_role_not_held_names_the_roles_needed_and_held(world: World) -> None:
    kit = world.own
    await _refused(
        world.vault.get(f"{kit.path}/agents", headers=kit.headers("agent")),
        403,
        "this action needs one of the roles maire, responsable, dpo",
        "this token's roles are: agent",
        "the identity provider's administrator must add it to the token (claim 'roles')",
    )
    await _refused(
        world.reporting.get(f"{kit.path}/report", headers=kit.headers("prefecture")),
        403,
        "needs one of the roles maire, responsable",
        "this token's roles are: prefecture",
    )


async def test_prefecture_tokens_without_or_with_another_departement(
    world: World, servers: Servers
) -> None:
    table = "/v1/prefectures/94/table"
    token = servers.issuer.mint("pref-nowhere", ["prefecture"])
    await _refused(
        world.reporting.get(table, headers=_bearer(token)),
        403,
        "this préfecture token names no département (claim 'departement')",
        "the identity provider's administrator must add it",
        "AUTH_DEPARTEMENT_CLAIM",
    )
    detail = await _refused(
        world.reporting.get("/v1/prefectures/93/table", headers=world.own.headers("prefecture")),
        404,
        "no such département table: this token is for département 94",
    )
    assert "93" not in detail
    assert (
        await world.reporting.get(table, headers=world.own.headers("prefecture"))
    ).status_code == 200


@pytest.mark.parametrize("withdrawn", ["habilitation", "record"])
async def test_a_media_url_refused_later_says_why(
    world: World, connection: AsyncConnection, withdrawn: str
) -> None:
    """The viewer's standing, checked at each media request, is worded like the guard's."""
    from tests.test_faults import _consult, _upload

    kit = world.own
    recording_id = await _upload(world, kit)
    url = (await _consult(world, kit, recording_id, "habilite"))["url"]
    if withdrawn == "habilitation":
        done = await world.vault.post(
            f"{kit.path}/habilitations/{kit.habilitation_id}/withdraw",
            headers=kit.headers("responsable"),
            json={"reason": "fin de mission"},
        )
        says = "holds no active habilitation"
    else:
        done = await world.vault.patch(
            f"{kit.path}/agents/{kit.agents['habilite']}",
            headers=kit.headers("maire"),
            json={"active": False},
        )
        says = "is deactivated"
    assert done.is_success, done.text
    await _refused(world.vault.get(url), 403, "the viewer no longer holds the role habilite", says)


async def test_a_wearer_refused_by_the_service_setting_is_told_who_may_allow_it(
    world: World,
) -> None:
    from tests.test_faults import _upload

    kit = world.own
    recording_id = await _upload(world, kit)
    await _refused(
        world.vault.post(
            f"{kit.path}/recordings/{recording_id}/consultations",
            headers=kit.headers("agent"),
            json={"motif": "compte rendu d'intervention", "purpose": "compte_rendu"},
        ),
        403,
        "this service does not give wearers access to their recordings",
        "a maire or responsable may allow it (the organisation's wearer_access",
    )


async def test_a_refused_media_url_says_how_to_get_a_new_one(world: World) -> None:
    from tests.test_faults import _consult, _upload

    kit = world.own
    url = (await _consult(world, kit, await _upload(world, kit), "habilite"))["url"]
    altered = url[:-3] + ("AAA" if not url.endswith("AAA") else "BBB")
    for bad, cause in ((altered, "altered"), ("/v1/media/nonsense", "malformed")):
        await _refused(world.vault.get(bad), 403, f"not valid ({cause})", "open a new consultation")


async def test_identity_provider_keys_out_of_reach_is_an_outage_not_a_bad_token() -> None:
    """A new token would not help: 503, retry later; not 401."""
    import time

    import jwt
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

    from shared.auth import TokenVerifier
    from shared.errors import ServiceUnavailable

    verifier = TokenVerifier(
        issuer="https://idp.example", audience="temoin", jwks_url="http://127.0.0.1:9/jwks"
    )
    now = int(time.time())
    token = jwt.encode(
        {"iss": "https://idp.example", "aud": "temoin", "sub": "u", "iat": now, "exp": now + 60},
        Ed25519PrivateKey.generate(),
        algorithm="EdDSA",
        headers={"kid": "k1"},
    )
    with pytest.raises(ServiceUnavailable, match="identity provider's keys cannot be fetched"):
        await verifier.verify(token)

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

from fastapi import APIRouter, Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from services.ingest.settings import IngestSettings
from services.ingest.stations.repository import StationKey
from services.ingest.stations.schemas import AssertionIn, StationMe, StationToken
from services.ingest.stations.service import STATION_TOKEN, StationAuthService
from shared.auth import bearer_token
from shared.db import release_connection
from shared.openapi import problems
from shared.web import SessionDep

router = APIRouter(prefix="/v1/stations", tags=["stations"])
_bearer = HTTPBearer(auto_error=False, description="station upload token")


async def station_auth(request: Request, session: SessionDep) -> StationAuthService:
    settings: IngestSettings = request.app.state.settings
    return StationAuthService(
        session,
        secret=settings.token_secret,
        token_ttl=timedelta(seconds=settings.station_token_ttl_s),
        max_skew=timedelta(seconds=settings.assertion_max_age_s),
    )


StationAuth = Annotated[StationAuthService, Depends(station_auth)]


async def current_station(
    request: Request,
    service: StationAuth,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> StationKey:
    # The header as sent: ``credentials`` (OpenAPI's scheme) is None for another scheme.
    header = request.headers.get("authorization")
    station = await service.authenticate(bearer_token(header, STATION_TOKEN))
    # What follows is a call to the vault, which may stream a clip for minutes or wait for
    # another request's claim: no connection is held meanwhile (docs/architecture.md, "Uploads
    # hold no connection while bytes stream"). A later statement (keeping a receipt) checks
    # one out again, briefly.
    await release_connection(service.session)
    return station


CurrentStation = Annotated[StationKey, Depends(current_station)]


@router.post("/token", response_model=StationToken, responses=problems(401))
async def exchange_assertion(data: AssertionIn, service: StationAuth) -> StationToken:
    """A docking station trades a fresh assertion signed with its Ed25519 key for a
    short-lived bearer token; standard HTTP and tus clients then only need that header."""
    return await service.exchange(data)


@router.get("/me", response_model=StationMe)
async def whoami(station: CurrentStation) -> StationMe:
    """The station behind the token (a docking station's connectivity check)."""
    return StationMe(
        station_id=station.station_id,
        organisation_id=station.organisation_id,
        name=station.name,
    )

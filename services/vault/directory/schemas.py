from __future__ import annotations

import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Generic, Literal, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints

from services.vault.directory.models import LEGAL_RETENTION_DAYS, CameraStatus, StationStatus
from shared.inputs import Instant
from shared.schemas import JsonBody
from shared.signatures import verify_key

Name = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=200)]
Reason = Annotated[str, StringConstraints(strip_whitespace=True, min_length=3, max_length=2000)]
# Département codes: 01-95 (2A/2B for Corsica) and 971-976 overseas.
Departement = Annotated[
    str, StringConstraints(pattern=r"^(0[1-9]|[1-8][0-9]|9[0-5]|2A|2B|97[1-6])$")
]
InseeCode = Annotated[str, StringConstraints(pattern=r"^([0-9]{5}|2[AB][0-9]{3})$")]
Matricule = Annotated[
    str, StringConstraints(strip_whitespace=True, pattern=r"^[A-Za-z0-9._-]{1,32}$")
]
AgentRole = Literal["agent", "responsable"]
# Far beyond the largest municipal police (a few hundred cameras).
MAX_AUTHORISED_CAMERAS = 100_000
T = TypeVar("T", bound=BaseModel)


def _wearer() -> list[AgentRole]:
    return ["agent"]


def _ed25519_public_key(value: str) -> str:
    verify_key(value)  # raises ValueError with a readable message
    return value


PublicKey = Annotated[str, AfterValidator(_ed25519_public_key)]


class Schema(JsonBody):
    model_config = ConfigDict(from_attributes=True, extra="forbid")


class Page(BaseModel, Generic[T]):
    items: list[T]
    total: int
    limit: int
    offset: int

    @classmethod
    def of(
        cls, schema: type[T], rows: Sequence[object], total: int, limit: int, offset: int
    ) -> Page[T]:
        validate = schema.model_validate
        return cls(items=[validate(row) for row in rows], total=total, limit=limit, offset=offset)


class Commune(Schema):
    insee_code: InseeCode
    name: Name


class OrganisationIn(Schema):
    name: Name
    departement: Departement
    communes: list[Commune] = Field(min_length=1)
    retention_days: int = Field(
        LEGAL_RETENTION_DAYS,
        ge=1,
        le=LEGAL_RETENTION_DAYS,
        description="R241-13: at most one month (30 days), the legal default",
    )
    wearer_access: bool = Field(
        False, description="whether wearers may view their own recordings (loi 2021-646 art. 45)"
    )
    authorised_cameras: int | None = Field(
        None,
        ge=0,
        le=MAX_AUTHORISED_CAMERAS,
        description="cameras allowed by the préfet's authorisation (R241-8)",
    )


class OrganisationOut(OrganisationIn):
    model_config = ConfigDict(extra="ignore")
    id: uuid.UUID
    created_at: datetime


class AgentIn(Schema):
    matricule: Matricule
    first_name: Name
    last_name: Name
    subject: str | None = Field(None, max_length=255, description="identity provider's `sub`")
    roles: list[AgentRole] = Field(default_factory=_wearer)


class AgentPatch(Schema):
    first_name: Name | None = None
    last_name: Name | None = None
    subject: str | None = Field(None, max_length=255)
    roles: list[AgentRole] | None = None
    active: bool | None = None


class AgentOut(Schema):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: uuid.UUID
    organisation_id: uuid.UUID
    matricule: str
    first_name: str
    last_name: str
    subject: str | None
    roles: list[str]
    active: bool
    created_at: datetime


class HabilitationIn(Schema):
    note: str | None = Field(None, max_length=2000, description="scope of the designation")


class Withdrawal(Schema):
    reason: Reason


class HabilitationOut(Schema):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: uuid.UUID
    agent_id: uuid.UUID
    granted_by: str
    granted_at: datetime
    note: str | None
    withdrawn_at: datetime | None
    withdrawn_by: str | None
    withdrawal_reason: str | None
    active: bool


class CameraIn(Schema):
    serial: Annotated[str, StringConstraints(strip_whitespace=True, min_length=1, max_length=64)]
    model: Name


class CameraPatch(Schema):
    model: Name | None = None
    status: CameraStatus | None = None


class CameraOut(Schema):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: uuid.UUID
    organisation_id: uuid.UUID
    serial: str
    model: str
    status: CameraStatus
    created_at: datetime


class StationIn(Schema):
    name: Name
    public_key: PublicKey = Field(description="Ed25519 public key, base64 (32 bytes)")


class StationOut(Schema):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: uuid.UUID
    organisation_id: uuid.UUID
    name: str
    public_key: str
    status: StationStatus
    registered_by: str
    created_at: datetime
    revoked_at: datetime | None
    revocation_reason: str | None
    last_upload_at: datetime | None = Field(
        None,
        description="when the vault last received a clip from this station (none: never)",
    )


class AssignmentIn(Schema):
    agent_id: uuid.UUID
    starts_at: Instant
    ends_at: Instant | None = None


class AssignmentEnd(Schema):
    ends_at: Instant


class AssignmentOut(Schema):
    model_config = ConfigDict(from_attributes=True, extra="ignore")
    id: uuid.UUID
    camera_id: uuid.UUID
    agent_id: uuid.UUID
    starts_at: datetime
    ends_at: datetime | None
    assigned_by: str


class Me(BaseModel):
    subject: str
    organisation_id: uuid.UUID | None
    departement: str | None
    agent_id: uuid.UUID | None
    roles: list[str] = Field(description="roles in force: the token's, as the directory allows")
    withheld: dict[str, str] = Field(
        default_factory=dict,
        description="roles the token claims that are not in force, each with why and what to "
        "do (no agent record, deactivated, no habilitation, no organisation claim)",
    )

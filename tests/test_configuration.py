"""Configuration comes from the environment only, and production refuses development defaults.
The production compose file must give every service what its settings require."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from nacl.signing import SigningKey
from pydantic import ValidationError

from services.config import ServiceSettings, production_required
from services.ingest.settings import IngestSettings
from services.reporting.settings import ReportingSettings
from services.vault.settings import VaultSettings
from shared.audit import AuditWriter
from shared.signatures import b64decode
from temoin.cli import Service

ROOT = Path(__file__).resolve().parent.parent
SETTINGS: dict[str, type[ServiceSettings]] = {
    "ingest": IngestSettings,
    "vault": VaultSettings,
    "reporting": ReportingSettings,
}
ENTRY_KEYS = {
    "ingest": "cHJvZHVjdGlvbi1pbmdlc3QtYXVkaXQtZW50cnktazE=",
    "vault": "cHJvZHVjdGlvbi12YXVsdC1hdWRpdC1lbnRyeS1rZTE=",
    "reporting": "cHJvZHVjdGlvbi1yZXBvcnQtYXVkaXQtZW50cnktazE=",
}
WRITER_KEYS = ",".join(
    str(AuditWriter(service, SigningKey(b64decode(seed))).verifier)
    for service, seed in ENTRY_KEYS.items()
)
PRODUCTION_ENV = {
    "TEMOIN_ENV": "production",
    "DATABASE_URL": "postgresql://temoin:pw@db.internal:5432/temoin",
    "S3_ENDPOINT": "https://minio.internal:9000",
    "S3_ACCESS_KEY": "prod-access",
    "S3_SECRET_KEY": "prod-secret-0123456789",
    "AUTH_ISSUER": "https://sso.example-commune.fr/realms/police",
    "AUTH_JWKS_URL": "https://sso.example-commune.fr/realms/police/protocol/openid-connect/certs",
    "INGEST_TOKEN_SECRET": "a-long-random-production-secret-of-48-characters",
    "VAULT_AUDIT_SIGNING_KEY": "cHJvZHVjdGlvbi1hdWRpdC1zaWduaW5nLWtleS0zMmI=",
    "VAULT_KEK": "cHJvZHVjdGlvbi1rZXktZW5jcnlwdGlvbi1rZXktMzI=",
    "VAULT_MEDIA_KEY": "cHJvZHVjdGlvbi1tZWRpYS11cmwtc2lnbmluZy1rZXk=",
    "REPORTING_SIGNING_KEY_SEED": "cHJvZHVjdGlvbi1yZXBvcnQtc2lnbmluZy1rZXktMzI=",
    "INGEST_RECEIPT_KEY": "cHJvZHVjdGlvbi1yZWNlaXB0LXNpZ25pbmcta2V5MzI=",
    "SERVICE_TOKEN": "a-production-service-token-of-40-characters",
    "INGEST_AUDIT_ENTRY_KEY": ENTRY_KEYS["ingest"],
    "VAULT_AUDIT_ENTRY_KEY": ENTRY_KEYS["vault"],
    "REPORTING_AUDIT_ENTRY_KEY": ENTRY_KEYS["reporting"],
    "VAULT_AUDIT_WRITER_KEYS": WRITER_KEYS,
    "VAULT_AUDIT_ORIGIN": "police.example-commune.fr/audit",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("TEMOIN_", "DATABASE_", "S3_", "INGEST_", "VAULT_", "REPORTING_")):
            monkeypatch.delenv(name)


def test_prefixes_and_shared_names(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("INGEST_PORT", "9001")
    monkeypatch.setenv("VAULT_PORT", "9002")
    monkeypatch.setenv("S3_BUCKET", "evidence")
    assert IngestSettings().port == 9001
    assert VaultSettings().port == 9002
    assert ReportingSettings().port == 8730
    assert {IngestSettings().s3_bucket, ReportingSettings().s3_bucket} == {"evidence"}


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_production_refuses_development_defaults(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    monkeypatch.setenv("TEMOIN_ENV", "production")
    with pytest.raises(ValidationError) as refused:
        SETTINGS[service]()
    message = str(refused.value)
    for name in ("DATABASE_URL", "S3_ACCESS_KEY", "S3_SECRET_KEY", "S3_ENDPOINT", "AUTH_ISSUER"):
        assert name in message


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_production_starts_when_everything_is_set(
    monkeypatch: pytest.MonkeyPatch, service: str
) -> None:
    for name, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[service]()
    assert settings.env == "production"
    assert settings.s3_secret_key == "prod-secret-0123456789"


def test_production_refuses_a_jwks_not_over_https(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("AUTH_JWKS_URL", "file:///etc/jwks.json")
    with pytest.raises(ValidationError, match="https"):
        VaultSettings()


def test_one_secret_left_at_its_default_is_enough_to_refuse(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    for name, value in PRODUCTION_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("S3_SECRET_KEY")
    with pytest.raises(ValidationError, match="S3_SECRET_KEY"):
        VaultSettings()


# --- docker-compose.yml ---------------------------------------------------------------------

_VARIABLE = re.compile(r"\$\{(?P<name>\w+)(?::[?-](?P<rest>[^}]*))?\}")


def _interpolate(value: str, env: dict[str, str]) -> str:
    """Compose's ${VAR}, ${VAR:?error} and ${VAR:-default}, enough for this file."""

    def substitute(match: re.Match[str]) -> str:
        name = match.group("name")
        if name in env:
            return env[name]
        if ":-" in match.group(0):
            return match.group("rest") or ""
        raise AssertionError(f"compose needs {name} from the operator")

    return _VARIABLE.sub(substitute, value)


@pytest.fixture(scope="module")
def compose() -> dict[str, Any]:
    data: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    return data


OPERATOR_ENV = {
    "OIDC_ISSUER": "https://sso.example-commune.fr/realms/police",
    "OIDC_JWKS_URL": "https://sso.example-commune.fr/realms/police/protocol/openid-connect/certs",
    "INGEST_TOKEN_SECRET": "a-long-random-production-secret-of-48-characters",
    "AUDIT_SIGNING_KEY": "cHJvZHVjdGlvbi1hdWRpdC1zaWduaW5nLWtleS0zMmI=",
    "VAULT_KEK": "cHJvZHVjdGlvbi1rZXktZW5jcnlwdGlvbi1rZXktMzI=",
    "MEDIA_KEY": "cHJvZHVjdGlvbi1tZWRpYS11cmwtc2lnbmluZy1rZXk=",
    "REPORT_KEY": "cHJvZHVjdGlvbi1yZXBvcnQtc2lnbmluZy1rZXktMzI=",
    "RECEIPT_KEY": "cHJvZHVjdGlvbi1yZWNlaXB0LXNpZ25pbmcta2V5MzI=",
    "SERVICE_TOKEN": "a-production-service-token-of-40-characters",
    "POSTGRES_PASSWORD": "pg-secret",
    "MINIO_ROOT_USER": "minio-admin",
    "MINIO_ROOT_PASSWORD": "minio-secret-password",
    "S3_VAULT_SECRET_KEY": "vault-s3-secret-of-the-operator",
    "S3_READINESS_SECRET_KEY": "readiness-s3-secret-of-the-operator",
    "AUDIT_ENTRY_KEY_INGEST": ENTRY_KEYS["ingest"],
    "AUDIT_ENTRY_KEY_VAULT": ENTRY_KEYS["vault"],
    "AUDIT_ENTRY_KEY_REPORTING": ENTRY_KEYS["reporting"],
    "AUDIT_WRITER_KEYS": WRITER_KEYS,
    "AUDIT_ORIGIN": "police.example-commune.fr/audit",
}


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_compose_provides_every_required_setting(
    compose: dict[str, Any], service: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    spec = compose["services"][service]
    environment = {k: _interpolate(str(v), OPERATOR_ENV) for k, v in spec["environment"].items()}
    missing = set(production_required(SETTINGS[service])) - set(environment)
    assert not missing, f"{service} in compose lacks {sorted(missing)}"
    assert environment["TEMOIN_ENV"] == "production"
    # The real settings class accepts exactly what compose gives it, in production mode.
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    settings = SETTINGS[service]()
    assert settings.env == "production"
    assert settings.s3_endpoint == "http://minio:9000"
    assert settings.database_url.startswith("postgresql://temoin:pg-secret@postgres:5432/")


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_compose_ports_healthchecks_and_order_agree_with_the_code(
    compose: dict[str, Any], service: str
) -> None:
    spec = compose["services"][service]
    port = SETTINGS[service].model_fields["port"].default
    assert spec["environment"][f"{service.upper()}_PORT"] == str(port)
    assert spec["ports"] == [f"127.0.0.1:{port}:{port}"]
    assert f"http://127.0.0.1:{port}/readyz" in " ".join(spec["healthcheck"]["test"])
    assert spec["command"] == ["temoin", "serve", service]
    assert Service(service).value == service
    conditions = {name: dep["condition"] for name, dep in spec["depends_on"].items()}
    assert conditions == {
        "postgres": "service_healthy",
        "minio": "service_healthy",
        "migrate": "service_completed_successfully",
        "create-bucket": "service_completed_successfully",
        "minio-users": "service_completed_successfully",
    }


def test_compose_storage_and_one_shot_jobs(compose: dict[str, Any]) -> None:
    services = compose["services"]
    assert services["postgres"]["image"].startswith("postgres:")
    assert "pg_isready" in " ".join(services["postgres"]["healthcheck"]["test"])
    assert services["minio"]["image"].startswith("minio/minio")
    assert "healthcheck" in services["minio"]
    assert services["migrate"]["command"] == ["temoin", "migrate"]
    assert services["create-bucket"]["command"] == ["temoin", "create-bucket"]
    for job in ("migrate", "create-bucket"):
        assert services[job]["restart"] == "no"
    assert (ROOT / "Dockerfile").exists()


@pytest.mark.parametrize("service", sorted(SETTINGS))
def test_compose_gives_each_service_its_own_storage_user(
    compose: dict[str, Any], service: str
) -> None:
    """Never the store's administrator: the vault gets its user, ingest and reporting one that
    may only see that the bucket answers (docs/storage.md)."""
    spec = compose["services"][service]
    environment = {k: _interpolate(str(v), OPERATOR_ENV) for k, v in spec["environment"].items()}
    assert environment["S3_ACCESS_KEY"] != OPERATOR_ENV["MINIO_ROOT_USER"]
    assert environment["S3_SECRET_KEY"] != OPERATOR_ENV["MINIO_ROOT_PASSWORD"]
    expected = "temoin-vault" if service == "vault" else "temoin-readiness"
    assert environment["S3_ACCESS_KEY"] == expected
    users = compose["services"]["minio-users"]
    script = " ".join(users["command"])
    assert f"mc admin policy attach local {expected} --user {expected}" in script
    assert f"/policies/{expected}.json" in script
    assert (ROOT / "deploy" / "minio" / f"{expected}.json").exists()
    assert users["volumes"] == ["./deploy/minio:/policies:ro"]


def _statements(name: str, effect: str) -> tuple[set[str], set[str]]:
    import json

    policy = json.loads((ROOT / "deploy" / "minio" / f"{name}.json").read_text())
    actions: set[str] = set()
    resources: set[str] = set()
    for statement in policy["Statement"]:
        if statement["Effect"] == effect:
            actions |= set(statement["Action"])
            resources |= set(statement["Resource"])
    return actions, resources


def test_the_vaults_storage_user_cannot_undo_a_lock_nor_reconfigure_the_bucket() -> None:
    allowed, resources = _statements("temoin-vault", "Allow")
    denied, _ = _statements("temoin-vault", "Deny")
    # What the vault does: multipart uploads under COMPLIANCE retention, reads, legal holds
    # on and off (procedures), deletes once a lock allows (erasure, canaries), its checks.
    assert {
        "s3:PutObject",
        "s3:PutObjectRetention",
        "s3:PutObjectLegalHold",
        "s3:DeleteObjectVersion",
        "s3:GetBucketVersioning",
        "s3:GetBucketObjectLockConfiguration",
    } <= allowed
    dangerous = {
        "s3:BypassGovernanceRetention",
        "s3:PutBucketObjectLockConfiguration",
        "s3:PutBucketVersioning",
        "s3:PutLifecycleConfiguration",
        "s3:PutBucketPolicy",
        "s3:DeleteBucket",
    }
    assert dangerous <= denied
    assert not dangerous & allowed
    assert not any("*" in action for action in allowed)
    # Objects only under the two prefixes the vault writes.
    assert {r for r in resources if r.endswith("*")} == {
        "arn:aws:s3:::temoin-recordings/recordings/*",
        "arn:aws:s3:::temoin-recordings/canary/*",
    }
    readiness, _ = _statements("temoin-readiness", "Allow")
    assert readiness == {"s3:ListBucket"}


def test_the_documented_policy_is_the_one_compose_applies() -> None:
    import json

    docs = (ROOT / "docs" / "storage.md").read_text()
    shown = re.search(r"```json\n(.*?)```", docs, re.S)
    assert shown is not None
    applied = (ROOT / "deploy" / "minio" / "temoin-vault.json").read_text()
    assert json.loads(shown.group(1)) == json.loads(applied)


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    from services.config import env_name

    for settings_cls in SETTINGS.values():
        for field in settings_cls.model_fields:
            assert f"`{env_name(settings_cls, field)}`" in readme, field


@pytest.mark.parametrize(
    ("variable", "value", "settings"),
    [
        ("VAULT_KEK", "c2hvcnQ=", VaultSettings),
        ("VAULT_AUDIT_SIGNING_KEY", "not base64!", VaultSettings),
        ("INGEST_RECEIPT_KEY", "c2hvcnQ=", IngestSettings),
        ("REPORTING_AUDIT_ENTRY_KEY", "c2hvcnQ=", ReportingSettings),
        ("VAULT_AUDIT_WRITER_KEYS", "ingest+00000000+AAAA", VaultSettings),
        (
            "VAULT_AUDIT_WITNESSES",
            str(AuditWriter("w", SigningKey(b"w" * 32)).verifier),
            VaultSettings,
        ),
        ("VAULT_AUDIT_ORIGIN", "two words", VaultSettings),
        ("SERVICE_TOKEN", "short", ReportingSettings),
        ("VAULT_PUBLIC_URL", "temoin.example.fr/vault", VaultSettings),
        ("VAULT_PUBLIC_URL", "https://temoin.example.fr/vault?x=1", VaultSettings),
    ],
)
def test_malformed_keys_refuse_to_start(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str, settings: type[ServiceSettings]
) -> None:
    """A bad key stops the service at start, not with a 500 at its first use."""
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable):
        settings()


def test_parts_must_be_whole_chunks(monkeypatch: pytest.MonkeyPatch) -> None:
    """A part is sealed when full, so it must end on a chunk boundary: refused at start."""
    monkeypatch.setenv("VAULT_CHUNK_SIZE", str(300_000))
    with pytest.raises(ValidationError, match="VAULT_PART_SIZE must be a whole number"):
        VaultSettings()
    monkeypatch.setenv("VAULT_CHUNK_SIZE", str(1 << 20))
    assert VaultSettings().part_size % VaultSettings().chunk_size == 0

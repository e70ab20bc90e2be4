"""The dashboard's settings (DASHBOARD_ prefix), what production refuses, compose and the
README; its server-side sessions' expiry."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import ValidationError

from services.config import env_name, production_required
from services.dashboard.kit.security import content_security_policy
from services.dashboard.settings import DashboardSettings, dev_session_secret

ROOT = Path(__file__).resolve().parent.parent
PRODUCTION = {
    "TEMOIN_ENV": "production",
    "DATABASE_URL": "postgresql://temoin:pw@db.internal:5432/temoin",
    "DASHBOARD_PUBLIC_URL": "https://temoin.example-commune.fr",
    "DASHBOARD_VAULT_URL": "http://vault:8720",
    "DASHBOARD_REPORTING_URL": "http://reporting:8730",
    "DASHBOARD_OIDC_DISCOVERY_URL": "https://proconnect.example.fr/.well-known/openid-configuration",
    "DASHBOARD_OIDC_CLIENT_ID": "temoin-commune",
    "DASHBOARD_OIDC_CLIENT_SECRET": "a-production-client-secret",
    "DASHBOARD_SESSION_SECRET": "a-production-session-secret-of-more-than-32-chars",
}


@pytest.fixture(autouse=True)
def _clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import os

    for name in list(os.environ):
        if name.startswith(("TEMOIN_", "DASHBOARD_", "DATABASE_")):
            monkeypatch.delenv(name)
    monkeypatch.setenv("TEMOIN_VAR_DIR", str(tmp_path / "var"))


def test_defaults_and_prefix(monkeypatch: pytest.MonkeyPatch) -> None:
    settings = DashboardSettings()
    assert settings.port == 8740
    assert settings.oidc_client_id == "temoin-dashboard"
    monkeypatch.setenv("DASHBOARD_PORT", "9040")
    monkeypatch.setenv("DASHBOARD_OIDC_REQUIRED_ACR", "eidas2, eidas3")
    settings = DashboardSettings()
    assert settings.port == 9040
    assert settings.required_acr == {"eidas2", "eidas3"}
    assert not settings.secure_cookie


def test_the_development_session_secret_is_made_once(tmp_path: Path) -> None:
    first = DashboardSettings().session_secret
    assert len(first) >= 32
    assert DashboardSettings().session_secret == first
    path = tmp_path / "var" / "dashboard" / "session-secret"
    assert path.stat().st_mode & 0o777 == 0o600
    assert dev_session_secret(tmp_path / "other") != first


def test_production_refuses_development_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TEMOIN_ENV", "production")
    with pytest.raises(ValidationError) as refused:
        DashboardSettings()
    for name in (
        "DATABASE_URL",  # named as the variable is, without the dashboard's prefix
        "DASHBOARD_SESSION_SECRET",
        "DASHBOARD_OIDC_CLIENT_SECRET",
        "DASHBOARD_OIDC_DISCOVERY_URL",
        "DASHBOARD_PUBLIC_URL",
    ):
        assert name in str(refused.value)


def test_production_starts_when_everything_is_set(monkeypatch: pytest.MonkeyPatch) -> None:
    for name, value in PRODUCTION.items():
        monkeypatch.setenv(name, value)
    settings = DashboardSettings()
    assert settings.secure_cookie
    monkeypatch.setenv("DASHBOARD_PUBLIC_URL", "http://temoin.example-commune.fr")
    with pytest.raises(ValidationError, match="https"):
        DashboardSettings()


def test_a_short_session_secret_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DASHBOARD_SESSION_SECRET", "short")
    with pytest.raises(ValidationError, match="session_secret"):
        DashboardSettings()


def test_readme_documents_every_setting() -> None:
    readme = (ROOT / "README.md").read_text()
    for field in DashboardSettings.model_fields:
        assert f"`{env_name(DashboardSettings, field)}`" in readme, field  # type: ignore[arg-type]


def test_compose_runs_the_dashboard_in_production(monkeypatch: pytest.MonkeyPatch) -> None:
    compose: dict[str, Any] = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    spec = compose["services"]["dashboard"]
    operator = {
        "POSTGRES_PASSWORD": "a-production-database-password",
        "DASHBOARD_PUBLIC_URL": "https://temoin.example-commune.fr",
        "OIDC_DISCOVERY_URL": PRODUCTION["DASHBOARD_OIDC_DISCOVERY_URL"],
        "OIDC_CLIENT_ID": "temoin-commune",
        "OIDC_CLIENT_SECRET": "a-production-client-secret",
        "DASHBOARD_SESSION_SECRET": PRODUCTION["DASHBOARD_SESSION_SECRET"],
    }

    def interpolate(value: str) -> str:
        def one(match: re.Match[str]) -> str:
            name, rest = match.group(1), match.group(2) or ""
            if name in operator:
                return operator[name]
            assert rest.startswith(":-"), f"compose needs {name}"
            return rest[2:]

        return re.sub(r"\$\{(\w+)((?::[?-])[^}]*)?\}", one, value)

    environment = {k: interpolate(str(v)) for k, v in spec["environment"].items()}
    required = set(production_required(DashboardSettings))  # type: ignore[arg-type]
    assert not required - set(environment), sorted(required - set(environment))
    for name, value in environment.items():
        if value:
            monkeypatch.setenv(name, value)
    settings = DashboardSettings()
    assert settings.env == "production" and settings.port == 8740
    assert spec["ports"] == ["127.0.0.1:8740:8740"]
    assert "http://127.0.0.1:8740/readyz" in " ".join(spec["healthcheck"]["test"])
    assert spec["command"] == ["temoin", "serve", "dashboard"]


def test_the_content_security_policy_is_strict() -> None:
    policy = content_security_policy(
        media_origin="https://vault.example.fr", provider_origin="https://proconnect.example.fr"
    )
    directives = dict(part.split(" ", 1) for part in policy.split("; "))
    assert directives["script-src"] == "'self'"
    assert directives["style-src"] == "'self'"
    assert directives["frame-ancestors"] == "'none'"
    assert directives["base-uri"] == "'none'"
    assert directives["media-src"] == "'self' https://vault.example.fr"
    assert directives["form-action"] == "'self' https://proconnect.example.fr"
    assert "unsafe" not in policy


def test_times_are_shown_in_paris_and_asked_in_utc() -> None:
    from services.dashboard.kit.templating import machine_time, paris
    from services.dashboard.recordings.endpoints import _day

    nbsp = "\u00a0"  # hour and minutes held together
    assert paris("2026-07-14T08:05:00Z") == f"14 juillet 2026 à 10{nbsp}h{nbsp}05"  # UTC+2
    assert paris("2026-01-31T23:30:00+00:00") == f"1 février 2026 à 0{nbsp}h{nbsp}30"  # UTC+1
    assert machine_time("2026-07-14T08:05:00Z") == "2026-07-14T10:05:00+02:00"
    # A day typed in the search form is a Paris day: from its midnight to the next one.
    assert _day("2026-07-14") == "2026-07-14T00:00:00+02:00"
    assert _day("2026-07-14", end=True) == "2026-07-15T00:00:00+02:00"
    assert _day("14/07/2026") is None


async def test_an_unexpected_error_is_a_french_page_with_the_headers() -> None:
    import httpx
    from fastapi import APIRouter

    from services.dashboard.app import create_app

    app = create_app(DashboardSettings(session_secret="s" * 40))
    router = APIRouter()

    @router.get("/panne")
    async def broken() -> None:
        raise RuntimeError("secret detail of a bug")

    app.include_router(router)
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://dashboard.test") as http:
        page = await http.get("/panne")
    assert page.status_code == 500
    assert "Une erreur inattendue est survenue" in page.text
    assert "secret detail" not in page.text and "Traceback" not in page.text
    assert page.headers["content-security-policy"].startswith("default-src 'self'")
    assert page.headers["x-frame-options"] == "DENY"
    await app.state.backends.aclose()

"""`temoin run`: the whole stack on its embedded default, supervised in one terminal.

Order of start: PostgreSQL, S3 (bucket with object lock), migrations, the development OpenID
provider (temoin/dev_provider.py: its URL is the issuer the services accept), then the three
services;
order of stop (Ctrl-C, SIGTERM, or any service dying): the reverse. Every process started here
is stopped here, so Ctrl-C leaves nothing behind.
"""

from __future__ import annotations

import contextlib
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table

from services.config import DEV_ISSUER_PORT, DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, env_name
from services.dashboard.settings import DEFAULT_PORT as DASHBOARD_PORT
from services.ingest.settings import DEFAULT_PORT as INGEST_PORT
from services.reporting.settings import DEFAULT_PORT as REPORTING_PORT
from services.vault.settings import DEFAULT_PORT as VAULT_PORT
from services.vault.settings import VaultSettings
from shared.storage import ObjectStore, StorageConfig
from temoin import migrate
from temoin.dev_issuer import DevIssuer
from temoin.dev_provider import ACR_VALUES, CLIENT_ID, load_client
from temoin.embedded import EmbeddedPostgres, EmbeddedS3, S3Ports, stop_process_groups
from temoin.stackfile import StackFile

# The dashboard is started when service_ports names it (`temoin run` does; the benchmarks don't).
SERVICES = ("ingest", "vault", "reporting", "dashboard")
DEFAULT_PORTS = {
    "ingest": INGEST_PORT,
    "vault": VAULT_PORT,
    "reporting": REPORTING_PORT,
    "dashboard": DASHBOARD_PORT,
}
BUCKET = "temoin-recordings"
READY_TIMEOUT_S = 60.0
STOP_GRACE_S = 10.0


@dataclass
class StackConfig:
    var_dir: Path
    s3_ports: S3Ports
    service_ports: dict[str, int]
    issuer_port: int = DEV_ISSUER_PORT
    host: str = "127.0.0.1"


@dataclass
class RunningService:
    name: str
    url: str
    process: subprocess.Popen[bytes]


def _wait_ready(services: list[RunningService], deadline: float) -> None:
    pending = {s.name: s for s in services}
    # One client for all the polls: each new one loads the CA bundle (30-60 ms of CPU), which
    # the services starting beside it need more.
    with httpx.Client(timeout=2.0) as client:
        while pending and time.monotonic() < deadline:
            for name, service in list(pending.items()):
                if service.process.poll() is not None:
                    raise RuntimeError(f"{name} exited with {service.process.returncode}")
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{service.url}/readyz").status_code == 200:
                        del pending[name]
            time.sleep(0.2)
    if pending:
        raise RuntimeError(f"not ready in time: {', '.join(pending)}")


def _settings_of(settings: type[VaultSettings], environment: dict[str, str]) -> dict[str, str]:
    """The variables of ``environment`` that these settings read."""
    names = {env_name(settings, field) for field in settings.model_fields}
    return {name: value for name, value in environment.items() if name in names}


def _dashboard_environment(config: StackConfig, var: Path, issuer_url: str) -> dict[str, str]:
    """The dashboard signs people in at the development provider, as client temoin-dashboard
    (its secret generated under var/dev-issuer), asking for and checking its acr."""
    ports = config.service_ports
    return {
        "DASHBOARD_PUBLIC_URL": f"http://{config.host}:{ports['dashboard']}",
        "DASHBOARD_VAULT_URL": f"http://{config.host}:{ports['vault']}",
        "DASHBOARD_REPORTING_URL": f"http://{config.host}:{ports['reporting']}",
        "DASHBOARD_OIDC_DISCOVERY_URL": f"{issuer_url}/.well-known/openid-configuration",
        "DASHBOARD_OIDC_CLIENT_ID": CLIENT_ID,
        "DASHBOARD_OIDC_CLIENT_SECRET": load_client(var / "dev-issuer").client_secret,
        "DASHBOARD_OIDC_ACR_VALUES": " ".join(ACR_VALUES),
        "DASHBOARD_OIDC_REQUIRED_ACR": ",".join(ACR_VALUES),
        "TEMOIN_VAR_DIR": str(var),
    }


@contextlib.contextmanager
def running_stack(config: StackConfig, console: Console) -> Iterator[list[RunningService]]:
    """Start everything, yield the running services, stop everything on the way out."""
    started = time.monotonic()
    var = config.var_dir.resolve()
    var.mkdir(parents=True, exist_ok=True)
    logs = var / "logs"
    logs.mkdir(exist_ok=True)

    postgres = EmbeddedPostgres(var / "postgres")
    s3 = EmbeddedS3(
        data_dir=var / "s3",
        ports=config.s3_ports,
        access_key=DEV_S3_ACCESS_KEY,
        secret_key=DEV_S3_SECRET_KEY,
        log_path=logs / "s3.log",
    )
    services: list[RunningService] = []
    vault_environment: dict[str, str] = {}
    try:
        console.print("[bold]PostgreSQL[/] and [bold]S3[/] starting (embedded, SeaweedFS)…")
        # Side by side: each mostly waits for its own processes (initdb, weed's components).
        with ThreadPoolExecutor(max_workers=1) as starting:
            s3_started = starting.submit(s3.start)
            database_url = postgres.start()
            s3_started.result()
        ObjectStore(
            StorageConfig(s3.endpoint, DEV_S3_ACCESS_KEY, DEV_S3_SECRET_KEY, BUCKET)
        ).ensure_bucket()
        console.print("[bold]Migrations[/] applying…")
        migrate.upgrade(database_url)
        issuer_url = f"http://{config.host}:{config.issuer_port}"
        issuer = DevIssuer(var / "dev-issuer", issuer=issuer_url).ensure_keys()

        env = {
            **os.environ,
            "TEMOIN_ENV": "development",
            "DATABASE_URL": database_url,
            "S3_ENDPOINT": s3.endpoint,
            "S3_ACCESS_KEY": DEV_S3_ACCESS_KEY,
            "S3_SECRET_KEY": DEV_S3_SECRET_KEY,
            "S3_BUCKET": BUCKET,
            "AUTH_ISSUER": issuer.issuer,
            "AUTH_JWKS_URL": issuer.jwks_url,
        }
        with open(logs / "issuer.log", "ab") as log:
            process = subprocess.Popen(
                [sys.executable, "-m", "temoin.cli", "issuer", "serve"],
                env={
                    **env,
                    "ISSUER_HOST": config.host,
                    "ISSUER_PORT": str(config.issuer_port),
                    "TEMOIN_VAR_DIR": str(var),
                },
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        services.append(RunningService("issuer", issuer_url, process))
        for name in (name for name in SERVICES if name in config.service_ports):
            port = config.service_ports[name]
            service_env = {
                **env,
                f"{name.upper()}_HOST": config.host,
                f"{name.upper()}_PORT": str(port),
                "INGEST_VAULT_URL": f"http://{config.host}:{config.service_ports['vault']}",
            }
            if name == "dashboard":
                service_env.update(_dashboard_environment(config, var, issuer_url))
            with open(logs / f"{name}.log", "ab") as log:
                process = subprocess.Popen(
                    [sys.executable, "-m", "temoin.cli", "serve", name],
                    env=service_env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    stdin=subprocess.DEVNULL,
                    start_new_session=True,
                )
            services.append(RunningService(name, f"http://{config.host}:{port}", process))
            if name == "vault":
                vault_environment = _settings_of(VaultSettings, service_env)
        _wait_ready(services, time.monotonic() + READY_TIMEOUT_S)
        StackFile(
            urls={service.name: service.url for service in services},
            vault_environment=vault_environment,
        ).write(var)
        console.print(f"Ready in {time.monotonic() - started:.1f} s. Logs in {logs}.")
        yield services
    finally:
        StackFile.remove(var)  # first: a command started from now on finds no stack
        console.print("Stopping…")
        # All at once, one grace for all (each takes a fraction of a second: one after the
        # other, they added up to a second).
        stop_process_groups([service.process for service in reversed(services)], STOP_GRACE_S)
        s3.stop()
        postgres.stop()
        console.print("Stopped.")


def print_services(services: list[RunningService], s3_endpoint: str, console: Console) -> None:
    table = Table(title="Témoin (development)")
    table.add_column("service")
    table.add_column("URL")
    table.add_column("OpenAPI")
    for service in services:
        if service.name in ("issuer", "dashboard"):  # no OpenAPI: a provider, web pages
            table.add_row(service.name, service.url, "")
        else:
            table.add_row(service.name, service.url, f"{service.url}/docs")
    table.add_row("s3", s3_endpoint, "")
    console.print(table)


def run(config: StackConfig) -> int:
    """Run until Ctrl-C or SIGTERM, or until a service dies (then exit non-zero)."""
    console = Console()
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with running_stack(config, console) as services:
        print_services(services, f"http://127.0.0.1:{config.s3_ports.s3}", console)
        console.print("Press Ctrl-C to stop.")
        while not stop.wait(0.5):
            dead = [s for s in services if s.process.poll() is not None]
            if dead:
                console.print(f"[red]{dead[0].name} exited[/] (see var/logs); stopping.")
                return 1
    return 0

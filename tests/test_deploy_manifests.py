"""The Kubernetes manifests (deploy/kubernetes/, docs/kubernetes.md), rendered offline with
`kubectl kustomize` as `kubectl apply -k` would apply them, then held to what matters: every
object valid against a pinned Kubernetes version's schemas (kubernetes-validate, strict: an
unknown or misspelt field fails), requests and limits on every container, probes on routes
the apps really have, every setting the services read provided and accepted by their own
settings classes in production mode, images pinned, no secret in the manifests, restricted
security contexts, replicas with their disruption budgets, and network policies that keep the
store and the database to the services. Each check is a function that lists problems, so that
the last test can break a copy of the manifests and see each check fail."""

from __future__ import annotations

import base64
import copy
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml
from fastapi import FastAPI
from pydantic_settings import BaseSettings
from starlette.routing import Match

from services.config import env_name, production_required
from services.dashboard.settings import DashboardSettings
from services.ingest.settings import IngestSettings
from services.reporting.settings import ReportingSettings
from services.vault.settings import VaultSettings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy" / "kubernetes"
# The oldest Kubernetes still maintained upstream when this was written; a cluster of this
# version or later takes every object as rendered.
KUBERNETES_VERSION = "1.33.0"
SETTINGS: dict[str, type[BaseSettings]] = {
    "ingest": IngestSettings,
    "vault": VaultSettings,
    "reporting": ReportingSettings,
    "dashboard": DashboardSettings,
}
REPLICATED = ("ingest", "vault", "reporting", "dashboard")
# The variables a service reads (cleared before each settings class reads the manifests').
OUR_PREFIXES = (
    "TEMOIN_", "DATABASE_", "S3_", "AUTH_", "SERVICE_", "LOG_",
    "INGEST_", "VAULT_", "REPORTING_", "DASHBOARD_",
)  # fmt: skip

Obj = dict[str, Any]


def render(directory: Path) -> list[Obj]:
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.fail("kubectl is needed to render deploy/kubernetes/ (`kubectl kustomize`)")
    done = subprocess.run(
        [kubectl, "kustomize", str(directory)], capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    return [obj for obj in yaml.safe_load_all(done.stdout) if obj]


@pytest.fixture(scope="module")
def production() -> list[Obj]:
    return render(DEPLOY / "overlays" / "production")


@pytest.fixture(scope="module")
def operators() -> list[Obj]:
    return render(DEPLOY / "operators")


def of_kind(objs: list[Obj], kind: str) -> dict[str, Obj]:
    return {o["metadata"]["name"]: o for o in objs if o["kind"] == kind}


def workloads(objs: list[Obj]) -> Iterator[tuple[str, Obj]]:
    """(name, pod spec) of every Deployment and Job."""
    for obj in objs:
        if obj["kind"] in ("Deployment", "Job"):
            yield obj["metadata"]["name"], obj["spec"]["template"]


def containers(pod: Obj) -> Iterator[Obj]:
    yield from pod["spec"].get("initContainers", [])
    yield from pod["spec"]["containers"]


def main_container(objs: list[Obj], service: str) -> Obj:
    pod = of_kind(objs, "Deployment")[service]["spec"]["template"]
    container: Obj = pod["spec"]["containers"][0]
    return container


def of_secrets(objs: list[Obj]) -> list[Obj]:
    return [o for o in objs if o["kind"] == "Secret"]


# --- the checks: each returns what is wrong ----------------------------------------------------


def schema_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for obj in objs:
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            problems.append(f"{obj['kind']} {obj['metadata']['name']}: {error.message}")
    return problems


_UNITS = {"m": 1e-3, "": 1, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}


def quantity(value: str | int) -> float:
    number, unit = re.fullmatch(r"([0-9.]+)([A-Za-z]*)", str(value)).groups()  # type: ignore[union-attr]
    return float(number) * _UNITS[unit]


def resource_problems(objs: list[Obj]) -> list[str]:
    problems = []
    for name, pod in workloads(objs):
        for container in containers(pod):
            where = f"{name}/{container['name']}"
            resources = container.get("resources", {})
            for bound in ("requests", "limits"):
                for resource in ("cpu", "memory"):
                    if resource not in resources.get(bound, {}):
                        problems.append(f"{where}: no {resource} in {bound}")
            for resource in ("cpu", "memory"):
                asked = resources.get("requests", {}).get(resource)
                allowed = resources.get("limits", {}).get(resource)
                if asked and allowed and quantity(asked) > quantity(allowed):
                    problems.append(f"{where}: {resource} request above its limit")
    return problems


def answers_get(app: FastAPI, path: str) -> bool:
    scope = {"type": "http", "path": path, "method": "GET", "root_path": "", "headers": []}
    return any(route.matches(scope)[0] is Match.FULL for route in app.routes)


def _apps() -> dict[str, FastAPI]:
    from services.dashboard.app import create_app as dashboard
    from services.ingest.app import create_app as ingest
    from services.reporting.app import create_app as reporting
    from services.vault.app import create_app as vault

    return {
        "ingest": ingest(),
        "vault": vault(),
        "reporting": reporting(),
        "dashboard": dashboard(),
    }


def probe_problems(objs: list[Obj], apps: dict[str, FastAPI]) -> list[str]:
    problems = []
    services = of_kind(objs, "Service")
    for service, app in apps.items():
        container = main_container(objs, service)
        port_names = {port["name"] for port in container.get("ports", [])}
        for probe, path in (
            ("readinessProbe", "/readyz"),
            ("livenessProbe", "/healthz"),
            ("startupProbe", "/healthz"),
        ):
            get = container.get(probe, {}).get("httpGet", {})
            if get.get("path") != path:
                problems.append(f"{service}: {probe} is not on {path}")
            if not answers_get(app, get.get("path", "")):
                problems.append(f"{service}: the app has no GET {get.get('path')} ({probe})")
            if get.get("port") not in port_names:
                problems.append(f"{service}: {probe} names no port of the container")
        # The port the process listens on (its settings) is the one the pod and Service expose.
        listens = env_of(objs, service).get(f"{service.upper()}_PORT")
        exposed = {port["containerPort"] for port in container.get("ports", [])}
        if listens is None or int(listens) not in exposed:
            problems.append(f"{service}: listens on {listens}, the pod exposes {exposed}")
        target = services.get(service, {}).get("spec", {}).get("ports", [{}])[0]
        if target.get("targetPort") not in port_names:
            problems.append(f"{service}: its Service targets no port of the pod")
    return problems


Secrets = dict[tuple[str, str], str]  # (Secret, key): value


def created_secrets() -> Secrets:
    """What deploy/kubernetes/create-secrets.sh creates (DRY_RUN: printed, not created), with
    the Secret CloudNativePG makes for the database's owner."""
    done = subprocess.run(
        ["sh", str(DEPLOY / "create-secrets.sh")],
        env={
            **os.environ,
            "DRY_RUN": "1",
            "TEMOIN": f"{sys.executable} -m temoin.cli",
            "DASHBOARD_OIDC_CLIENT_SECRET": "client-secret-from-the-identity-provider",
            "BACKUP_ACCESS_KEY_ID": "backup-access",
            "BACKUP_SECRET_ACCESS_KEY": "backup-secret",
        },
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    secrets: Secrets = {
        ("temoin-db-app", "uri"): "postgresql://temoin:owner@temoin-db-rw.temoin:5432/temoin"
    }
    for secret in yaml.safe_load_all(done.stdout):
        if secret:
            assert secret["kind"] == "Secret" and secret["metadata"]["namespace"] == "temoin"
            for key, value in secret["data"].items():
                secrets[secret["metadata"]["name"], key] = base64.b64decode(value).decode()
    return secrets


@pytest.fixture(scope="module")
def secrets() -> Secrets:
    return created_secrets()


def env_sources(objs: list[Obj], container: Obj) -> dict[str, tuple[str, Any]]:
    """Each variable the container gets: ("value", text), ("secret", (name, key)) or
    ("config", text) for a ConfigMap's, resolved through the rendered ConfigMaps."""
    maps = of_kind(objs, "ConfigMap")
    sources: dict[str, tuple[str, Any]] = {}
    for source in container.get("envFrom", []):
        for name, value in maps[source["configMapRef"]["name"]].get("data", {}).items():
            sources[name] = ("config", value)
    for variable in container.get("env", []):
        ref = variable.get("valueFrom", {})
        if "secretKeyRef" in ref:
            sources[variable["name"]] = (
                "secret",
                (ref["secretKeyRef"]["name"], ref["secretKeyRef"]["key"]),
            )
        elif "configMapKeyRef" in ref:
            data = maps[ref["configMapKeyRef"]["name"]]["data"]
            sources[variable["name"]] = ("config", data[ref["configMapKeyRef"]["key"]])
        else:
            sources[variable["name"]] = ("value", variable.get("value", ""))
    return sources


def resolved(sources: dict[str, tuple[str, Any]], secrets: Secrets | None) -> dict[str, str]:
    """The environment the process sees, $(VAR) expanded; without ``secrets``, each secret's
    value stands as its name."""
    env: dict[str, str] = {}
    for name, (kind, value) in sources.items():
        if kind == "secret":
            text = secrets[value] if secrets is not None else "/".join(value)
        else:
            text = str(value)
        env[name] = re.sub(r"\$\((\w+)\)", lambda m: env.get(m.group(1), m.group(0)), text)
    return env


def env_of(objs: list[Obj], service: str, secrets: Secrets | None = None) -> dict[str, str]:
    return resolved(env_sources(objs, main_container(objs, service)), secrets)


def setting_names(settings_cls: type[BaseSettings]) -> set[str]:
    return {env_name(settings_cls, field) for field in settings_cls.model_fields}  # type: ignore[arg-type]


def readme_settings() -> set[str]:
    """Every variable of README's configuration table (the services', not the CLI's)."""
    readme = (ROOT / "README.md").read_text()
    table = readme.split("## Configuration", 1)[1].split("`make run` sets these", 1)[0]
    names = set()
    for row in table.splitlines():
        if row.startswith("| `"):
            names |= set(re.findall(r"`([A-Z][A-Z0-9_]+)`", row.split("|")[1]))
    return names


def settings_problems(objs: list[Obj]) -> list[str]:
    problems = []
    provided: set[str] = set()
    for service, settings_cls in SETTINGS.items():
        env = env_of(objs, service)
        provided |= set(env)
        for name in sorted(setting_names(settings_cls) - set(env)):
            problems.append(f"{service}: {name} not provided")
        for name in production_required(settings_cls):  # type: ignore[arg-type]
            if not env.get(name):
                problems.append(f"{service}: {name}, required in production, is empty")
    readme = readme_settings()
    if not setting_names(VaultSettings) <= readme:
        problems.append("README's configuration table not found, or incomplete")
    for name in sorted(readme - provided):
        problems.append(f"README's {name} reaches no service")
    return problems


def secret_problems(objs: list[Obj]) -> list[str]:
    problems = [f"a Secret in the manifests: {o['metadata']['name']}" for o in of_secrets(objs)]
    looks_secret = re.compile(r"SECRET|PASSWORD|TOKEN|_KEY$|_KEK$|_SEED$|_KEYS$")
    # S3_ACCESS_KEY is a user's name; *_S are durations (the station token's lifetime).
    not_secret = re.compile(r"^S3_ACCESS_KEY$|_S$")
    for name, pod in workloads(objs):
        for container in containers(pod):
            for variable, (kind, value) in env_sources(objs, container).items():
                where = f"{name}/{container['name']} {variable}"
                if looks_secret.search(variable) and not not_secret.search(variable):
                    if kind != "secret":
                        problems.append(f"{where} is not from a Secret")
                elif kind != "secret" and re.search(r"://[^/@$]+:[^/@$]+@", str(value)):
                    problems.append(f"{where} holds a password")
    # Nothing shaped like a key anywhere: base64 of 32 bytes, or a long hex string.
    text = json.dumps(objs)
    for match in re.findall(r"[A-Za-z0-9+/]{43}=|\b[0-9a-f]{40,}\b", text):
        if not re.search(rf"sha256:{match}", text):
            problems.append(f"something like a key in the manifests: {match[:8]}...")
    return problems


def image_problems(objs: list[Obj]) -> list[str]:
    problems = []
    images = [c["image"] for _, pod in workloads(objs) for c in containers(pod)]
    for obj in objs:
        spec = obj.get("spec", {})
        images += [spec[key] for key in ("image", "imageName") if isinstance(spec.get(key), str)]
    for image in images:
        name, _, tag = image.partition("@")[0].rpartition(":")
        if "@sha256:" not in image and (not name or "/" in tag or tag in ("", "latest")):
            problems.append(f"{image} is not pinned")
    return problems


def dockerfile_uid() -> int:
    found = re.search(r"--uid (\d+)", (ROOT / "Dockerfile").read_text())
    assert found, "the Dockerfile's user"
    return int(found.group(1))


def security_problems(objs: list[Obj]) -> list[str]:
    """The "restricted" Pod Security profile, and no Kubernetes credential in any pod."""
    problems = []
    for name, pod in workloads(objs):
        spec = pod["spec"]
        context = spec.get("securityContext", {})
        if context.get("runAsNonRoot") is not True:
            problems.append(f"{name}: may run as root")
        if context.get("seccompProfile", {}).get("type") != "RuntimeDefault":
            problems.append(f"{name}: no RuntimeDefault seccomp profile")
        if spec.get("automountServiceAccountToken") is not False:
            problems.append(f"{name}: mounts a service account token")
        if spec.get("enableServiceLinks") is not False:
            problems.append(f"{name}: service links (VAULT_PORT=tcp://...) in its environment")
        for container in containers(pod):
            own = container.get("securityContext", {})
            where = f"{name}/{container['name']}"
            if own.get("allowPrivilegeEscalation") is not False:
                problems.append(f"{where}: privilege escalation allowed")
            if own.get("readOnlyRootFilesystem") is not True:
                problems.append(f"{where}: writable root filesystem")
            if own.get("capabilities", {}).get("drop") != ["ALL"]:
                problems.append(f"{where}: keeps capabilities")
            if (
                container["image"].split("/")[-1].startswith("temoin")
                and context.get("runAsUser") != dockerfile_uid()
            ):
                problems.append(f"{where}: not the image's own user")
    return problems


def availability_problems(objs: list[Obj]) -> list[str]:
    problems = []
    deployments = of_kind(objs, "Deployment")
    budgets = of_kind(objs, "PodDisruptionBudget")
    for name, deployment in deployments.items():
        replicas = deployment["spec"]["replicas"]
        labels = deployment["spec"]["template"]["metadata"]["labels"]
        covering = [
            b for b in budgets.values()
            if b["spec"]["selector"]["matchLabels"].items() <= labels.items()
        ]  # fmt: skip
        if name in REPLICATED:
            if replicas < 2:
                problems.append(f"{name}: {replicas} replica")
            if not any(0 < b["spec"].get("minAvailable", 0) < replicas for b in covering):
                problems.append(f"{name}: no disruption budget keeping one and letting one go")
    return problems


def _selects(selector: Obj, labels: dict[str, str]) -> bool:
    return bool(selector.get("matchLabels", {}).items() <= labels.items())


def allowed_sources(objs: list[Obj], target: dict[str, str], port: int) -> set[str]:
    """Which workloads of the namespace may open `port` on pods labelled `target`, and which
    outside sources ("namespace:NAME", "ip:CIDR")."""
    pods = {name: pod["metadata"]["labels"] for name, pod in workloads(objs)}
    allowed: set[str] = set()
    for policy in of_kind(objs, "NetworkPolicy").values():
        if not _selects(policy["spec"]["podSelector"], target):
            continue
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule.get("ports", [])}
            if ports and port not in ports:
                continue
            for source in rule.get("from", []):
                if "podSelector" in source and "namespaceSelector" not in source:
                    selector = source["podSelector"]
                    allowed |= {n for n, labels in pods.items() if _selects(selector, labels)}
                elif "namespaceSelector" in source:
                    ns = source["namespaceSelector"].get("matchLabels", {})
                    allowed.add(f"namespace:{ns.get('kubernetes.io/metadata.name')}")
                elif "ipBlock" in source:
                    allowed.add(f"ip:{source['ipBlock']['cidr']}")
    return allowed


def network_problems(objs: list[Obj]) -> list[str]:
    problems = []
    policies = of_kind(objs, "NetworkPolicy").values()
    if not any(
        p["spec"]["podSelector"] == {} and p["spec"].get("ingress") is None
        and p["spec"]["policyTypes"] == ["Ingress"] for p in policies
    ):  # fmt: skip
        problems.append("no default deny of ingress")
    ingress = "namespace:ingress-nginx"
    expected = {
        "ingest": ({"app.kubernetes.io/name": "ingest"}, 8710, {ingress}),
        "vault": ({"app.kubernetes.io/name": "vault"}, 8720, {"ingest", "dashboard", ingress}),
        "reporting": ({"app.kubernetes.io/name": "reporting"}, 8730, {"dashboard", ingress}),
        "dashboard": ({"app.kubernetes.io/name": "dashboard"}, 8740, {ingress}),
        "the store": (
            {"v1.min.io/tenant": "temoin-store"}, 9000,
            {"ingest", "vault", "reporting", "temoin-create-bucket", "temoin-store-users",
             "namespace:minio-operator"},
        ),
        "the database": (
            {"cnpg.io/cluster": "temoin-db"}, 5432,
            {"ingest", "vault", "reporting", "dashboard", "temoin-migrate",
             "namespace:cnpg-system"},
        ),
    }  # fmt: skip
    for what, (labels, port, sources) in expected.items():
        found = {s for s in allowed_sources(objs, labels, port) if not s.startswith("ip:")}
        if found != sources:
            problems.append(f"{what} on {port}: from {sorted(found)}, not {sorted(sources)}")
    if not any(s.startswith("ip:") for s in allowed_sources(objs, expected["ingest"][0], 8710)):
        problems.append("ingest: the docks' network may not reach it")
    return problems


# --- the tests ----------------------------------------------------------------------------------


def test_every_object_is_valid_for_the_pinned_kubernetes(production: list[Obj]) -> None:
    kinds = {o["kind"] for o in production}
    assert {
        "Namespace", "ServiceAccount", "ConfigMap", "Deployment", "Service", "Job",
        "PodDisruptionBudget", "NetworkPolicy", "Ingress",
    } <= kinds  # fmt: skip
    assert schema_problems(production) == []
    assert {o["metadata"].get("namespace") for o in production if o["kind"] != "Namespace"} == {
        "temoin"
    }


def test_the_base_renders_and_is_valid_too() -> None:
    assert schema_problems(render(DEPLOY / "base")) == []


def test_every_container_has_requests_and_limits(production: list[Obj]) -> None:
    assert resource_problems(production) == []


def test_probes_are_on_routes_the_apps_have(production: list[Obj]) -> None:
    apps = _apps()
    for app in apps.values():
        assert not answers_get(app, "/no-such-route")
    assert probe_problems(production, apps) == []


def test_every_setting_is_provided_and_accepted_in_production(
    production: list[Obj], secrets: Secrets, monkeypatch: pytest.MonkeyPatch
) -> None:
    """With the values create-secrets.sh generates, each settings class, in production mode,
    takes what its Deployment gives it: a key of the wrong length, a URL not over https, a
    development default left in place, and the service would refuse to start."""
    assert settings_problems(production) == []
    for service, settings_cls in SETTINGS.items():
        with monkeypatch.context() as patch:
            for name in list(os.environ):
                if name.startswith(OUR_PREFIXES):
                    patch.delenv(name)
            for name, value in env_of(production, service, secrets).items():
                patch.setenv(name, value)
            settings = settings_cls()
            assert settings.env == "production", service  # type: ignore[attr-defined]
    vault = env_of(production, "vault", secrets)
    password = secrets["temoin-db-services", "password"]
    assert vault["DATABASE_URL"] == f"postgresql://temoin_app:{password}@temoin-db-rw:5432/temoin"
    assert vault["S3_ACCESS_KEY"] == "temoin-vault"
    # The dashboard's own login, which may open its sessions and nothing else.
    password = secrets["temoin-db-dashboard", "password"]
    assert env_of(production, "dashboard", secrets)["DATABASE_URL"] == (
        f"postgresql://temoin_dashboard_app:{password}@temoin-db-rw:5432/temoin"
    )
    assert env_of(production, "ingest")["S3_ACCESS_KEY"] == "temoin-readiness"


def test_no_secret_is_in_the_manifests(production: list[Obj], operators: list[Obj]) -> None:
    assert secret_problems(production) == []
    assert not of_secrets(operators)


def secret_references(objs: list[Obj]) -> set[tuple[str, str]]:
    """Every (Secret, key) the manifests read: the pods' variables, and the operators'
    resources (CloudNativePG's role passwords and backup credentials, MinIO's root)."""
    found: set[tuple[str, str]] = set()
    for _, pod in workloads(objs):
        for container in containers(pod):
            for kind, value in env_sources(objs, container).values():
                if kind == "secret":
                    found.add(value)
    for obj in objs:
        spec = obj.get("spec", {})
        for role in spec.get("managed", {}).get("roles", []):
            if "passwordSecret" in role:
                found |= {(role["passwordSecret"]["name"], k) for k in ("username", "password")}
        for ref in spec.get("configuration", {}).get("s3Credentials", {}).values():
            found.add((ref["name"], ref["key"]))
        if obj["kind"] == "Tenant":
            found.add((spec["configuration"]["name"], "config.env"))
    return found


def test_create_secrets_makes_every_secret_the_manifests_read(
    production: list[Obj], operators: list[Obj], secrets: Secrets
) -> None:
    assert secret_references(production + operators) == set(secrets)
    # The store's administrator is the same for the operator and for the setup jobs.
    root = secrets["temoin-store-env", "config.env"]
    assert f"export MINIO_ROOT_USER={secrets['temoin-store-root', 'MINIO_ROOT_USER']}" in root
    assert (
        f"export MINIO_ROOT_PASSWORD={secrets['temoin-store-root', 'MINIO_ROOT_PASSWORD']}" in root
    )
    assert secrets["temoin-db-services", "username"] == "temoin_app"
    # Random keys, each its own: none is a development default, no two alike.
    keys = [v for (name, _), v in secrets.items() if name.endswith("-keys")]
    assert len(set(keys)) == len(keys)
    assert not set(keys) & {str(f.default) for f in VaultSettings.model_fields.values()}


def test_images_are_pinned(production: list[Obj], operators: list[Obj]) -> None:
    assert image_problems(production) == []
    assert image_problems(operators) == []


def test_pods_are_restricted(production: list[Obj]) -> None:
    assert security_problems(production) == []


def test_replicas_and_disruption_budgets(production: list[Obj]) -> None:
    assert availability_problems(production) == []


def test_network_policies_keep_the_store_and_the_database_to_the_services(
    production: list[Obj],
) -> None:
    assert network_problems(production) == []


def test_the_jobs_run_the_commands_the_cli_has(production: list[Obj]) -> None:
    import typer.main

    from temoin.cli import app

    cli = typer.main.get_command(app)
    commands = cli.commands  # type: ignore[attr-defined]
    jobs = {name: pod["spec"] for name, pod in workloads(production)}
    assert jobs["temoin-migrate"]["containers"][0]["command"] == ["temoin", "migrate"]
    assert jobs["temoin-create-bucket"]["containers"][0]["command"] == ["temoin", "create-bucket"]
    assert {"migrate", "create-bucket", "serve"} <= set(commands)
    assert "--check" in {o for p in commands["migrate"].params for o in p.opts}
    for service in SETTINGS:
        assert main_container(production, service)["command"] == ["temoin", "serve", service]
    for service in REPLICATED:
        init = of_kind(production, "Deployment")[service]["spec"]["template"]["spec"]
        assert "temoin migrate --check" in " ".join(init["initContainers"][0]["command"])
    # The bucket is made by the store's administrator, the users from the image's policies.
    bucket = env_sources(production, jobs["temoin-create-bucket"]["containers"][0])
    assert bucket["S3_ACCESS_KEY"] == ("secret", ("temoin-store-root", "MINIO_ROOT_USER"))
    copy_out = " ".join(jobs["temoin-store-users"]["initContainers"][0]["command"])
    script = " ".join(jobs["temoin-store-users"]["containers"][0]["args"])
    assert "WORKDIR /app" in (ROOT / "Dockerfile").read_text()
    for policy in sorted((ROOT / "deploy" / "minio").glob("*.json")):
        assert f"/app/deploy/minio/{policy.name}" in copy_out
        assert f"/policies/{policy.name}" in script
        assert f"--user {policy.stem}" in script


def test_the_operators_give_a_replicated_database_and_an_erasure_coded_store(
    operators: list[Obj],
) -> None:
    cluster = of_kind(operators, "Cluster")["temoin-db"]["spec"]
    assert cluster["instances"] >= 3
    assert cluster["postgresql"]["synchronous"]["number"] >= 1
    assert cluster["postgresql"]["synchronous"]["dataDurability"] == "required"
    assert cluster["affinity"]["podAntiAffinityType"] == "required"
    assert any(p.get("isWALArchiver") for p in cluster["plugins"])
    roles = {r["name"]: r for r in cluster["managed"]["roles"]}
    assert roles["temoin_app"]["inRoles"] == ["temoin_service"]
    assert roles["temoin_app"]["passwordSecret"]["name"] == "temoin-db-services"
    assert roles["temoin_dashboard_app"]["inRoles"] == ["temoin_dashboard"]
    assert roles["temoin_dashboard_app"]["passwordSecret"]["name"] == "temoin-db-dashboard"
    assert of_kind(operators, "ScheduledBackup")["temoin-db-nightly"]["spec"]["method"] == "plugin"
    tenant = of_kind(operators, "Tenant")["temoin-store"]["spec"]
    drives = sum(p["servers"] * p["volumesPerServer"] for p in tenant["pools"])
    env = {e["name"]: e["value"] for e in tenant["env"]}
    parity = int(env["MINIO_STORAGE_CLASS_STANDARD"].removeprefix("EC:"))
    per_server = tenant["pools"][0]["volumesPerServer"]
    assert tenant["pools"][0]["servers"] >= 4
    # A whole server's drives lost still leaves the write quorum (more than half the drives).
    assert parity >= per_server and drives - per_server > drives / 2


BREAKAGES: list[tuple[str, Callable[[list[Obj]], None], Callable[[list[Obj]], list[str]]]] = [
    (
        "a misspelt field",
        lambda objs: main_container(objs, "vault").update(readinesProbe={}),
        schema_problems,
    ),
    (
        "a container without limits",
        lambda objs: main_container(objs, "ingest")["resources"].pop("limits"),
        resource_problems,
    ),
    (
        "readiness on a route the app lacks",
        lambda objs: main_container(objs, "reporting")["readinessProbe"]["httpGet"].update(
            path="/ready"
        ),
        lambda objs: probe_problems(objs, _apps()),
    ),
    (
        "a setting dropped",
        lambda objs: of_kind(objs, "ConfigMap")[
            next(n for n in of_kind(objs, "ConfigMap") if n.startswith("temoin-vault"))
        ]["data"].pop("VAULT_HOLD_LOCK_DAYS"),
        settings_problems,
    ),
    (
        "a key written in",
        lambda objs: main_container(objs, "vault")["env"].append(
            {"name": "VAULT_KEK", "value": "cHJvZHVjdGlvbi1rZXktZW5jcnlwdGlvbi1rZXktMzI="}
        ),
        secret_problems,
    ),
    (
        "an image left at latest",
        lambda objs: main_container(objs, "dashboard").update(image="temoin:latest"),
        image_problems,
    ),
    (
        "a writable root filesystem",
        lambda objs: main_container(objs, "vault")["securityContext"].update(
            readOnlyRootFilesystem=False
        ),
        security_problems,
    ),
    (
        "the dashboard reaching the store",
        lambda objs: of_kind(objs, "Deployment")["dashboard"]["spec"]["template"]["metadata"][
            "labels"
        ].update({"temoin-store-client": "true"}),
        network_problems,
    ),
    (
        "one vault",
        lambda objs: of_kind(objs, "Deployment")["vault"]["spec"].update(replicas=1),
        availability_problems,
    ),
    (
        "one dashboard",
        lambda objs: of_kind(objs, "Deployment")["dashboard"]["spec"].update(replicas=1),
        availability_problems,
    ),
]


@pytest.mark.parametrize(
    ("breakage", "check"), [(b, c) for _, b, c in BREAKAGES], ids=[n for n, _, _ in BREAKAGES]
)
def test_each_check_fails_on_a_broken_copy(
    production: list[Obj],
    breakage: Callable[[list[Obj]], None],
    check: Callable[[list[Obj]], list[str]],
) -> None:
    broken = copy.deepcopy(production)
    breakage(broken)
    assert check(broken) != []

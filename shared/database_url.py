"""``DATABASE_URL`` as each of its readers takes it: SQLAlchemy's asyncpg dialect (the services,
Alembic), asyncpg's own DSN parser (`temoin migrate --check`) and libpq (psql, pg_basebackup).

A URL may name several servers, so that new connections find the primary after a failover
(docs/failover.md). The readers disagree on how: libpq and asyncpg take
``postgresql://u@h1:5432,h2:5432/db`` but SQLAlchemy cannot parse that netloc; SQLAlchemy takes
``?host=h1:5432&host=h2:5432`` but libpq and asyncpg keep only the last ``host``. All three take
``?host=h1,h2&port=5432,5432``: a URL naming several servers in any of these forms is rewritten
into that one. One naming a single server is left as it is.

Standard library only: PostgreSQL runs `python -m temoin.backup` with the system's Python.
"""

from __future__ import annotations

from urllib.parse import parse_qsl, quote, urlsplit

PREFIXES = ("postgresql+asyncpg://", "postgresql://", "postgres://")
DEFAULT_PORT = "5432"


def _host_port(token: str) -> tuple[str, str | None]:
    """``h``, ``h:p``, ``[v6]:p``, a bare IPv6 address or a socket directory."""
    if token.startswith("["):
        host, _, rest = token[1:].partition("]")
        return host, (rest[1:] or None) if rest.startswith(":") else None
    if token.count(":") == 1:
        host, port = token.split(":")
        return host, port or None
    return token, None


def _servers(netloc_hosts: str, query: list[tuple[str, str]]) -> list[tuple[str, str | None]]:
    """Every server the URL names, in order, from its netloc or its query."""
    hosts = [value for key, value in query if key == "host"]
    ports = [p for key, value in query if key == "port" for p in value.split(",")]
    if not hosts:
        return [_host_port(token) for token in netloc_hosts.split(",")] if netloc_hosts else []
    if len(hosts) > 1:  # SQLAlchemy's repeated host=h:p
        return [_host_port(token) for token in hosts]
    names = hosts[0].split(",")
    if not ports:
        return [_host_port(token) if len(names) > 1 else (token, None) for token in names]
    if len(ports) == 1 and len(names) > 1:
        ports *= len(names)  # libpq: one port for every host
    return [(name, port or None) for name, port in zip(names, ports, strict=False)]


def normalised(url: str) -> str:
    """``url`` as ``postgresql://``, a list of servers written as all three readers take it."""
    for prefix in PREFIXES:
        if url.startswith(prefix):
            rest = url[len(prefix) :]
            break
    else:
        raise ValueError("DATABASE_URL must be a postgresql:// URL")
    parts = urlsplit("postgresql://" + rest)
    userinfo, at, netloc_hosts = parts.netloc.rpartition("@")
    query = parse_qsl(parts.query, keep_blank_values=True)
    servers = _servers(netloc_hosts, query)
    if len(servers) < 2:
        return "postgresql://" + rest
    others = [(key, value) for key, value in query if key not in ("host", "port")]
    hosts = ",".join(quote(host, safe="/.-_~") for host, _ in servers)
    ports = ",".join(port or DEFAULT_PORT for _, port in servers)
    pairs = [f"host={hosts}", f"port={ports}"]
    pairs += [f"{quote(key, safe='')}={quote(value, safe='')}" for key, value in others]
    return f"postgresql://{userinfo}{at}{parts.path}?{'&'.join(pairs)}"


def sqlalchemy_url(url: str) -> str:
    """For ``create_async_engine`` (the asyncpg dialect)."""
    return "postgresql+asyncpg://" + normalised(url).removeprefix("postgresql://")


def libpq_url(url: str) -> str:
    """For libpq's programs (psql, pg_basebackup) and ``asyncpg.connect``."""
    return normalised(url)

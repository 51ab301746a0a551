"""The audit of signed links (SPEC §6): a row for every link the API hands out, written before the link
leaves: who, which request, which channel, when, from which address and until when. Never the link itself
or the key, which would make the audit a way in."""
from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime

from psycopg2 import sql

from programusers.io import postgres

COLUMNS = ("handed_at", "user_id", "request_id", "tag", "channel", "client_address", "expires_at")


@dataclass(frozen=True)
class LinkHandout:
    handed_at: datetime
    user_id: str
    request_id: str
    tag: str
    channel: str
    client_address: str | None
    expires_at: datetime


class LinkAudit:
    """The audit table `table` at the PostgreSQL `dsn` (created by `programusers init`), through `pool`
    when given."""

    def __init__(self, dsn: str, table: str, pool: postgres.ConnectionPool | None = None):
        self.dsn, self.table, self._pool = dsn, table, pool

    def _session(self):
        return self._pool.session() if self._pool else postgres.session(self.dsn)

    def record(self, handouts: Iterable[LinkHandout]) -> None:
        rows = [tuple(getattr(h, c) for c in COLUMNS) for h in handouts]
        if not rows:
            return
        statement = sql.SQL("INSERT INTO {table} ({columns}) VALUES ({values})").format(
            table=sql.Identifier(self.table), columns=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)),
            values=sql.SQL(", ").join(sql.Placeholder() * len(COLUMNS)))
        with self._session() as connection, connection, connection.cursor() as cursor:
            cursor.executemany(statement, rows)

    def entries(self, *, request_id: str | None = None, user_id: str | None = None, limit: int = 1000) -> list[dict]:
        """The newest entries first, of one request and/or one user when given."""
        conditions, params = [], []
        for column, value in (("request_id", request_id), ("user_id", user_id)):
            if value is not None:
                conditions.append(sql.SQL("{} = %s").format(sql.Identifier(column)))
                params.append(value)
        where = sql.SQL(" WHERE ") + sql.SQL(" AND ").join(conditions) if conditions else sql.SQL("")
        statement = sql.SQL("SELECT {columns} FROM {table}{where} ORDER BY handed_at DESC, id DESC LIMIT %s").format(
            columns=sql.SQL(", ").join(map(sql.Identifier, COLUMNS)), table=sql.Identifier(self.table), where=where)
        with self._session() as connection:
            return postgres.query(connection, statement, (*params, limit))

"""The ASCII authentication handshake: a ``set`` sent as the first command of a connection.

Two forms exist. MemCachier: ``set <username> 0 0 <n>`` with the password as the value.
memcached >= 1.5.15 with ``-Y authfile``: any key, with ``"<username> <password>"`` as the
value. ``auto`` tries MemCachier's form first, then memcached's, and keeps the one that
worked for that server. Credentials never appear in a repr, a log line or an exception.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from .protocol import Connection

AuthMode = Literal["auto", "memcachier", "memcached"]
AuthForm = Literal["memcachier", "memcached"]


class AuthenticationFailed(Exception):
    """The server rejected the handshake (the message names the server, never the credentials)."""


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)

    def forms(self, mode: AuthMode) -> tuple[AuthForm, ...]:
        return ("memcachier", "memcached") if mode == "auto" else (mode,)

    def command(self, form: AuthForm) -> bytes:
        if form == "memcachier":
            key, value = self.username.encode(), self.password.encode()
        else:
            key, value = b"auth", f"{self.username} {self.password}".encode()
        return b"set %b 0 0 %d\r\n%b\r\n" % (key, len(value), value)


async def authenticate(conn: Connection, credentials: Credentials, form: AuthForm) -> bool:
    """Send the handshake; True if the server replied ``STORED``. The caller bounds the time."""
    conn.writer.write(credentials.command(form))
    await conn.writer.drain()
    return await conn.reader.readline() == b"STORED\r\n"

"""The ASCII authentication handshake: a ``set`` sent as the first command of a connection.

- ``memcached`` (>= 1.5.15 with ``-Y authfile``): ``set _ascii_auth 0 -1 <n>`` with value
  ``"<username> <password>"``; an open server stores it already expired.
- ``memcachier``: ``set <username> 0 0 <n>`` with the password as the value. An open server
  would store it, so an accepted handshake is checked with ``get <username>``; a server that
  does not authenticate gets the item deleted and is never sent this form again.
- ``auto``: ``memcached`` first, then ``memcachier`` on a fresh connection only when the first
  was refused.
Credentials never appear in a repr, log or exception (docs/CACHE.md, "Authentication").
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, get_args

from .protocol import Connection

AuthMode = Literal["auto", "memcachier", "memcached"]  # MEMCACHIER_AUTH_MODE's values
AUTH_MODES: tuple[AuthMode, ...] = get_args(AuthMode)
AuthForm = Literal["memcachier", "memcached"]
AUTH_KEY = b"_ascii_auth"  # the key of memcached's form: never one of ours (they hold ":")


class AuthenticationFailed(Exception):
    """The server rejected the handshake (the message names the server, never the credentials)."""


@dataclass(frozen=True)
class Credentials:
    username: str = field(repr=False)
    password: str = field(repr=False)

    def forms(self, mode: AuthMode) -> tuple[AuthForm, ...]:
        return ("memcached", "memcachier") if mode == "auto" else (mode,)

    def command(self, form: AuthForm) -> bytes:
        if form == "memcachier":
            key, exptime, value = self.username.encode(), b"0", self.password.encode()
        else:
            key, exptime, value = AUTH_KEY, b"-1", f"{self.username} {self.password}".encode()
        return b"set %b 0 %b %d\r\n%b\r\n" % (key, exptime, len(value), value)


async def authenticate(conn: Connection, credentials: Credentials, form: AuthForm) -> bool:
    """Send the handshake; True if the server replied ``STORED``. The caller bounds the time."""
    conn.writer.write(credentials.command(form))
    await conn.writer.drain()
    return await conn.reader.readline() == b"STORED\r\n"


async def echoes_password(conn: Connection, credentials: Credentials) -> bool:
    """After MemCachier's form: did the server keep it as an item (``get <username>``)?"""
    conn.writer.write(b"get %b\r\n" % credentials.username.encode())
    await conn.writer.drain()
    line = await conn.reader.readline()
    if line == b"END\r\n":
        return False
    terms = line.split()
    if len(terms) == 4 and terms[0] == b"VALUE" and terms[3].isdigit():
        data = await conn.reader.readexactly(int(terms[3]) + 2)
        if await conn.reader.readline() == b"END\r\n":
            return data[:-2] == credentials.password.encode()
    raise AuthenticationFailed("unexpected reply after the handshake")


async def answers_unauthenticated(conn: Connection, credentials: Credentials) -> bool:
    """On a fresh connection: does the server serve a ``get`` without any handshake?"""
    conn.writer.write(b"get %b\r\n" % credentials.username.encode())
    await conn.writer.drain()
    line = await conn.reader.readline()
    return line == b"END\r\n" or line.startswith(b"VALUE ")


async def forget_password(conn: Connection, credentials: Credentials) -> None:
    """Delete the item an open server made of MemCachier's form."""
    conn.writer.write(b"delete %b\r\n" % credentials.username.encode())
    await conn.writer.drain()
    if await conn.reader.readline() not in (b"DELETED\r\n", b"NOT_FOUND\r\n"):
        raise AuthenticationFailed("unexpected reply to the delete of the handshake item")

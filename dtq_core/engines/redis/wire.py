"""Script calls as RESP bytes, streamed down one connection.

redis-py packs a command argument by argument through its encoder, which for
a bulk append (six arguments per job) costs about as much as the script takes
to run. Here the requests are packed with a few byte formats, and sent a few
ahead of the replies read, so the server always has the next call waiting.
"""

from __future__ import annotations

import codecs
import collections
import contextlib
import os
import select
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import redis
from redis.connection import AbstractConnection, ConnectionPool

from dtq_core.errors import EngineError

#: Requests sent and not yet answered, at most, in one exchange.
IN_FLIGHT = 2

#: Replies in a row that a :class:`Spin` waited for in vain before it rests.
SPIN_MISSES = 4
#: Calls a :class:`Spin` then leaves to sleep in recv before it polls again.
SPIN_REST = 1000


class Spin:
    """Waits for a reply by polling its socket for up to ``budget_s`` before sleeping in recv.

    A short script's reply comes back over loopback within tens of microseconds,
    but a thread that sleeps in recv until then is slow to be woken on a virtual
    machine: measured here, a PING round trip took 55 µs sleeping and 23 µs
    polling. Polling spends that wait as CPU instead, as adaptive mutexes spin
    before they park. It is bounded twice: by ``budget_s`` per reply, and by
    resting (no polling for :data:`SPIN_REST` calls) once :data:`SPIN_MISSES`
    replies in a row came later than that, as from a remote server, where
    polling would only burn CPU. With one CPU to run on, polling would hold it
    from the server it waits for: no polling at all (``budget_s`` 0 too).
    Only a producer's one-job append polls: in a worker, whose calls nobody
    waits on, a thread polling for a reply took the GIL from the threads
    running jobs (2-4% fewer jobs/s in process mode, measured).
    Shared by threads: its counts are hints, and a lost update costs nothing.
    """

    def __init__(self, budget_s: float) -> None:
        usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
        self.budget_s = budget_s if usable > 1 and hasattr(select, "poll") else 0.0
        self.misses = 0  # replies in a row that came after the budget
        self.resting = 0  # calls left before polling again

    def wait(self, conn: AbstractConnection) -> None:
        """Return once ``conn`` has a reply to read or the budget is spent (then recv waits)."""
        if self.budget_s <= 0.0:
            return
        if self.resting > 0:  # not just truthy: a count gone below 0 in a race must not stop polling
            self.resting -= 1
            return
        sock = conn._sock
        if sock is None:
            return  # dropped on the way: the read reports it
        poller = select.poll()
        poller.register(sock, select.POLLIN)
        deadline = time.perf_counter() + self.budget_s
        while not poller.poll(0):
            if time.perf_counter() > deadline:
                self.misses += 1
                if self.misses >= SPIN_MISSES:
                    self.misses, self.resting = 0, SPIN_REST
                return
        self.misses = 0


class NoReply:
    """What :meth:`Connections.once` gives when it got no reply: ``error`` if the connection
    failed on the way (the retry that follows counts it as its first failure), None if
    nothing was sent."""

    def __init__(self, error: redis.ConnectionError | redis.TimeoutError | None = None) -> None:
        self.error = error


class Packer:
    """Packs commands as a client with ``encoding`` and ``errors`` would (redis-py's Encoder)."""

    def __init__(self, encoding: str = "utf-8", errors: str = "strict") -> None:
        self.encoding = encoding
        self.errors = errors
        # UTF-8 encodes a text piece by piece as it encodes it whole: the
        # command is then written as text and encoded once.
        self._as_text = codecs.lookup(encoding).name == "utf-8"

    def command(self, *parts: str | int | float | bytes) -> bytes:
        """One command: a RESP array of bulk strings."""
        return b"*%d\r\n" % len(parts) + self.bulk(*parts)

    def bulk(self, *parts: str | int | float | bytes) -> bytes:
        """``parts`` as RESP bulk strings end to end: a command's body, or a run of one
        (a command of N parts is ``b"*N\\r\\n"`` and the runs of its parts in order)."""
        texts: list[str] = []
        for part in parts:
            kind = type(part)
            if kind is str:
                texts.append(part)  # type: ignore[arg-type]
            elif kind is int or kind is float:
                texts.append(repr(part))
            elif kind is bytes or not self._as_text:
                return _bulk([self.encode(part) for part in parts])
            else:
                texts.append(self.text(part))
        encoding, errors = self.encoding, self.errors
        if "".join(texts).isascii():  # each text's length is its length in bytes
            body = "".join([f"${len(t)}\r\n{t}\r\n" for t in texts])
        else:
            body = "".join([f"${len(t.encode(encoding, errors))}\r\n{t}\r\n" for t in texts])
        return body.encode(encoding, errors)

    def encode(self, value: str | int | float | bytes) -> bytes:
        """An argument as redis-py's Encoder makes it."""
        return value if isinstance(value, bytes) else self.text(value).encode(self.encoding, self.errors)

    @staticmethod
    def text(value: str | int | float | bytes) -> str:
        """A text or number argument as text; bools and other types are refused as redis-py refuses them."""
        if isinstance(value, bool) or not isinstance(value, (str, int, float)):
            raise redis.DataError(
                f"Invalid input of type: {type(value).__name__!r}. "
                "Convert to a bytes, string, int or float first."
            )
        # The value itself, not a subclass's own formatting (an Enum's "Cls.NAME").
        if isinstance(value, str):
            return str.__str__(value)
        return int.__repr__(value) if isinstance(value, int) else float.__repr__(value)


def _bulk(parts: Sequence[bytes]) -> bytes:
    return b"".join([b"$%d\r\n%b\r\n" % (len(p), p) for p in parts])


def converse(
    conn: AbstractConnection, count: int, request: Callable[[int], bytes], replies: list[Any]
) -> list[Any]:
    """Send requests ``len(replies)`` to ``count - 1`` and read their replies into ``replies``.

    ``request(i)`` is the i-th request; it is asked for as it is sent, so it
    may be packed then, while the server runs the one before. At most
    :data:`IN_FLIGHT` requests go unanswered at a time. An error reply stays in
    its place rather than being raised, as in a redis-py pipeline. On a dropped
    connection ``replies`` keeps what was answered, so a retry resumes.
    """
    for i in range(len(replies), count):
        # A health check reads its own reply: only with nothing else in flight.
        conn.send_packed_command([request(i)], check_health=i == len(replies))  # type: ignore[no-untyped-call]
        if i + 1 - len(replies) >= IN_FLIGHT:
            replies.append(_reply(conn))
    while len(replies) < count:
        replies.append(_reply(conn))
    return replies


def unframe(sizes: str, body: str | bytes, encoding: str, errors: str) -> list[str | None]:
    """The strings a script put end to end in ``body``, their lengths in bytes in ``sizes``.

    ``sizes`` is space-separated; -1 stands for none (None). A decoded ``body``
    is cut as text when it is ASCII (one byte per character), otherwise encoded
    back to bytes first, which gives the bytes read exactly for the decoding
    dtq's clients use (UTF-8 with surrogateescape). Cut pieces are decoded as
    the client decodes a reply.

    Raises:
        EngineError: the sizes do not add up to the body, which only a
            client whose decoding loses bytes can cause (RedisEngine refuses
            those; a loss need not change the length, so this check is a last
            guard, not a proof).
    """
    text = isinstance(body, str) and body.isascii()
    data = body if text or isinstance(body, bytes) else body.encode(encoding, errors)
    pieces: list[str | None] = []
    at = 0
    for size in map(int, sizes.split()):
        if size < 0:
            pieces.append(None)
            continue
        piece = data[at : at + size]
        pieces.append(piece if isinstance(piece, str) else piece.decode(encoding, errors))
        at += size
    if at != len(data):
        raise EngineError(
            f"a script's reply did not add up ({at} bytes listed, {len(data)} read): the Redis "
            f"client's decoding ({encoding}, errors={errors!r}) does not give back the bytes "
            "read; let dtq make the client (errors='surrogateescape')"
        )
    return pieces


def _reply(conn: AbstractConnection) -> Any:
    try:
        return conn.read_response()
    except redis.ResponseError as exc:
        return exc


class Connections:
    """Connections taken from a redis-py pool and kept for exchanges, and how to pack commands for them.

    Taking one from the pool and giving it back costs about as much CPU as a
    round trip (redis-py checks, locks and records each time). Kept here, a
    connection goes to whichever thread needs one next; there are only as many
    as exchanges ever ran at once. They stay the pool's (its ``disconnect``
    closes them; the next exchange reconnects).
    """

    def __init__(self, pool: ConnectionPool, packer: Packer, spin: Spin | None = None) -> None:
        self.pool = pool
        self.packer = packer
        self.spin = spin or Spin(0.0)
        self._free: collections.deque[AbstractConnection] = collections.deque()
        self._pid = os.getpid()

    def once(self, request: bytes, *, spin: bool = False) -> Any:
        """The reply to one request on a kept, connected connection, or why there is none.

        The common case of a single script call (one append, one completion),
        without the retry machinery: every layer a call goes through costs a few
        microseconds, and a round trip on loopback is only about 60. With no
        kept connection, or one that was dropped, nothing is sent; a connection
        that fails on the way is disconnected. Either way (:class:`NoReply`) the
        caller then runs the request through :meth:`connection` and the client's
        retries; a failure here counts as their first attempt, so a request is
        sent no more often than a redis-py command would be. With ``spin``, the
        reply is waited for by :attr:`spin` first: a producer's call, whose
        caller waits on it (a worker's calls are not, see :class:`Spin`).
        """
        conn = self._kept()
        if conn is None:
            return NoReply()
        try:
            if getattr(conn, "_sock", None) is None:  # dropped: reconnecting is the retry path's job
                return NoReply()
            conn.send_packed_command([request], check_health=True)  # type: ignore[no-untyped-call]
            if spin:
                self.spin.wait(conn)
            return _reply(conn)
        except (redis.ConnectionError, redis.TimeoutError) as exc:
            conn.disconnect()  # type: ignore[no-untyped-call]
            return NoReply(exc)
        except BaseException:
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            self._free.append(conn)

    def drop_free(self) -> None:
        """Disconnect the kept connections no exchange is using (each reconnects when next used).

        Each is taken from the free list before it is disconnected, as an exchange
        takes one: never one that another thread took meanwhile and is using.
        """
        dropped: list[AbstractConnection] = []
        while (conn := self._kept()) is not None:
            conn.disconnect()  # type: ignore[no-untyped-call]
            dropped.append(conn)
        self._free.extend(dropped)

    def _kept(self) -> AbstractConnection | None:
        """A kept connection, or None if there is none free."""
        if self._pid != os.getpid():  # a forked child must not share its parent's sockets
            self._free, self._pid = collections.deque(), os.getpid()
        try:
            return self._free.pop()
        except IndexError:
            return None

    @contextlib.contextmanager
    def connection(self) -> Iterator[AbstractConnection]:
        """A connection for one exchange; disconnected (it reconnects when next used) if that failed."""
        conn = self._kept() or self.pool.get_connection()
        try:
            yield conn
        except BaseException:
            # Replies may be left unread on it: never hand it out like that.
            conn.disconnect()  # type: ignore[no-untyped-call]
            raise
        finally:
            self._free.append(conn)

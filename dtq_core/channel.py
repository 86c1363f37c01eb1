"""JSON messages between a worker and its job process, one per line, over their socket pair.

multiprocessing's ``Connection.send_bytes``/``recv_bytes`` frame one message
per call: two reads for each message received, and a send that blocks while
the other side is busy and its buffer is full. Here every read takes all the
messages that have arrived, several messages go in one write, and the
worker's end never blocks on a write: what does not fit waits in memory and
goes as the job process reads (:meth:`Channel.flush`). A worker stuck writing
a large job sent ahead could not stop the job running before it at its time
limit.

``json.dumps`` escapes newlines inside strings, so a newline ends a message.
"""

from __future__ import annotations

import json
import os
import select
from collections import deque
from collections.abc import Iterable, Mapping
from multiprocessing.connection import Connection
from typing import Any

#: Bytes asked for by one read: under the allocator's mmap threshold (128 KiB), so a read
#: of a few small messages costs no mapping of its own.
_READ_BYTES = 64 * 1024


class Channel:
    """One end of the pair: messages sent and received as JSON lines.

    With ``blocking=False`` (the worker's end), :meth:`send` writes what the
    socket takes now and keeps the rest, which :meth:`poll` writes as room is
    made while it waits for messages. The job process's end blocks.
    """

    def __init__(self, conn: Connection, *, blocking: bool) -> None:
        self._conn = conn  # owns the descriptor: closed with it
        self._fd = conn.fileno()
        self._blocking = blocking
        os.set_blocking(self._fd, blocking)
        self._lines: deque[bytes] = deque()  # whole messages read, not taken yet
        self._partial: list[bytes] = []  # the start of the next message
        self._out = bytearray()  # sent, not written yet (non-blocking end only)
        # One poll object for the pair: a selector built per wait would cost more than the wait.
        self._poll = select.poll()
        self._poll.register(self._fd, select.POLLIN)
        self._polling_out = False  # whether it also waits for room to write

    def send(self, messages: Iterable[Mapping[str, Any]]) -> None:
        """Send the messages, in order, in one write (as far as the socket takes them now)."""
        data = "".join([json.dumps(message) + "\n" for message in messages]).encode("utf-8")
        if self._out:
            self._out += data  # behind what is still waiting: order is kept
        else:
            self._out = bytearray(data)
        self.flush()

    def poll(self, timeout_s: float) -> bool:
        """Wait up to ``timeout_s`` for the other end (non-blocking end); whether it did anything.

        What has arrived is read (:meth:`take` has it once whole), and what is
        unsent is written as far as there is room.

        Raises:
            EOFError, OSError: as :meth:`fill` and :meth:`flush`.
        """
        if bool(self._out) != self._polling_out:
            self._polling_out = bool(self._out)
            self._poll.modify(self._fd, select.POLLIN | (select.POLLOUT if self._out else 0))
        events = 0
        for _fd, event in self._poll.poll(timeout_s * 1000):
            events |= event
        # Read first: a child that sent its outcome and died must not lose it to the
        # failed write.
        if events & ~select.POLLOUT:  # in, or hung up / failed: a read tells which
            self.fill()
        if events & select.POLLOUT:
            self.flush()
        return bool(events)

    def flush(self) -> None:
        """Write what is waiting: all of it on a blocking end, what fits now otherwise.

        On the non-blocking end, a closed other end drops what is waiting (it
        can never be read) and raises nothing: the reads report the end of
        file once every message it sent before it closed has been taken.

        Raises:
            OSError: the other end is closed (blocking end), or the socket failed.
        """
        while self._out:
            try:
                written = os.write(self._fd, self._out)
            except BlockingIOError:
                return
            except (BrokenPipeError, ConnectionResetError):
                if self._blocking:
                    raise
                self._out.clear()
                return
            del self._out[:written]

    def ready(self) -> bool:
        """Whether a message has arrived, or part of one (never waits)."""
        return bool(self._lines) or bool(self._poll.poll(0))

    def take(self) -> Any:
        """The next message already read, or None when no whole one has arrived."""
        if not self._lines:
            return None
        # Decoded first: json.loads given bytes looks for their encoding every time.
        return json.loads(self._lines.popleft().decode("utf-8"))

    def fill(self) -> bool:
        """Read what has arrived (on a blocking end, wait for something); whether anything had.

        Raises:
            EOFError: the other end closed the pair.
        """
        try:
            chunk = os.read(self._fd, _READ_BYTES)
        except BlockingIOError:
            return False
        except ConnectionResetError as exc:
            # The other end closed with our messages unread: its own came first, all read.
            raise EOFError("the other end of the job process's pipe closed") from exc
        if not chunk:
            raise EOFError("the other end of the job process's pipe closed")
        *whole, rest = chunk.split(b"\n")
        if whole:
            self._partial.append(whole[0])
            self._lines.append(b"".join(self._partial))
            self._lines.extend(whole[1:])
            self._partial = []
        if rest:
            self._partial.append(rest)
        return True

    def drain(self, most_bytes: int = 16 * 1024 * 1024) -> None:
        """Read what has arrived by now, up to about ``most_bytes`` (non-blocking end): a
        whole message however many reads it takes, but not a stream that never ends.

        Raises:
            EOFError: the other end closed the pair.
        """
        for _ in range(max(1, most_bytes // _READ_BYTES)):
            if not self.fill():
                return

    def receive(self) -> Any:
        """The next message, waiting for it (blocking end).

        Raises:
            EOFError: the other end closed the pair.
        """
        while not self._lines:
            self.fill()
        return self.take()

    def close(self) -> None:
        """Close this end; the other end reads EOF."""
        self._conn.close()

"""The JSON-lines channel between a worker and its job process, over a real socket pair."""

from __future__ import annotations

import multiprocessing
import threading
import time
from collections.abc import Iterator

import pytest

from dtq_core.channel import Channel


@pytest.fixture
def pair() -> Iterator[tuple[Channel, Channel]]:
    """The worker's end (non-blocking) and the job process's end (blocking)."""
    worker_end, child_end = multiprocessing.Pipe()
    worker, child = Channel(worker_end, blocking=False), Channel(child_end, blocking=True)
    yield worker, child
    worker.close()
    child.close()


def test_messages_arrive_whole_and_in_order_however_they_were_written(pair: tuple[Channel, Channel]) -> None:
    worker, child = pair
    tricky = {"op": "run", "text": "two\nlines, a \u2603 and a lone \udc80", "n": [1, 2.5, None]}
    worker.send([tricky, {"op": "poll"}])
    worker.send([{"op": "done"}])
    assert [child.receive() for _ in range(3)] == [tricky, {"op": "poll"}, {"op": "done"}]


def test_several_messages_come_in_one_read(pair: tuple[Channel, Channel]) -> None:
    worker, child = pair
    child.send([{"n": n} for n in range(5)])
    assert worker.poll(5)  # one read
    assert [worker.take() for _ in range(6)] == [{"n": n} for n in range(5)] + [None]


def test_a_message_cut_across_reads_is_taken_only_once_whole(pair: tuple[Channel, Channel]) -> None:
    worker, child = pair
    big = {"blob": "x" * 300_000}  # several reads' worth
    reader = threading.Thread(target=lambda: child.send([big, {"after": True}]))
    reader.start()
    taken = []
    deadline = time.monotonic() + 10
    while len(taken) < 2 and time.monotonic() < deadline:
        if worker.poll(0.1):
            while (message := worker.take()) is not None:
                taken.append(message)
    reader.join(5)
    assert taken == [big, {"after": True}]


def test_the_worker_end_never_blocks_on_a_send_the_other_side_is_not_reading(
    pair: tuple[Channel, Channel],
) -> None:
    worker, child = pair
    big = {"blob": "y" * 2_000_000}  # far more than the socket buffers hold
    started = time.monotonic()
    worker.send([big, {"next": 1}])  # nobody reads yet: what does not fit waits in memory
    assert time.monotonic() - started < 1
    received: list[object] = []
    reader = threading.Thread(target=lambda: received.extend([child.receive(), child.receive()]))
    reader.start()
    deadline = time.monotonic() + 10
    while reader.is_alive() and time.monotonic() < deadline:
        worker.poll(0.05)  # writes the rest as the reader makes room
    reader.join(1)
    assert received == [big, {"next": 1}]


def test_a_closed_end_reads_as_end_of_file_after_what_it_sent(pair: tuple[Channel, Channel]) -> None:
    worker, child = pair
    child.send([{"op": "done"}])
    child.close()
    worker.send([{"op": "run", "blob": "z" * 1_000_000}])  # to a closed end: dropped, not raised
    assert worker.poll(5)
    assert worker.take() == {"op": "done"}  # what came before the close is still read
    with pytest.raises(EOFError):
        worker.poll(5)


def test_an_outcome_sent_just_before_the_end_closed_is_read_though_jobs_wait_unsent(
    pair: tuple[Channel, Channel],
) -> None:
    # The worker still holds jobs for the child (more than the socket took) when the child
    # sends its outcome and dies: the failed write must not cost the outcome.
    worker, child = pair
    worker.send([{"op": "run", "blob": "z" * 2_000_000}])
    child.send([{"op": "done", "attempt": {"ending": "ok"}}])
    child.close()
    assert worker.poll(5)
    assert worker.take() == {"op": "done", "attempt": {"ending": "ok"}}
    with pytest.raises(EOFError):
        worker.poll(5)


def test_drain_reads_a_message_longer_than_one_read_whole(pair: tuple[Channel, Channel]) -> None:
    worker, child = pair
    big = {"op": "done", "blob": "w" * 80_000}  # over one read (64 KiB), within the socket's buffer
    child.send([big])
    worker.drain()
    assert worker.take() == big

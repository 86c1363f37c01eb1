"""Commands packed by the Redis engine itself (dtq_core.engines.redis.wire)."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest
import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from dtq_core.engines.redis.wire import Packer


@pytest.mark.parametrize(
    ("encoding", "errors"), [("utf-8", "surrogateescape"), ("utf-8", "strict"), ("latin-1", "strict")]
)
def test_packed_commands_are_those_redis_py_sends(encoding: str, errors: str) -> None:
    text = "é\udcff" if errors == "surrogateescape" else "é"
    parts: list[Any] = [
        "EVALSHA",
        "f" * 40,
        2,
        "k:{ns}:1",
        f"k:{text}",
        1000,
        -3,
        1.5,
        "",
        json.dumps({"d": text}),
    ]
    expected = b"".join(PythonRespSerializer(6000, Encoder(encoding, errors, True).encode).pack(*parts))
    packer = Packer(encoding, errors)
    assert packer.command(*parts) == expected
    assert packer.command(*parts[:-1], parts[-1].encode(encoding, errors)) == expected
    for bad in (True, None, [1]):
        with pytest.raises(redis.DataError):
            packer.command("SET", bad)


def test_subclasses_of_text_and_numbers_are_packed_as_their_values() -> None:
    class Name(str, enum.Enum):
        A = "alpha"

    class Level(enum.IntEnum):
        HIGH = 5

    packer = Packer()
    # As their values: an Enum's own formatting ("Name.A", "<Level.HIGH: 5>") would
    # break the frame's length or the script's arithmetic.
    assert packer.command("GET", Name.A, Level.HIGH) == Packer().command("GET", "alpha", 5)
    assert packer.command("GET", Name.A) == b"*2\r\n$3\r\nGET\r\n$5\r\nalpha\r\n"

"""Commands packed by the Redis engine itself (dtq_core.engines.redis.wire)."""

from __future__ import annotations

import enum
import json
from typing import Any

import pytest
import redis
from redis._parsers.encoders import Encoder
from redis.connection import PythonRespSerializer

from dtq_core.engines.redis import RedisEngine
from dtq_core.engines.redis.wire import Packer, unframe
from dtq_core.errors import EngineError


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


@pytest.mark.parametrize("as_bytes", [False, True])
def test_unframe_cuts_a_scripts_strings_back_out_whatever_their_bytes(as_bytes: bool) -> None:
    # As fetch.lua sends them: byte lengths, -1 for none, the strings end to end.
    strings: list[str | None] = ["abc", None, "", "é", "日本😀", "\udcff\udcfe", '{"a":"b c"}', None]
    raw = [s.encode("utf-8", "surrogateescape") for s in strings if s is not None]
    sizes = " ".join(str(-1 if s is None else len(s.encode("utf-8", "surrogateescape"))) for s in strings)
    body_bytes = b"".join(raw)
    body: str | bytes = body_bytes if as_bytes else body_bytes.decode("utf-8", "surrogateescape")
    assert unframe(sizes, body, "utf-8", "surrogateescape") == strings
    ascii_only = ["ab", "", "c"]
    assert unframe("2 0 1", "abc", "utf-8", "strict") == ascii_only
    assert unframe("", "", "utf-8", "strict") == []


def test_unframe_refuses_sizes_that_do_not_add_up_rather_than_cut_wrongly() -> None:
    # A client that decodes with errors="replace" loses bytes: the lengths no longer fit.
    body = b"ok\xff\xfe!".decode("utf-8", "replace")
    with pytest.raises(EngineError, match="did not add up"):
        unframe("2 2 1", body, "utf-8", "replace")
    with pytest.raises(EngineError, match="did not add up"):
        unframe("1", "abc", "utf-8", "strict")


def test_an_engine_refuses_a_client_whose_decoding_loses_bytes() -> None:
    # No server is asked: the client's settings alone decide.
    lossy = redis.Redis(port=1, socket_timeout=10, decode_responses=True, encoding_errors="replace")
    with pytest.raises(EngineError, match=r"encoding_errors='replace'.*surrogateescape"):
        RedisEngine(lossy)
    for errors in ("surrogateescape", "strict"):
        RedisEngine(redis.Redis(port=1, socket_timeout=10, decode_responses=True, encoding_errors=errors))

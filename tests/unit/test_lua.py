"""The Redis engine's scripts as loaded: one per operation, each opening with its contract."""

from __future__ import annotations

import importlib.resources
import re

import pytest

from dtq_core.engines.redis.engine import _SCRIPTS, _lua

SHIPPED = sorted(
    entry.name.removesuffix(".lua")
    for entry in importlib.resources.files("dtq_core.engines.redis").joinpath("lua").iterdir()
    if entry.name.endswith(".lua")
)


def test_every_shipped_script_is_loaded_by_the_engine() -> None:
    assert sorted(_SCRIPTS) == SHIPPED


@pytest.mark.parametrize("name", SHIPPED)
def test_a_script_opens_with_its_contract_and_has_its_shared_parts_put_in(name: str) -> None:
    text = _lua(name)
    header = text[: text.index("]]")]
    assert header.startswith(f"--[[ {name}: ")
    assert "KEYS[1]" in header and "ARGV[1]" in header
    assert not re.search(r"^--#include", text, re.MULTILINE)
    body = text[text.index("]]") :]
    for shared in set(re.findall(r"\b(tell_one|tell|sweep|add_event|trim_events|digits)\(", body)):
        # Each function used is defined once, before any code that calls it (a shared
        # part that uses another, as events uses digits, must come after it).
        definition = f"local function {shared}("
        assert text.count(definition) == 1, shared
        calls = [
            m.start()
            for m in re.finditer(rf"\b{shared}\(", body)
            if not body[: m.start()].endswith("function ")
        ]
        assert not calls or body.index(definition) < min(calls), (
            f"{name}: {shared} is called before it is defined"
        )
    if re.search(r"^\s*add_event\(", body, re.MULTILINE):
        # Events added untrimmed are trimmed once, as the script's last write.
        assert re.search(r"^trim_events\(.*\)\nreturn .+\s*$", body, re.MULTILINE), name

"""Engine URLs: parsing, dtq's own query options, and masking secrets (no server needed)."""

from __future__ import annotations

import pytest

from dtq_core import EngineError
from dtq_core.config import mask_url
from dtq_core.engines.redis.connect import connect, engine_options


@pytest.mark.parametrize(
    ("url", "masked"),
    [
        ("redis://:s3cret@host:6379/0", "redis://:***@host:6379/0"),
        (
            "rediss://app:s3cret@host:6380/1?ssl_ca_certs=/ca.pem",
            "rediss://app:***@host:6380/1?ssl_ca_certs=/ca.pem",
        ),
        ("redis+cluster://app:s3cret@a:7000,b:7001", "redis+cluster://app:***@a:7000,b:7001"),
        (
            "redis+sentinel://a:26379,b:26379/main?sentinel_password=s3cret&db=2",
            "redis+sentinel://a:26379,b:26379/main?sentinel_password=***&db=2",
        ),
        ("redis://host:6379/0?password=s3cret", "redis://host:6379/0?password=***"),
        ("redis://host:6379/0", "redis://host:6379/0"),
        ("sqlite:///dtq.db", "sqlite:///dtq.db"),
        # Forms that were shown as given: no scheme, no '//', a name spelt in %-escapes,
        # and one urllib cannot split at all.
        ("//:s3cret@host:1/0", "//:***@host:1/0"),
        (":s3cret@host:6379/0", ":***@host:6379/0"),
        ("app:s3cret@host/0", "app:***@host/0"),
        ("redis://host:6379/0?pass%77ord=s3cret", "redis://host:6379/0?pass%77ord=***"),
        ("redis://:s3cret@[::1:1/0", "redis://:***@[::1:1/0"),
        ("unix:///run/redis.sock?password=s3cret", "unix:///run/redis.sock?password=***"),
        # A password holding '#', '?' or '/' as it is, which ends urllib's host part early.
        ("redis://:s3cret#x@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://app:s3c?ret@host:6379/0", "redis://app:***@host:6379/0"),
        ("redis://:s3/cret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://:s3#c@ret@host:6379/0", "redis://:***@host:6379/0"),
        ("redis://u:s3c@ret/x@host:6379/0", "redis://u:***@host:6379/0"),  # an '@' and a '/'
        ("redis://:s3cret#@host:6379/0?client_name=a@b", "redis://:***@host:6379/0?client_name=a@b"),
        # An '@' in a query option's value is no user part's end: shown as it is.
        (
            "redis://host:6379/0?client_name=ops@example.com",
            "redis://host:6379/0?client_name=ops@example.com",
        ),
        ("redis://[::1]:6379/0?client_name=a@b", "redis://[::1]:6379/0?client_name=a@b"),
        (
            "redis+sentinel://s1:26379,s2:26379/main?client_name=a@b&sentinel_password=s3cret",
            "redis+sentinel://s1:26379,s2:26379/main?client_name=a@b&sentinel_password=***",
        ),
    ],
)
def test_mask_url_hides_every_password(url: str, masked: str) -> None:
    assert mask_url(url) == masked
    assert "s3cret" not in mask_url(url)


def test_engine_options_are_split_off_the_query() -> None:
    url, options = engine_options("redis+sentinel://a:1/m?wait_replicas=1&db=3&wait_timeout_s=0.5")
    assert url == "redis+sentinel://a:1/m?db=3"
    assert options == {"wait_replicas": 1, "wait_timeout_s": 0.5}


def test_a_non_numeric_engine_option_is_refused_with_its_name() -> None:
    with pytest.raises(EngineError, match="wait_replicas must be a number, not 'all'"):
        engine_options("redis://:pw@h:1/0?wait_replicas=all")


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("redis+cluster://", "no host given"),
        ("redis+cluster://a:7000,b", "'b' is not host:port"),
        ("redis+sentinel://a:26379", "name the monitored service in the path"),
        ("redis+sentinel://:pw@a:x/main", "'a:x' is not host:port"),
        # Was Python's own "master_for() got multiple values for keyword argument 'db'".
        ("redis+sentinel://:pw@a:26379/main?db=3", r"database number in the path.*/main/3 \(not \?db=\)"),
    ],
)
def test_malformed_cluster_and_sentinel_urls_say_what_is_wrong(url: str, message: str) -> None:
    with pytest.raises(EngineError, match=message) as caught:
        connect(url, socket_timeout_s=1, connect_timeout_s=1, retries=0)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    ["redis://:pw@h:1/0?socket_timout=3", "redis+sentinel://:pw@a:26379/main?socket_timout=3"],
)
def test_an_unknown_query_option_is_refused_when_connecting_with_its_name(url: str) -> None:
    # redis-py itself would only fail at the first command, with a TypeError from deep inside.
    with pytest.raises(EngineError, match="'socket_timout' is not an option of a Redis connection") as caught:
        connect(url, socket_timeout_s=1, connect_timeout_s=1, retries=0)
    assert "pw" not in str(caught.value)


def test_known_query_options_are_taken() -> None:
    client = connect(
        "redis://h:1/0?socket_timeout=3&protocol=2", socket_timeout_s=1, connect_timeout_s=1, retries=0
    )
    assert client.connection_pool.connection_kwargs["socket_timeout"] == 3.0


def test_a_bad_value_in_the_query_is_refused_when_connecting() -> None:
    with pytest.raises(EngineError, match="bad Redis URL 'redis://:\\*\\*\\*@h:1/0\\?protocol=4'") as caught:
        connect("redis://:pw@h:1/0?protocol=4", socket_timeout_s=1, connect_timeout_s=1, retries=0)
    assert "pw" not in str(caught.value)


@pytest.mark.parametrize(
    "url",
    [
        "redis://:Tr0ub4dor#3xyz@127.0.0.1:6390/0",
        "redis://app:s3cr?etpw@127.0.0.1:6390/0",
        "redis://:#3xyzTr0ub@127.0.0.1:6390/0",  # accepted before, as a URL of no host
        "redis://:2024/3xyz@127.0.0.1:6390/0",  # accepted before, as port 2024
    ],
)
def test_a_password_that_needs_percent_encoding_is_named_and_never_shown(url: str) -> None:
    with pytest.raises(EngineError) as caught:
        connect(url, socket_timeout_s=1, connect_timeout_s=1, retries=0)
    said = str(caught.value)
    assert "must be percent-encoded (%23, %3F, %2F, %40)" in said
    assert not any(piece in said for piece in ("Tr0ub", "4dor", "3xyz", "s3cr", "etpw", "2024")), said

"""Turning an engine URL into a redis-py client: one server, a Cluster, or a Sentinel-watched master.

URL forms (options after ``?`` go to redis-py's connections, e.g. ``ssl_ca_certs``):

* ``redis://[[user]:password@]host:port/db``, ``rediss://...`` (TLS), ``unix:///path.sock``
* ``redis+cluster://[[user]:password@]host:port[,host:port...]`` (``rediss+cluster://`` for TLS):
  any reachable nodes; the client learns the rest from the cluster.
* ``redis+sentinel://[[user]:password@]host:port[,host:port...]/service[/db]``
  (``rediss+sentinel://`` for TLS to the master): the sentinels to ask; ``service`` is the
  name the sentinels monitor. The password is the master's; a password for the sentinels
  themselves goes in ``?sentinel_password=``.

dtq's own options may go in the query too: ``wait_replicas`` and ``wait_timeout_s``
(see :class:`~dtq_core.engines.redis.RedisEngine`).
"""

from __future__ import annotations

import re
import urllib.parse
from typing import Any

import redis
from redis.backoff import ExponentialWithJitterBackoff, NoBackoff
from redis.cluster import ClusterNode, RedisCluster
from redis.retry import Retry
from redis.sentinel import Sentinel

from dtq_core.config import mask_url, password_cut_short
from dtq_core.errors import EngineError, EngineUnavailable

#: A client for one server (or a Sentinel-managed master), or a cluster client.
Client = redis.Redis | RedisCluster

#: URL query options that redis-py would not understand as strings.
_NUMBERS = ("db", "socket_timeout", "socket_connect_timeout", "health_check_interval")


def connect(url: str, *, socket_timeout_s: float, connect_timeout_s: float, retries: int) -> Client:
    """A client for ``url``, set to retry a dropped connection ``retries`` times with jittered backoff.

    Raises:
        EngineError: the URL is malformed; the message says what is wrong.
        EngineUnavailable: no node of a Cluster URL answered (a Cluster client
            connects as it is made; the others connect on their first command);
            see :func:`cluster_trouble`.
    """
    common: dict[str, Any] = {
        "decode_responses": True,
        # Bytes that are not UTF-8 (written by something other than dtq) decode
        # to lone surrogates instead of failing the whole reply: the record
        # checks then report them (dtq_core.record), and the bytes round-trip.
        "encoding_errors": "surrogateescape",
        "socket_timeout": socket_timeout_s,
        "socket_connect_timeout": connect_timeout_s,
        "socket_keepalive": True,
        "retry": Retry(ExponentialWithJitterBackoff(cap=1.0, base=0.05), retries),
    }
    if password_cut_short(url):
        # Refused, not guessed at: the client would take a piece of the password for the
        # host or port (and say so in its error, quoting it), or connect elsewhere.
        raise EngineError(
            f"bad Redis URL {mask_url(url)!r}: a password holding '#', '?', '/' or '@' must be "
            "percent-encoded (%23, %3F, %2F, %40)"
        )
    scheme = urllib.parse.urlsplit(url).scheme
    try:
        if scheme.endswith("+cluster"):
            return _cluster(url, common)
        if scheme.endswith("+sentinel"):
            client = _sentinel(url, common)
        else:
            if scheme == "unix":  # TCP's keepalive: a Unix socket's connection takes no such option
                common.pop("socket_keepalive")
            client = redis.Redis.from_url(
                url,
                health_check_interval=15,
                retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                **common,
            )
    except (ValueError, TypeError) as exc:
        raise EngineError(f"bad Redis URL {mask_url(url)!r}: {exc}") from exc
    except redis.exceptions.RedisClusterException as exc:
        # A Cluster client learns the slots as it is made: no node answering is
        # an unreachable server, as a plain client finds on its first command.
        raise cluster_trouble(url, exc) from exc
    _check_options(client, url)
    return client


def _check_options(client: redis.Redis, url: str) -> None:
    """Refuse a query option that redis-py's connections do not take, now rather than at first use.

    redis-py hands every query option it does not parse itself to each
    connection it makes, which refuses an unknown one only then (a TypeError
    deep inside the first command). Making one connection object, which does
    not connect, finds it here.
    """
    pool = client.connection_pool
    try:
        pool.connection_class(**pool.connection_kwargs)
    except (ValueError, redis.RedisError) as exc:  # a bad value: protocol=4, ssl_cert_reqs=bogus
        raise EngineError(f"bad Redis URL {mask_url(url)!r}: {exc}") from exc
    except TypeError as exc:
        name = re.search(r"argument '(\w+)'", str(exc))
        what = f"{name.group(1)!r} is not an option" if name else f"an option is not one ({exc})"
        raise EngineError(
            f"bad Redis URL {mask_url(url)!r}: {what} of a Redis connection. dtq's own are "
            f"{', '.join(ENGINE_OPTIONS)}; the others are redis-py's (socket_timeout, "
            "ssl_ca_certs, protocol, ...): check the spelling"
        ) from exc


#: Query options meant for the engine, not for redis-py, with their types.
ENGINE_OPTIONS = {"wait_replicas": int, "wait_timeout_s": float, "reply_spin_us": float}


def engine_options(url: str) -> tuple[str, dict[str, Any]]:
    """Split dtq's own options (:data:`ENGINE_OPTIONS`) off the URL's query.

    Raises:
        EngineError: an option's value is not a number.
    """
    parts = urllib.parse.urlsplit(url)
    kept, options = [], {}
    for name, value in urllib.parse.parse_qsl(parts.query):
        if name not in ENGINE_OPTIONS:
            kept.append((name, value))
            continue
        try:
            options[name] = ENGINE_OPTIONS[name](value)
        except ValueError:
            raise EngineError(
                f"bad Redis URL {mask_url(url)!r}: {name} must be a number, not {value!r}"
            ) from None
    if not options:
        return url, options
    # Built by hand: urlunsplit writes unix:///path.sock as unix:/path.sock, which redis-py refuses.
    query = urllib.parse.urlencode(kept)
    return f"{parts.scheme}://{parts.netloc}{parts.path}{'?' if query else ''}{query}", options


def login_refused(url: str, exc: redis.AuthenticationError) -> EngineError:
    """What a refused login means: wrong or missing credentials, not an unreachable server.

    redis-py raises it as a ConnectionError; retrying cannot mend it, so it is
    no EngineUnavailable.
    """
    return EngineError(
        f"Redis at {mask_url(url)} refused dtq's login ({str(exc).rstrip('.')}): put the right password "
        "in the URL (redis://:password@host:port/db, or redis://user:password@... for an ACL user)"
    )


def cluster_trouble(url: str, exc: redis.exceptions.RedisClusterException) -> EngineError:
    """What a Cluster client's own exception (not a ``RedisError``) means for dtq.

    The client raises one when it cannot learn the slots: from its
    constructor, and again when every node has gone away (while it runs). With
    a connection failure as its cause no node answered, which is a passing
    trouble as an unreachable server is (workers back off and retry); any other
    cause is a URL that does not name a cluster.
    """
    if isinstance(exc.__cause__, redis.AuthenticationError):
        return login_refused(url, exc.__cause__)
    if isinstance(exc.__cause__, (redis.ConnectionError, redis.TimeoutError)):
        return EngineUnavailable(
            f"cannot reach Redis Cluster at {mask_url(url)}: {str(exc).rstrip('.')}. Is at least "
            "one node listed in the URL up? Set the URL with --url or DTQ_URL"
        )
    return EngineError(
        f"Redis Cluster at {mask_url(url)} cannot be used: {str(exc).rstrip('.')}. List nodes of a "
        "cluster (cluster-enabled yes) in the URL; for a lone server use redis:// instead"
    )


def _cluster(url: str, common: dict[str, Any]) -> RedisCluster:
    parts = urllib.parse.urlsplit(url)
    nodes = [ClusterNode(host, port) for host, port in _hosts(parts)]  # type: ignore[no-untyped-call]
    options = _query(parts)
    if parts.scheme.startswith("rediss"):
        options["ssl"] = True
    return RedisCluster(
        startup_nodes=nodes,
        username=_unquote(parts.username),
        password=_unquote(_password(parts)),
        **common,
        **options,
    )


def _sentinel(url: str, common: dict[str, Any]) -> redis.Redis:
    parts = urllib.parse.urlsplit(url)
    path = [p for p in parts.path.split("/") if p]
    if not path:
        raise ValueError("name the monitored service in the path, e.g. redis+sentinel://host:26379/mymaster")
    service, db = path[0], int(path[1]) if len(path) > 1 else 0
    options = _query(parts)
    if "db" in options:
        # Two places for one setting: the client's own TypeError ("multiple values") said nothing.
        raise ValueError(
            f"put the database number in the path, after the service: redis+sentinel://host:26379/"
            f"{service}/{options['db']} (not ?db=)"
        )
    sentinel_kwargs = {
        "password": options.pop("sentinel_password", None),
        "username": options.pop("sentinel_username", None),
        "socket_timeout": common["socket_timeout"],
        "socket_connect_timeout": common["socket_connect_timeout"],
        "decode_responses": True,
        # One try per sentinel per lookup: the master's client retries the lookup as a
        # whole (redis-py's default here, 3 tries from 1 s apart, made an unreachable
        # set of sentinels take 17 s to report).
        "retry": Retry(NoBackoff(), 0),
    }
    if parts.scheme.startswith("rediss"):
        options["ssl"] = True
    sentinel = Sentinel(_hosts(parts), sentinel_kwargs=sentinel_kwargs)  # type: ignore[no-untyped-call]
    # The pool asks the sentinels for the master on every new connection, so a
    # retried command after a failover reaches the promoted replica.
    client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
        service,
        db=db,
        username=_unquote(parts.username),
        password=_unquote(_password(parts)),
        retry_on_error=[redis.ConnectionError, redis.TimeoutError],
        **common,
        **options,
    )
    return client


def _hosts(parts: urllib.parse.SplitResult) -> list[tuple[str, int]]:
    hosts = parts.netloc.rpartition("@")[2]
    if not hosts:
        raise ValueError("no host given; expected host:port[,host:port...]")
    found = []
    for item in hosts.split(","):
        host, _, port = item.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"{item!r} is not host:port")
        found.append((host.strip("[]"), int(port)))
    return found


def _password(parts: urllib.parse.SplitResult) -> str | None:
    # SplitResult.password parses the port too, which fails on a host list.
    userinfo, at, _ = parts.netloc.rpartition("@")
    if not at or ":" not in userinfo:
        return None
    return userinfo.partition(":")[2]


def _query(parts: urllib.parse.SplitResult) -> dict[str, Any]:
    options: dict[str, Any] = {}
    for name, value in urllib.parse.parse_qsl(parts.query):
        options[name] = float(value) if name in _NUMBERS else value
    if "db" in options:
        options["db"] = int(options["db"])
    return options


def _unquote(text: str | None) -> str | None:
    return None if text is None else urllib.parse.unquote(text)

"""Defaults and the small pieces of configuration shared by the queue, worker and CLI.

Every default here can be overridden by a constructor argument; the URL also by
the ``DTQ_URL`` environment variable.
"""

from __future__ import annotations

import os
import urllib.parse

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_NAMESPACE = "default"
DEFAULT_PREFIX = "dtq"

#: How long a worker holds a job before another may take it, unless renewed.
DEFAULT_LEASE_S = 30.0
#: How many times a job may lose its lease (its worker died) before it is dead.
DEFAULT_MAX_LOST_LEASES = 3
#: How long a succeeded job's record and result are kept.
DEFAULT_RESULT_TTL_S = 24 * 3600
#: How long a failed or dead job's record is kept.
DEFAULT_FAILURE_TTL_S = 7 * 24 * 3600
#: Largest encoded payload accepted by ``append``.
DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024


def url_from_env(url: str | None = None) -> str:
    """``url`` if given, else ``$DTQ_URL``, else :data:`DEFAULT_URL`."""
    return url or os.environ.get("DTQ_URL") or DEFAULT_URL


def namespace_from_env(namespace: str | None = None) -> str:
    """``namespace`` if given, else ``$DTQ_NAMESPACE``, else :data:`DEFAULT_NAMESPACE`."""
    return namespace or os.environ.get("DTQ_NAMESPACE") or DEFAULT_NAMESPACE


#: URL query options whose values are secrets.
SECRET_OPTIONS = ("password", "sentinel_password", "ssl_password", "token")


def mask_url(url: str) -> str:
    """The URL with every password (in the user part or the query) replaced by ``***``.

    Works on host lists (``redis+cluster://:pw@a:1,b:2``), which ``urllib`` cannot
    parse a port from.
    """
    parts = urllib.parse.urlsplit(url)
    userinfo, at, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = "&".join(
        f"{name}=***" if name in SECRET_OPTIONS else f"{name}={value}"
        for name, _, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Built by hand: urlunsplit drops the empty host of sqlite:///file.
    return f"{parts.scheme}://{netloc}{parts.path}{'?' if query else ''}{query}"

"""Settings: every default of Queue, Worker and engines, and where each value came from.

A value is taken from, in order: the constructor argument (or command-line
option), the ``DTQ_<NAME>`` environment variable, the config file, the
default. The config file is ``$DTQ_CONFIG`` if set, else ``dtq.toml`` in the
working directory, else the ``[tool.dtq]`` table of ``pyproject.toml`` there.

In the file, settings are top-level keys; ``[engine]`` holds engine attributes
(``wait_replicas``, ``signal_cap``...) and ``[plugin.NAME]`` one plugin's
settings. In the environment they are ``DTQ_ENGINE__<ATTR>`` and
``DTQ_PLUGIN__<NAME>__<KEY>`` (values parsed as JSON when they parse, else
kept as text). Plugin settings may hold secrets: they are never shown.
"""

from __future__ import annotations

import json
import math
import os
import re
import urllib.parse
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

import attrs
import tomllib

from dtq_core.errors import ConfigError

DEFAULT_URL = "redis://localhost:6379/0"
DEFAULT_NAMESPACE = "default"
DEFAULT_PREFIX = "dtq"

#: How long a worker holds a job before another may take it, unless renewed.
DEFAULT_LEASE_S = 30.0
#: How many times a job may lose its lease (its worker died) before it is dead.
DEFAULT_MAX_LOST_LEASES = 3
#: How long a succeeded job's record and result are kept.
DEFAULT_RESULT_TTL_S = 24 * 3600.0
#: How long a failed or dead job's record is kept.
DEFAULT_FAILURE_TTL_S = 7 * 24 * 3600.0
#: Largest encoded payload accepted by ``append``.
DEFAULT_MAX_PAYLOAD_BYTES = 512 * 1024
#: Largest encoded result a worker records: a larger one fails its attempt.
DEFAULT_MAX_RESULT_BYTES = 16 * 1024 * 1024

_ENV_PREFIX = "DTQ_"
_TABLES = ("engine", "plugin")


@attrs.frozen
class Settings:
    """Every setting of a queue and a worker, resolved; build it with :meth:`load`.

    Attributes are documented where they are used (:class:`~dtq_core.Queue`,
    :class:`~dtq_core.Worker`); ``sources`` says where each came from
    (``default``, ``argument``, ``env DTQ_...`` or the file's path).
    """

    url: str = DEFAULT_URL
    namespace: str = DEFAULT_NAMESPACE
    prefix: str = DEFAULT_PREFIX
    plugins: tuple[str, ...] | None = None
    max_payload_bytes: int = DEFAULT_MAX_PAYLOAD_BYTES
    max_result_bytes: int = DEFAULT_MAX_RESULT_BYTES
    result_ttl_s: float = DEFAULT_RESULT_TTL_S
    failure_ttl_s: float = DEFAULT_FAILURE_TTL_S
    concurrency: int = 1
    prefetch: int = 1
    mode: str = "process"
    lease_s: float = DEFAULT_LEASE_S
    heartbeat_s: float | None = None
    max_lost_leases: int = DEFAULT_MAX_LOST_LEASES
    grace_s: float = 30.0
    poll_s: float = 1.0
    rescan_s: float = 30.0
    log_format: str = "text"
    metrics_port: int | None = None
    #: Unlocks the dashboard's actions (``dtq dashboard``); a secret: never shown or logged.
    dashboard_token: str | None = None
    engine: Mapping[str, Any] = attrs.field(factory=dict)
    plugin: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)
    sources: Mapping[str, str] = attrs.field(factory=dict, eq=False, repr=False)

    @classmethod
    def load(
        cls,
        arguments: Mapping[str, Any] | None = None,
        *,
        environ: Mapping[str, str] | None = None,
        cwd: Path | None = None,
    ) -> Settings:
        """Resolve every setting: ``arguments`` (None values ignored), environment, file, default.

        Raises:
            ConfigError: a value has the wrong type, a name is unknown, or the file is unreadable.
        """
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        sources: dict[str, str] = {}
        file_values, file_name = _read_file(environ, cwd or Path.cwd())
        layers = [
            (file_values, file_name),
            (_from_environ(environ), "env"),
            ({k: v for k, v in (arguments or {}).items() if v is not None}, "argument"),
        ]
        for layer, origin in layers:
            for name, value in layer.items():
                _merge(values, sources, name, value, origin)
        return cls(**values, sources=sources)

    def replace(self, **arguments: Any) -> Settings:
        """These settings with ``arguments`` (those not None) taking precedence."""
        given = {k: v for k, v in arguments.items() if v is not None}
        values = {**attrs.asdict(self, recurse=False), "sources": {**self.sources}}
        for name, value in given.items():
            _merge(values, values["sources"], name, value, "argument")
        return Settings(**values)

    def source(self, name: str) -> str:
        """Where the setting came from: ``default``, ``argument``, ``env DTQ_X`` or a file."""
        return self.sources.get(name, "default")

    def describe(self) -> list[dict[str, Any]]:
        """Every setting as ``{"name", "value", "source"}``, secrets masked: safe to print or log."""
        rows = []
        for field in attrs.fields(Settings):
            if field.name in ("sources", *_TABLES):
                continue
            value = getattr(self, field.name)
            shown = mask_url(value) if field.name == "url" else _plain(value)
            if field.name in _SECRETS and value:
                shown = "***"
            rows.append({"name": field.name, "value": shown, "source": self.source(field.name)})
        for attr, value in sorted(self.engine.items()):
            name = f"engine.{attr}"
            secret = any(word in attr for word in ("password", "token", "secret", "key"))
            rows.append({"name": name, "value": "***" if secret else value, "source": self.source(name)})
        for plugin, config in sorted(self.plugin.items()):
            for key in sorted(config):
                name = f"plugin.{plugin}.{key}"
                rows.append({"name": name, "value": "***", "source": self.source(name)})
        return rows


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _merge(values: dict[str, Any], sources: dict[str, str], name: str, value: Any, origin: str) -> None:
    """Set one setting (or a whole table) from one layer, checking its type."""
    source = origin if origin != "env" else f"env {_env_name(name)}"
    if name in _TABLES:
        _merge_table(values, sources, name, value, origin)
        return
    values[name] = _coerce(name, value, source)
    sources[name] = source


def _merge_table(
    values: dict[str, Any], sources: dict[str, str], table: str, value: Any, origin: str
) -> None:
    if not isinstance(value, Mapping):
        raise ConfigError(f"{table} must be a table of settings, got {value!r} ({origin})")
    merged = {k: dict(v) if isinstance(v, Mapping) else v for k, v in (values.get(table) or {}).items()}
    for key, item in value.items():
        if table == "plugin":
            if not isinstance(item, Mapping):
                raise ConfigError(f"plugin.{key} must be a table of the plugin's settings ({origin})")
            merged.setdefault(key, {}).update(item)
            for inner in item:
                sources[f"plugin.{key}.{inner}"] = _table_source(origin, f"PLUGIN__{key}__{inner}")
        else:
            merged[key] = item
            sources[f"engine.{key}"] = _table_source(origin, f"ENGINE__{key}")
    values[table] = merged


def _table_source(origin: str, env_suffix: str) -> str:
    return f"env {_ENV_PREFIX}{env_suffix.upper()}" if origin == "env" else origin


def _env_name(name: str) -> str:
    return f"{_ENV_PREFIX}{name.upper()}"


def _coerce(name: str, value: Any, source: str) -> Any:
    """The value in the field's type; text (from the environment) is parsed."""
    fields = attrs.fields_dict(Settings)
    if name not in fields or name == "sources":
        known = ", ".join(f for f in fields if f != "sources")
        raise ConfigError(f"unknown setting {name!r} ({source}); known settings: {known}")
    default = fields[name].default
    try:
        return _convert(name, value, default)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"setting {name} = {value!r} ({source}): {exc}") from None


def _convert(name: str, value: Any, default: Any) -> Any:
    if name == "plugins":
        names = value.split(",") if isinstance(value, str) else list(value)
        listed = tuple(str(n).strip() for n in names if str(n).strip())
        if not listed:
            # Failing closed: an allow-list left empty (a template's empty variable, say)
            # allowed every installed plugin.
            raise ValueError(
                "an empty allow-list allows no plugin; name the plugins to allow, or leave "
                "the setting out to allow every installed one"
            )
        return listed
    if name in _OPTIONAL_NUMBERS:
        return None if value in ("", None) else _in_range(name, _number(value, _OPTIONAL_NUMBERS[name]))
    if isinstance(default, (int, float)):
        return _in_range(name, _number(value, type(default)))
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    if name in _CHOICES and value not in _CHOICES[name]:
        raise ValueError(f"expected one of {', '.join(_CHOICES[name])}")
    return value


#: Settings whose values are secrets: ``describe`` masks them.
_SECRETS = ("dashboard_token",)


#: Settings whose text must be one of a few words.
_CHOICES = {"mode": ("process", "thread"), "log_format": ("text", "json")}


#: Settings that are unset (None) by default, and their type when set.
_OPTIONAL_NUMBERS: dict[str, type] = {"heartbeat_s": float, "metrics_port": int}


#: The longest duration a setting may give (about a century): longer ones are
#: mistakes, and would overflow the timers and expiry times that must hold them.
_CENTURY_S = 100 * 365.25 * 24 * 3600
#: Numeric settings' bounds: (least, most, whether the least itself is allowed).
#: A negative or zero lease, say, made every worker take its job from another.
_RANGES: dict[str, tuple[float, float, bool]] = {
    "max_payload_bytes": (1, 2**31, True),
    "max_result_bytes": (1, 2**31, True),
    "result_ttl_s": (0, _CENTURY_S, True),
    "failure_ttl_s": (0, _CENTURY_S, True),
    "concurrency": (1, 4096, True),
    "prefetch": (1, 100_000, True),
    "lease_s": (0, _CENTURY_S, False),
    "heartbeat_s": (0, _CENTURY_S, False),
    "max_lost_leases": (1, 1_000_000, True),
    "grace_s": (0, _CENTURY_S, True),
    "poll_s": (0, _CENTURY_S, False),
    "rescan_s": (0, _CENTURY_S, False),
    "metrics_port": (0, 65535, True),  # 0: any free port
}


def in_bounds(
    value: object, least: float, most: float, *, least_allowed: bool = True
) -> TypeGuard[int | float]:
    """Whether ``value`` is a finite number (not a bool) from ``least`` to ``most``.

    The range is compared first: ``math.isfinite`` raises OverflowError on an int
    beyond any float. NaN fails every comparison; an int is always finite.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    above = least <= value if least_allowed else least < value
    return above and value <= most and (isinstance(value, int) or math.isfinite(value))


def _in_range(name: str, value: int | float) -> int | float:
    least, most, least_allowed = _RANGES.get(name, (-math.inf, math.inf, True))
    if in_bounds(value, least, most, least_allowed=least_allowed):
        return value
    lower = f"{'at least' if least_allowed else 'more than'} {least:.15g}"
    raise ValueError(f"expected a number {lower} and at most {most:.15g}")


def _number(value: Any, kind: type) -> int | float:
    if isinstance(value, bool):
        raise TypeError("expected a number, not true/false")
    if kind is int:
        if isinstance(value, float) and not value.is_integer():
            raise ValueError("expected a whole number")
        return int(value)
    return float(value)


def _from_environ(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings named by ``DTQ_*`` variables (``DTQ_URL``, ``DTQ_ENGINE__X``, ``DTQ_PLUGIN__P__K``)."""
    found: dict[str, Any] = {"engine": {}, "plugin": {}}
    names = {f.name for f in attrs.fields(Settings)} - {"sources", *_TABLES}
    for variable, text in environ.items():
        if not variable.startswith(_ENV_PREFIX):
            continue
        rest = variable[len(_ENV_PREFIX) :]
        parts = rest.split("__")
        if parts[0] == "ENGINE" and len(parts) == 2:
            found["engine"][parts[1].lower()] = _json_or_text(text)
        elif parts[0] == "PLUGIN" and len(parts) == 3:
            found["plugin"].setdefault(parts[1].lower(), {})[parts[2].lower()] = _json_or_text(text)
        elif rest.lower() in names:
            found[rest.lower()] = text
    return {k: v for k, v in found.items() if v != {}}


def _json_or_text(text: str) -> Any:
    try:
        return json.loads(text)
    except ValueError:
        return text


def _read_file(environ: Mapping[str, str], cwd: Path) -> tuple[dict[str, Any], str]:
    """The config file's settings, and how to name it in messages."""
    explicit = environ.get("DTQ_CONFIG")
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigError(f"the config file {explicit} (--config or DTQ_CONFIG) is not a file")
        return _parse_toml(path), str(path)
    if (cwd / "dtq.toml").is_file():
        return _parse_toml(cwd / "dtq.toml"), str(cwd / "dtq.toml")
    pyproject = cwd / "pyproject.toml"
    if pyproject.is_file():
        table = _parse_toml(pyproject).get("tool", {}).get("dtq")
        if isinstance(table, dict):
            return table, f"{pyproject} [tool.dtq]"
    return {}, ""


def _parse_toml(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise ConfigError(f"cannot read the config file {path}: {exc}") from exc


def url_from_env(url: str | None = None) -> str:
    """``url`` if given, else ``$DTQ_URL``, else :data:`DEFAULT_URL`."""
    return url or os.environ.get("DTQ_URL") or DEFAULT_URL


#: URL query options whose values are secrets.
SECRET_OPTIONS = ("password", "sentinel_password", "ssl_password", "token")


def mask_url(url: str) -> str:
    """The URL with every password (in the user part or the query) replaced by ``***``.

    Works on host lists (``redis+cluster://:pw@a:1,b:2``), which ``urllib`` cannot
    parse a port from, on a URL without a scheme, and on one ``urllib`` cannot
    split at all (an unclosed IPv6 bracket), which is masked by pattern.
    """
    try:
        parts = urllib.parse.urlsplit(url)
    except ValueError:
        return _mask_by_pattern(url)
    if not parts.netloc and "@" in url:  # ':pw@host/0' splits as a path: go by the pattern
        return _mask_by_pattern(url)
    at = _userinfo_end(url)
    if at is not None:  # the user part runs on past where urllib ended it: up to `at`
        start = url.index("//") + 2
        user, colon, _password = url[start:at].partition(":")
        shown = f"{user}:***" if colon else "***"
        return mask_url(f"{url[:start]}{shown}{url[at:]}")  # its query's secrets masked too
    userinfo, at_sign, hosts = parts.netloc.rpartition("@")
    netloc = parts.netloc
    if at_sign and ":" in userinfo:
        netloc = f"{userinfo.partition(':')[0]}:***@{hosts}"
    query = "&".join(
        # Names as the client decodes them: pass%77ord is a password too.
        f"{name}=***" if urllib.parse.unquote(name) in SECRET_OPTIONS else f"{name}={value}"
        for name, _, value in (item.partition("=") for item in parts.query.split("&") if item)
    )
    if (netloc, query) == (parts.netloc, parts.query):
        return url
    # Built by hand: urlunsplit drops the empty host of sqlite:///file.
    scheme = f"{parts.scheme}:" if parts.scheme else ""
    return f"{scheme}//{netloc}{parts.path}{'?' if query else ''}{query}"


def password_cut_short(url: str) -> bool:
    """Whether ``url``'s user part holds a '#', '?' or '/' as it is: ``urllib`` (and redis-py)
    end the host part there, so the password would be shown, or read as a host or a port."""
    return _userinfo_end(url) is not None


def _userinfo_end(url: str) -> int | None:
    """Where the '@' that ends ``url``'s user part is, when it comes after the end of the host
    part as ``urllib`` finds it (a '#', '?' or '/' in the password); else None. An '@' in a
    query option's value (``?client_name=ops@example.com``) ends no user part."""
    try:
        netloc = urllib.parse.urlsplit(url).netloc
    except ValueError:
        return None
    start = url.find("//")
    if start < 0 or not netloc:
        return None
    after = start + 2 + len(netloc)
    at = url.find("@", after)
    if at < 0:
        return None
    _path, question, query = url[after:at].partition("?")
    return None if question and "=" in query else at


def _mask_by_pattern(url: str) -> str:
    """:func:`mask_url` for a URL that cannot be split: the user part's password, and the
    values of query options that could be secrets (whatever their spelling), masked."""
    masked = re.sub(r"^((?:[A-Za-z][A-Za-z0-9+.-]*:)?(?://)?[^/@:]*:)[^@]*@", r"\1***@", url)
    return re.sub(r"([?&][^=&]*=)[^&]*", r"\1***", masked)

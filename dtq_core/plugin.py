"""Plugins: the base class job handlers derive from, and the one module that talks to stevedore.

Two entry-point groups hold dtq's extensions:

* ``dtq.plugins``: job handlers, named by a job's ``plugin`` field;
* ``dtq.engines``: storage engines, named by a URL scheme.

This module decides, once, what happens when an extension is missing, fails to
import, is registered by two distributions, or is not on the allow-list, and
turns each case into a :class:`~dtq_core.errors.PluginError` that names the
plugin and the distribution that provides it.

Discovery reads ``importlib.metadata`` directly (fresh on every scan, with the
owning distribution of each entry point); stevedore then imports the one entry
point asked for. Duplicates are refused before anything is imported.
"""

from __future__ import annotations

import contextlib
import difflib
import importlib
import importlib.metadata
import os
import sys
import threading
from collections.abc import Iterable, Iterator, Mapping
from typing import TYPE_CHECKING, Any, ClassVar

import attrs
import stevedore
from stevedore import _cache as stevedore_cache

from dtq_core.errors import (
    DuplicatePlugin,
    PluginIncompatible,
    PluginLoadError,
    PluginNotAllowed,
    UnknownPlugin,
)

if TYPE_CHECKING:
    from dtq_core.job import Job

PLUGIN_GROUP = "dtq.plugins"
ENGINE_GROUP = "dtq.engines"
#: The plugin API this dtq-core implements. A plugin declares the version it
#: was written against (``Plugin.api_version``); dtq-core loads the versions in
#: SUPPORTED_API_VERSIONS and refuses others with a message naming both.
PLUGIN_API_VERSION = 1
SUPPORTED_API_VERSIONS = frozenset({1})


class Plugin:
    """Base class of every job handler.

    A plugin's name is its entry-point name in the ``dtq.plugins`` group. dtq
    creates it once per process, without arguments, and reuses it for every job.

    Subclasses override :meth:`process` and usually :meth:`validate`.
    """

    #: The plugin API this plugin was written against.
    api_version: ClassVar[int] = PLUGIN_API_VERSION
    #: One line shown by ``dtq plugins``.
    description: ClassVar[str] = ""
    #: Attempts after the first when ``process`` raises (a job's own
    #: ``max_retries`` wins). 0: a failure is final.
    max_retries: ClassVar[int] = 0
    #: Delay before the first retry, doubled for each further one (with jitter).
    retry_backoff_s: ClassVar[float] = 1.0
    #: Cap on that delay.
    retry_backoff_max_s: ClassVar[float] = 600.0
    #: Time limit of one attempt in seconds (a job's own ``timeout_s`` wins);
    #: None for no limit. Over it, the attempt is stopped and counts as failed.
    timeout_s: ClassVar[float | None] = None
    #: This plugin's settings, given to :meth:`configure` at load.
    config: dict[str, Any]

    def configure(self, config: Mapping[str, Any]) -> None:
        """Receive this plugin's settings (from ``plugin_config={name: {...}}``), once, at load.

        The default keeps them as ``self.config``. Override to check them:
        raise :class:`dtq_core.ValidationError` to refuse bad settings. dtq never
        logs them, so they may hold secrets such as API keys.
        """
        self.config = dict(config)

    def validate(self, job: Job) -> None:
        """Check a job when it is appended, where the plugin is installed.

        Raise :class:`dtq_core.ValidationError` with a message that says what is
        wrong; the job is then not queued. The default accepts every job.
        """

    def process(self, job: Job) -> Any:
        """Run the job on a worker; the JSON-serialisable return value becomes its result.

        An exception marks the attempt failed and is stored on the job; raise
        :class:`dtq_core.Retry` to ask for another attempt, or
        :class:`dtq_core.Permanent` to fail without retrying. Declare it as
        ``process(self, job, caller)`` to receive the :class:`dtq_core.Caller`
        (progress, cancellation, follow-up jobs); ``async def`` works too.
        """
        raise NotImplementedError(f"{type(self).__name__} must implement process(self, job)")


@attrs.frozen
class EntryPointInfo:
    """One registration of a name in an entry-point group, with its distribution."""

    name: str
    group: str
    value: str
    distribution: str
    version: str


@attrs.frozen
class PluginStatus:
    """What ``dtq plugins`` shows for one installed (or allow-listed) name."""

    name: str
    distribution: str
    version: str
    value: str
    #: "ok", "import error", "incompatible", "duplicate", "not allowed", "not installed"
    status: str
    error: str | None = None
    api_version: int | None = None
    description: str = ""

    @property
    def ok(self) -> bool:
        """Whether nothing is wrong (a plugin merely not allowed is not wrong)."""
        return self.status in ("ok", "not allowed")

    def to_dict(self) -> dict[str, Any]:
        """The ``dtq plugins --json`` shape."""
        return attrs.asdict(self)


def installed(group: str) -> dict[str, list[EntryPointInfo]]:
    """Every name registered in ``group``, freshly read from installed metadata.

    A distribution found twice on ``sys.path`` counts once (the first copy wins,
    as it would on import); distinct distributions registering one name are all
    listed, which is how duplicates are detected.
    """
    found: dict[str, list[EntryPointInfo]] = {}
    seen: set[tuple[str, str]] = set()
    for dist in importlib.metadata.distributions():
        dist_name = dist.metadata["Name"] or "?"
        for ep in dist.entry_points.select(group=group):
            key = (ep.name, _normalise(dist_name))
            if key in seen:
                continue
            seen.add(key)
            info = EntryPointInfo(ep.name, group, ep.value, dist_name, dist.version)
            found.setdefault(ep.name, []).append(info)
    return found


def load_entry_point(group: str, name: str) -> Any:
    """Import the object registered as ``name`` in ``group`` (a class, usually).

    Raises:
        UnknownPlugin: nothing is registered under that name.
        DuplicatePlugin: two distributions register it.
        PluginLoadError: importing it failed.
    """
    info = _single(group, name, installed(group))
    return _import(info)


class PluginRegistry:
    """The plugins one queue or worker may use, loaded once per name and kept.

    Args:
        allow: names of the plugins allowed; ``None`` allows every installed one.
        group: the entry-point group (``dtq.plugins``).
    """

    def __init__(
        self,
        allow: Iterable[str] | None = None,
        *,
        group: str = PLUGIN_GROUP,
        config: Mapping[str, Mapping[str, Any]] | None = None,
    ) -> None:
        self.allow: tuple[str, ...] | None = None if allow is None else tuple(dict.fromkeys(allow))
        self.group = group
        self.config = {name: dict(settings) for name, settings in (config or {}).items()}
        self._instances: dict[str, Plugin] = {}
        self._found: dict[str, list[EntryPointInfo]] | None = None
        self._loaded_from: dict[str, EntryPointInfo] = {}
        self._lock = threading.Lock()

    def is_allowed(self, name: str) -> bool:
        """True when ``name`` is on the allow-list (or there is none)."""
        return self.allow is None or name in self.allow

    def check_allowed(self, name: str) -> None:
        """Raise :class:`PluginNotAllowed` unless ``name`` is allowed."""
        if not self.is_allowed(name):
            raise PluginNotAllowed(
                f"plugin {name!r} is not on the allow-list ({', '.join(self.allow or ())}); "
                "add it to plugins=[...] (or --plugins) to allow it",
                plugin=name,
            )

    def is_installed(self, name: str) -> bool:
        """True when some distribution registers ``name`` (whether or not it loads)."""
        return name in self._scan()

    def names(self) -> list[str]:
        """The names this registry serves: the allow-list, or every installed name."""
        if self.allow is not None:
            return list(self.allow)
        return sorted(self._scan())

    def refresh(self) -> None:
        """Forget the remembered scan of installed metadata (plugins already loaded stay)."""
        self._found = None
        # The import system caches directory listings too; a distribution
        # installed since must be importable, not only listed.
        importlib.invalidate_caches()

    def get(self, name: str) -> Plugin:
        """The plugin instance for ``name``, imported and created on first use.

        Raises:
            PluginNotAllowed, UnknownPlugin, DuplicatePlugin, PluginLoadError.
        """
        self.check_allowed(name)
        with self._lock:
            plugin = self._instances.get(name)
            if plugin is None:
                if name not in self._scan():
                    self.refresh()  # it may have been installed since the last scan
                info = _single(self.group, name, self._scan())
                plugin = _instantiate(info, self.config.get(name, {}))
                self._instances[name] = plugin
                self._loaded_from[name] = info
            return plugin

    def statuses(self) -> list[PluginStatus]:
        """Every installed name, and every allow-listed one, with whether it loads."""
        self.refresh()
        rows = []
        for name, infos in sorted(self._scan().items()):
            for info in infos:
                rows.append(self._status(name, info, duplicate=len(infos) > 1))
        for name in self.allow or ():
            if name not in self._scan():
                error = _unknown_message(self.group, name, sorted(self._scan()))
                rows.append(PluginStatus(name, "", "", "", "not installed", error=error))
        return rows

    def _status(self, name: str, info: EntryPointInfo, *, duplicate: bool) -> PluginStatus:
        row = PluginStatus(name, info.distribution, info.version, info.value, "ok")
        if duplicate:
            others = ", ".join(i.distribution for i in self._scan()[name] if i != info)
            return attrs.evolve(row, status="duplicate", error=f"also registered by {others}")
        if not self.is_allowed(name):
            return attrs.evolve(row, status="not allowed")
        try:
            plugin = self.get(name)
        except PluginIncompatible as exc:
            return attrs.evolve(row, status="incompatible", error=str(exc))
        except PluginLoadError as exc:
            return attrs.evolve(row, status="import error", error=str(exc))
        return attrs.evolve(row, api_version=plugin.api_version, description=plugin.description)

    def changed_since_load(self) -> list[str]:
        """Loaded plugins whose installed distribution changed since (a restart is needed).

        Reads installed metadata afresh (it refreshes the registry's scan).
        """
        self.refresh()
        fresh = self._scan()
        return [
            name
            for name, info in self._loaded_from.items()
            if [(i.distribution, i.version, i.value) for i in fresh.get(name, [])]
            != [(info.distribution, info.version, info.value)]
        ]

    def _scan(self) -> dict[str, list[EntryPointInfo]]:
        if self._found is None:
            self._found = installed(self.group)
        return self._found


def _single(group: str, name: str, found: dict[str, list[EntryPointInfo]]) -> EntryPointInfo:
    infos = found.get(name)
    if not infos:
        raise UnknownPlugin(_unknown_message(group, name, sorted(found)), plugin=name)
    if len(infos) > 1:
        owners = "; ".join(f"{i.distribution} {i.version} ({i.value})" for i in infos)
        raise DuplicatePlugin(
            f"{_kind(group)} name {name!r} is registered by more than one distribution: "
            f"{owners}. dtq will not guess which one runs: uninstall all but one "
            f"(pip uninstall <distribution>)",
            plugin=name,
        )
    return infos[0]


def _unknown_message(group: str, name: str, names: list[str]) -> str:
    close = difflib.get_close_matches(name, names, n=1)
    hint = f" Did you mean {close[0]!r}?" if close else ""
    listing = ", ".join(names) or "none"
    if group == PLUGIN_GROUP:
        return (
            f"no plugin named {name!r} is installed (installed: {listing}).{hint} "
            f"Install the distribution that provides it (pip install dtq-plugin-...) here: a "
            f"worker needs it to run the jobs. A producer that only enqueues them, for workers "
            f"on other machines, may instead put {name!r} on its queue's allow-list "
            f"(Queue(plugins=[...]) or dtq enqueue --plugins)"
        )
    return f"no {_kind(group)} named {name!r} is installed (installed: {listing}).{hint}"


def _kind(group: str) -> str:
    return {PLUGIN_GROUP: "plugin", ENGINE_GROUP: "engine"}.get(group, "entry point")


def _instantiate(info: EntryPointInfo, config: Mapping[str, Any]) -> Plugin:
    cls = _import(info)
    if not (isinstance(cls, type) and issubclass(cls, Plugin)):
        raise PluginLoadError(
            f"plugin {info.name!r} from {info.distribution} {info.version} points at "
            f"{info.value}, which is not a subclass of dtq_core.Plugin",
            plugin=info.name,
        )
    if not any(cls.api_version == supported for supported in SUPPORTED_API_VERSIONS):  # [1]: unhashable
        supported = ", ".join(map(str, sorted(SUPPORTED_API_VERSIONS)))
        raise PluginIncompatible(
            f"plugin {info.name!r} from {info.distribution} {info.version} targets plugin API "
            f"version {cls.api_version!r}, but this dtq-core supports {supported}; install a "
            f"release of {info.distribution} made for this dtq-core, or upgrade dtq-core",
            plugin=info.name,
        )
    try:
        plugin = cls()
        plugin.configure(config)
    except (Exception, SystemExit) as exc:  # a SystemExit too: it must not end the worker
        # The message names the exception, never the settings: they may hold secrets,
        # and the plugin's own message may quote them.
        raise PluginLoadError(
            f"plugin {info.name!r} from {info.distribution} {info.version} failed to start: "
            f"{type(exc).__name__}: {scrub_settings(str(exc), config)}",
            plugin=info.name,
        ) from exc
    return plugin


#: Setting values shorter than this are left in messages: masking "eu" or "10" would
#: garble them, and a secret that short is no secret.
_SHORTEST_MASKED = 6


def scrub_settings(text: str, config: Mapping[str, Any]) -> str:
    """``text`` with every text value of a plugin's settings (nested ones too) masked as ``***``.

    A plugin's settings are treated as secrets (an API key, a password), and a
    plugin's errors may quote them: a client library's message with the URL it
    called, key and all, say. Longest first, so a value inside another is masked whole.
    """
    values = sorted({v for v in _texts(config) if len(v) >= _SHORTEST_MASKED}, key=len, reverse=True)
    for value in values:
        text = text.replace(value, "***")
    return text


def _texts(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, Mapping):
        for item in value.values():
            yield from _texts(item)
    elif isinstance(value, (list, tuple)):
        for item in value:
            yield from _texts(item)


def _import(info: EntryPointInfo) -> Any:
    failures: list[BaseException] = []
    loaded = _stevedore_load(info, failures)
    if loaded is None and not failures:
        # Our fresh scan sees the entry point but stevedore does not, or sees an
        # older value: its caches are stale (a plugin installed or changed since
        # they were filled). Forget them and ask once more.
        _forget_stevedore_caches()
        loaded = _stevedore_load(info, failures)
    if failures:
        exc = failures[0]
        raise PluginLoadError(
            f"{_kind(info.group)} {info.name!r} from {info.distribution} {info.version} "
            f"failed to import ({info.value}): {type(exc).__name__}: {exc}. Fix the "
            f"package or its dependencies (pip install --force-reinstall "
            f"{info.distribution}), or leave it off the allow-list",
            plugin=info.name,
        ) from exc
    if loaded is None:
        raise PluginLoadError(
            f"{_kind(info.group)} {info.name!r} from {info.distribution} is installed but "
            "stevedore cannot find it; delete ~/.cache/python-entrypoints and retry",
            plugin=info.name,
        )
    return loaded


def _stevedore_load(info: EntryPointInfo, failures: list[BaseException]) -> Any:
    def on_failure(_manager: object, ep: importlib.metadata.EntryPoint, exc: BaseException) -> None:
        # A stale cache may hand stevedore an entry point that no longer exists;
        # only a failure of the one we found installed is the plugin's own.
        if ep.value == info.value:
            failures.append(exc)

    try:
        manager: stevedore.NamedExtensionManager[Any] = stevedore.NamedExtensionManager(
            info.group,
            names=[info.name],
            on_load_failure_callback=on_failure,
            on_missing_entrypoints_callback=None,
        )
    except (Exception, SystemExit) as exc:
        # stevedore lets an AssertionError through rather than to on_failure, and a
        # module's SystemExit is no Exception: either is this plugin's failure to import,
        # which must not end a worker or a command with a traceback.
        failures.append(exc)
        return None
    for ext in manager.extensions:
        if ext.name == info.name and ext.entry_point.value == info.value:
            return ext.plugin
    return None


def _forget_stevedore_caches() -> None:
    stevedore.ExtensionManager.ENTRY_POINT_CACHE.clear()
    cache = stevedore_cache._c
    cache._internal.clear()
    digest, _ = stevedore_cache._hash_settings_for_path(tuple(sys.path))
    with contextlib.suppress(OSError):  # no disk cache for this path, or not ours to remove
        os.remove(os.path.join(cache._dir, digest))


def _normalise(dist_name: str) -> str:
    return dist_name.lower().replace("_", "-").replace(".", "-")

"""Periodic jobs: cron schedules that enqueue exactly one job per tick.

Every worker given a schedule checks it as it loops; the job for a tick gets an
id built from the schedule's name and the tick (``periodic:<name>@<UTC time>``),
so however many workers see the tick, the engine's dedupe by id keeps one job.
No separate scheduler process is needed. Cron expressions are parsed by
cronsim (five fields, UTC).
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Iterator, Mapping, Sequence
from datetime import datetime, timedelta, timezone
from typing import TYPE_CHECKING, Any

import attrs
from cronsim import CronSim, CronSimError

from dtq_core.errors import DtqError, EngineUnavailable, InvalidJob
from dtq_core.job import check_data, parse_job, schedule_of

if TYPE_CHECKING:
    from dtq_core.job import Job
    from dtq_core.queue import Queue

log = logging.getLogger("dtq.periodic")

#: No check for this long (and longer than catch_up_s) is an outage, after which
#: only catch_up_s of missed ticks are enqueued: longer than any normal lateness of
#: a check (a busy dispatcher, a backoff while the engine is briefly away).
_OUTAGE_S = 300.0


@attrs.frozen
class Periodic:
    """A job to enqueue on a cron schedule.

    Args:
        name: identifies the schedule; part of every job id it makes.
        cron: five-field cron expression, evaluated in UTC
            (``"*/5 * * * *"``: every five minutes).
        plugin: the plugin of the jobs.
        data: the jobs' data.
        options: per-job options (``priority``, ``max_retries``, ``timeout_s``, ...).

    Raises:
        InvalidJob: the cron expression or name is not valid.
    """

    name: str
    cron: str
    plugin: str
    data: Mapping[str, Any] = attrs.field(factory=dict)
    options: Mapping[str, Any] = attrs.field(factory=dict)

    def __attrs_post_init__(self) -> None:
        for field in ("name", "cron", "plugin"):
            if not isinstance(getattr(self, field), str):
                raise InvalidJob(f"periodic {field} must be text, got {getattr(self, field)!r}")
        for field in ("data", "options"):
            value = getattr(self, field)
            if not isinstance(value, Mapping):
                raise InvalidJob(
                    f"periodic {self.name!r}: {field} must be a dict (a JSON object), got {value!r}"
                )
        if not self.name or not self.name.isprintable() or "@" in self.name:
            raise InvalidJob(f"periodic name must be printable, without '@', got {self.name!r}")
        check_data(self.data)
        _check_cron(self.name, self.cron)

    def ticks(self, after: datetime, until: datetime) -> Iterator[datetime]:
        """The ticks in ``(after, until]``, oldest first."""
        for tick in CronSim(self.cron, after):
            if tick > until:
                return
            yield tick

    def job_id(self, tick: datetime) -> str:
        """The id of the job for ``tick``: the same on every worker."""
        return f"periodic:{self.name}@{tick.astimezone(timezone.utc):%Y-%m-%dT%H:%M:%SZ}"

    def job(self, tick: datetime) -> dict[str, Any]:
        """The job for ``tick``, in the wire format."""
        return {
            "id": self.job_id(tick),
            "job": {"plugin": self.plugin, "data": dict(self.data)},
            "options": dict(self.options),
        }


def _check_cron(name: str, cron: str) -> None:
    """Refuse a cron expression that is not five fields, or that never fires.

    Raises:
        InvalidJob: says what is wrong with it.
    """
    try:
        first = next(iter(CronSim(cron, datetime.now(timezone.utc))), None)
    except CronSimError as exc:
        raise InvalidJob(f"periodic {name!r}: bad cron expression {cron!r}: {exc}") from exc
    fields = len(cron.split())
    if fields != 5:  # cronsim also takes six, the first for seconds: "0 3 * * * *" ran hourly
        raise InvalidJob(
            f"periodic {name!r}: the cron expression {cron!r} has {fields} fields; "
            "give five: minute hour day-of-month month day-of-week (in UTC)"
        )
    if first is None:  # a date that never comes ("0 0 */30 2 MON#5"): it stopped the worker
        raise InvalidJob(f"periodic {name!r}: the cron expression {cron!r} never fires")


def load_schedules(path: str) -> list[Periodic]:
    """Read periodic jobs from a JSON file: a list of ``{"name", "cron", "plugin", "data", "options"}``.

    Raises:
        InvalidJob: the file cannot be read, is not that shape, or a schedule is invalid.
    """
    try:
        with open(path, encoding="utf-8") as handle:
            raw = json.load(handle)
    except (OSError, ValueError, RecursionError) as exc:
        raise InvalidJob(f"cannot read periodic jobs from {path}: {exc or 'nested too deeply'}") from exc
    if not isinstance(raw, list):
        raise InvalidJob(f"{path} must hold a JSON list of periodic jobs, got {type(raw).__name__}")
    schedules = []
    for index, entry in enumerate(raw):
        try:
            if not isinstance(entry, dict):
                raise TypeError(f"got {type(entry).__name__}")
            schedules.append(Periodic(**entry))
        except InvalidJob as exc:
            raise InvalidJob(f"{path}[{index}]: {exc}") from exc
        except TypeError as exc:
            raise InvalidJob(
                f"{path}[{index}]: expected name, cron, plugin, and optional data and options: {exc}"
            ) from exc
    return schedules


class PeriodicScheduler:
    """Enqueues the jobs of due ticks; one per worker, checked from its loop.

    Args:
        schedules: the periodic jobs.
        queue: where their jobs go.
        catch_up_s: ticks this far in the past are still enqueued (a tick missed
            while no worker ran, or while the engine was away). Keep it shorter
            than the result retention: the dedupe by id lasts as long as the
            job's record.
        kept_s: how long a tick's job's record is kept: a late check never
            enqueues a tick older than that, which a worker that checked in
            time may have run already, its record gone (by default, no limit).
        since: check ticks after this time instead, however long ago, in the
            first pass (for tests and backfills).
    """

    def __init__(
        self,
        schedules: Sequence[Periodic],
        queue: Queue,
        *,
        catch_up_s: float = 60.0,
        kept_s: float = math.inf,
        since: datetime | None = None,
    ) -> None:
        names = [s.name for s in schedules]
        if len(set(names)) != len(names):
            raise InvalidJob(f"periodic names must be unique, got {names}")
        for schedule in schedules:
            # Refuse at start a schedule whose jobs the queue would refuse at every tick.
            job = schedule.job(datetime.now(timezone.utc))
            queue.check(parse_job(job))
            schedule_of(job["options"])
        self.schedules = list(schedules)
        self.queue = queue
        self.catch_up_s = catch_up_s
        self.kept_s = kept_s
        self._checked_until = since or datetime.now(timezone.utc) - timedelta(seconds=catch_up_s)
        self._backfill = since is not None  # the first pass goes back to since, however far

    def run_due(self, now: datetime | None = None) -> list[Job]:
        """Enqueue the jobs of the ticks since the last check, oldest first; return them.

        Every tick since the last check is enqueued, however late the check
        (a busy worker may check some seconds late). But after an outage (no
        check for over five minutes, and over ``catch_up_s``: the engine was
        away, or the worker stalled), ticks more than ``catch_up_s`` old are
        let go, as at start: it does not enqueue every tick it missed at once.
        A tick the queue refuses (its id taken by a job with other data: a
        schedule changed across a restart) is logged and skipped,
        so it holds up neither the later ticks nor the other schedules. An
        unreachable engine ends the pass (EngineUnavailable): the next one
        starts again at the first tick not enqueued.
        """
        now = now or datetime.now(timezone.utc)
        after = self._checked_until
        unchecked_s = (now - after).total_seconds()
        # Late past the outage time, or past the records' retention (the dedupe by id is gone):
        # with a result_ttl_s of seconds, a stalled worker ran ticks another had run.
        if not self._backfill and unchecked_s > max(self.catch_up_s, min(_OUTAGE_S, self.kept_s)):
            log.warning(
                "periodic jobs unchecked for %.0f s (the engine away, or this worker stalled): only "
                "ticks of the last %.0f s are enqueued",
                unchecked_s,
                self.catch_up_s,
            )
            after = now - timedelta(seconds=self.catch_up_s)
        due = sorted(
            (
                (tick, schedule.name, schedule)
                for schedule in self.schedules
                for tick in schedule.ticks(after, now)
            ),
            key=lambda entry: entry[:2],
        )
        appended = []
        for n, (tick, _, schedule) in enumerate(due):
            try:
                appended.append(self.queue.append(schedule.job(tick)))
            except EngineUnavailable:
                raise
            except DtqError as exc:
                log.error("periodic %s: the job of the tick at %s was refused: %s", schedule.name, tick, exc)
            if n + 1 == len(due) or due[n + 1][0] > tick:
                self._checked_until = tick  # every schedule's job of this tick is done
        self._checked_until = max(self._checked_until, now)
        self._backfill = False
        return appended

    def seconds_to_next_tick(self, now: datetime | None = None) -> float | None:
        """How long until the earliest next tick, or None without schedules."""
        now = now or datetime.now(timezone.utc)
        upcoming = [next(iter(CronSim(s.cron, now)), None) for s in self.schedules]
        return min(((tick - now).total_seconds() for tick in upcoming if tick is not None), default=None)

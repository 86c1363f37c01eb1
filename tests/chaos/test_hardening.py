"""Security: no unsafe deserialisation in the code, the worker's allow-list holds against
jobs written straight into Redis, and secrets never reach logs, output or errors."""

from __future__ import annotations

import ast
import json
import subprocess
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from dtqtest import REPO, RedisServer, dtq_command

from dtq_core import Job, JobStatus, Queue, Worker
from dtq_core.engines.redis import Keys, RedisEngine
from dtq_core.job import encode_payload
from dtq_plugins_testonly import AsyncTestOnlyPlugin, TestOnlyPlugin

Report = Callable[..., None]

# --- (a) no unsafe deserialisation ---------------------------------------------------------

#: Modules that turn bytes into arbitrary objects (code execution on bad input).
UNSAFE_MODULES = {"pickle", "cPickle", "_pickle", "marshal", "shelve", "dill", "cloudpickle", "jsonpickle"}
#: yaml functions that build arbitrary objects unless given a safe loader.
UNSAFE_YAML = {"load", "load_all", "unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
SCANNED = [REPO / "dtq_core", REPO / "dtq_plugins_testonly" / "src"]


def unsafe_uses(source: str, filename: str) -> list[str]:
    """``file:line: what`` for each unsafe deserialisation in ``source``.

    Read from the syntax tree, so the words in comments, docstrings and strings do not count.
    """
    found = []
    for node in ast.walk(ast.parse(source, filename)):
        what = _unsafe(node)
        if what:
            found.append(f"{filename}:{getattr(node, 'lineno', 0)}: {what}")
    return found


def _unsafe(node: ast.AST) -> str | None:
    if isinstance(node, ast.Import):
        names = {alias.name.split(".")[0] for alias in node.names}
        return next((f"import {name}" for name in sorted(names & UNSAFE_MODULES)), None)
    if isinstance(node, ast.ImportFrom):
        module = (node.module or "").split(".")[0]
        if module in UNSAFE_MODULES:
            return f"from {module} import ..."
        if module == "yaml" and {alias.name for alias in node.names} & UNSAFE_YAML:
            return "from yaml import an unsafe loader"
        return None
    if isinstance(node, ast.Call):
        return _unsafe_call(node)
    return None


def _unsafe_call(node: ast.Call) -> str | None:
    func = node.func
    if isinstance(func, ast.Name) and func.id in ("eval", "exec"):
        return f"{func.id}()"
    if not isinstance(func, ast.Attribute):
        return None
    owner = func.value.id if isinstance(func.value, ast.Name) else None
    if owner == "builtins" and func.attr in ("eval", "exec"):
        return f"builtins.{func.attr}()"
    if owner == "yaml" and func.attr in UNSAFE_YAML:
        return f"yaml.{func.attr}()"
    if func.attr == "recv" and not node.args and not node.keywords:
        return "Connection.recv() (unpickles what the other end sent)"
    return None


def test_the_scanner_finds_each_unsafe_use_and_ignores_words() -> None:
    source = '''
"""pickle.loads, eval(x) and yaml.load( in a docstring do not count."""
import json  # import pickle in a comment does not count
import pickle
import marshal as m
from shelve import open as shelf
from yaml import load
words = "exec(code) in a string"
value = eval("1 + 1")
exec("x = 1")
data = yaml.load(text)
safe = yaml.safe_load(text)
message = conn.recv()
chunk = sock.recv(4096)
'''
    found = unsafe_uses(source, "sample.py")
    assert [line.split(": ", 1)[0] for line in found] == [
        f"sample.py:{n}" for n in (4, 5, 6, 7, 9, 10, 11, 13)
    ]
    assert "sample.py:4: import pickle" in found


def test_no_code_in_dtq_or_its_test_plugins_deserialises_unsafely() -> None:
    files = sorted(path for root in SCANNED for path in root.rglob("*.py"))
    assert len(files) >= 30, files  # the checkout's sources, not an empty directory
    found = [
        use for path in files for use in unsafe_uses(path.read_text("utf-8"), str(path.relative_to(REPO)))
    ]
    assert not found, "unsafe deserialisation:\n" + "\n".join(found)


# --- (b) the allow-list holds on the worker side ----------------------------------------------


@pytest.fixture
def ran(monkeypatch: pytest.MonkeyPatch) -> dict[str, list[str]]:
    """Ids of the jobs each test plugin actually ran (thread-mode workers run them in this process)."""
    calls: dict[str, list[str]] = {"test_only": [], "test_only_async": []}

    def spy(name: str, original: Callable[..., Any]) -> Callable[..., Any]:
        def process(self: Any, job: Job, *args: Any) -> Any:
            calls[name].append(job.id)
            return original(self, job, *args)

        return process

    monkeypatch.setattr(TestOnlyPlugin, "process", spy("test_only", TestOnlyPlugin.process))
    monkeypatch.setattr(AsyncTestOnlyPlugin, "process", spy("test_only_async", AsyncTestOnlyPlugin.process))
    return calls


@pytest.fixture
def engine(redis_url: str, namespace: str) -> Iterator[RedisEngine]:
    """The Redis engine itself: append.lua with no Queue, so no allow-list, in front of it."""
    made = RedisEngine.from_url(redis_url, namespace=namespace)
    yield made
    made.close()


def append_directly(engine: RedisEngine, job_id: str, plugin: str, data: dict[str, Any]) -> Job:
    job = Job(id=job_id, plugin=plugin, data=data)
    engine.append(job, encode_payload(job))
    return job


def started(queue: Queue, job_id: str) -> bool:
    return any(event.job_id == job_id and event.type.value == "started" for event in queue.events(limit=1000))


def test_a_job_for_a_plugin_outside_the_allow_list_is_never_run(
    engine: RedisEngine,
    queue: Queue,
    redis_server: RedisServer,
    keys: Keys,
    make_worker: Callable[..., Worker],
    ran: dict[str, list[str]],
) -> None:
    append_directly(engine, "outsider", "test_only_async", {"seconds": 0})
    # The same, written key by key as append.lua writes them.
    state = {"status": "queued", "attempts": 0, "lost": 0, "priority": 0, "seq": 10**6, "created": 1}
    redis_server.client.hset(keys.jobs, "outsider-raw", '{"data":{},"plugin":"test_only_async"}')
    redis_server.client.hset(keys.state, "outsider-raw", json.dumps(state))
    redis_server.client.zadd(keys.ready("test_only_async"), {"outsider-raw": 1})
    queue.enqueue("test_only", {"action": "echo"}, id="insider")
    worker = make_worker(plugins=["test_only"], mode="thread", poll_s=0.05)
    assert [job.id for job in worker.get_jobs()] == ["insider"]
    worker.get_jobs()  # and again: nothing else to take
    assert ran == {"test_only": ["insider"], "test_only_async": []}
    for job_id in ("outsider", "outsider-raw"):
        job = queue.get(job_id)
        assert job is not None
        assert (job.status, job.attempts, job.worker) == (JobStatus.QUEUED, 0, None)
        assert not started(queue, job_id)
    stats = queue.stats()
    assert [(q.plugin, q.waiting) for q in stats.queues if q.plugin == "test_only_async"] == [
        ("test_only_async", 2)
    ]
    assert "test_only_async" in stats.unserved()


@pytest.mark.parametrize(
    ("named", "queued_in", "served"),
    [
        ("test_only", "test_only_async", ["test_only_async"]),
        ("test_only", "test_only_async", ["test_only", "test_only_async"]),
        ("test_only_async", "test_only", ["test_only"]),
    ],
)
def test_a_job_in_another_plugins_queue_is_not_run_as_either(
    named: str,
    queued_in: str,
    served: list[str],
    queue: Queue,
    redis_server: RedisServer,
    keys: Keys,
    make_worker: Callable[..., Worker],
    ran: dict[str, list[str]],
) -> None:
    job = Job(id="smuggled", plugin=named, data={"action": "echo"})
    state = {"status": "queued", "attempts": 0, "lost": 0, "priority": 0, "seq": 1, "created": 1}
    redis_server.client.hset(keys.jobs, job.id, encode_payload(job))
    redis_server.client.hset(keys.state, job.id, json.dumps(state))
    redis_server.client.zadd(keys.ready(queued_in), {job.id: 1})
    make_worker(plugins=served, mode="thread", poll_s=0.05).get_jobs()
    assert ran == {"test_only": [], "test_only_async": []}
    buried = queue.get(job.id)
    assert buried is not None and buried.status is JobStatus.DEAD
    assert buried.error is not None
    assert buried.error.message == (
        f"malformed record: the payload names plugin {named!r} but the job was in the queue of {queued_in!r}"
    )
    assert buried.result is None


# --- (c) secrets stay secret ------------------------------------------------------------------


class PasswordRedis(RedisServer):
    """A private redis-server that wants a password."""

    def __init__(self, directory: Path, password: str) -> None:
        self.password = password
        super().__init__(directory, "--requirepass", password)
        self.url = f"redis://:{password}@127.0.0.1:{self.port}/0"

    def _wait_until_up(self) -> None:
        self.client = redis.Redis(port=self.port, password=self.password, decode_responses=True)
        super()._wait_until_up()


@pytest.fixture(scope="module")
def password_redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PasswordRedis]:
    server = PasswordRedis(tmp_path_factory.mktemp("password"), f"pw-{uuid.uuid4().hex}")
    yield server
    server.stop()


def dtq(env: dict[str, str], cwd: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [*dtq_command(), *args], env=env, cwd=cwd, capture_output=True, text=True, timeout=120, check=False
    )


def stored_text(client: redis.Redis, pattern: str) -> str:
    """Everything stored under ``pattern``, as text: where a leaked secret would be found."""
    return "\n".join(f"{key} {_read(client, key)}" for key in client.scan_iter(match=pattern))


def _read(client: redis.Redis, key: str) -> object:
    kind = client.type(key)
    if kind == "hash":
        return client.hgetall(key)
    if kind in ("list", "zset"):
        return client.lrange(key, 0, -1) if kind == "list" else client.zrange(key, 0, -1)
    if kind == "stream":
        return client.xrange(key)
    return client.smembers(key) if kind == "set" else client.get(key)


def test_secrets_never_appear_in_logs_output_or_errors(
    password_redis: PasswordRedis, dtq_env: dict[str, str], tmp_path: Path, report: Report
) -> None:
    api_key = f"sk-{uuid.uuid4().hex}"
    password = password_redis.password
    namespace = f"s-{uuid.uuid4().hex[:12]}"
    env = dict(
        dtq_env, DTQ_URL=password_redis.url, DTQ_NAMESPACE=namespace, DTQ_PLUGIN__TEST_ONLY__API_KEY=api_key
    )
    jobs = {
        "ok": '{"action": "duplicate_text", "text": "fine"}',
        "fails": '{"action": "fail", "message": "it broke"}',
        "permanent": '{"action": "permanent"}',
        "crashes-once": '{"action": "crash", "crashes": 1}',
        # The plugin's error quotes its settings, as a client library's may quote a URL with a key.
        "quotes": '{"action": "quote_settings"}',
    }
    for job_id, data in jobs.items():
        enqueued = dtq(env, tmp_path, "enqueue", "test_only", "--id", job_id, "--data", data)
        assert enqueued.returncode == 0, enqueued.stderr
    retried = ["--id", "retried", "--max-retries", "1", "--retry-backoff", "0"]
    dtq(env, tmp_path, "enqueue", "test_only", *retried, "--data", '{"action": "flaky", "failures": 1}')
    keys = Keys(namespace=namespace)
    password_redis.client.hset(keys.jobs, "garbage", "not json")  # a malformed record, buried with a log line
    password_redis.client.hset(keys.state, "garbage", "{}")
    password_redis.client.zadd(keys.ready("test_only"), {"garbage": 1})
    burst = ["--plugins", "test_only", "--burst", "--lease", "1", "-v", "--log-format", "json"]
    worker = dtq(env, tmp_path, "worker", *burst)
    assert worker.returncode == 0, worker.stderr
    lines = [json.loads(line) for line in worker.stderr.splitlines()]
    # Not vacuous: the worker logged its banner with the URL (masked), each job, and the burial.
    assert any(f"redis://:***@127.0.0.1:{password_redis.port}/0" in line["message"] for line in lines)
    assert {line.get("job_id") for line in lines} >= {*jobs, "retried", "garbage"}
    assert any(line.get("status") == "failed" for line in lines)
    outputs = {"worker": worker.stdout + worker.stderr}
    commands: list[tuple[str, ...]] = [
        ("config",),
        ("config", "--json"),
        ("stats", "--json"),
        ("events", "--json", "--limit", "1000"),
        ("workers", "--json"),
        ("dead", "list", "--json"),
        *[("status", job_id, "--json") for job_id in [*jobs, "retried", "garbage"]],
        ("result", "fails"),
    ]
    for args in commands:
        proc = dtq(env, tmp_path, *args)
        assert "Traceback" not in proc.stderr, proc.stderr
        outputs[" ".join(args)] = proc.stdout + proc.stderr
    assert "plugin.test_only.api_key" in outputs["config"] and "***" in outputs["config"]
    assert json.loads(outputs["status ok --json"])["result"] == "finefine"
    assert json.loads(outputs["status fails --json"])["error"]["message"] == "it broke"
    quoted = json.loads(outputs["status quotes --json"])["error"]["message"]
    assert quoted == "test_only was set up with {'api_key': '***'}"
    # Errors that name the engine: a wrong password, and no server at all.
    for url, code, said in (
        (f"redis://:{password}-wrong@127.0.0.1:{password_redis.port}/0", 1, "Redis at redis://:***@"),
        (f"redis://:{password}@127.0.0.1:1/0", 3, "cannot reach Redis at redis://:***@"),
    ):
        proc = dtq(dict(env, DTQ_URL=url), tmp_path, "stats")
        assert proc.returncode == code, proc.stderr
        assert proc.stderr.startswith(f"dtq: error: {said}"), proc.stderr
        outputs[f"stats with {url.split('@')[1]}"] = proc.stdout + proc.stderr
    outputs["stored in Redis"] = stored_text(password_redis.client, f"{keys.base}:*")
    for secret in (api_key, password):
        leaks = [where for where, text in outputs.items() if secret in text]
        assert not leaks, f"secret found in: {leaks}"
    report(outputs_checked=len(outputs), worker_log_lines=len(lines), secrets=2)

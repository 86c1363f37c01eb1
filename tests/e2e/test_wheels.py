"""Wheels of both distributions in a fresh virtual environment, run from outside the checkout.

Entry points come from installed metadata, not from the source tree: this is
what a user gets from ``pip install dtq-core dtq-plugins-testonly``.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import venv
from collections.abc import Iterator
from pathlib import Path

import pytest
from dtqtest import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.timeout(600)]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A virtual environment with both wheels installed; yields its bin directory."""
    root = tmp_path_factory.mktemp("e2e")
    wheels = root / "wheels"
    build = [sys.executable, "-m", "pip", "wheel", "--no-deps", "-q", "-w", str(wheels)]
    subprocess.run([*build, str(REPO), str(REPO / "dtq_plugins_testonly")], check=True, cwd=root)
    built = sorted(p.name for p in wheels.glob("*.whl"))
    assert [name.split("-")[0] for name in built] == ["dtq_core", "dtq_plugins_testonly"]
    venv.create(root / "venv", with_pip=True)
    bin_dir = root / "venv" / "bin"
    pip = [str(bin_dir / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, *map(str, wheels.glob("*.whl"))], check=True, cwd=root)
    yield bin_dir


@pytest.fixture
def env(redis_url: str, namespace: str) -> dict[str, str]:
    clean = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    return dict(clean, DTQ_URL=redis_url, DTQ_NAMESPACE=namespace)


def test_original_design_example_with_producer_and_worker_as_separate_processes(
    installed: Path, env: dict[str, str], tmp_path: Path
) -> None:
    dtq = str(installed / "dtq")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [dtq, *args], check=False, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
        )

    listing = json.loads(run("plugins", "--json").stdout)
    assert [(r["name"], r["distribution"], r["status"]) for r in listing] == [
        ("test_only", "dtq-plugins-testonly", "ok"),
        ("test_only_async", "dtq-plugins-testonly", "ok"),
    ]
    data = json.dumps({"text": "To be processed!", "action": "duplicate_text"})
    enqueued = run("enqueue", "test_only", "--id", "test_job_one", "--data", data)
    assert enqueued.returncode == 0, enqueued.stderr
    worker = subprocess.Popen(
        [dtq, "worker", "--plugins", "test_only"], env=env, cwd=tmp_path, stderr=subprocess.PIPE, text=True
    )
    try:
        result = run("result", "test_job_one", "--wait", "--timeout", "30")
    finally:
        worker.terminate()
        _, log = worker.communicate(timeout=30)
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout) == "To be processed!To be processed!"
    assert worker.returncode == 0, log
    assert "test_job_one (test_only) attempt 1 succeeded" in log
    status = json.loads(run("status", "test_job_one", "--json").stdout)
    assert status["status"] == "succeeded"


def test_example_script_prints_the_result(installed: Path, env: dict[str, str], tmp_path: Path) -> None:
    proc = subprocess.run(
        [str(installed / "python"), str(REPO / "examples" / "original_design.py")],
        check=False,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "To be processed!To be processed!"


def test_installed_packages_come_from_the_venv_not_the_checkout(installed: Path, tmp_path: Path) -> None:
    code = "import dtq_core as c, dtq_plugins_testonly as p; print(c.__file__); print(p.__file__)"
    out = subprocess.run(
        [str(installed / "python"), "-c", code], cwd=tmp_path, capture_output=True, text=True, check=True
    ).stdout
    for path in out.split():
        assert path.startswith(str(installed.parent)), path


def test_scaffolded_plugin_installs_and_passes_its_own_tests(
    installed: Path, tmp_path: Path, env: dict[str, str]
) -> None:
    """The plugin guide's commands: dtq plugin new, pip install, pytest, build; then a job to it."""
    subprocess.run([str(installed / "dtq"), "plugin", "new", "greet"], cwd=tmp_path, env=env, check=True)
    root = tmp_path / "dtq-plugin-greet"
    pip = [str(installed / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, f"{root}[test]"], cwd=tmp_path, env=env, check=True)
    proc = subprocess.run(
        [str(installed / "python"), "-m", "pytest", "-q", "-p", "no:cacheprovider", str(root / "tests")],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "4 passed" in proc.stdout
    # publishing: build the distribution and check its metadata
    subprocess.run([*pip, "build", "twine"], cwd=tmp_path, env=env, check=True)
    python = str(installed / "python")
    subprocess.run(
        [python, "-m", "build", "--outdir", str(tmp_path / "dist"), str(root)], env=env, check=True
    )
    built = sorted(p.name for p in (tmp_path / "dist").iterdir())
    assert built == ["dtq_plugin_greet-0.1.0-py3-none-any.whl", "dtq_plugin_greet-0.1.0.tar.gz"]
    checked = subprocess.run(
        [python, "-m", "twine", "check", *map(str, (tmp_path / "dist").iterdir())],
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0 and checked.stdout.count("PASSED") == 2, checked.stdout + checked.stderr
    # the built wheel, installed beside dtq-core, serves jobs named "greet" in a worker process
    wheel = tmp_path / "dist" / "dtq_plugin_greet-0.1.0-py3-none-any.whl"
    subprocess.run([*pip, "--force-reinstall", "--no-deps", str(wheel)], cwd=tmp_path, env=env, check=True)
    dtq = str(installed / "dtq")
    subprocess.run([dtq, "enqueue", "greet", "--id", "g1", "--data", '{"name": "Ada"}'], env=env, check=True)
    subprocess.run([dtq, "worker", "--plugins", "greet", "--burst"], cwd=tmp_path, env=env, check=True)
    result = subprocess.run(
        [dtq, "result", "g1", "--wait", "--timeout", "10"],
        env=env,
        capture_output=True,
        text=True,
        check=True,
    )
    assert json.loads(result.stdout) == {"greeting": "Hello, Ada!"}
    listing = subprocess.run(
        [str(installed / "dtq"), "plugins", "--check", "--json", "--plugins", "greet"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert listing.returncode == 0, listing.stderr
    [row] = [r for r in json.loads(listing.stdout) if r["name"] == "greet"]
    assert (row["distribution"], row["status"], row["api_version"]) == ("dtq-plugin-greet", "ok", 1)


def test_reinstalled_plugin_with_a_changed_entry_point_is_seen_by_the_next_command(
    installed: Path, tmp_path: Path
) -> None:
    """Same name and version, new entry point: stevedore's caches must not hide the change."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV"}}
    env["XDG_CACHE_HOME"] = str(tmp_path / "cache")  # stevedore's on-disk cache lives here, and is used
    project = tmp_path / "flip"
    (project / "src" / "dtq_plugin_flip").mkdir(parents=True)
    body = (
        "from dtq_core import Plugin\n\n"
        "class {0}(Plugin):\n    description = '{0}'\n\n    def process(self, job):\n        return '{0}'\n"
    )
    (project / "src" / "dtq_plugin_flip" / "__init__.py").write_text(
        body.format("First") + body.format("Second")
    )
    pip = [str(installed / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]

    def install(target: str) -> dict[str, object]:
        (project / "pyproject.toml").write_text(
            '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
            '[project]\nname = "dtq-plugin-flip"\nversion = "1.0"\n'
            f'[project.entry-points."dtq.plugins"]\nflip = "dtq_plugin_flip:{target}"\n'
        )
        subprocess.run(
            [*pip, "--force-reinstall", "--no-deps", str(project)], cwd=tmp_path, env=env, check=True
        )
        out = subprocess.run(
            [str(installed / "dtq"), "plugins", "--json"],
            check=True,
            cwd=tmp_path,
            env=env,
            capture_output=True,
            text=True,
        ).stdout
        return next(row for row in json.loads(out) if row["name"] == "flip")

    first = install("First")
    assert (first["value"], first["status"], first["description"]) == ("dtq_plugin_flip:First", "ok", "First")
    second = install("Second")
    assert (second["value"], second["status"], second["description"]) == (
        "dtq_plugin_flip:Second",
        "ok",
        "Second",
    )


def test_an_engine_from_another_distribution_is_chosen_by_its_url_scheme(
    installed: Path, tmp_path: Path
) -> None:
    """The engine guide: a distribution registers a dtq.engines entry point; its scheme picks it."""
    env = {k: v for k, v in os.environ.items() if k not in {"PYTHONPATH", "VIRTUAL_ENV", "DTQ_URL"}}
    project = tmp_path / "mystore"
    (project / "src" / "dtq_engine_mystore").mkdir(parents=True)
    (project / "src" / "dtq_engine_mystore" / "__init__.py").write_text(
        "from dtq_core.engines.memory import MemoryEngine\n\nclass MyStoreEngine(MemoryEngine):\n    pass\n"
    )
    (project / "pyproject.toml").write_text(
        '[build-system]\nrequires = ["setuptools>=61"]\nbuild-backend = "setuptools.build_meta"\n'
        '[project]\nname = "dtq-engine-mystore"\nversion = "1.0"\n'
        '[project.entry-points."dtq.engines"]\nmystore = "dtq_engine_mystore:MyStoreEngine"\n'
    )
    pip = [str(installed / "python"), "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    subprocess.run([*pip, str(project)], cwd=tmp_path, env=env, check=True)
    script = (
        "from dtq_core import Queue, Worker\n"
        "queue = Queue(['test_only'], 'mystore://here')\n"
        "print(type(queue.engine).__name__)\n"
        "queue.enqueue('test_only', {'action': 'duplicate_text', 'text': 'x'}, id='j')\n"
        "Worker(['test_only'], 'mystore://here', mode='thread').get_jobs()\n"
        "print(queue.result('j', timeout=5))\n"
    )
    out = subprocess.run(
        [str(installed / "python"), "-c", script],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=True,
    ).stdout.split()
    assert out == ["MyStoreEngine", "xx"]
    unknown = subprocess.run(
        [str(installed / "dtq"), "status", "x", "--url", "nosuch://here"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        check=False,
    )
    assert unknown.returncode == 1 and "no engine named 'nosuch' is installed" in unknown.stderr
    # The engine guide's last step: dtq's contract suite, from the installed wheel, against it.
    subprocess.run([*pip, "pytest>=8"], cwd=tmp_path, env=env, check=True)
    suite = [
        *(str(installed / "python"), "-m", "pytest", "--pyargs", "dtq_core.testing.contract"),
        *("--dtq-url", "mystore://contract", "-q", "-p", "no:cacheprovider"),
    ]

    def pytest(*extra: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*suite, *extra], cwd=tmp_path, env=env, capture_output=True, text=True, check=False, timeout=400
        )

    collected = re.search(r"^(\d+) tests? collected", pytest("--collect-only").stdout, re.MULTILINE)
    assert collected is not None and int(collected[1]) >= 75  # the suite as shipped, not an empty one
    contract = pytest()
    assert contract.returncode == 0, contract.stdout[-3000:] + contract.stderr[-2000:]
    # Every test collected passed: none skipped for this engine.
    assert f"\n{collected[1]} passed" in contract.stdout, contract.stdout[-500:]

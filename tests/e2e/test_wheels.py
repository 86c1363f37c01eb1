"""Wheels of both distributions in a fresh virtual environment, run from outside the checkout.

Entry points come from installed metadata, not from the source tree: this is
what a user gets from ``pip install dtq-core dtq-plugins-testonly``.
"""

from __future__ import annotations

import json
import os
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

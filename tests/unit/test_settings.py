"""Settings: argument over environment over config file over default, with each value's source."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from dtq_core import ConfigError, Queue, Settings, Worker


def write(path: Path, text: str) -> Path:
    path.write_text(text)
    return path


def test_defaults_when_nothing_is_set(tmp_path: Path) -> None:
    chosen = Settings.load(environ={}, cwd=tmp_path)
    assert chosen == Settings()
    assert {row["source"] for row in chosen.describe()} == {"default"}


def test_argument_beats_environment_beats_file_beats_default(tmp_path: Path) -> None:
    write(tmp_path / "dtq.toml", 'namespace = "from-file"\nconcurrency = 2\nlease_s = 7\nmode = "thread"\n')
    environ = {"DTQ_CONCURRENCY": "3", "DTQ_LEASE_S": "9.5"}
    chosen = Settings.load({"lease_s": 11.0, "grace_s": None}, environ=environ, cwd=tmp_path)
    assert (chosen.namespace, chosen.concurrency, chosen.lease_s, chosen.mode, chosen.grace_s) == (
        "from-file",
        3,
        11.0,
        "thread",
        30.0,
    )
    file = str(tmp_path / "dtq.toml")
    assert [chosen.source(n) for n in ("namespace", "concurrency", "lease_s", "grace_s")] == [
        file,
        "env DTQ_CONCURRENCY",
        "argument",
        "default",
    ]


def test_pyproject_tool_dtq_table_is_read_when_there_is_no_dtq_toml(tmp_path: Path) -> None:
    write(tmp_path / "pyproject.toml", '[project]\nname = "app"\n[tool.dtq]\nplugins = ["a", "b"]\n')
    chosen = Settings.load(environ={}, cwd=tmp_path)
    assert chosen.plugins == ("a", "b")
    assert chosen.source("plugins") == f"{tmp_path / 'pyproject.toml'} [tool.dtq]"


def test_dtq_config_variable_names_the_file(tmp_path: Path) -> None:
    other = write(tmp_path / "prod.toml", 'url = "redis://prod:6379/1"\n')
    write(tmp_path / "dtq.toml", 'url = "redis://local:6379/0"\n')
    assert Settings.load(environ={"DTQ_CONFIG": str(other)}, cwd=tmp_path).url == "redis://prod:6379/1"
    with pytest.raises(
        ConfigError, match=r"the config file .*missing\.toml \(--config or DTQ_CONFIG\) is not a file"
    ):
        Settings.load(environ={"DTQ_CONFIG": str(tmp_path / "missing.toml")}, cwd=tmp_path)


def test_engine_and_plugin_tables_merge_across_layers(tmp_path: Path) -> None:
    write(
        tmp_path / "dtq.toml",
        "[engine]\nsignal_cap = 50\nwait_timeout_s = 1.5\n"
        '[plugin.weather]\napi_key = "file-key"\nunits = "metric"\n',
    )
    environ = {"DTQ_ENGINE__SIGNAL_CAP": "70", "DTQ_PLUGIN__WEATHER__API_KEY": "env-key"}
    chosen = Settings.load({"plugin": {"weather": {"units": "imperial"}}}, environ=environ, cwd=tmp_path)
    assert chosen.engine == {"signal_cap": 70, "wait_timeout_s": 1.5}
    assert chosen.plugin == {"weather": {"api_key": "env-key", "units": "imperial"}}
    sources = {row["name"]: row["source"] for row in chosen.describe()}
    assert sources["plugin.weather.api_key"] == "env DTQ_PLUGIN__WEATHER__API_KEY"
    assert sources["plugin.weather.units"] == "argument"
    assert sources["engine.wait_timeout_s"] == str(tmp_path / "dtq.toml")


def test_describe_masks_secrets(tmp_path: Path) -> None:
    environ = {
        "DTQ_URL": "redis://app:hunter2@redis:6379/0",
        "DTQ_PLUGIN__WEATHER__API_KEY": "hunter2",
        "DTQ_ENGINE__SENTINEL_PASSWORD": "hunter2",
    }
    shown = str(Settings.load(environ=environ, cwd=tmp_path).describe())
    assert "hunter2" not in shown
    assert "redis://app:***@redis:6379/0" in shown


@pytest.mark.parametrize(
    ("environ", "message"),
    [
        ({"DTQ_CONCURRENCY": "many"}, r"setting concurrency = 'many' \(env DTQ_CONCURRENCY\)"),
        ({"DTQ_MODE": "fibers"}, "expected one of process, thread"),
        ({"DTQ_LOG_FORMAT": "xml"}, "expected one of text, json"),
    ],
)
def test_bad_values_name_the_setting_and_where_it_came_from(
    tmp_path: Path, environ: dict[str, str], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        Settings.load(environ=environ, cwd=tmp_path)


def test_unknown_names_and_broken_files_are_refused(tmp_path: Path) -> None:
    write(tmp_path / "dtq.toml", "concurency = 4\n")
    with pytest.raises(ConfigError, match=r"unknown setting 'concurency'.*known settings: url, namespace"):
        Settings.load(environ={}, cwd=tmp_path)
    write(tmp_path / "dtq.toml", "url = \n")
    with pytest.raises(ConfigError, match="cannot read the config file"):
        Settings.load(environ={}, cwd=tmp_path)
    write(tmp_path / "dtq.toml", "concurrency = 2.5\n")
    with pytest.raises(ConfigError, match="expected a whole number"):
        Settings.load(environ={}, cwd=tmp_path)


def test_queue_and_worker_take_settings_and_arguments_win(tmp_path: Path) -> None:
    chosen = Settings(url="memory://settings-test", namespace="n1", concurrency=2, mode="thread", lease_s=5.0)
    with Queue(["test_only"], settings=chosen, max_payload_bytes=100) as queue:
        assert (queue.max_payload_bytes, queue.settings.namespace, queue.settings.plugins) == (
            100,
            "n1",
            ("test_only",),
        )
    worker = Worker(["test_only"], settings=chosen, concurrency=3)
    try:
        assert (worker.concurrency, worker.mode, worker.lease_s) == (3, "thread", 5.0)
        assert worker.settings.source("concurrency") == "argument"
    finally:
        worker.close()


@pytest.mark.parametrize(
    ("name", "text", "said"),
    [
        ("DTQ_LEASE_S", "-1", "setting lease_s = '-1' (env DTQ_LEASE_S): expected a number more than 0"),
        ("DTQ_GRACE_S", "nan", "setting grace_s = 'nan' (env DTQ_GRACE_S)"),
        # An int beyond any float: the range check raised OverflowError (a traceback).
        ("DTQ_CONCURRENCY", "1" + "0" * 400, "setting concurrency = '1000"),
        ("DTQ_METRICS_PORT", "65536", "expected a number at least 0 and at most 65535"),
    ],
)
def test_numbers_out_of_range_are_a_config_error(name: str, text: str, said: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(said)):
        Settings.load(environ={name: text})


@pytest.mark.parametrize(
    ("where", "said"),
    [("argument", r"\(argument\)"), ("environment", r"\(env DTQ_PLUGINS\)"), ("file", r"dtq\.toml")],
)
def test_an_empty_allow_list_is_refused_not_taken_for_none(tmp_path: Path, where: str, said: str) -> None:
    """An empty list allowed every installed plugin: a template's empty variable opened it up."""
    environ = {"DTQ_PLUGINS": " , "} if where == "environment" else {}
    if where == "file":
        (tmp_path / "dtq.toml").write_text("plugins = []\n")
    given = {"plugins": []} if where == "argument" else {}
    with pytest.raises(ConfigError, match="an empty allow-list allows no plugin") as caught:
        Settings.load(given, environ=environ, cwd=tmp_path)
    assert re.search(said, str(caught.value)) and "leave the setting out" in str(caught.value)
    with pytest.raises(ConfigError, match="an empty allow-list allows no plugin"):
        Worker([], "memory://empty-allow-list")

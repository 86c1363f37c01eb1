"""The plugin loader: allow-list, unknown names, import failures, duplicates, late installs.

Plugins here are real distributions: metadata written to a directory on
sys.path, read by importlib.metadata and imported by stevedore.
"""

from __future__ import annotations

import pytest
from dtqtest import FakeSite, unique_module

from dtq_core import (
    DuplicatePlugin,
    Plugin,
    PluginIncompatible,
    PluginLoadError,
    PluginNotAllowed,
    UnknownPlugin,
)
from dtq_core.plugin import PluginRegistry, scrub_settings

GOOD = """
from dtq_core import Plugin

class Good(Plugin):
    description = "a fine plugin"

    def process(self, job):
        return "good"
"""


def test_installed_test_only_plugin_loads_by_entry_point_name() -> None:
    plugin = PluginRegistry(["test_only"]).get("test_only")
    assert isinstance(plugin, Plugin)
    assert type(plugin).__module__ == "dtq_plugins_testonly"


def test_loaded_plugin_is_created_once_and_kept() -> None:
    registry = PluginRegistry(["test_only"])
    assert registry.get("test_only") is registry.get("test_only")


def test_plugin_outside_the_allow_list_is_refused_without_importing(fake_site: FakeSite) -> None:
    module = unique_module()
    fake_site.add(
        "dtq-plugin-bomb", "1.0", {"bomb": f"{module}:Bomb"}, {module: "raise SystemExit('imported!')"}
    )
    registry = PluginRegistry(["test_only"])
    with pytest.raises(PluginNotAllowed) as caught:
        registry.get("bomb")
    assert "'bomb' is not on the allow-list (test_only)" in str(caught.value)


def test_unknown_plugin_names_what_is_installed_and_suggests_a_fix() -> None:
    with pytest.raises(UnknownPlugin) as caught:
        PluginRegistry().get("test_onyl")
    message = str(caught.value)
    assert "no plugin named 'test_onyl' is installed" in message
    assert "Did you mean 'test_only'?" in message
    assert "allow-list" in message


def test_plugin_that_fails_to_import_names_plugin_distribution_and_cause(fake_site: FakeSite) -> None:
    module = unique_module()
    fake_site.add(
        "dtq-plugin-broken",
        "2.3",
        {"broken": f"{module}:Broken"},
        {module: "import no_such_dependency_xyz\n"},
    )
    registry = PluginRegistry()
    with pytest.raises(PluginLoadError) as caught:
        registry.get("broken")
    message = str(caught.value)
    assert "'broken' from dtq-plugin-broken 2.3 failed to import" in message
    assert "ModuleNotFoundError" in message and "no_such_dependency_xyz" in message
    # the others keep working
    assert registry.get("test_only") is not None


@pytest.mark.parametrize(
    ("body", "said"),
    [
        ("assert False, 'needs another platform'\n", "AssertionError: needs another platform"),
        ("raise SystemExit('bye')\n", "SystemExit: bye"),
    ],
)
def test_an_assert_or_exit_at_import_is_a_load_error_not_an_escape(
    fake_site: FakeSite, body: str, said: str
) -> None:
    """stevedore lets an AssertionError through, and a SystemExit is no Exception: both
    escaped, ending `dtq plugins` with a traceback and a running worker at its rescan."""
    module = unique_module()
    fake_site.add("dtq-plugin-strict", "1.0", {"strict": f"{module}:Good"}, {module: body})
    registry = PluginRegistry()
    with pytest.raises(PluginLoadError, match=said):
        registry.get("strict")
    rows = {row.name: row for row in registry.statuses()}
    assert rows["strict"].status == "import error" and rows["test_only"].status == "ok"


def test_a_constructor_that_exits_or_a_list_api_version_is_a_load_error(fake_site: FakeSite) -> None:
    exits, listed = unique_module(), unique_module()
    leaving = GOOD + "\n    def __init__(self):\n        raise SystemExit(3)\n"
    fake_site.add("dtq-plugin-leaving", "1.0", {"leaving": f"{exits}:Good"}, {exits: leaving})
    fake_site.add(
        "dtq-plugin-listed", "1.0", {"listed": f"{listed}:Good"}, {listed: GOOD + "    api_version = [1]\n"}
    )
    with pytest.raises(PluginLoadError, match="failed to start: SystemExit: 3"):
        PluginRegistry().get("leaving")
    with pytest.raises(PluginIncompatible, match=r"targets plugin API version \[1\]"):
        PluginRegistry().get("listed")


def test_statuses_list_a_broken_plugin_beside_working_ones(fake_site: FakeSite) -> None:
    module = unique_module()
    fake_site.add("dtq-plugin-broken", "2.3", {"broken": f"{module}:Broken"}, {module: "1/0\n"})
    rows = {row.name: row for row in PluginRegistry().statuses()}
    assert rows["test_only"].status == "ok"
    assert rows["test_only"].distribution == "dtq-plugins-testonly"
    assert rows["broken"].status == "import error"
    assert rows["broken"].error is not None and "ZeroDivisionError" in rows["broken"].error


def test_two_distributions_registering_one_name_are_refused_naming_both(fake_site: FakeSite) -> None:
    first, second = unique_module(), unique_module()
    fake_site.add("dtq-plugin-alpha", "1.0", {"twin": f"{first}:Good"}, {first: GOOD})
    fake_site.add("dtq-plugin-beta", "2.0", {"twin": f"{second}:Good"}, {second: GOOD})
    with pytest.raises(DuplicatePlugin) as caught:
        PluginRegistry().get("twin")
    message = str(caught.value)
    assert "dtq-plugin-alpha 1.0" in message and "dtq-plugin-beta 2.0" in message
    assert "will not guess" in message
    statuses = [row for row in PluginRegistry().statuses() if row.name == "twin"]
    assert {row.status for row in statuses} == {"duplicate"}
    assert len(statuses) == 2


def test_entry_point_that_is_not_a_plugin_class_is_refused(fake_site: FakeSite) -> None:
    module = unique_module()
    fake_site.add("dtq-plugin-odd", "1.0", {"odd": f"{module}:thing"}, {module: "thing = 42\n"})
    with pytest.raises(PluginLoadError) as caught:
        PluginRegistry().get("odd")
    assert "not a subclass of dtq_core.Plugin" in str(caught.value)


def test_plugin_whose_constructor_fails_is_reported(fake_site: FakeSite) -> None:
    module = unique_module()
    source = GOOD + "\n    def __init__(self):\n        raise RuntimeError('no config')\n"
    fake_site.add("dtq-plugin-cranky", "1.0", {"cranky": f"{module}:Good"}, {module: source})
    with pytest.raises(PluginLoadError) as caught:
        PluginRegistry().get("cranky")
    assert "failed to start: RuntimeError: no config" in str(caught.value)


def test_plugin_installed_after_the_registry_looked_is_found(fake_site: FakeSite) -> None:
    registry = PluginRegistry()
    registry.get("test_only")  # fills dtq's scan and stevedore's caches
    with pytest.raises(UnknownPlugin):
        registry.get("late")
    module = unique_module()
    fake_site.add("dtq-plugin-late", "1.0", {"late": f"{module}:Good"}, {module: GOOD})
    assert registry.get("late").process(None) == "good"  # type: ignore[arg-type]


def test_plugin_for_another_api_version_is_refused_naming_both_versions(fake_site: FakeSite) -> None:
    module = unique_module()
    fake_site.add(
        "dtq-plugin-future", "3.0", {"future": f"{module}:Good"}, {module: GOOD + "    api_version = 99\n"}
    )
    with pytest.raises(PluginIncompatible) as caught:
        PluginRegistry().get("future")
    message = str(caught.value)
    assert "'future' from dtq-plugin-future 3.0 targets plugin API version 99" in message
    assert "this dtq-core supports 1" in message
    [row] = [row for row in PluginRegistry().statuses() if row.name == "future"]
    assert (row.status, row.ok) == ("incompatible", False)


def test_statuses_show_api_version_description_and_missing_allow_listed_names() -> None:
    rows = {row.name: row for row in PluginRegistry(["test_only", "ghost"]).statuses()}
    assert (rows["test_only"].api_version, rows["test_only"].status) == (1, "ok")
    assert rows["test_only"].description.startswith("For testing")
    assert (rows["ghost"].status, rows["ghost"].ok) == ("not installed", False)
    assert rows["test_only_async"].status == "not allowed" and rows["test_only_async"].ok


def test_per_plugin_configuration_reaches_the_plugin_at_load(fake_site: FakeSite) -> None:
    module = unique_module()
    fake_site.add("dtq-plugin-conf", "1.0", {"conf": f"{module}:Good"}, {module: GOOD})
    plugin = PluginRegistry(config={"conf": {"api_key": "k-123", "region": "eu"}}).get("conf")
    assert plugin.config == {"api_key": "k-123", "region": "eu"}


def test_refused_configuration_is_reported_without_its_values(fake_site: FakeSite) -> None:
    module = unique_module()
    source = GOOD + (
        "\n    def configure(self, config):\n"
        "        if 'region' not in config:\n"
        "            raise ValueError('region is required')\n"
    )
    fake_site.add("dtq-plugin-strict", "1.0", {"strict": f"{module}:Good"}, {module: source})
    with pytest.raises(PluginLoadError) as caught:
        PluginRegistry(config={"strict": {"api_key": "very-secret-value"}}).get("strict")
    assert "failed to start: ValueError: region is required" in str(caught.value)
    assert "very-secret-value" not in str(caught.value)


def test_a_refusal_that_quotes_the_settings_has_them_masked(fake_site: FakeSite) -> None:
    # The plugin's own message is repeated, and it quoted the key.
    module = unique_module()
    source = GOOD + (
        "\n    def configure(self, config):\n        raise ValueError(f'cannot log in with {config}')\n"
    )
    fake_site.add("dtq-plugin-quoting", "1.0", {"quoting": f"{module}:Good"}, {module: source})
    settings = {"quoting": {"api_key": "very-secret-value", "region": "eu"}}
    with pytest.raises(PluginLoadError) as caught:
        PluginRegistry(config=settings).get("quoting")
    assert "failed to start: ValueError: cannot log in with {'api_key': '***', 'region': 'eu'}" in str(
        caught.value
    )


def test_scrub_settings_masks_each_text_value_nested_or_not_longest_first() -> None:
    settings = {
        "key": "abcdef-123",
        "nested": {"token": "abcdef"},
        "hosts": ["db.example.org"],
        "n": 12345678,
    }
    text = "key abcdef-123, token abcdef, host db.example.org, n 12345678, region eu"
    assert scrub_settings(text, settings) == "key ***, token ***, host ***, n 12345678, region eu"
    assert (
        scrub_settings("short ab", {"x": "ab"}) == "short ab"
    )  # too short to be a secret, masked would garble


def test_a_loaded_plugin_changed_on_disk_is_reported(fake_site: FakeSite) -> None:
    module, upgraded = unique_module(), unique_module()
    fake_site.add("dtq-plugin-moving", "1.0", {"moving": f"{module}:Good"}, {module: GOOD})
    registry = PluginRegistry()
    registry.get("moving")
    assert registry.changed_since_load() == []
    info = next(fake_site.root.glob("dtq_plugin_moving-1.0.dist-info"))
    (info / "entry_points.txt").write_text(f"[dtq.plugins]\nmoving = {upgraded}:Good\n")
    assert registry.changed_since_load() == ["moving"]

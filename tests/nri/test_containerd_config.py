"""The containerd configuration edit, on the real default files of containerd 1.6.20, 1.7.24 and 2.2.2."""

import copy
from pathlib import Path

import pytest
import tomlkit

from kubefence.nri.containerd_config import (
    CRI_RUNTIMES_PATH,
    NRI_PLUGIN_ID,
    ContainerdConfigError,
    ContainerdVersion,
    UnsupportedContainerdError,
    edit_config,
    infer_version,
)

DATA = Path(__file__).parent.parent / "data" / "containerd"
CONFIG_1_6 = (DATA / "config-v1.6.20-default.toml").read_text()
CONFIG_1_7 = (DATA / "config-v1.7.24-default.toml").read_text()
CONFIG_2_2 = (DATA / "config-v2.2.2-default.toml").read_text()

V1_6 = ContainerdVersion(1, 6, 20)
V1_7 = ContainerdVersion(1, 7, 24)
V2_1 = ContainerdVersion(2, 1, 4)
V2_2 = ContainerdVersion(2, 2, 2)

# A hand-written node configuration: only the keys the node changes, with comments.
MINIMAL_WITH_COMMENTS = """\
# Managed by the node image build.
version = 2

# Registry mirrors for the air-gapped site.
[plugins."io.containerd.grpc.v1.cri".registry]
  config_path = "/etc/containerd/certs.d"  # one folder per registry

[metrics]
  address = "127.0.0.1:1338"
"""


def _plain(text: str) -> dict:
    return tomlkit.parse(text).unwrap()


def _without(document: dict, keys) -> dict:
    """Return a copy of `document` without the dotted `keys`, dropping tables left empty by that."""
    result = copy.deepcopy(document)
    for key in keys:
        parents = [result]
        node = result
        for part in key[:-1]:
            if not isinstance(node, dict) or part not in node:
                break
            node = node[part]
            parents.append(node)
        else:
            if isinstance(node, dict):
                node.pop(key[-1], None)
                for depth in range(len(key) - 1, 0, -1):
                    if parents[depth] == {}:
                        parents[depth - 1].pop(key[depth - 1], None)
    return result


def _nri(text: str) -> dict:
    return _plain(text)["plugins"][NRI_PLUGIN_ID]


EDIT_CASES = [
    pytest.param(CONFIG_1_7, V1_7, False, id="1.7.24-default"),
    pytest.param(CONFIG_2_2, V2_2, True, id="2.2.2-default"),
    pytest.param(CONFIG_1_6, V2_2, True, id="1.6.20-file-on-upgraded-2.2-node"),
    pytest.param(CONFIG_1_7, V2_2, True, id="1.7.24-file-on-upgraded-2.2-node"),
    pytest.param(MINIMAL_WITH_COMMENTS, V1_7, False, id="minimal-on-1.7"),
    pytest.param(MINIMAL_WITH_COMMENTS, V2_2, True, id="minimal-on-2.2"),
]


@pytest.mark.parametrize(("text", "version", "validator"), EDIT_CASES)
def test_edit_config_enables_nri(text, version, validator):
    edit = edit_config(text, version)

    assert edit.changed
    nri = _nri(edit.text)
    # containerd 1.7 disables NRI when `disable` is absent; 2.x enables it.
    assert nri.get("disable", version.major < 2) is False
    assert nri.get("disable_connections", False) is False
    assert edit.required_plugins_enforced is validator
    if validator:
        assert nri["default_validator"]["enable"] is True
    else:
        assert "default_validator" not in nri


@pytest.mark.parametrize(("text", "version", "validator"), EDIT_CASES)
def test_edit_config_keeps_other_settings(text, version, validator):
    edit = edit_config(text, version, ("nono-runc",))

    before = _without(_plain(text), edit.edited_keys)
    after = _without(_plain(edit.text), edit.edited_keys)
    # Tables that the edit created are empty once the edited keys are gone.
    assert after == before


@pytest.mark.parametrize(("text", "version", "validator"), EDIT_CASES)
def test_edit_config_second_run_is_no_op(text, version, validator):
    first = edit_config(text, version, ("nono-runc",))
    second = edit_config(first.text, version, ("nono-runc",))

    assert second.changes == ()
    assert not second.changed
    assert second.text == first.text


def test_edit_config_keeps_comments():
    edit = edit_config(MINIMAL_WITH_COMMENTS, V2_2)

    for line in MINIMAL_WITH_COMMENTS.splitlines():
        assert line in edit.text.splitlines()


def test_edit_config_changes_only_expected_lines_2_2():
    edit = edit_config(CONFIG_2_2, V2_2)

    old_lines = CONFIG_2_2.splitlines()
    new_lines = edit.text.splitlines()
    assert len(new_lines) == len(old_lines)
    differing = [(old, new) for old, new in zip(old_lines, new_lines) if old != new]
    assert differing == [("      enable = false", "      enable = true")]
    assert edit.changes == (f"plugins.{NRI_PLUGIN_ID!r}.default_validator.enable: false -> true",)


def test_edit_config_changes_only_expected_lines_1_7():
    edit = edit_config(CONFIG_1_7, V1_7)

    differing = [
        (old, new) for old, new in zip(CONFIG_1_7.splitlines(), edit.text.splitlines()) if old != new
    ]
    assert differing == [("    disable = true", "    disable = false")]


def test_edit_config_1_7_warns_unenforced():
    edit = edit_config(CONFIG_1_7, V1_7)

    assert not edit.required_plugins_enforced
    assert any("required-plugins annotations are not enforced" in warning for warning in edit.warnings)


def test_edit_config_2_1_enables_nri_without_validator():
    text = "version = 3\n"

    edit = edit_config(text, V2_1)

    # NRI is on by default in 2.x: nothing to write, but no validator either.
    assert edit.changes == ()
    assert not edit.required_plugins_enforced
    assert any("no NRI default validator" in warning for warning in edit.warnings)


def test_edit_config_1_6_is_unsupported():
    with pytest.raises(UnsupportedContainerdError) as caught:
        edit_config(CONFIG_1_6, V1_6)

    message = str(caught.value)
    assert "1.6.20" in message
    assert "no NRI support" in message
    assert "2.2" in message


def test_edit_config_invalid_toml_raises():
    with pytest.raises(ContainerdConfigError) as caught:
        edit_config('version = 2\n[plugins."io.containerd.nri.v1.nri"\ndisable = true\n', V2_2)

    assert "invalid TOML" in str(caught.value)


def test_edit_config_version_1_file_raises():
    with pytest.raises(ContainerdConfigError) as caught:
        edit_config('[plugins.cri]\n  sandbox_image = "pause"\n', V1_7)

    message = str(caught.value)
    assert "unsupported configuration version None" in message
    assert "version 1" in message


def test_edit_config_version_3_on_1_7_raises():
    with pytest.raises(ContainerdConfigError) as caught:
        edit_config(CONFIG_2_2, V1_7)

    assert "unsupported configuration version 3 for containerd 1.7.24" in str(caught.value)


def test_edit_config_empty_file_gets_version():
    edit = edit_config("", V2_2)

    document = _plain(edit.text)
    assert document["version"] == 3
    assert document["plugins"][NRI_PLUGIN_ID]["default_validator"]["enable"] is True


def test_edit_config_removes_nri_from_disabled_plugins():
    text = f'version = 2\ndisabled_plugins = ["io.containerd.snapshotter.v1.btrfs", "{NRI_PLUGIN_ID}"]\n'

    edit = edit_config(text, V1_7)

    assert _plain(edit.text)["disabled_plugins"] == ["io.containerd.snapshotter.v1.btrfs"]


def test_edit_config_allows_external_connections():
    text = f'version = 3\n[plugins."{NRI_PLUGIN_ID}"]\n  disable_connections = true\n'

    edit = edit_config(text, V2_2)

    assert _nri(edit.text)["disable_connections"] is False


def test_edit_config_inline_table_raises():
    text = f'version = 3\nplugins = {{ "{NRI_PLUGIN_ID}" = {{ disable = true }} }}\n'

    with pytest.raises(ContainerdConfigError) as caught:
        edit_config(text, V2_2)

    assert "inline tables are not edited" in str(caught.value)


def test_edit_config_reports_custom_socket_path():
    text = f'version = 3\n[plugins."{NRI_PLUGIN_ID}"]\n  socket_path = "/run/nri/custom.sock"\n'

    edit = edit_config(text, V2_2)

    assert edit.nri_socket_path == "/run/nri/custom.sock"


def test_edit_config_warns_tolerate_missing_annotation():
    text = CONFIG_2_2.replace(
        "tolerate_missing_plugins_annotation = ''", "tolerate_missing_plugins_annotation = 'example.org/tolerate'"
    )

    edit = edit_config(text, V2_2)

    assert any("example.org/tolerate" in warning for warning in edit.warnings)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("1.7.24", ContainerdVersion(1, 7, 24)),
        ("v2.2.2", ContainerdVersion(2, 2, 2)),
        ("containerd://2.2.2", ContainerdVersion(2, 2, 2)),
        ("1.7.24~ds1-6", ContainerdVersion(1, 7, 24)),
        ("2.1", ContainerdVersion(2, 1, 0)),
    ],
    ids=["plain", "v-prefix", "node-info", "debian", "no-patch"],
)
def test_containerd_version_parse(text, expected):
    assert ContainerdVersion.parse(text) == expected


@pytest.mark.parametrize("text", ["", "two", "containerd://", "--2.2"], ids=["empty", "word", "scheme-only", "flag"])
def test_containerd_version_parse_invalid_raises(text):
    with pytest.raises(ValueError) as caught:
        ContainerdVersion.parse(text)

    assert repr(text) in str(caught.value)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (CONFIG_2_2, ContainerdVersion(2, 2, 0)),
        (CONFIG_1_7, None),
        (CONFIG_1_6, None),
        ("version = 3\n", None),
    ],
    ids=["2.2-validator-table", "1.7", "1.6", "bare-version-3"],
)
def test_infer_version(text, expected):
    assert infer_version(text) == expected


def _runtimes(text: str) -> dict:
    document = _plain(text)
    path = CRI_RUNTIMES_PATH[document["version"]]
    for key in path:
        document = document[key]
    return document


@pytest.mark.parametrize(("text", "version", "validator"), EDIT_CASES)
def test_edit_config_adds_runtime_handler(text, version, validator):
    edit = edit_config(text, version, ("nono-runc",))

    runtimes = _runtimes(edit.text)
    if "runc" in runtimes:
        assert runtimes["nono-runc"] == runtimes["runc"]
    else:
        assert runtimes["nono-runc"] == {"runtime_type": "io.containerd.runc.v2"}
    assert any("runtimes.nono-runc: (absent) ->" in change for change in edit.changes)


def test_edit_config_copies_systemd_cgroup_setting():
    text = CONFIG_2_2.replace("SystemdCgroup = false", "SystemdCgroup = true")

    edit = edit_config(text, V2_2, ("nono-runc",))

    assert _runtimes(edit.text)["nono-runc"]["options"]["SystemdCgroup"] is True


def test_edit_config_keeps_existing_runtime_handler():
    text = CONFIG_2_2 + (
        "\n[plugins.'io.containerd.cri.v1.runtime'.containerd.runtimes.nono-runc]\n"
        "  runtime_type = 'io.containerd.runc.v2'\n  snapshotter = 'native'\n"
    )

    edit = edit_config(text, V2_2, ("nono-runc",))

    assert _runtimes(edit.text)["nono-runc"] == {"runtime_type": "io.containerd.runc.v2", "snapshotter": "native"}
    assert not any("nono-runc" in change for change in edit.changes)


@pytest.mark.parametrize("name", ["Nono", "nono_runc", "-nono", "x" * 64], ids=["upper", "underscore", "dash", "long"])
def test_edit_config_invalid_handler_name_raises(name):
    with pytest.raises(ContainerdConfigError) as caught:
        edit_config(CONFIG_2_2, V2_2, (name,))

    assert f"invalid runtime handler name {name!r}" in str(caught.value)


def test_edit_config_non_runc_base_raises():
    text = CONFIG_2_2.replace("runtime_type = 'io.containerd.runc.v2'", "runtime_type = 'io.containerd.kata.v2'")

    with pytest.raises(ContainerdConfigError) as caught:
        edit_config(text, V2_2, ("nono-runc",))

    assert "runtime 'runc' has runtime_type 'io.containerd.kata.v2'" in str(caught.value)

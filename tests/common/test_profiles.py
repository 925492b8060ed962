import pytest

from kubefence.common.profiles import InvalidProfileError, is_valid_profile_name, validate_profile


@pytest.mark.parametrize(
    "name",
    ["default", "claude-code", "a", "A1", "x" * 64, "0-9", "swival"],
)
def test_profile_name_accepted(name):
    assert is_valid_profile_name(name)
    assert validate_profile(name) == name


@pytest.mark.parametrize(
    "value",
    [
        pytest.param("", id="empty"),
        pytest.param("-x", id="leading-dash"),
        pytest.param("x-", id="trailing-dash"),
        pytest.param("--allow-all", id="flag"),
        pytest.param("../../etc/passwd", id="path"),
        pytest.param("a/b", id="slash"),
        pytest.param("a_b", id="underscore"),
        pytest.param("a b", id="space"),
        pytest.param("x" * 65, id="too-long"),
        pytest.param("default\n", id="trailing-newline"),
        pytest.param("défaut", id="non-ascii"),
        pytest.param("ｄｅｆａｕｌｔ", id="fullwidth"),
        pytest.param(None, id="none"),
        pytest.param(7, id="int"),
    ],
)
def test_profile_name_rejected(value):
    assert not is_valid_profile_name(value)
    with pytest.raises(InvalidProfileError) as caught:
        validate_profile(value)
    assert repr(value) in str(caught.value)
    assert "1 to 64 characters" in str(caught.value)


def test_validate_profile_allow_list():
    assert validate_profile("swival", ("default", "swival")) == "swival"
    with pytest.raises(InvalidProfileError) as caught:
        validate_profile("codex", ("default", "swival"))
    message = str(caught.value)
    assert "'codex'" in message
    assert "default, swival" in message

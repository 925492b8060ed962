"""The nono stand-in's own checks, run in this process (no container, no root).

`wrap` is called with os.execvpe and nono_py.apply replaced, so nothing is
confined or executed here. The container tests prove the real effect.
"""

import pytest

from . import nono_standin

nono_py = pytest.importorskip("nono_py")


@pytest.fixture
def calls(monkeypatch):
    """Record apply and exec instead of running them."""
    recorded = []
    monkeypatch.setattr(nono_py, "apply", lambda caps: recorded.append(("apply", caps)))
    monkeypatch.setattr(nono_standin.os, "execvpe", lambda file, args, env: recorded.append(("exec", args, env)))
    monkeypatch.setattr(nono_standin.os, "chdir", lambda path: recorded.append(("chdir", path)))
    return recorded


def test_standin_no_landlock_fails_closed(calls, monkeypatch, capsys):
    def no_landlock():
        raise RuntimeError("Landlock is not supported by the kernel")

    monkeypatch.setattr(nono_py, "detect_abi", no_landlock)

    status = nono_standin.main(["wrap", "--profile", "default", "--", "/bin/true"])

    assert status == 1
    assert calls == []
    assert "Landlock is not available" in capsys.readouterr().err


def test_standin_applies_before_exec(calls, monkeypatch):
    monkeypatch.setenv("HOME", "/nonexistent-home")
    monkeypatch.setenv("LD_PRELOAD", "/x.so")

    nono_standin.main(["wrap", "--profile", "default", "--", "/bin/true", "arg"])

    assert [call[0] for call in calls if call[0] != "chdir"] == ["apply", "exec"]
    exec_call = calls[-1]
    assert exec_call[1] == ["/bin/true", "arg"]
    assert "LD_PRELOAD" not in exec_call[2]


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        pytest.param(["run", "--", "true"], "implements only 'wrap'", id="not-wrap"),
        pytest.param(["wrap", "--profile", "default"], "no command given", id="no-command"),
        pytest.param(["wrap", "--", "true"], "missing --profile", id="no-profile"),
        pytest.param(["wrap", "--profile"], "needs a value", id="profile-without-value"),
        pytest.param(["wrap", "--read", "/", "--profile", "default", "--", "true"], "unknown option", id="unknown-option"),
        pytest.param(["wrap", "--profile", "no_such", "--", "true"], "invalid profile name", id="invalid-name"),
        pytest.param(["wrap", "--profile", "nope", "--", "true"], "'nope' not found", id="unknown-profile"),
        pytest.param(["wrap", "--profile", "python-dev", "--", "true"], "proxy mode", id="proxy-profile"),
    ],
)
def test_standin_invalid_use_fails_closed(calls, monkeypatch, capsys, argv, message):
    monkeypatch.setenv("HOME", "/nonexistent-home")

    status = nono_standin.main(argv)

    assert status == 1
    assert calls == []
    assert message in capsys.readouterr().err

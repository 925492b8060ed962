import json
import os
import stat

import pytest

from kubefence.nri.audit import AuditStore, InvalidContainerIdError

CONTAINER_ID = "4f1b0c2d" * 8


def test_audit_write_read_roundtrip(tmp_path):
    store = AuditStore(str(tmp_path))
    store.write(CONTAINER_ID, {"profile": "default", "pod": "agents/agent-1"})
    assert store.read(CONTAINER_ID) == {"profile": "default", "pod": "agents/agent-1"}
    assert store.ids() == {CONTAINER_ID}


def test_audit_file_mode_0600(tmp_path):
    store = AuditStore(str(tmp_path))
    store.write(CONTAINER_ID, {"profile": "default"})
    info = os.stat(tmp_path / f"{CONTAINER_ID}.json")
    assert stat.S_IMODE(info.st_mode) == 0o600


def test_audit_creates_state_dir_0700(tmp_path):
    state_dir = tmp_path / "state"
    AuditStore(str(state_dir))
    assert stat.S_IMODE(os.stat(state_dir).st_mode) == 0o700


def test_audit_write_replaces_whole_record(tmp_path):
    store = AuditStore(str(tmp_path))
    store.write(CONTAINER_ID, {"profile": "default", "extra": "x" * 10_000})
    store.write(CONTAINER_ID, {"profile": "swival"})
    assert json.loads((tmp_path / f"{CONTAINER_ID}.json").read_text()) == {"profile": "swival"}
    assert sorted(os.listdir(tmp_path)) == [f"{CONTAINER_ID}.json"]


def test_audit_write_is_rename_of_temporary(tmp_path, monkeypatch):
    store = AuditStore(str(tmp_path))
    store.write(CONTAINER_ID, {"profile": "default"})
    renames = []
    real_replace = os.replace

    def record_replace(source, target):
        renames.append((os.path.dirname(source), os.path.basename(source), target))
        # Until the rename, the old record is still complete.
        assert json.loads(open(target).read()) == {"profile": "default"}
        assert json.loads(open(source).read()) == {"profile": "swival"}
        real_replace(source, target)

    monkeypatch.setattr(os, "replace", record_replace)
    store.write(CONTAINER_ID, {"profile": "swival"})
    assert len(renames) == 1
    directory, name, target = renames[0]
    assert directory == str(tmp_path)
    assert name.startswith(".")
    assert target == str(tmp_path / f"{CONTAINER_ID}.json")


def test_audit_failed_write_leaves_old_record(tmp_path, monkeypatch):
    store = AuditStore(str(tmp_path))
    store.write(CONTAINER_ID, {"profile": "default"})

    def failing_fsync(descriptor):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", failing_fsync)
    with pytest.raises(OSError):
        store.write(CONTAINER_ID, {"profile": "swival"})
    monkeypatch.undo()
    assert store.read(CONTAINER_ID) == {"profile": "default"}
    assert sorted(os.listdir(tmp_path)) == [f"{CONTAINER_ID}.json"]


def test_audit_start_removes_stale_temporary_files(tmp_path):
    (tmp_path / f".{CONTAINER_ID}.abc.tmp").write_text("{partial")
    store = AuditStore(str(tmp_path))
    assert os.listdir(tmp_path) == []
    assert store.ids() == set()


def test_audit_remove(tmp_path):
    store = AuditStore(str(tmp_path))
    store.write("ctr-a", {})
    assert store.remove("ctr-a") is True
    assert store.ids() == set()
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(
    "container_id",
    [
        pytest.param("never-written", id="unknown"),
        pytest.param("../etc/passwd", id="traversal"),
        pytest.param("", id="empty"),
    ],
)
def test_audit_remove_missing_is_fine(tmp_path, container_id):
    store = AuditStore(str(tmp_path))
    assert store.remove(container_id) is False
    assert store.remove(container_id) is False


@pytest.mark.parametrize(
    "container_id",
    [
        pytest.param("../escape", id="dotdot"),
        pytest.param("a/b", id="slash"),
        pytest.param(".hidden", id="leading-dot"),
        pytest.param("..", id="parent"),
        pytest.param("", id="empty"),
        pytest.param("x" * 129, id="too-long"),
        pytest.param("a\x00b", id="nul"),
        pytest.param("a b", id="space"),
        pytest.param(7, id="not-a-string"),
    ],
)
def test_audit_unsafe_id_rejected(tmp_path, container_id):
    store = AuditStore(str(tmp_path / "state"))
    with pytest.raises(InvalidContainerIdError) as caught:
        store.write(container_id, {})
    assert repr(container_id) in str(caught.value)
    assert os.listdir(tmp_path) == ["state"]
    assert os.listdir(tmp_path / "state") == []


def test_audit_reconcile_drops_gone_containers(tmp_path):
    store = AuditStore(str(tmp_path))
    for container_id in ("a", "b", "c"):
        store.write(container_id, {"profile": "default"})
    removed = store.reconcile(["b", "not-recorded"])
    assert removed == ["a", "c"]
    assert store.ids() == {"b"}
    assert sorted(os.listdir(tmp_path)) == ["b.json"]


def test_audit_reconcile_empty_list_removes_all(tmp_path):
    store = AuditStore(str(tmp_path))
    store.write("a", {})
    assert store.reconcile([]) == ["a"]
    assert store.ids() == set()


def test_audit_ids_ignore_foreign_files(tmp_path):
    (tmp_path / "kubefence.lock").write_text("")
    (tmp_path / "notes.txt").write_text("")
    store = AuditStore(str(tmp_path))
    store.write("a", {})
    assert store.ids() == {"a"}
    assert store.reconcile([]) == ["a"]
    assert sorted(os.listdir(tmp_path)) == ["kubefence.lock", "notes.txt"]


def test_audit_read_missing_is_none(tmp_path):
    store = AuditStore(str(tmp_path))
    assert store.read("a") is None
    assert store.read("../x") is None


def test_audit_state_dir_regular_file_rejected(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.write_text("not a directory\n")
    with pytest.raises(NotADirectoryError) as caught:
        AuditStore(str(state_dir))
    assert str(caught.value) == f"state_dir {str(state_dir)!r} exists and is not a directory"


def test_audit_state_dir_dangling_symlink_rejected(tmp_path):
    state_dir = tmp_path / "state"
    state_dir.symlink_to(tmp_path / "absent")
    with pytest.raises(NotADirectoryError):
        AuditStore(str(state_dir))

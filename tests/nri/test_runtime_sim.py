"""The simulator's runtime rules: adjustment merge across plugins and the OCI generator."""

import pytest

from kubefence.nri.model import Adjustment, Container, Hook, Mount
from kubefence.nri.runtime_sim import MergeConflict, _Merge, apply_like_generator


def container(env=(), mounts=(), args=("app",)):
    return Container(id="c", args=args, env=tuple(env), mounts=tuple(mounts))


@pytest.mark.parametrize(
    ("env", "adjusted", "expected"),
    [
        (["A=1", "B=2"], [("A", "x")], ["A=x", "B=2"]),
        # An adjusted key takes the first occurrence; a later duplicate overwrites it.
        (["A=1", "B=2", "A=3"], [("A", "x")], ["A=3", "B=2"]),
        # New keys are appended.
        (["A=1"], [("C", "z")], ["A=1", "C=z"]),
        # KEY= with an empty value is set, and empty.
        (["A=1"], [("A", "")], ["A="]),
        # A removal marker drops the key.
        (["A=1", "B=2"], [("-A", "")], ["B=2"]),
        # Any adjustment rebuilds the list: duplicates of other keys collapse, entries without "=" go.
        (["B=1", "B=2", "junk"], [("C", "z")], ["B=2", "C=z"]),
        # No adjustment: the env stays as it is, duplicates included.
        (["B=1", "B=2"], [], ["B=1", "B=2"]),
    ],
    ids=["replace", "later-duplicate-wins", "append", "empty-value", "remove", "rebuild", "untouched"],
)
def test_apply_like_generator_env(env, adjusted, expected):
    final = apply_like_generator(container(env), Adjustment(env=tuple(adjusted)))
    assert list(final.env) == expected


def test_apply_like_generator_args_replace():
    final = apply_like_generator(container(args=("a", "b")), Adjustment(args=("x", "a", "b")))
    assert final.args == ("x", "a", "b")


def test_apply_like_generator_mounts_exact_destinations():
    evil = Mount("/nono/nono", "bind", "/evil", ("ro",))
    spelled = Mount("//nono", "bind", "/empty", ("rw",))
    original = container(mounts=[spelled, evil, Mount("/data", "bind", "/d")])
    trusted = Mount("/nono", "bind", "/opt/nono-nri", ("rbind", "ro"))
    final = apply_like_generator(original, Adjustment(mounts=(trusted,)))
    destinations = [m.destination for m in final.mounts]
    # "/nono" replaces only a mount at exactly "/nono": "//nono" and "/nono/nono" survive.
    assert "//nono" in destinations
    assert "/nono/nono" in destinations
    assert "/nono" in destinations
    # Sorted by depth, so the submount comes after /nono.
    assert destinations.index("/nono") < destinations.index("/nono/nono")


def test_apply_like_generator_mount_removal_marker():
    original = container(mounts=[Mount("/nono/nono", "bind", "/evil")])
    final = apply_like_generator(original, Adjustment(mounts=(Mount("-/nono/nono"),)))
    assert final.mounts == ()


def test_merge_second_args_claim_conflicts():
    merge = _Merge(container())
    merge.apply(Adjustment(args=("a",)), "10-one")
    with pytest.raises(MergeConflict, match='plugins "20-two" and "10-one" both tried to set Args'):
        merge.apply(Adjustment(args=("b",)), "20-two")


def test_merge_override_marker_takes_args():
    merge = _Merge(container())
    merge.apply(Adjustment(args=("a",)), "10-one")
    merge.apply(Adjustment(args=("", "b", "a")), "20-two")
    assert merge.adjustment().args == ("b", "a")
    assert merge.view.args == ("b", "a")


def test_merge_env_removal_marker_not_forwarded():
    merge = _Merge(container(env=["NONO_ALLOW=/"]))
    merge.apply(Adjustment(env=(("-NONO_ALLOW", ""),)), "10-one")
    assert merge.adjustment().env == ()
    # Later plugins no longer see the key, although the spec keeps it.
    assert merge.view.env == ()
    assert apply_like_generator(container(env=["NONO_ALLOW=/"]), merge.adjustment()).env == ("NONO_ALLOW=/",)


def test_merge_mount_removal_marker_forwarded():
    merge = _Merge(container(mounts=[Mount("/nono/nono", "bind", "/evil")]))
    merge.apply(Adjustment(mounts=(Mount("-/nono/nono"),)), "10-one")
    assert [m.destination for m in merge.adjustment().mounts] == ["-/nono/nono"]


def test_merge_same_env_key_two_plugins_conflicts():
    merge = _Merge(container())
    merge.apply(Adjustment(env=(("HOME", "/a"),)), "10-one")
    with pytest.raises(MergeConflict, match="HOME"):
        merge.apply(Adjustment(env=(("HOME", "/b"),)), "20-two")


def test_merge_same_mount_two_plugins_conflicts():
    merge = _Merge(container())
    merge.apply(Adjustment(mounts=(Mount("/nono", "bind", "/a"),)), "10-one")
    with pytest.raises(MergeConflict, match="/nono"):
        merge.apply(Adjustment(mounts=(Mount("/nono", "bind", "/b"),)), "20-two")


def test_merge_hooks_of_two_plugins_appended_in_order():
    first, second = Hook(path="/one"), Hook(path="/two", args=("/two", "x"))
    merge = _Merge(container())
    merge.apply(Adjustment(hooks=(first,)), "10-one")
    merge.apply(Adjustment(hooks=(second,)), "20-two")
    assert merge.adjustment().hooks == (first, second)
    assert merge.view.hooks == (first, second)


def test_apply_like_generator_hooks_appended():
    existing, added = Hook(path="/existing"), Hook(path="/added")
    pristine = Container(id="c", args=("app",), hooks=(existing,))
    final = apply_like_generator(pristine, Adjustment(hooks=(added,)))
    assert final.hooks == (existing, added)

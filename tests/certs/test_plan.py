"""Every decision of the pure `plan` function, and runs chained the way the shell applies them."""

import dataclasses
import datetime

import pytest
from .conftest import DAY, NOW, SERVICE_DNS_NAMES, make_options
from cryptography.hazmat.primitives.asymmetric import rsa

from kubefence.certs import pki
from kubefence.certs.material import materialize
from kubefence.certs.plan import (
    STEP_CREATE_CA,
    STEP_DROP_RETIRED_CAS,
    STEP_ISSUE_LEAF,
    STEP_PATCH_CA_BUNDLE,
    STEP_PROMOTE_CA,
    STEP_REPLACE_CA,
    STEP_START_CA_ROTATION,
    STEP_WRITE_CA_SECRET,
    STEP_WRITE_TLS_SECRET,
    ClusterState,
    NewCa,
    NewLeaf,
    SecretState,
    WebhookState,
    bundle_pem,
    plan,
)

MINUTE = datetime.timedelta(minutes=1)
WEBHOOKS = ("pods.kubefence.dev", "pods-reinvoke.kubefence.dev")


def webhook(*bundles: bytes, version="7") -> WebhookState:
    return WebhookState(version, WEBHOOKS[: len(bundles)], tuple(bundles))


def steady_state(ca: pki.KeyPair, leaf: pki.KeyPair, *, webhook_bundle: bytes | None = None) -> ClusterState:
    """The state a completed run leaves: one CA, its bundle everywhere, a leaf it signed."""
    bundle = bundle_pem(ca, None, ())
    return ClusterState(
        ca_secret=SecretState({"tls.crt": ca.cert_pem, "tls.key": ca.key_pem, "ca.crt": bundle}, "1"),
        tls_secret=SecretState({"tls.crt": leaf.cert_pem, "tls.key": leaf.key_pem, "ca.crt": bundle}, "2"),
        webhook=webhook(bundle if webhook_bundle is None else webhook_bundle, bundle if webhook_bundle is None else webhook_bundle),
    )


def run(state: ClusterState, options, now):
    """Plan, generate and apply the writes as the shell does; return the plan, material and next state."""
    decided = plan(state, options, now)
    material = materialize(decided, now)
    ca_secret, tls_secret, hooks = state.ca_secret, state.tls_secret, state.webhook
    if decided.write_ca_secret:
        ca_secret = SecretState(material.ca_secret_data, "ca-next", decided.ca_secret_type)
    if decided.patch_webhook:
        hooks = WebhookState("hook-next", hooks.webhook_names, tuple(material.ca_bundle for _ in hooks.webhook_names))
    if decided.write_tls_secret:
        tls_secret = SecretState(material.tls_secret_data, "tls-next", decided.tls_secret_type)
    return decided, material, ClusterState(ca_secret, tls_secret, hooks)


def verifies(bundle: bytes, leaf_pem: bytes) -> bool:
    """Whether a client trusting exactly `bundle` accepts the serving certificate `leaf_pem`."""
    leaf = pki.load_certificates(leaf_pem, "leaf")[0]
    return any(pki.is_issued_by(leaf, ca) for ca in pki.load_certificates(bundle, "bundle"))


def assert_clients_keep_working(before: ClusterState, after: ClusterState) -> None:
    """The invariant of every run: no client sees a serving certificate its bundle does not trust.

    Pods may serve the old or the new serving certificate for a while, and
    the API server may use the old or the new caBundle, in any combination.
    """
    old_leaf = before.tls_secret.data["tls.crt"]
    new_leaf = after.tls_secret.data["tls.crt"]
    for old_bundle, new_bundle in zip(before.webhook.ca_bundles, after.webhook.ca_bundles):
        for bundle in (old_bundle, new_bundle):
            assert verifies(bundle, old_leaf), "a caBundle does not trust the serving certificate pods still serve"
            assert verifies(bundle, new_leaf), "a caBundle does not trust the new serving certificate"


def issuer_fingerprint(leaf_pem: bytes, candidates: list[pki.KeyPair]) -> str:
    leaf = pki.load_certificates(leaf_pem, "leaf")[0]
    for ca in candidates:
        if pki.is_issued_by(leaf, ca.certificate):
            return pki.fingerprint(ca.certificate)
    return ""


# Fresh install and no-op upgrade ----------------------------------------------


def test_plan_fresh_install_creates_everything():
    state = ClusterState(None, None, webhook(b"", b""))

    decided, material, after = run(state, make_options(), NOW)

    assert decided.steps == (STEP_CREATE_CA, STEP_ISSUE_LEAF, STEP_WRITE_CA_SECRET, STEP_PATCH_CA_BUNDLE, STEP_WRITE_TLS_SECRET)
    assert isinstance(decided.active_ca, NewCa)
    assert isinstance(decided.leaf, NewLeaf)
    assert decided.pending_ca is None
    assert decided.repairs == ()
    leaf = material.leaf.certificate
    assert pki.dns_names_of(leaf) == SERVICE_DNS_NAMES
    assert pki.key_type_of(leaf.public_key()) == "ecdsa-p256"
    assert pki.is_issued_by(leaf, material.active_ca.certificate)
    assert pki.is_ca(material.active_ca.certificate)
    assert after.webhook.ca_bundles == (material.ca_bundle, material.ca_bundle)
    assert set(after.ca_secret.data) == {"tls.crt", "tls.key", "ca.crt"}
    assert set(after.tls_secret.data) == {"tls.crt", "tls.key", "ca.crt"}


def test_plan_fresh_install_without_webhook_config_skips_patch():
    decided, _, _ = run(ClusterState(None, None, None), make_options(webhook_config=""), NOW)

    assert STEP_PATCH_CA_BUNDLE not in decided.steps
    assert decided.patch_webhook is False
    assert decided.write_ca_secret and decided.write_tls_secret


@pytest.mark.parametrize(
    "overrides",
    [
        {},
        {"leaf_validity": datetime.timedelta(days=90)},
        {"ca_validity": datetime.timedelta(days=1000)},
        {"renew_before": datetime.timedelta(days=10)},
        {"cluster_domain": "cluster.local"},
    ],
    ids=["same-values", "other-leaf-validity", "other-ca-validity", "other-renew-window", "same-domain-explicit"],
)
def test_plan_upgrade_without_need_changes_nothing(overrides):
    _, _, installed = run(ClusterState(None, None, webhook(b"")), make_options(), NOW)

    decided = plan(installed, make_options(**overrides), NOW + DAY)

    assert decided.steps == ()
    assert decided.changes is False
    assert decided.repairs == ()
    assert decided.active_ca.cert_pem == installed.ca_secret.data["tls.crt"]
    assert decided.leaf.cert_pem == installed.tls_secret.data["tls.crt"]


def test_plan_is_deterministic_and_leaves_state_alone(ca_a, leaf_a):
    state = steady_state(ca_a, leaf_a)
    copy = dataclasses.replace(state)

    first = plan(state, make_options(rotate="ca"), NOW)
    second = plan(state, make_options(rotate="ca"), NOW)

    assert first == second
    assert state == copy


# Serving certificate renewal --------------------------------------------------


@pytest.mark.parametrize(
    ("time_left", "renews"),
    [
        (datetime.timedelta(days=31), False),
        (datetime.timedelta(days=30, minutes=1), False),
        (datetime.timedelta(days=30), True),
        (datetime.timedelta(days=2), True),
    ],
    ids=["31-days-left", "just-outside-window", "window-edge", "2-days-left"],
)
def test_plan_leaf_renewal_window(ca_a, leaf_a, time_left, renews):
    state = steady_state(ca_a, leaf_a)
    now = leaf_a.certificate.not_valid_after_utc - time_left

    decided, material, after = run(state, make_options(), now)

    assert (STEP_ISSUE_LEAF in decided.steps) is renews
    assert decided.write_ca_secret is False
    assert decided.patch_webhook is False
    if renews:
        assert decided.steps == (STEP_ISSUE_LEAF, STEP_WRITE_TLS_SECRET)
        assert any("expires within 720h" in reason for reason in decided.reasons)
        assert material.leaf.certificate.not_valid_after_utc > leaf_a.certificate.not_valid_after_utc
        assert pki.is_issued_by(material.leaf.certificate, ca_a.certificate)
        assert_clients_keep_working(state, after)


def test_plan_rotate_leaf_same_ca(ca_a, leaf_a):
    state = steady_state(ca_a, leaf_a)

    decided, material, after = run(state, make_options(rotate="leaf"), NOW)

    assert decided.steps == (STEP_ISSUE_LEAF, STEP_WRITE_TLS_SECRET)
    assert "a new serving certificate was requested (--rotate leaf)" in decided.reasons
    assert material.leaf.cert_pem != leaf_a.cert_pem
    assert material.active_ca.cert_pem == ca_a.cert_pem
    assert after.ca_secret == state.ca_secret
    assert_clients_keep_working(state, after)


def test_plan_other_key_type_reissues_leaf(ca_a, leaf_a):
    decided, material, _ = run(steady_state(ca_a, leaf_a), make_options(key_type="rsa-2048"), NOW)

    assert decided.steps == (STEP_ISSUE_LEAF, STEP_WRITE_TLS_SECRET)
    assert isinstance(material.leaf.certificate.public_key(), rsa.RSAPublicKey)
    assert material.leaf.certificate.public_key().key_size == 2048


def test_plan_leaf_validity_capped_at_ca_expiry():
    ca = pki.generate_ca("short-ca", validity=datetime.timedelta(days=200), now=NOW)
    state = ClusterState(
        SecretState({"tls.crt": ca.cert_pem, "tls.key": ca.key_pem, "ca.crt": bundle_pem(ca, None, ())}, "1"), None, None
    )

    _, material, _ = run(state, make_options(webhook_config="", ca_renew_before=datetime.timedelta(days=90)), NOW)

    assert material.leaf.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


# CA rotation ------------------------------------------------------------------


def test_plan_ca_rotation_phases(ca_a, leaf_a):
    state = steady_state(ca_a, leaf_a)
    options = make_options()

    # Phase 1: the next CA joins the bundle, the serving certificate stays.
    started, phase1, after1 = run(state, make_options(rotate="ca"), NOW)
    assert started.steps == (STEP_START_CA_ROTATION, STEP_WRITE_CA_SECRET, STEP_PATCH_CA_BUNDLE, STEP_WRITE_TLS_SECRET)
    assert isinstance(started.pending_ca, NewCa)
    assert after1.tls_secret.data["tls.crt"] == leaf_a.cert_pem
    assert set(after1.ca_secret.data) == {"tls.crt", "tls.key", "ca.crt", "next.crt", "next.key"}
    assert after1.ca_secret.data["tls.crt"] == ca_a.cert_pem
    new_ca = phase1.pending_ca
    bundle1 = pki.load_certificates(after1.webhook.ca_bundles[0], "bundle")
    assert [pki.fingerprint(c) for c in bundle1] == [pki.fingerprint(ca_a.certificate), pki.fingerprint(new_ca.certificate)]
    assert after1.tls_secret.data["ca.crt"] == after1.webhook.ca_bundles[0]
    assert_clients_keep_working(state, after1)

    # Phase 2: the bundle read back contains the next CA, so it becomes current
    # and signs a new serving certificate. The old CA stays as a retired CA.
    promoted, phase2, after2 = run(after1, options, NOW + MINUTE)
    assert promoted.steps[:2] == (STEP_PROMOTE_CA, STEP_ISSUE_LEAF)
    assert STEP_DROP_RETIRED_CAS not in promoted.steps
    assert after2.ca_secret.data["tls.crt"] == new_ca.cert_pem
    assert "next.crt" not in after2.ca_secret.data
    assert issuer_fingerprint(after2.tls_secret.data["tls.crt"], [ca_a, new_ca]) == pki.fingerprint(new_ca.certificate)
    assert len(phase2.ca_bundle.split(b"BEGIN CERTIFICATE")) - 1 == 2
    assert_clients_keep_working(after1, after2)

    # Another run before the drop delay: nothing to do.
    waiting = plan(after2, options, NOW + 5 * MINUTE)
    assert waiting.steps == ()
    assert any("stay in the bundle until" in reason for reason in waiting.reasons)

    # Phase 3: the new serving certificate is old enough; the old CA leaves.
    dropped, phase3, after3 = run(after2, options, NOW + MINUTE + options.ca_drop_after)
    assert dropped.steps == (STEP_DROP_RETIRED_CAS, STEP_WRITE_CA_SECRET, STEP_PATCH_CA_BUNDLE, STEP_WRITE_TLS_SECRET)
    assert pki.load_certificates(phase3.ca_bundle, "bundle") == [new_ca.certificate]
    assert after3.tls_secret.data["tls.crt"] == after2.tls_secret.data["tls.crt"]
    assert_clients_keep_working(after2, after3)

    # Steady again.
    assert plan(after3, options, NOW + DAY).steps == ()


def test_plan_ca_rotation_waits_for_bundle(ca_a, leaf_a):
    _, _, after1 = run(steady_state(ca_a, leaf_a), make_options(rotate="ca"), NOW)
    # The caBundle patch was undone (for example by a Helm upgrade that
    # renders an old bundle): only the current CA is trusted.
    old_bundle = bundle_pem(ca_a, None, ())
    reverted = dataclasses.replace(after1, webhook=webhook(old_bundle, old_bundle))

    decided, _, after = run(reverted, make_options(), NOW + MINUTE)

    assert STEP_PROMOTE_CA not in decided.steps
    assert STEP_ISSUE_LEAF not in decided.steps
    assert decided.steps == (STEP_PATCH_CA_BUNDLE,)
    assert any("waits until every webhook's caBundle contains it" in reason for reason in decided.reasons)
    assert after.tls_secret.data["tls.crt"] == leaf_a.cert_pem
    assert_clients_keep_working(reverted, after)


def test_plan_ca_rotation_waits_for_every_webhook(ca_a, leaf_a):
    _, _, after1 = run(steady_state(ca_a, leaf_a), make_options(rotate="ca"), NOW)
    both = after1.webhook.ca_bundles[0]
    partial = dataclasses.replace(after1, webhook=webhook(both, bundle_pem(ca_a, None, ())))

    decided = plan(partial, make_options(), NOW + MINUTE)

    assert STEP_PROMOTE_CA not in decided.steps
    assert decided.patch_webhook is True


def test_plan_rotate_ca_during_rotation_continues_it(ca_a, leaf_a):
    _, phase1, after1 = run(steady_state(ca_a, leaf_a), make_options(rotate="ca"), NOW)

    decided, phase2, _ = run(after1, make_options(rotate="ca"), NOW + MINUTE)

    assert STEP_START_CA_ROTATION not in decided.steps
    assert STEP_PROMOTE_CA in decided.steps
    assert phase2.active_ca.cert_pem == phase1.pending_ca.cert_pem
    assert phase2.pending_ca is None


def test_plan_rotate_ca_with_retired_ca(ca_a, leaf_a):
    _, _, after1 = run(steady_state(ca_a, leaf_a), make_options(rotate="ca"), NOW)
    _, _, after2 = run(after1, make_options(), NOW + MINUTE)

    decided = plan(after2, make_options(rotate="ca"), NOW + 2 * MINUTE)

    assert STEP_START_CA_ROTATION not in decided.steps
    assert decided.pending_ca is None
    assert any("previous one still has a retired CA" in reason for reason in decided.reasons)


def test_plan_ca_near_expiry_starts_rotation():
    ca = pki.generate_ca("old-ca", validity=datetime.timedelta(days=400), now=NOW - 320 * DAY)
    leaf = pki.generate_serving(ca, SERVICE_DNS_NAMES, validity=datetime.timedelta(days=60), now=NOW - DAY)
    state = steady_state(ca, leaf)

    decided, _, after = run(state, make_options(), NOW)

    assert decided.steps[0] == STEP_START_CA_ROTATION
    assert any("the current CA expires within 2160h" in reason for reason in decided.reasons)
    assert_clients_keep_working(state, after)


def test_plan_ca_rotation_without_webhook_config(ca_a, leaf_a):
    state = dataclasses.replace(steady_state(ca_a, leaf_a), webhook=None)
    options = make_options(webhook_config="")

    started, _, after1 = run(state, make_options(webhook_config="", rotate="ca"), NOW)
    promoted, _, _ = run(after1, options, NOW + MINUTE)

    assert STEP_START_CA_ROTATION in started.steps
    assert STEP_PROMOTE_CA in promoted.steps


# Material edited by hand into an invalid state --------------------------------


def _leaf_signed_by_other_ca(ca_b):
    return pki.generate_serving(ca_b, SERVICE_DNS_NAMES, now=NOW - DAY)


def _expired_ca_and_leaf():
    ca = pki.generate_ca("expired-ca", validity=datetime.timedelta(days=30), now=NOW - 40 * DAY)
    leaf = pki.generate_serving(ca, SERVICE_DNS_NAMES, now=NOW - 40 * DAY)
    return ca, leaf


def _edit_secret(state: ClusterState, secret_field: str, **data) -> ClusterState:
    secret = getattr(state, secret_field)
    edited = dict(secret.data)
    for key, value in data.items():
        key = key.replace("_", ".")
        if value is None:
            edited.pop(key, None)
        else:
            edited[key] = value
    return dataclasses.replace(state, **{secret_field: dataclasses.replace(secret, data=edited)})


# (case id, edit(state, fixtures) -> state, expected steps subset, phrase in a repair)
INVALID_STATES = [
    ("ca-key-missing", lambda s, f: _edit_secret(s, "ca_secret", tls_key=None), {STEP_REPLACE_CA}, "has no 'tls.key'"),
    ("ca-cert-bad-pem", lambda s, f: _edit_secret(s, "ca_secret", tls_crt=b"-----BEGIN CERTIFICATE-----\nnot base64\n"), {STEP_REPLACE_CA}, "not valid PEM"),
    ("ca-key-mismatch", lambda s, f: _edit_secret(s, "ca_secret", tls_key=f["ca_b"].key_pem), {STEP_REPLACE_CA}, "does not belong"),
    ("ca-not-a-ca", lambda s, f: _edit_secret(s, "ca_secret", tls_crt=f["leaf_a"].cert_pem, tls_key=f["leaf_a"].key_pem), {STEP_REPLACE_CA}, "not a CA"),
    ("ca-bundle-bad-pem", lambda s, f: _edit_secret(s, "ca_secret", ca_crt=b"garbage"), {STEP_WRITE_CA_SECRET}, "CA Secret bundle"),
    ("ca-secret-extra-key", lambda s, f: _edit_secret(s, "ca_secret", notes=b"x"), {STEP_WRITE_CA_SECRET}, "unexpected keys"),
    ("next-ca-key-missing", lambda s, f: _edit_secret(s, "ca_secret", next_crt=f["ca_b"].cert_pem), {STEP_WRITE_CA_SECRET}, "next CA"),
    ("leaf-bad-pem", lambda s, f: _edit_secret(s, "tls_secret", tls_crt=b"-----BEGIN CERTIFICATE-----\n"), {STEP_ISSUE_LEAF}, "not valid PEM"),
    ("leaf-key-missing", lambda s, f: _edit_secret(s, "tls_secret", tls_key=None), {STEP_ISSUE_LEAF}, "has no 'tls.key'"),
    ("leaf-key-mismatch", lambda s, f: _edit_secret(s, "tls_secret", tls_key=f["ca_b"].key_pem), {STEP_ISSUE_LEAF}, "does not belong"),
    ("leaf-key-garbage", lambda s, f: _edit_secret(s, "tls_secret", tls_key=b"-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n"), {STEP_ISSUE_LEAF}, "not a valid unencrypted PEM private key"),
    ("leaf-wrong-san", lambda s, f: _edit_secret(s, "tls_secret", **_pair(pki.generate_serving(f["ca_a"], ["other.example"], now=NOW - DAY))), {STEP_ISSUE_LEAF}, "does not name"),
    ("leaf-unknown-issuer", lambda s, f: _edit_secret(s, "tls_secret", **_pair(_leaf_signed_by_other_ca(f["ca_b"]))), {STEP_ISSUE_LEAF}, "neither current nor in the bundle"),
    ("leaf-is-ca", lambda s, f: _edit_secret(s, "tls_secret", **_pair(f["ca_b"])), {STEP_ISSUE_LEAF}, "is a CA certificate"),
    ("leaf-not-yet-valid", lambda s, f: _edit_secret(s, "tls_secret", **_pair(pki.generate_serving(f["ca_a"], SERVICE_DNS_NAMES, now=NOW + 2 * DAY))), {STEP_ISSUE_LEAF}, "not valid before"),
    ("tls-secret-extra-key", lambda s, f: _edit_secret(s, "tls_secret", extra=b"x"), {STEP_WRITE_TLS_SECRET}, "unexpected keys"),
    ("tls-secret-opaque", lambda s, f: dataclasses.replace(s, tls_secret=dataclasses.replace(s.tls_secret, type="Opaque")), set(), "type 'Opaque'"),
    ("webhook-bundle-garbage", lambda s, f: dataclasses.replace(s, webhook=webhook(b"garbage", s.webhook.ca_bundles[1])), {STEP_PATCH_CA_BUNDLE}, "caBundle of webhook"),
]


def _pair(pair: pki.KeyPair) -> dict:
    return {"tls_crt": pair.cert_pem, "tls_key": pair.key_pem}


@pytest.mark.parametrize(("edit", "steps", "phrase"), [case[1:] for case in INVALID_STATES], ids=[case[0] for case in INVALID_STATES])
def test_plan_repairs_invalid_state(ca_a, ca_b, leaf_a, edit, steps, phrase):
    state = edit(steady_state(ca_a, leaf_a), {"ca_a": ca_a, "ca_b": ca_b, "leaf_a": leaf_a})

    decided, material, after = run(state, make_options(), NOW)

    assert steps <= set(decided.steps)
    assert any(phrase in problem for problem in decided.repairs), decided.repairs
    # The result serves: a valid pair, the Service names, trusted by the new bundle.
    certificate, _ = pki.load_pair(after.tls_secret.data["tls.crt"], after.tls_secret.data["tls.key"], NOW, "serving")
    assert pki.dns_names_of(certificate) == SERVICE_DNS_NAMES
    for bundle in after.webhook.ca_bundles:
        assert verifies(bundle, after.tls_secret.data["tls.crt"])
    # And a second run is content with what the first one wrote.
    assert plan(after, make_options(), NOW).repairs == tuple(p for p in decided.repairs if "type 'Opaque'" in p)


def test_plan_repair_of_ca_keeps_working_leaf_trusted(ca_a, leaf_a):
    state = _edit_secret(steady_state(ca_a, leaf_a), "ca_secret", tls_key=None)

    decided, material, after = run(state, make_options(), NOW)

    # The new CA cannot sign for the old leaf; the leaf stays and so does its CA.
    assert STEP_ISSUE_LEAF not in decided.steps
    assert after.tls_secret.data["tls.crt"] == leaf_a.cert_pem
    assert_clients_keep_working(state, after)
    # Next run: the bundle trusts the new CA, so the leaf moves to it.
    decided2, _, after2 = run(after, make_options(), NOW + MINUTE)
    assert STEP_ISSUE_LEAF in decided2.steps
    assert pki.is_issued_by(pki.load_certificates(after2.tls_secret.data["tls.crt"], "leaf")[0], material.active_ca.certificate)
    assert_clients_keep_working(after, after2)


def test_plan_expired_ca_and_leaf_replaced():
    ca, leaf = _expired_ca_and_leaf()

    decided, material, _ = run(steady_state(ca, leaf), make_options(), NOW)

    assert STEP_REPLACE_CA in decided.steps
    assert STEP_ISSUE_LEAF in decided.steps
    assert any("expired" in problem for problem in decided.repairs)
    assert pki.load_certificates(material.ca_bundle, "bundle") == [material.active_ca.certificate]


def test_plan_broken_current_ca_uses_next_ca(ca_a, ca_b, leaf_a):
    state = _edit_secret(steady_state(ca_a, leaf_a), "ca_secret", tls_key=None, next_crt=ca_b.cert_pem, next_key=ca_b.key_pem)

    decided, material, _ = run(state, make_options(), NOW)

    assert STEP_REPLACE_CA in decided.steps
    assert material.active_ca.cert_pem == ca_b.cert_pem
    assert material.pending_ca is None


def test_plan_webhook_without_bundle_gets_one(ca_a, leaf_a):
    state = dataclasses.replace(steady_state(ca_a, leaf_a), webhook=webhook(b"", bundle_pem(ca_a, None, ())))

    decided, material, after = run(state, make_options(), NOW)

    assert decided.steps == (STEP_PATCH_CA_BUNDLE,)
    assert "a webhook of the configuration has no caBundle" in decided.reasons
    assert after.webhook.ca_bundles == (material.ca_bundle, material.ca_bundle)
    assert all(after.webhook.ca_bundles)


def test_plan_bundle_is_never_blank(ca_a, leaf_a):
    for state in (ClusterState(None, None, webhook(b"")), steady_state(ca_a, leaf_a)):
        for rotate in ("none", "leaf", "ca"):
            _, material, after = run(state, make_options(rotate=rotate), NOW)
            assert material.ca_bundle.startswith(b"-----BEGIN CERTIFICATE-----")
            assert all(after.webhook.ca_bundles)


def test_plan_expired_retired_ca_leaves_bundle(ca_a, leaf_a):
    expired_ca, _ = _expired_ca_and_leaf()
    bundle = bundle_pem(ca_a, None, (expired_ca.cert_pem,))
    state = _edit_secret(steady_state(ca_a, leaf_a, webhook_bundle=bundle), "ca_secret", ca_crt=bundle)

    decided, material, _ = run(state, make_options(), NOW)

    assert pki.load_certificates(material.ca_bundle, "bundle") == [ca_a.certificate]
    assert decided.patch_webhook is True


def test_plan_rejects_naive_now(ca_a, leaf_a):
    with pytest.raises(ValueError, match="timezone-aware"):
        plan(steady_state(ca_a, leaf_a), make_options(), NOW.replace(tzinfo=None))


def test_plan_new_ca_names_differ_per_run():
    first = plan(ClusterState(None, None, None), make_options(webhook_config=""), NOW)
    second = plan(ClusterState(None, None, None), make_options(webhook_config=""), NOW + DAY)

    assert first.active_ca.common_name != second.active_ca.common_name

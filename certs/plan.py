"""Decide what `kubefence certs ensure` must create, renew and write.

`plan(state, options, now)` is a pure function: it reads the two Secrets and
the webhook configuration as plain data, parses the PEM in them, and returns
a `Plan`. It generates no key, opens no file or socket, reads no clock and
logs nothing. New keys appear in the plan as `NewCa` / `NewLeaf`
placeholders; `materialize` (in material.py) turns them into PEM.

The rule that keeps every admission call working: the serving certificate
moves to a new issuer only when the clients already trust that issuer.
"Trusted" means present in the caBundle of every webhook of the
configuration as read at the start of the run (or, without a webhook
configuration, in the CA Secret's bundle). A CA rotation therefore takes
three runs:

1. start: a new CA is stored as the next CA and added to the bundle, next
   to the current one; the serving certificate stays.
2. promote: once the bundle read back contains the next CA, it becomes the
   current CA and a serving certificate signed by it is issued. The old CA
   stays in the bundle as a retired CA.
3. drop: once the serving certificate of the current CA is older than
   `ca_drop_after` (time for every webhook pod to load it), retired CAs leave
   the bundle.

A serving certificate that cannot serve at all (missing, unparsable, key
mismatch, expired, wrong names, unknown issuer) is replaced at once by one
from the current CA: clients fail with it anyway. The I/O shell writes the
serving Secret after the caBundle patch, so the bundle trusts the new issuer
first.
"""

import datetime
from collections.abc import Mapping
from dataclasses import dataclass, field

from cryptography import x509

from kubefence.certs import pki
from kubefence.certs.options import EnsureOptions, format_duration

TLS_SECRET_TYPE = "kubernetes.io/tls"

# Keys of both Secrets. The CA Secret uses tls.crt / tls.key for the current
# CA so that it can have the kubernetes.io/tls type, which requires them.
CERT_KEY = "tls.crt"
KEY_KEY = "tls.key"
BUNDLE_KEY = "ca.crt"
NEXT_CERT_KEY = "next.crt"
NEXT_KEY_KEY = "next.key"
CA_SECRET_KEYS = (CERT_KEY, KEY_KEY, BUNDLE_KEY, NEXT_CERT_KEY, NEXT_KEY_KEY)
TLS_SECRET_KEYS = (CERT_KEY, KEY_KEY, BUNDLE_KEY)

# Step names, in the order a run can take them.
STEP_CREATE_CA = "create-ca"
STEP_REPLACE_CA = "replace-ca"
STEP_START_CA_ROTATION = "start-ca-rotation"
STEP_PROMOTE_CA = "promote-ca"
STEP_DROP_RETIRED_CAS = "drop-retired-cas"
STEP_ISSUE_LEAF = "issue-leaf"
STEP_WRITE_CA_SECRET = "write-ca-secret"
STEP_PATCH_CA_BUNDLE = "patch-ca-bundle"
STEP_WRITE_TLS_SECRET = "write-tls-secret"


@dataclass(frozen=True)
class SecretState:
    """A Secret as read from the API: decoded data and the resourceVersion to write against."""

    data: Mapping[str, bytes]
    resource_version: str
    type: str = TLS_SECRET_TYPE
    labels: Mapping[str, str] = field(default_factory=dict)
    """Kept as they are when the Secret is written back; `plan` ignores them."""
    annotations: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class WebhookState:
    """The MutatingWebhookConfiguration as read: one caBundle per webhook (b'' when unset)."""

    resource_version: str
    webhook_names: tuple[str, ...]
    ca_bundles: tuple[bytes, ...]


@dataclass(frozen=True)
class ClusterState:
    """Everything `plan` reads; None means the object does not exist (or no configuration is named)."""

    ca_secret: SecretState | None
    tls_secret: SecretState | None
    webhook: WebhookState | None


@dataclass(frozen=True)
class NewCa:
    """Placeholder for a CA that `materialize` generates."""

    common_name: str
    key_type: str
    validity: datetime.timedelta


@dataclass(frozen=True)
class NewLeaf:
    """Placeholder for a serving certificate that `materialize` generates, signed by the plan's active CA."""

    dns_names: tuple[str, ...]
    key_type: str
    validity: datetime.timedelta


@dataclass(frozen=True)
class Plan:
    """The outcome of one run: the CAs and serving pair to hold, and which writes that takes."""

    active_ca: pki.KeyPair | NewCa
    pending_ca: pki.KeyPair | NewCa | None
    retired_cas: tuple[bytes, ...]
    """PEM certificates of former CAs still in the bundle (no keys are kept for them)."""
    leaf: pki.KeyPair | NewLeaf
    ca_secret_type: str
    tls_secret_type: str
    write_ca_secret: bool
    patch_webhook: bool
    write_tls_secret: bool
    steps: tuple[str, ...]
    """Step names (STEP_*) in execution order."""
    reasons: tuple[str, ...]
    """Reasons for each step taken or deferred, one sentence each (no key material)."""
    repairs: tuple[str, ...]
    """Problems found in the stored material and repaired; logged as warnings."""

    @property
    def changes(self) -> bool:
        return self.write_ca_secret or self.patch_webhook or self.write_tls_secret


@dataclass(frozen=True)
class _Ca:
    pair: pki.KeyPair
    certificate: x509.Certificate
    fingerprint: str


@dataclass(frozen=True)
class _Leaf:
    pair: pki.KeyPair
    certificate: x509.Certificate


@dataclass
class _Notes:
    steps: list[str] = field(default_factory=list)
    reasons: list[str] = field(default_factory=list)
    repairs: list[str] = field(default_factory=list)


def plan(state: ClusterState, options: EnsureOptions, now: datetime.datetime) -> Plan:
    """Decide the CAs, the serving pair and the writes for one run of `kubefence certs ensure`.

    `now` must be timezone-aware; certificate times are compared in UTC.
    """
    if now.tzinfo is None:
        raise ValueError(f"invalid time {now!r}: expected a timezone-aware datetime")
    notes = _Notes()
    ca_data = state.ca_secret.data if state.ca_secret else {}

    # What the Secrets and the webhook configuration contain now.
    active = _read_ca(ca_data, CERT_KEY, KEY_KEY, now, "current CA", notes, state.ca_secret is not None)
    has_next = NEXT_CERT_KEY in ca_data or NEXT_KEY_KEY in ca_data
    pending = _read_ca(ca_data, NEXT_CERT_KEY, NEXT_KEY_KEY, now, "next CA", notes, has_next)
    previous_bundle = _previous_bundle(state, notes)
    trusted = _trusted_fingerprints(state)
    new_ca = NewCa(f"kubefence-ca-{now:%Y%m%dT%H%M%SZ}", options.key_type, options.ca_validity)

    active_ca, pending = _choose_current_ca(state, options, active, pending, new_ca, notes)
    active_ca, pending_ca, promoted_from = _advance_rotation(
        options, active_ca, pending, trusted, previous_bundle, new_ca, now, notes
    )

    # Former CAs still in the bundle, so that the serving certificate of any
    # webhook pod that has not reloaded yet stays trusted.
    exclude = {ca.fingerprint for ca in (active_ca, pending_ca) if isinstance(ca, _Ca)}
    candidates = list(previous_bundle)
    if promoted_from is not None:
        candidates.insert(0, promoted_from.certificate)
    retired = _retired_cas(candidates, exclude, now)

    leaf = _choose_leaf(state, options, active_ca, pending_ca, retired, trusted, now, notes)
    retired = _drop_retired(options, active_ca, pending_ca, retired, leaf, now, notes)
    return _finish(state, options, active_ca, pending_ca, retired, leaf, notes)


def _choose_current_ca(state, options, active, pending, new_ca, notes: _Notes):
    """Keep the current CA, replace an unusable one, or create the first one; return it and the next CA."""
    if active is not None:
        return active, pending
    if pending is not None:
        notes.steps.append(STEP_REPLACE_CA)
        notes.reasons.append("the current CA is unusable, so the next CA of the rotation in progress replaces it")
        return pending, None
    if state.ca_secret is None:
        notes.steps.append(STEP_CREATE_CA)
        notes.reasons.append(f"the CA Secret {options.ca_secret!r} does not exist")
    else:
        notes.steps.append(STEP_REPLACE_CA)
        notes.reasons.append("the current CA is unusable, so a new CA replaces it")
    return new_ca, None


def _advance_rotation(options, active_ca, pending, trusted, previous_bundle, new_ca, now, notes: _Notes):
    """Promote a next CA the clients trust, or start a rotation; return the current, next and promoted-from CAs."""
    if pending is not None and pending.fingerprint in trusted:
        notes.steps.append(STEP_PROMOTE_CA)
        notes.reasons.append(f"every webhook's caBundle trusts the next CA {pending.fingerprint[:16]}, so it becomes the current CA")
        return pending, None, active_ca
    if pending is not None:
        notes.reasons.append(f"the next CA {pending.fingerprint[:16]} waits until every webhook's caBundle contains it")
        return active_ca, pending, None
    if not isinstance(active_ca, _Ca):
        # A CA created in this run is not rotated in the same run.
        return active_ca, None, None

    not_after = active_ca.certificate.not_valid_after_utc
    if not_after - now <= options.ca_renew_before:
        notes.steps.append(STEP_START_CA_ROTATION)
        notes.reasons.append(f"the current CA expires within {format_duration(options.ca_renew_before)} (at {not_after.isoformat()})")
        return active_ca, new_ca, None
    if options.rotate != "ca":
        return active_ca, None, None
    if _retired_cas(previous_bundle, {active_ca.fingerprint}, now):
        notes.reasons.append("a CA rotation was requested but the previous one still has a retired CA in the bundle, so it continues")
        return active_ca, None, None
    notes.steps.append(STEP_START_CA_ROTATION)
    notes.reasons.append("a CA rotation was requested (--rotate ca)")
    return active_ca, new_ca, None


def _choose_leaf(state, options, active_ca, pending_ca, retired, trusted, now, notes: _Notes) -> _Leaf | NewLeaf:
    """Keep the serving pair, or issue a new one from the current CA when that is needed and safe."""
    leaf = _read_leaf(state.tls_secret, options, now, notes)
    issuers = [ca.certificate for ca in (active_ca, pending_ca) if isinstance(ca, _Ca)] + retired
    issuer = _issuer_of(leaf, issuers) if leaf else None
    if leaf is not None and issuer is None:
        notes.repairs.append("serving certificate: issued by a CA that is neither current nor in the bundle; issuing a new one")
        leaf = None

    new_leaf = NewLeaf(tuple(options.dns_names), options.key_type, options.leaf_validity)
    if leaf is None:
        # Nothing that serves now can be lost, so the new pair does not wait for the bundle.
        if state.tls_secret is None:
            notes.reasons.append(f"the serving Secret {options.tls_secret!r} does not exist")
        notes.steps.append(STEP_ISSUE_LEAF)
        return new_leaf

    renewal_reasons = _leaf_renewal_reasons(leaf, issuer, active_ca, options, now)
    if not renewal_reasons:
        return leaf
    if not (isinstance(active_ca, _Ca) and active_ca.fingerprint in trusted):
        notes.reasons.append(
            f"serving certificate renewal ({'; '.join(renewal_reasons)}) waits until every webhook's caBundle trusts the current CA"
        )
        return leaf
    notes.reasons.extend(renewal_reasons)
    notes.steps.append(STEP_ISSUE_LEAF)
    return new_leaf


def _drop_retired(options, active_ca, pending_ca, retired, leaf, now, notes: _Notes) -> list:
    """Drop retired CAs once the current CA's serving certificate has been out long enough for every pod to serve it."""
    if not retired:
        return retired
    settled = (
        pending_ca is None
        and isinstance(leaf, _Leaf)
        and isinstance(active_ca, _Ca)
        and pki.is_issued_by(leaf.certificate, active_ca.certificate)
    )
    if not settled:
        notes.reasons.append(f"{len(retired)} retired CA(s) stay in the bundle while the serving certificate may still come from them")
        return retired
    issued_at = leaf.certificate.not_valid_before_utc + pki.BACKDATE
    if now < issued_at + options.ca_drop_after:
        notes.reasons.append(f"{len(retired)} retired CA(s) stay in the bundle until {(issued_at + options.ca_drop_after).isoformat()}")
        return retired
    notes.steps.append(STEP_DROP_RETIRED_CAS)
    notes.reasons.append(
        f"the serving certificate of the current CA was issued more than {format_duration(options.ca_drop_after)} ago, "
        f"so {len(retired)} retired CA(s) leave the bundle"
    )
    return []


def _finish(state, options, active_ca, pending_ca, retired, leaf, notes: _Notes) -> Plan:
    """Compare the outcome with what is stored and decide the writes."""
    retired_pem = tuple(pki.pem_of(certificate) for certificate in retired)
    has_new = isinstance(active_ca, NewCa) or isinstance(pending_ca, NewCa)
    ca_type = _secret_type(state.ca_secret, "CA", notes)
    tls_type = _secret_type(state.tls_secret, "serving", notes)
    _note_extra_keys(state.ca_secret, CA_SECRET_KEYS, "CA", notes)
    _note_extra_keys(state.tls_secret, TLS_SECRET_KEYS, "serving", notes)

    if has_new or state.ca_secret is None:
        write_ca = True
        bundle = None
    else:
        bundle = bundle_pem(active_ca.pair, pending_ca.pair if pending_ca else None, retired_pem)
        expected_ca_data = ca_secret_data(active_ca.pair, pending_ca.pair if pending_ca else None, bundle)
        write_ca = dict(state.ca_secret.data) != expected_ca_data

    patch = False
    if state.webhook is not None:
        patch = bundle is None or any(current != bundle for current in state.webhook.ca_bundles)

    if bundle is None or isinstance(leaf, NewLeaf) or state.tls_secret is None:
        write_tls = True
    else:
        expected_tls_data = tls_secret_data(leaf.pair, bundle)
        write_tls = dict(state.tls_secret.data) != expected_tls_data

    for flag, step in ((write_ca, STEP_WRITE_CA_SECRET), (patch, STEP_PATCH_CA_BUNDLE), (write_tls, STEP_WRITE_TLS_SECRET)):
        if flag:
            notes.steps.append(step)
    if patch and state.webhook is not None and any(not current for current in state.webhook.ca_bundles):
        notes.reasons.append("a webhook of the configuration has no caBundle")

    return Plan(
        active_ca=active_ca.pair if isinstance(active_ca, _Ca) else active_ca,
        pending_ca=pending_ca.pair if isinstance(pending_ca, _Ca) else pending_ca,
        retired_cas=retired_pem,
        leaf=leaf.pair if isinstance(leaf, _Leaf) else leaf,
        ca_secret_type=ca_type,
        tls_secret_type=tls_type,
        write_ca_secret=write_ca,
        patch_webhook=patch,
        write_tls_secret=write_tls,
        steps=tuple(notes.steps),
        reasons=tuple(notes.reasons),
        repairs=tuple(notes.repairs),
    )


def bundle_pem(active: pki.KeyPair, pending: pki.KeyPair | None, retired: tuple[bytes, ...]) -> bytes:
    """Concatenate the trusted CA certificates: current first, then next, then retired."""
    parts = [pki.pem_of(pki.load_certificates(active.cert_pem, "current CA")[0])]
    if pending is not None:
        parts.append(pki.pem_of(pki.load_certificates(pending.cert_pem, "next CA")[0]))
    parts.extend(retired)
    return b"".join(parts)


def ca_secret_data(active: pki.KeyPair, pending: pki.KeyPair | None, bundle: bytes) -> dict[str, bytes]:
    data = {CERT_KEY: active.cert_pem, KEY_KEY: active.key_pem, BUNDLE_KEY: bundle}
    if pending is not None:
        data[NEXT_CERT_KEY] = pending.cert_pem
        data[NEXT_KEY_KEY] = pending.key_pem
    return data


def tls_secret_data(leaf: pki.KeyPair, bundle: bytes) -> dict[str, bytes]:
    return {CERT_KEY: leaf.cert_pem, KEY_KEY: leaf.key_pem, BUNDLE_KEY: bundle}


# Reading the stored material ------------------------------------------------


def _read_ca(data, cert_key, key_key, now, label, notes: _Notes, expected: bool) -> _Ca | None:
    """Parse one CA pair of the CA Secret; a broken one is noted as a repair and read as absent."""
    if not expected:
        return None
    missing = [key for key in (cert_key, key_key) if not data.get(key)]
    if missing:
        notes.repairs.append(f"{label}: the CA Secret has no {' or '.join(repr(key) for key in missing)}")
        return None
    try:
        certificate, _ = pki.load_pair(data[cert_key], data[key_key], now, label)
    except pki.CertificateError as error:
        notes.repairs.append(str(error))
        return None
    if not pki.is_ca(certificate):
        notes.repairs.append(f"{label}: the certificate is not a CA (basicConstraints CA:TRUE with keyCertSign is required)")
        return None
    return _Ca(pki.KeyPair(data[cert_key], data[key_key]), certificate, pki.fingerprint(certificate))


def _previous_bundle(state: ClusterState, notes: _Notes) -> list[x509.Certificate]:
    """Collect the CA certificates clients may trust now: the CA Secret's bundle and every webhook's caBundle."""
    sources = []
    if state.ca_secret is not None:
        sources.append(("CA Secret bundle", state.ca_secret.data.get(BUNDLE_KEY, b"")))
        # A broken current CA whose certificate still parses may have signed the serving certificate.
        sources.append(("CA Secret certificate", state.ca_secret.data.get(CERT_KEY, b"")))
    if state.webhook is not None:
        for name, bundle in zip(state.webhook.webhook_names, state.webhook.ca_bundles):
            sources.append((f"caBundle of webhook {name!r}", bundle))
    seen: dict[str, x509.Certificate] = {}
    for label, pem in sources:
        if not pem:
            continue
        try:
            certificates = pki.load_certificates(pem, label)
        except pki.CertificateError as error:
            notes.repairs.append(str(error))
            continue
        for certificate in certificates:
            seen.setdefault(pki.fingerprint(certificate), certificate)
    return list(seen.values())


def _trusted_fingerprints(state: ClusterState) -> set[str]:
    """Fingerprints of the CAs that every client trusts now.

    With a webhook configuration: the CAs in the caBundle of every webhook
    that has one (a webhook without a bundle trusts nothing yet, so nothing
    it could lose). Without one: the CA Secret's bundle.
    """
    bundles: list[bytes] = []
    if state.webhook is not None:
        bundles = [bundle for bundle in state.webhook.ca_bundles if bundle]
    if not bundles and state.ca_secret is not None:
        bundles = [state.ca_secret.data.get(BUNDLE_KEY, b"")]
    trusted: set[str] | None = None
    for bundle in bundles:
        try:
            fingerprints = {pki.fingerprint(c) for c in pki.load_certificates(bundle, "bundle")}
        except pki.CertificateError:
            fingerprints = set()
        trusted = fingerprints if trusted is None else trusted & fingerprints
    return trusted or set()


def _retired_cas(candidates, exclude: set[str], now) -> list[x509.Certificate]:
    retired = []
    for certificate in candidates:
        fingerprint = pki.fingerprint(certificate)
        if fingerprint in exclude or not pki.is_ca(certificate) or now >= certificate.not_valid_after_utc:
            continue
        exclude = exclude | {fingerprint}
        retired.append(certificate)
    return retired


def _read_leaf(secret: SecretState | None, options: EnsureOptions, now, notes: _Notes) -> _Leaf | None:
    """Parse the serving pair; one that cannot serve is noted as a repair and read as absent."""
    if secret is None:
        return None
    missing = [key for key in (CERT_KEY, KEY_KEY) if not secret.data.get(key)]
    if missing:
        notes.repairs.append(f"serving certificate: the serving Secret has no {' or '.join(repr(key) for key in missing)}")
        return None
    try:
        certificate, _ = pki.load_pair(secret.data[CERT_KEY], secret.data[KEY_KEY], now, "serving certificate")
    except pki.CertificateError as error:
        notes.repairs.append(str(error))
        return None
    if pki.is_ca(certificate):
        notes.repairs.append("serving certificate: is a CA certificate; expected an end-entity certificate")
        return None
    missing_names = [name for name in options.dns_names if name not in pki.dns_names_of(certificate)]
    if missing_names:
        notes.repairs.append(f"serving certificate: does not name {', '.join(missing_names)} in subjectAltName")
        return None
    return _Leaf(pki.KeyPair(secret.data[CERT_KEY], secret.data[KEY_KEY]), certificate)


def _issuer_of(leaf: _Leaf, cas: list[x509.Certificate]) -> x509.Certificate | None:
    for certificate in cas:
        if pki.is_issued_by(leaf.certificate, certificate):
            return certificate
    return None


def _leaf_renewal_reasons(leaf: _Leaf, issuer, active_ca, options: EnsureOptions, now) -> list[str]:
    """Why a serving certificate that can still serve should be replaced; empty to keep it."""
    reasons = []
    if options.rotate == "leaf":
        reasons.append("a new serving certificate was requested (--rotate leaf)")
    not_after = leaf.certificate.not_valid_after_utc
    if not_after - now <= options.renew_before:
        reasons.append(f"the serving certificate expires within {format_duration(options.renew_before)} (at {not_after.isoformat()})")
    key_type = pki.key_type_of(leaf.certificate.public_key())
    if key_type != options.key_type:
        reasons.append(f"the serving key is {key_type}, not the requested {options.key_type}")
    if not isinstance(active_ca, _Ca) or pki.fingerprint(issuer) != active_ca.fingerprint:
        reasons.append("the serving certificate is not signed by the current CA")
    return reasons


def _secret_type(secret: SecretState | None, label: str, notes: _Notes) -> str:
    if secret is None or secret.type == TLS_SECRET_TYPE:
        return TLS_SECRET_TYPE
    # The type of a Secret cannot change; writing the data is still safe.
    notes.repairs.append(f"the {label} Secret has type {secret.type!r}, not {TLS_SECRET_TYPE!r}; its data is kept up to date, but delete it to fix the type")
    return secret.type


def _note_extra_keys(secret: SecretState | None, known: tuple[str, ...], label: str, notes: _Notes) -> None:
    if secret is None:
        return
    extra = sorted(set(secret.data) - set(known))
    if extra:
        notes.repairs.append(f"the {label} Secret has unexpected keys {extra}; they are removed")

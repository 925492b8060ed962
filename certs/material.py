"""Turn a `Plan` into the bytes to write: generate the keys it requests and fill both Secrets."""

import datetime
from dataclasses import dataclass

from kubefence.certs import pki
from kubefence.certs.plan import NewCa, NewLeaf, Plan, bundle_pem, ca_secret_data, tls_secret_data


@dataclass(frozen=True)
class Material:
    """The data of both Secrets and the caBundle, ready to write."""

    ca_secret_data: dict[str, bytes]
    tls_secret_data: dict[str, bytes]
    ca_bundle: bytes
    active_ca: pki.KeyPair
    pending_ca: pki.KeyPair | None
    leaf: pki.KeyPair


def materialize(plan: Plan, now: datetime.datetime) -> Material:
    """Generate the CAs and the serving pair that `plan` contains as placeholders (no I/O, but random keys)."""
    active = _ca(plan.active_ca, now)
    pending = _ca(plan.pending_ca, now) if plan.pending_ca is not None else None
    leaf = plan.leaf
    if isinstance(leaf, NewLeaf):
        leaf = pki.generate_serving(
            active, list(leaf.dns_names), validity=leaf.validity, key_type=leaf.key_type, now=now
        )
    bundle = bundle_pem(active, pending, plan.retired_cas)
    return Material(
        ca_secret_data=ca_secret_data(active, pending, bundle),
        tls_secret_data=tls_secret_data(leaf, bundle),
        ca_bundle=bundle,
        active_ca=active,
        pending_ca=pending,
        leaf=leaf,
    )


def _ca(value: pki.KeyPair | NewCa, now) -> pki.KeyPair:
    if isinstance(value, NewCa):
        return pki.generate_ca(value.common_name, validity=value.validity, key_type=value.key_type, now=now)
    return value

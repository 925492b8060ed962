"""Generation and the checks that reject unusable certificates and keys."""

import datetime

import pytest
from .conftest import DAY, NOW, SERVICE_DNS_NAMES

from kubefence.certs import pki


def test_generate_serving_names_and_usage(ca_a, leaf_a):
    certificate = leaf_a.certificate

    assert pki.dns_names_of(certificate) == SERVICE_DNS_NAMES
    assert not pki.is_ca(certificate)
    assert pki.is_issued_by(certificate, ca_a.certificate)
    assert certificate.not_valid_before_utc == NOW - 10 * DAY - pki.BACKDATE


@pytest.mark.parametrize("key_type", pki.KEY_TYPES)
def test_generate_key_types(key_type):
    ca = pki.generate_ca(key_type=key_type)
    leaf = pki.generate_serving(ca, ["localhost"], ["127.0.0.1", "::1"], key_type=key_type)

    assert pki.key_type_of(ca.certificate.public_key()) == key_type
    assert pki.key_type_of(leaf.certificate.public_key()) == key_type


def test_generate_key_invalid_type():
    with pytest.raises(ValueError, match=r"invalid key type 'dsa-1024'; expected one of: ecdsa-p256"):
        pki.generate_key("dsa-1024")


def test_load_pair_accepts_valid(leaf_a):
    certificate, key = pki.load_pair(leaf_a.cert_pem, leaf_a.key_pem, NOW, "serving")

    assert certificate == leaf_a.certificate
    assert key.public_key().public_numbers() == certificate.public_key().public_numbers()


def test_load_pair_mismatched_key(leaf_a, ca_b):
    with pytest.raises(pki.CertificateError, match="serving: the private key does not belong to the certificate"):
        pki.load_pair(leaf_a.cert_pem, ca_b.key_pem, NOW, "serving")


def test_load_pair_expired(leaf_a):
    later = leaf_a.certificate.not_valid_after_utc

    with pytest.raises(pki.CertificateError, match="certificate expired at"):
        pki.load_pair(leaf_a.cert_pem, leaf_a.key_pem, later, "serving")


def test_load_pair_not_yet_valid(leaf_a):
    with pytest.raises(pki.CertificateError, match="not valid before"):
        pki.load_pair(leaf_a.cert_pem, leaf_a.key_pem, NOW - 11 * DAY, "serving")


@pytest.mark.parametrize(
    ("cert_pem", "key_pem", "message"),
    [
        (b"", None, "serving certificate: empty"),
        (b"-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n", None, "not valid PEM certificates"),
        (None, b"", "serving key: empty"),
        (None, b"not a key", "not a valid unencrypted PEM private key"),
    ],
    ids=["empty-cert", "bad-cert", "empty-key", "bad-key"],
)
def test_load_pair_unparsable(leaf_a, cert_pem, key_pem, message):
    with pytest.raises(pki.CertificateError, match=message):
        pki.load_pair(cert_pem if cert_pem is not None else leaf_a.cert_pem, key_pem if key_pem is not None else leaf_a.key_pem, NOW, "serving")


def test_load_pair_half_written_certificate(leaf_a):
    half = leaf_a.cert_pem[: len(leaf_a.cert_pem) // 2]

    with pytest.raises(pki.CertificateError, match="not valid PEM certificates"):
        pki.load_pair(half, leaf_a.key_pem, NOW, "serving")


def test_wrong_san_is_not_listed(ca_a):
    other = pki.generate_serving(ca_a, ["other.example"], now=NOW)

    assert "kubefence-webhook.kubefence.svc" not in pki.dns_names_of(other.certificate)
    assert pki.dns_names_of(other.certificate) == ["other.example"]


def test_is_issued_by_other_ca(leaf_a, ca_b):
    assert pki.is_issued_by(leaf_a.certificate, ca_b.certificate) is False


def test_is_ca_false_for_serving_certificate(leaf_a, ca_a):
    assert pki.is_ca(ca_a.certificate) is True
    assert pki.is_ca(leaf_a.certificate) is False


def test_generate_serving_rejects_non_ca_issuer(leaf_a):
    with pytest.raises(pki.CertificateError, match="the issuing certificate is not a CA"):
        pki.generate_serving(leaf_a, ["example"], now=NOW)


def test_generate_serving_needs_a_name(ca_a):
    with pytest.raises(ValueError, match="at least one DNS name or IP address"):
        pki.generate_serving(ca_a, [], now=NOW)


def test_generate_serving_cut_to_ca_expiry():
    ca = pki.generate_ca(validity=datetime.timedelta(days=10), now=NOW)

    leaf = pki.generate_serving(ca, ["example"], validity=datetime.timedelta(days=365), now=NOW)

    assert leaf.certificate.not_valid_after_utc == ca.certificate.not_valid_after_utc


def test_fingerprint_is_hex_sha256(ca_a):
    value = pki.fingerprint(ca_a.certificate)

    assert len(value) == 64
    assert int(value, 16) >= 0

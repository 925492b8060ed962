"""Settings of `kubefence certs ensure`, checked when they are built."""

import datetime
import ipaddress
import re
from dataclasses import dataclass

from kubefence.certs.pki import KEY_TYPES

ROTATE_CHOICES = ("none", "leaf", "ca")

_DURATION_PART = re.compile(r"(\d+)(d|h|m|s)")
_DURATION_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}

# Object name rules of the Kubernetes API. A Secret or webhook configuration
# name is a DNS-1123 subdomain. A Service or namespace name is a DNS-1123 label.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


class OptionsError(ValueError):
    """An invalid option of the certificate commands; the message names the value and the accepted form."""


def parse_duration(text: str, option: str = "duration") -> datetime.timedelta:
    """Parse a duration such as '720h', '90d', '1h30m' or '45s' (units d, h, m, s)."""
    if not isinstance(text, str) or not text:
        raise OptionsError(f"{option}: invalid duration {text!r}; expected a number and unit such as 720h, 90d, 30m")
    position = 0
    seconds = 0
    for match in _DURATION_PART.finditer(text):
        if match.start() != position:
            break
        seconds += int(match.group(1)) * _DURATION_UNITS[match.group(2)]
        position = match.end()
    if position != len(text):
        raise OptionsError(f"{option}: invalid duration {text!r}; expected a number and unit such as 720h, 90d, 30m")
    return datetime.timedelta(seconds=seconds)


def format_duration(value: datetime.timedelta) -> str:
    """Write a duration in the form `parse_duration` reads, in whole hours when it is one."""
    seconds = int(value.total_seconds())
    if seconds and seconds % 3600 == 0:
        return f"{seconds // 3600}h"
    return f"{seconds}s"


@dataclass(frozen=True)
class EnsureOptions:
    """Settings of one `kubefence certs ensure` run: the objects it manages and the rotation policy."""

    namespace: str
    """Namespace of the Service and of both Secrets."""
    service: str
    """Service in front of the webhook; the serving certificate names it in four DNS forms."""
    ca_secret: str
    """Secret holding the CA (tls.crt, tls.key), the trust bundle (ca.crt) and, during a rotation, the next CA."""
    tls_secret: str
    """Secret the webhook mounts: serving certificate (tls.crt), its key (tls.key) and the bundle (ca.crt)."""
    webhook_config: str = ""
    """MutatingWebhookConfiguration whose every webhook gets the bundle as clientConfig.caBundle; empty: none."""
    cluster_domain: str = "cluster.local"
    """Cluster DNS domain used for the fully qualified Service name."""
    rotate: str = "none"
    """Forced rotation: 'none', 'leaf' (new serving certificate) or 'ca' (start a CA rotation)."""
    renew_before: datetime.timedelta = datetime.timedelta(days=30)
    """The serving certificate is renewed once it expires within this window."""
    ca_renew_before: datetime.timedelta = datetime.timedelta(days=90)
    """A CA rotation starts by itself once the CA expires within this window."""
    ca_drop_after: datetime.timedelta = datetime.timedelta(minutes=10)
    """Retired CAs leave the bundle only once the serving certificate of the current CA is this old,
    so every webhook pod has had time to load it (Secret volume sync plus reload interval)."""
    key_type: str = "ecdsa-p256"
    """Key algorithm of newly generated keys; one of KEY_TYPES."""
    ca_validity: datetime.timedelta = datetime.timedelta(days=3650)
    """Lifetime of a new CA."""
    leaf_validity: datetime.timedelta = datetime.timedelta(days=365)
    """Lifetime of a new serving certificate, cut to the CA's own expiry."""

    def __post_init__(self):
        problems = []
        if not _DNS_LABEL.fullmatch(self.namespace or ""):
            problems.append(f"--namespace: invalid namespace {self.namespace!r}; expected a DNS-1123 label such as 'kubefence-system'")
        if not _DNS_LABEL.fullmatch(self.service or ""):
            problems.append(f"--service: invalid Service name {self.service!r}; expected a DNS-1123 label such as 'kubefence-webhook'")
        for option, value in (("--ca-secret", self.ca_secret), ("--tls-secret", self.tls_secret)):
            if not _valid_subdomain(value):
                problems.append(f"{option}: invalid Secret name {value!r}; expected a DNS-1123 subdomain")
        if self.ca_secret == self.tls_secret:
            problems.append(f"--ca-secret and --tls-secret: both are {self.ca_secret!r}; expected two different Secrets")
        if self.webhook_config and not _valid_subdomain(self.webhook_config):
            problems.append(f"--webhook-config: invalid name {self.webhook_config!r}; expected a DNS-1123 subdomain")
        if not _valid_subdomain(self.cluster_domain):
            problems.append(f"--cluster-domain: invalid domain {self.cluster_domain!r}; expected a DNS name such as 'cluster.local'")

        if self.rotate not in ROTATE_CHOICES:
            problems.append(f"--rotate: invalid value {self.rotate!r}; expected one of: {', '.join(ROTATE_CHOICES)}")
        if self.key_type not in KEY_TYPES:
            problems.append(f"--key-type: invalid key type {self.key_type!r}; expected one of: {', '.join(KEY_TYPES)}")

        if self.leaf_validity <= self.renew_before:
            problems.append(
                f"--leaf-validity {format_duration(self.leaf_validity)!r} must be longer than --renew-before "
                f"{format_duration(self.renew_before)!r}, or every run would renew the serving certificate"
            )
        if self.ca_validity <= self.ca_renew_before:
            problems.append(
                f"--ca-validity {format_duration(self.ca_validity)!r} must be longer than --ca-renew-before "
                f"{format_duration(self.ca_renew_before)!r}, or every run would start a CA rotation"
            )
        for option, value in (("--renew-before", self.renew_before), ("--ca-renew-before", self.ca_renew_before),
                              ("--ca-drop-after", self.ca_drop_after)):
            if value < datetime.timedelta(0):
                problems.append(f"{option}: negative duration {value!r}; expected zero or more")

        if problems:
            raise OptionsError("; ".join(problems))

    @property
    def dns_names(self) -> list[str]:
        """The Service's DNS names, short form first (the certificate's common name)."""
        qualified = f"{self.service}.{self.namespace}"
        return [self.service, qualified, f"{qualified}.svc", f"{qualified}.svc.{self.cluster_domain}"]


# A DNS name in a certificate SAN: letters, digits and hyphens in labels of
# at most 63 characters, optionally behind one leading wildcard label.
_SAN_DNS_LABEL = re.compile(r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?")


def check_san_dns_name(name: str, option: str = "--dns") -> None:
    """Raise OptionsError unless `name` is a DNS name that can go into a certificate SAN."""
    try:
        ipaddress.ip_address(name)
    except ValueError:
        pass
    else:
        raise OptionsError(f"{option}: {name!r} is an IP address, not a DNS name; pass it with --ip")
    labels = name.split(".")
    if labels[0] == "*" and len(labels) > 1:
        labels = labels[1:]
    if len(name) > 253 or not all(_SAN_DNS_LABEL.fullmatch(label) for label in labels):
        raise OptionsError(
            f"{option}: invalid DNS name {name!r}; expected labels of letters, digits and hyphens separated "
            f"by dots, such as 'webhook.example.com' (a leading '*.' is allowed)"
        )


def check_validities(ca_validity: datetime.timedelta, leaf_validity: datetime.timedelta) -> None:
    """Raise OptionsError unless both lifetimes are positive and the serving certificate ends with the CA at the latest."""
    for option, value in (("--ca-validity", ca_validity), ("--leaf-validity", leaf_validity)):
        if value <= datetime.timedelta(0):
            raise OptionsError(f"{option}: invalid duration {format_duration(value)!r}; expected more than zero")
    if leaf_validity > ca_validity:
        raise OptionsError(
            f"--leaf-validity {format_duration(leaf_validity)!r} is longer than --ca-validity "
            f"{format_duration(ca_validity)!r}; a serving certificate cannot outlive its CA"
        )


def _valid_subdomain(value: str) -> bool:
    return bool(value) and len(value) <= 253 and bool(_DNS_SUBDOMAIN.fullmatch(value))

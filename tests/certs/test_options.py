"""Checks of the `certs ensure` options and the duration syntax."""

import datetime

import pytest
from .conftest import make_options

from kubefence.certs.options import OptionsError, format_duration, parse_duration


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("720h", datetime.timedelta(hours=720)),
        ("90d", datetime.timedelta(days=90)),
        ("1h30m", datetime.timedelta(minutes=90)),
        ("45s", datetime.timedelta(seconds=45)),
        ("0s", datetime.timedelta(0)),
    ],
    ids=["hours", "days", "hours-minutes", "seconds", "zero"],
)
def test_parse_duration_valid(text, expected):
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "720", "h", "1.5h", "-1h", "1w", "1h 30m", "1hx"], ids=["empty", "no-unit", "no-number", "fraction", "negative", "weeks", "space", "trailing"])
def test_parse_duration_invalid(text):
    with pytest.raises(OptionsError, match=rf"--renew-before: invalid duration {text!r}; expected a number and unit"):
        parse_duration(text, "--renew-before")


def test_format_duration_round_trip():
    assert format_duration(datetime.timedelta(days=30)) == "720h"
    assert parse_duration(format_duration(datetime.timedelta(seconds=90))) == datetime.timedelta(seconds=90)


def test_options_dns_names():
    options = make_options(cluster_domain="corp.internal")

    assert options.dns_names == [
        "kubefence-webhook",
        "kubefence-webhook.kubefence",
        "kubefence-webhook.kubefence.svc",
        "kubefence-webhook.kubefence.svc.corp.internal",
    ]


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"namespace": "Kube_Fence"}, "--namespace: invalid namespace 'Kube_Fence'"),
        ({"service": "web.hook"}, "--service: invalid Service name 'web.hook'"),
        ({"ca_secret": ""}, "--ca-secret: invalid Secret name ''"),
        ({"tls_secret": "kubefence-ca"}, "both are 'kubefence-ca'"),
        ({"webhook_config": "Bad Name"}, "--webhook-config: invalid name 'Bad Name'"),
        ({"rotate": "all"}, "--rotate: invalid value 'all'; expected one of: none, leaf, ca"),
        ({"key_type": "rsa-1024"}, "--key-type: invalid key type 'rsa-1024'"),
        ({"leaf_validity": datetime.timedelta(days=30)}, "--leaf-validity '720h' must be longer than --renew-before '720h'"),
        ({"ca_validity": datetime.timedelta(days=60)}, "--ca-validity '1440h' must be longer than --ca-renew-before '2160h'"),
        ({"ca_drop_after": datetime.timedelta(seconds=-1)}, "--ca-drop-after: negative duration"),
    ],
    ids=["namespace", "service", "ca-secret", "same-secrets", "webhook-config", "rotate", "key-type", "leaf-validity", "ca-validity", "drop-after"],
)
def test_options_invalid(overrides, message):
    with pytest.raises(OptionsError, match=message.replace("(", r"\(").replace(")", r"\)")):
        make_options(**overrides)


def test_options_frozen():
    options = make_options()

    with pytest.raises(AttributeError):
        options.rotate = "ca"

"""`kubefence certs ensure` and `kubefence certs generate`.

Only argparse runs at import time; the commands import cryptography and the
kubernetes client when they run.
"""

import argparse
import os

DEFAULT_RENEW_BEFORE = "720h"
DEFAULT_CA_RENEW_BEFORE = "2160h"
DEFAULT_CA_DROP_AFTER = "10m"
DEFAULT_CA_VALIDITY = "87600h"
DEFAULT_LEAF_VALIDITY = "8760h"
KEY_TYPE_CHOICES = ("ecdsa-p256", "rsa-2048", "rsa-3072", "rsa-4096")


def register(subparsers) -> None:
    certs = subparsers.add_parser("certs", help="webhook CA and serving certificates", description="Create, renew and rotate the webhook certificates.")
    commands = certs.add_subparsers(dest="certs_command", metavar="COMMAND", required=True)

    ensure = commands.add_parser(
        "ensure",
        help="create or renew the certificate Secrets and the webhook caBundle (idempotent)",
        description=(
            "Read the CA Secret, the serving Secret and the MutatingWebhookConfiguration, create or renew "
            "what is missing, expiring or requested, and write back with resourceVersion checks. "
            "Durations take the units d, h, m, s (for example 720h, 90d, 1h30m)."
        ),
    )
    ensure.add_argument("--namespace", default=None, help="namespace of the Service and Secrets (default: $POD_NAMESPACE)")
    ensure.add_argument("--service", required=True, metavar="NAME", help="webhook Service; its DNS names go into the serving certificate")
    ensure.add_argument("--cluster-domain", default="cluster.local", metavar="DOMAIN", help="cluster DNS domain (default: cluster.local)")
    ensure.add_argument("--ca-secret", required=True, metavar="NAME", help="Secret holding the CA and the trust bundle")
    ensure.add_argument("--tls-secret", required=True, metavar="NAME", help="Secret the webhook mounts (tls.crt, tls.key, ca.crt)")
    ensure.add_argument("--webhook-config", default="", metavar="NAME", help="MutatingWebhookConfiguration whose every webhook gets the caBundle")
    ensure.add_argument("--rotate", choices=("none", "leaf", "ca"), default="none", help="force a new serving certificate (leaf) or start a CA rotation (ca); default: none")
    ensure.add_argument("--renew-before", default=DEFAULT_RENEW_BEFORE, metavar="DURATION", help=f"renew the serving certificate when it expires within this window (default: {DEFAULT_RENEW_BEFORE})")
    ensure.add_argument("--ca-renew-before", default=DEFAULT_CA_RENEW_BEFORE, metavar="DURATION", help=f"start a CA rotation when the CA expires within this window (default: {DEFAULT_CA_RENEW_BEFORE})")
    ensure.add_argument("--ca-drop-after", default=DEFAULT_CA_DROP_AFTER, metavar="DURATION", help=f"keep a retired CA in the bundle until the new serving certificate is this old (default: {DEFAULT_CA_DROP_AFTER})")
    _add_key_options(ensure)
    ensure.add_argument("--kubeconfig", default=None, metavar="FILE", help="kubeconfig file (default: in-cluster config when running in a pod, else $KUBECONFIG or ~/.kube/config)")
    _add_log_level(ensure)
    ensure.set_defaults(func=run_ensure)

    generate = commands.add_parser(
        "generate",
        help="write a CA and a serving certificate to a directory",
        description="Write ca.crt, ca.key, tls.crt and tls.key to DIR (keys with mode 0600) for local use and tests.",
    )
    generate.add_argument("--out", required=True, metavar="DIR", help="directory to write into (created when missing)")
    generate.add_argument("--dns", action="append", default=[], metavar="NAME", help="DNS name of the server; repeatable (default with no --dns and no --ip: localhost and 127.0.0.1)")
    generate.add_argument("--ip", action="append", default=[], metavar="ADDR", help="IP address of the server; repeatable")
    _add_key_options(generate)
    generate.add_argument("--force", action="store_true", help="replace existing files")
    _add_log_level(generate)
    generate.set_defaults(func=run_generate)


def _add_key_options(parser) -> None:
    parser.add_argument("--key-type", choices=KEY_TYPE_CHOICES, default="ecdsa-p256", help="key algorithm of new keys (default: ecdsa-p256)")
    parser.add_argument("--ca-validity", default=DEFAULT_CA_VALIDITY, metavar="DURATION", help=f"lifetime of a new CA (default: {DEFAULT_CA_VALIDITY})")
    parser.add_argument("--leaf-validity", default=DEFAULT_LEAF_VALIDITY, metavar="DURATION", help=f"lifetime of a new serving certificate (default: {DEFAULT_LEAF_VALIDITY})")


def _add_log_level(parser) -> None:
    parser.add_argument("--log-level", default=os.environ.get("KUBEFENCE_LOG_LEVEL", "info"), choices=("debug", "info", "warning", "error"), help="log level (default: $KUBEFENCE_LOG_LEVEL or info)")


def run_ensure(args: argparse.Namespace) -> int:
    from kubefence.certs.ensure import EnsureError, KubeObjects, ensure
    from kubefence.certs.options import EnsureOptions, OptionsError, parse_duration
    from kubefence.common.logs import configure_logging, get_logger

    configure_logging(args.log_level)
    log = get_logger("kubefence.certs.cli")
    try:
        namespace = args.namespace or os.environ.get("POD_NAMESPACE", "")
        if not namespace:
            raise OptionsError("--namespace: missing; pass --namespace or set POD_NAMESPACE")
        options = EnsureOptions(
            namespace=namespace,
            service=args.service,
            cluster_domain=args.cluster_domain,
            ca_secret=args.ca_secret,
            tls_secret=args.tls_secret,
            webhook_config=args.webhook_config,
            rotate=args.rotate,
            renew_before=parse_duration(args.renew_before, "--renew-before"),
            ca_renew_before=parse_duration(args.ca_renew_before, "--ca-renew-before"),
            ca_drop_after=parse_duration(args.ca_drop_after, "--ca-drop-after"),
            key_type=args.key_type,
            ca_validity=parse_duration(args.ca_validity, "--ca-validity"),
            leaf_validity=parse_duration(args.leaf_validity, "--leaf-validity"),
        )
    except OptionsError as error:
        log.error("certs.invalid_options", error=str(error))
        return 2
    try:
        api_client = load_api_client(args.kubeconfig)
    except Exception as error:  # the kubernetes config loaders raise several unrelated types
        log.error("certs.kubeconfig_failed", error=str(error), kubeconfig=args.kubeconfig or "")
        return 1
    try:
        ensure(options, KubeObjects(api_client))
    except EnsureError as error:
        log.error("certs.ensure_failed", error=str(error), namespace=options.namespace)
        return 1
    finally:
        api_client.close()
    return 0


def load_api_client(kubeconfig: str | None):
    """Build an API client: from `kubeconfig` when given, in-cluster inside a pod, else the default kubeconfig."""
    from kubernetes import client, config

    if kubeconfig:
        return config.new_client_from_config(config_file=kubeconfig)
    if os.environ.get("KUBERNETES_SERVICE_HOST"):
        configuration = client.Configuration()
        config.load_incluster_config(client_configuration=configuration)
        return client.ApiClient(configuration)
    return config.new_client_from_config()


def run_generate(args: argparse.Namespace) -> int:
    import ipaddress

    from kubefence.certs import pki
    from kubefence.certs.files import CERT_MODE, KEY_MODE, OutputExistsError, write_files
    from kubefence.certs.options import OptionsError, check_san_dns_name, check_validities, parse_duration
    from kubefence.common.logs import configure_logging, get_logger

    configure_logging(args.log_level)
    log = get_logger("kubefence.certs.cli")
    dns_names, addresses = list(args.dns), list(args.ip)
    if not dns_names and not addresses:
        dns_names, addresses = ["localhost"], ["127.0.0.1"]
    try:
        for address in addresses:
            try:
                ipaddress.ip_address(address)
            except ValueError:
                raise OptionsError(f"--ip: invalid IP address {address!r}; expected an IPv4 or IPv6 address such as 127.0.0.1") from None
        for name in dns_names:
            check_san_dns_name(name)
        ca_validity = parse_duration(args.ca_validity, "--ca-validity")
        leaf_validity = parse_duration(args.leaf_validity, "--leaf-validity")
        check_validities(ca_validity, leaf_validity)
    except OptionsError as error:
        log.error("certs.invalid_options", error=str(error))
        return 2

    # The CA, then the serving pair it signs.
    ca = pki.generate_ca(validity=ca_validity, key_type=args.key_type)
    serving = pki.generate_serving(ca, dns_names, addresses, validity=leaf_validity, key_type=args.key_type)

    # Certificates readable by all, keys by the owner only.
    files = {
        "ca.crt": (ca.cert_pem, CERT_MODE),
        "ca.key": (ca.key_pem, KEY_MODE),
        "tls.crt": (serving.cert_pem, CERT_MODE),
        "tls.key": (serving.key_pem, KEY_MODE),
    }
    try:
        written = write_files(args.out, files, force=args.force)
    except OutputExistsError as error:
        log.error("certs.output_exists", error=str(error), out=args.out)
        return 1
    except OSError as error:
        log.error("certs.write_failed", error=str(error), out=args.out)
        return 1
    log.info(
        "certs.generated",
        files=[str(path) for path in written],
        dns_names=dns_names,
        ip_addresses=addresses,
        key_type=args.key_type,
        ca_fingerprint=pki.fingerprint(ca.certificate),
        leaf_not_after=serving.certificate.not_valid_after_utc.isoformat(),
    )
    return 0

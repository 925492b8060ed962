"""`kubefence webhook` (serve) and `kubefence review` (offline decision).

Light at import time: the run functions import the server, FastAPI and the
YAML and JSON Patch libraries themselves.
"""

import argparse
import os
import sys

from kubefence.common.settings import positive_seconds

# Exit codes of `kubefence review`.
EXIT_ALLOWED = 0
EXIT_DENIED = 1
EXIT_BAD_INPUT = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    serve = subparsers.add_parser(
        "webhook",
        help="serve the mutating admission webhook over HTTPS",
        description=(
            "Serve POST /mutate (AdmissionReview admission.k8s.io/v1), GET /healthz, /readyz and /metrics "
            "over HTTPS. Without --tls-cert-file, a self-signed pair is generated and its CA file is named "
            "in the log."
        ),
    )
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default: %(default)s)")
    serve.add_argument("--port", type=int, default=8443, help="TCP port to listen on (default: %(default)s)")
    serve.add_argument("--tls-cert-file", metavar="FILE", help="PEM certificate chain of the serving certificate")
    serve.add_argument("--tls-private-key-file", metavar="FILE", help="PEM private key of the serving certificate")
    serve.add_argument(
        "--policy",
        metavar="FILE",
        help="policy YAML file, reloaded when its content changes (default: the embedded default policy)",
    )
    serve.add_argument(
        "--policy-interval",
        type=positive_seconds,
        default=2.0,
        metavar="SECONDS",
        help="seconds between two reads of the policy file (default: %(default)s)",
    )
    serve.add_argument(
        "--certificate-interval",
        type=positive_seconds,
        default=10.0,
        metavar="SECONDS",
        help=(
            "seconds between two reads of --tls-cert-file and --tls-private-key-file; a changed, valid pair "
            "is loaded without a restart (default: %(default)s)"
        ),
    )
    serve.add_argument(
        "--namespace",
        metavar="NS",
        help="the webhook's own namespace, always exempt (default: $POD_NAMESPACE)",
    )
    serve.add_argument(
        "--log-level",
        choices=("debug", "info", "warning", "error"),
        help="minimum level of log lines (default: $KUBEFENCE_LOG_LEVEL or info)",
    )
    serve.set_defaults(func=run_webhook)

    review = subparsers.add_parser(
        "review",
        help="run the admission decision on a manifest, offline",
        description=(
            "Print the admission decision, the JSON Patch and the patched pod for each object in POD.yaml "
            "('-' reads standard input). A Pod is reviewed as it is; for a workload (Deployment, Job, "
            "CronJob, ...) the pod its controller creates from the template is reviewed. "
            "Exit status: 0 allowed, 1 denied, 2 invalid input."
        ),
    )
    review.add_argument("file", metavar="POD.yaml", help="manifest file, one or more YAML documents")
    review.add_argument("--policy", metavar="FILE", help="policy YAML file (default: the embedded default policy)")
    review.add_argument(
        "--namespace", metavar="NS", help="namespace the pod is created in (default: its metadata.namespace, else 'default')"
    )
    review.add_argument(
        "--webhook-namespace",
        metavar="NS",
        help="the webhook's own namespace, exempt like in the server (default: $POD_NAMESPACE)",
    )
    review.add_argument(
        "--operation",
        choices=("CREATE", "UPDATE"),
        default="CREATE",
        help=(
            "admission operation to review (default: %(default)s); UPDATE uses the pod as its own old "
            "object, so it passes unchanged"
        ),
    )
    review.add_argument("--output", choices=("yaml", "json"), default="yaml", help="output format (default: %(default)s)")
    review.set_defaults(func=run_review)


def _error(command: str, message: str) -> int:
    print(f"kubefence {command}: error: {message}", file=sys.stderr)
    return EXIT_BAD_INPUT


def run_webhook(args: argparse.Namespace) -> int:
    import ssl

    from kubefence.common.logs import configure_logging, get_logger
    from kubefence.common.settings import ConfigError
    from kubefence.webhook.server import ServeSettings, StartupError, run

    configure_logging(args.log_level or os.environ.get("KUBEFENCE_LOG_LEVEL") or "info")
    log = get_logger("kubefence.webhook")
    try:
        settings = ServeSettings(
            host=args.host,
            port=args.port,
            tls_cert_file=args.tls_cert_file,
            tls_private_key_file=args.tls_private_key_file,
            policy_file=args.policy,
            namespace=args.namespace if args.namespace is not None else os.environ.get("POD_NAMESPACE", ""),
            policy_interval=args.policy_interval,
            certificate_interval=args.certificate_interval,
        )
    except ValueError as error:
        return _error("webhook", str(error))
    try:
        run(settings)
    except ConfigError as error:
        log.error("invalid policy; not starting", error=str(error))
        return EXIT_BAD_INPUT
    except StartupError as error:
        log.error("cannot start the webhook", error=str(error))
        return EXIT_BAD_INPUT
    except (OSError, ssl.SSLError) as error:
        log.error("cannot start the webhook", error=str(error), filename=getattr(error, "filename", None) or "")
        return EXIT_BAD_INPUT
    return 0


def run_review(args: argparse.Namespace) -> int:
    import orjson
    import yaml

    from kubefence.common.policy import DEFAULT_POLICY, load_policy, yaml_error_message
    from kubefence.common.settings import ConfigError
    from kubefence.webhook.errors import ReviewError
    from kubefence.webhook.offline import ManifestError, review_documents, review_report

    policy = DEFAULT_POLICY
    if args.policy:
        try:
            with open(args.policy, "rb") as stream:
                policy = load_policy(stream.read(), args.policy)
        except OSError as error:
            return _error("review", f"cannot read policy {error.filename!r}: {error.strerror}")
        except ConfigError as error:
            return _error("review", str(error))

    try:
        if args.file == "-":
            content = sys.stdin.buffer.read()
        else:
            with open(args.file, "rb") as stream:
                content = stream.read()
        text = content.decode("utf-8")
        documents = list(yaml.safe_load_all(text))
        reviews = review_documents(
            documents,
            policy,
            namespace=args.namespace,
            operation=args.operation,
            own_namespace=args.webhook_namespace if args.webhook_namespace is not None else os.environ.get("POD_NAMESPACE", ""),
        )
    except OSError as error:
        return _error("review", f"cannot read {error.filename!r}: {error.strerror}")
    except UnicodeDecodeError as error:
        return _error("review", f"{args.file}: not UTF-8 text (invalid byte at offset {error.start})")
    except yaml.YAMLError as error:
        return _error("review", f"{args.file}: {yaml_error_message(error)}")
    except (ManifestError, ReviewError) as error:
        return _error("review", f"{args.file}: {error}")

    reports = [review_report(review) for review in reviews]
    if args.output == "json":
        payload = reports[0] if len(reports) == 1 else reports
        sys.stdout.write(orjson.dumps(payload, option=orjson.OPT_INDENT_2).decode() + "\n")
    else:
        sys.stdout.write(yaml.safe_dump_all(reports, sort_keys=False, default_flow_style=False))
    return EXIT_ALLOWED if all(review.decision.allowed for review in reviews) else EXIT_DENIED

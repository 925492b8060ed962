"""A stand-in for kube-apiserver with only the endpoints `kubefence certs ensure` calls.

There is no kube-apiserver on the test machines, so the tests point the real
`kubernetes` client at this HTTP server on 127.0.0.1. It implements:

* GET, POST and PUT of core/v1 Secrets, with a resourceVersion check on PUT
  (409 Conflict on mismatch) and 409 AlreadyExists on POST of an existing
  name, and the immutable Secret type;
* GET and PATCH (application/json-patch+json only) of
  admissionregistration.k8s.io/v1 MutatingWebhookConfigurations, where a
  patched metadata.resourceVersion that differs from the stored one gives
  409 Conflict, as on a real API server.

Every request must carry the bearer token of the kubeconfig the stub writes.
"""

import base64
import copy
import itertools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import jsonpatch

TOKEN = "stub-token"

_SECRET = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets/([^/?]+)$")
_SECRETS = re.compile(r"^/api/v1/namespaces/([^/]+)/secrets$")
_WEBHOOK = re.compile(r"^/apis/admissionregistration\.k8s\.io/v1/mutatingwebhookconfigurations/([^/?]+)$")


class KubeApiStub:
    """Objects in memory plus the server thread; tests read and edit `secrets` and `webhooks` directly."""

    def __init__(self):
        self.secrets: dict[tuple[str, str], dict] = {}
        self.webhooks: dict[str, dict] = {}
        self.requests: list[tuple[str, str]] = []
        # Writes to these paths first see the stored object changed by
        # "another writer" (its resourceVersion bumped), once per count.
        self.interfere: dict[str, int] = {}
        self.lock = threading.Lock()
        self._versions = itertools.count(100)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler_class())
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> "KubeApiStub":
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def kubeconfig(self) -> str:
        return json.dumps(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stub", "cluster": {"server": self.url}}],
                "users": [{"name": "stub", "user": {"token": TOKEN}}],
                "contexts": [{"name": "stub", "context": {"cluster": "stub", "user": "stub"}}],
                "current-context": "stub",
            }
        )

    def next_version(self) -> str:
        return str(next(self._versions))

    # Helpers for tests ---------------------------------------------------------

    def secret_data(self, namespace: str, name: str) -> dict[str, bytes]:
        secret = self.secrets[(namespace, name)]
        return {key: base64.b64decode(value) for key, value in (secret.get("data") or {}).items()}

    def put_secret(self, namespace: str, name: str, data: dict[str, bytes], secret_type: str = "kubernetes.io/tls") -> None:
        with self.lock:
            self.secrets[(namespace, name)] = {
                "apiVersion": "v1",
                "kind": "Secret",
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": self.next_version()},
                "type": secret_type,
                "data": {key: base64.b64encode(value).decode() for key, value in data.items()},
            }

    def add_webhook_config(self, name: str, webhook_names: list[str], ca_bundle: bytes | None = None) -> None:
        webhooks = []
        for webhook_name in webhook_names:
            client_config = {"service": {"name": "kubefence-webhook", "namespace": "kubefence", "path": "/mutate"}}
            if ca_bundle is not None:
                client_config["caBundle"] = base64.b64encode(ca_bundle).decode()
            webhooks.append(
                {
                    "name": webhook_name,
                    "clientConfig": client_config,
                    "admissionReviewVersions": ["v1"],
                    "sideEffects": "None",
                }
            )
        with self.lock:
            self.webhooks[name] = {
                "apiVersion": "admissionregistration.k8s.io/v1",
                "kind": "MutatingWebhookConfiguration",
                "metadata": {"name": name, "resourceVersion": self.next_version()},
                "webhooks": webhooks,
            }

    def webhook_bundles(self, name: str) -> list[bytes]:
        return [
            base64.b64decode(webhook["clientConfig"].get("caBundle", ""))
            for webhook in self.webhooks[name]["webhooks"]
        ]

    # HTTP ------------------------------------------------------------------------

    def _handler_class(self):
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                self._dispatch("GET")

            def do_POST(self):
                self._dispatch("POST")

            def do_PUT(self):
                self._dispatch("PUT")

            def do_PATCH(self):
                self._dispatch("PATCH")

            def _dispatch(self, method):
                path = self.path.split("?", 1)[0]
                length = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(length) if length else b""
                with stub.lock:
                    stub.requests.append((method, path))
                    if self.headers.get("Authorization") != f"Bearer {TOKEN}":
                        status, payload = _status(401, "Unauthorized", "missing or wrong bearer token")
                    else:
                        status, payload = stub._route(method, path, self.headers.get("Content-Type", ""), body)
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        return Handler

    def _route(self, method, path, content_type, body):
        if match := _SECRET.match(path):
            key = (match.group(1), match.group(2))
            if method == "GET":
                return self._get(self.secrets, key, "secrets")
            if method == "PUT":
                return self._put_secret(key, path, json.loads(body))
        if (match := _SECRETS.match(path)) and method == "POST":
            return self._create_secret(match.group(1), json.loads(body))
        if match := _WEBHOOK.match(path):
            name = match.group(1)
            if method == "GET":
                return self._get(self.webhooks, name, "mutatingwebhookconfigurations.admissionregistration.k8s.io")
            if method == "PATCH":
                return self._patch_webhook(name, path, content_type, body)
        return _status(404, "NotFound", f"the stub does not serve {method} {path}")

    def _get(self, store, key, resource):
        if key not in store:
            name = key[1] if isinstance(key, tuple) else key
            return _status(404, "NotFound", f'{resource} "{name}" not found')
        return 200, store[key]

    def _interfere(self, path, stored):
        if self.interfere.get(path, 0) > 0:
            self.interfere[path] -= 1
            stored["metadata"]["resourceVersion"] = self.next_version()

    def _create_secret(self, namespace, obj):
        name = obj["metadata"]["name"]
        path = f"/api/v1/namespaces/{namespace}/secrets/{name}"
        if self.interfere.get(path, 0) > 0:
            # Another writer creates the Secret first.
            self.interfere[path] -= 1
            self.secrets[(namespace, name)] = {
                "apiVersion": "v1", "kind": "Secret", "type": "kubernetes.io/tls", "data": {},
                "metadata": {"name": name, "namespace": namespace, "resourceVersion": self.next_version()},
            }
        if (namespace, name) in self.secrets:
            return _status(409, "AlreadyExists", f'secrets "{name}" already exists')
        problem = _check_secret(obj)
        if problem:
            return _status(422, "Invalid", problem)
        stored = copy.deepcopy(obj)
        stored["metadata"]["namespace"] = namespace
        stored["metadata"]["resourceVersion"] = self.next_version()
        self.secrets[(namespace, name)] = stored
        return 201, stored

    def _put_secret(self, key, path, obj):
        if key not in self.secrets:
            return _status(404, "NotFound", f'secrets "{key[1]}" not found')
        stored = self.secrets[key]
        self._interfere(path, stored)
        version = obj.get("metadata", {}).get("resourceVersion")
        if not version:
            return _status(422, "Invalid", "metadata.resourceVersion: must be specified for an update")
        if version != stored["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", _conflict_message("secrets", key[1]))
        if obj.get("type", "Opaque") != stored.get("type", "Opaque"):
            return _status(422, "Invalid", "type: Invalid value: field is immutable")
        problem = _check_secret(obj)
        if problem:
            return _status(422, "Invalid", problem)
        updated = copy.deepcopy(obj)
        updated["metadata"]["resourceVersion"] = self.next_version()
        self.secrets[key] = updated
        return 200, updated

    def _patch_webhook(self, name, path, content_type, body):
        if name not in self.webhooks:
            return _status(404, "NotFound", f'mutatingwebhookconfigurations "{name}" not found')
        if content_type.split(";")[0].strip() != "application/json-patch+json":
            return _status(415, "UnsupportedMediaType", f"the stub accepts only JSON Patch, not {content_type!r}")
        stored = self.webhooks[name]
        self._interfere(path, stored)
        try:
            patched = jsonpatch.apply_patch(stored, json.loads(body))
        except (jsonpatch.JsonPatchException, jsonpatch.JsonPointerException) as error:
            return _status(422, "Invalid", f"the patch does not apply: {error}")
        if patched["metadata"]["resourceVersion"] != stored["metadata"]["resourceVersion"]:
            return _status(409, "Conflict", _conflict_message("mutatingwebhookconfigurations.admissionregistration.k8s.io", name))
        patched["metadata"]["resourceVersion"] = self.next_version()
        self.webhooks[name] = patched
        return 200, patched


def _check_secret(obj) -> str:
    if obj.get("type") == "kubernetes.io/tls":
        data = obj.get("data") or {}
        for key in ("tls.crt", "tls.key"):
            if key not in data:
                return f"data[{key}]: Required value"
    return ""


def _conflict_message(resource, name):
    return (
        f'Operation cannot be fulfilled on {resource} "{name}": the object has been modified; '
        "please apply your changes to the latest version and try again"
    )


def _status(code, reason, message):
    return code, {"kind": "Status", "apiVersion": "v1", "status": "Failure", "message": message, "reason": reason, "code": code}

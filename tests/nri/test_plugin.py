"""Plugin handlers in process: event masks, split Synchronize, audit after the reply."""

import io

import pytest
from .nri_scenarios import M_OK, PR, PS, make_config, make_container

from kubefence.nri import api_pb2, convert
from kubefence.nri.audit import AuditStore
from kubefence.nri.plugin import BASE_EVENTS, PLUGIN_SERVICE, VALIDATE_EVENT, Plugin, runtime_supports_validation


class Deferred:
    """Collects deferred work so a test can run it after checking the reply."""

    def __init__(self):
        self.work = []

    def __call__(self, fn, key=None):
        self.work.append((key, fn))

    def run(self):
        work, self.work = self.work, []
        for _, fn in work:
            fn()


@pytest.fixture
def deferred():
    return Deferred()


@pytest.fixture
def store(tmp_path):
    return AuditStore(str(tmp_path / "state"))


def session_for(deferred, store=None, **config):
    return Plugin(make_config(**config), audit_store=store, defer=deferred).new_session()


def call(session, method, message):
    outcome = session.dispatcher.dispatch(PLUGIN_SERVICE, method, message.SerializeToString())
    return outcome


def create_request(pod, container):
    return api_pb2.CreateContainerRequest(pod=convert.pod_to_proto(pod), container=convert.container_to_proto(container))


def test_plugin_configure_mask_with_validator(deferred):
    outcome = call(session_for(deferred), "Configure", api_pb2.ConfigureRequest(runtime_name="containerd"))
    events = api_pb2.ConfigureResponse.FromString(outcome.payload).events
    assert events == BASE_EVENTS | VALIDATE_EVENT
    assert events == 0x2608


def test_plugin_configure_mask_without_validator(deferred):
    outcome = call(session_for(deferred, validator=False), "Configure", api_pb2.ConfigureRequest())
    assert api_pb2.ConfigureResponse.FromString(outcome.payload).events == BASE_EVENTS


def test_plugin_configure_old_nri_version_skips_validator(deferred):
    outcome = call(session_for(deferred), "Configure", api_pb2.ConfigureRequest(NRI_version="v0.9.0"))
    assert api_pb2.ConfigureResponse.FromString(outcome.payload).events == BASE_EVENTS


def test_plugin_configure_after_refusal_skips_validator(deferred):
    plugin = Plugin(make_config(), defer=deferred)
    plugin.validator_refused = True
    outcome = call(plugin.new_session(), "Configure", api_pb2.ConfigureRequest())
    assert api_pb2.ConfigureResponse.FromString(outcome.payload).events == BASE_EVENTS


@pytest.mark.parametrize(
    ("version", "expected"),
    [("v0.12.0", True), ("0.10.1", True), ("v0.9.9", False), ("v1.0", True), ("", None), ("unknown", None)],
    ids=["v0.12", "0.10", "v0.9", "v1", "empty", "unknown"],
)
def test_runtime_supports_validation_versions(version, expected):
    assert runtime_supports_validation(version) is expected


def test_plugin_synchronize_split_parts(deferred, store):
    session = session_for(deferred, store)
    first = api_pb2.SynchronizeRequest(pods=[convert.pod_to_proto(PS)], more=True)
    wrapped = make_container("b", args=("/nono/nono", "wrap", "--profile", "default", "--", "sleep", "1"),
                             state=api_pb2.CONTAINER_RUNNING)
    unwrapped = make_container("c", state=api_pb2.CONTAINER_RUNNING)
    first.containers.append(convert.container_to_proto(wrapped))
    outcome = call(session, "Synchronize", first)
    assert outcome.payload == b"\x10\x01"
    assert deferred.work == []
    assert not session.synchronized

    last = api_pb2.SynchronizeRequest(containers=[convert.container_to_proto(unwrapped)])
    outcome = call(session, "Synchronize", last)
    assert outcome.payload == b""
    assert outcome.status is None
    assert session.synchronized
    # The audit runs after the reply, once, over both parts.
    assert len(deferred.work) == 1
    store.write("gone", {"container_id": "gone"})
    deferred.run()
    assert store.ids() == {"b"}
    assert session.plugin.metrics.unwrapped_containers._value.get() == 1


def test_plugin_create_writes_audit_after_reply(deferred, store):
    session = session_for(deferred, store)
    outcome = call(session, "CreateContainer", create_request(PS, make_container("a")))
    assert outcome.status is None
    assert store.ids() == set()
    ((key, _),) = deferred.work
    assert key == "a"
    deferred.run()
    assert store.read("a")["profile"] == "default"


def test_plugin_create_reject_is_status_2(deferred, store):
    pod = PS.__class__(**{**PS.__dict__, "annotations": {"nono.sh/profile": "--allow-all"}})
    outcome = call(session_for(deferred, store), "CreateContainer", create_request(pod, make_container("x")))
    assert outcome.status[0] == 2
    assert "'--allow-all'" in outcome.status[1]
    assert deferred.work == []


def test_plugin_create_not_opted_in_empty_reply(deferred, store):
    outcome = call(session_for(deferred, store), "CreateContainer", create_request(PR, make_container("p", pod=PR)))
    assert outcome.payload == b""
    assert deferred.work == []


@pytest.mark.parametrize(
    ("method", "message"),
    [
        ("StopContainer", api_pb2.StopContainerRequest(pod=api_pb2.PodSandbox(id="gone"), container=api_pb2.Container(id="x"))),
        ("RemoveContainer", api_pb2.RemoveContainerRequest(container=api_pb2.Container(id="x"))),
        ("StateChange", api_pb2.StateChangeEvent(event=api_pb2.REMOVE_CONTAINER, container=api_pb2.Container(id="x"))),
        ("StateChange", api_pb2.StateChangeEvent(event=api_pb2.RUN_POD_SANDBOX, pod=api_pb2.PodSandbox(id="p"))),
        ("RunPodSandbox", api_pb2.RunPodSandboxRequest(pod=convert.pod_to_proto(PS))),
        ("StopPodSandbox", api_pb2.StopPodSandboxRequest()),
        ("RemovePodSandbox", api_pb2.RemovePodSandboxRequest()),
        ("PostCreateContainer", api_pb2.PostCreateContainerRequest()),
        ("StartContainer", api_pb2.StartContainerRequest()),
        ("PostStartContainer", api_pb2.PostStartContainerRequest()),
        ("PostUpdateContainer", api_pb2.PostUpdateContainerRequest()),
        ("PostUpdatePodSandbox", api_pb2.PostUpdatePodSandboxRequest()),
        ("UpdatePodSandbox", api_pb2.UpdatePodSandboxRequest()),
        ("UpdateContainer", api_pb2.UpdateContainerRequest()),
        ("Shutdown", api_pb2.Empty()),
    ],
    ids=lambda value: value if isinstance(value, str) else "",
)
def test_plugin_events_always_ok(deferred, store, method, message):
    outcome = call(session_for(deferred, store), method, message)
    assert outcome.status is None
    assert outcome.payload == b""
    deferred.run()


def test_plugin_remove_by_id_only(deferred, store):
    session = session_for(deferred, store)
    store.write("a", {"container_id": "a"})
    # The pod carries only its id: the record still goes, with no new decision.
    call(session, "StopContainer", api_pb2.StopContainerRequest(pod=api_pb2.PodSandbox(id="pod-gone"),
                                                                container=api_pb2.Container(id="a")))
    deferred.run()
    assert store.ids() == set()


def test_plugin_validate_rejects_unwrapped_final(deferred):
    session = session_for(deferred)
    container = make_container("v")
    request = api_pb2.ValidateContainerAdjustmentRequest(
        pod=convert.pod_to_proto(PS), container=convert.container_to_proto(container)
    )
    request.adjust.args.extend(["/bin/evil"])
    outcome = call(session, "ValidateContainerAdjustment", request)
    reply = api_pb2.ValidateContainerAdjustmentResponse.FromString(outcome.payload)
    assert reply.reject
    assert reply.reason


def test_plugin_validate_accepts_own_adjustment(deferred):
    session = session_for(deferred)
    container = make_container("v", mounts=(M_OK,))
    created = call(session, "CreateContainer", create_request(PS, container))
    adjust = api_pb2.CreateContainerResponse.FromString(created.payload).adjust
    del adjust.args[0]  # the runtime strips the leading "" when it merges
    request = api_pb2.ValidateContainerAdjustmentRequest(
        pod=convert.pod_to_proto(PS), container=convert.container_to_proto(container), adjust=adjust
    )
    outcome = call(session, "ValidateContainerAdjustment", request)
    assert api_pb2.ValidateContainerAdjustmentResponse.FromString(outcome.payload).reject is False


def test_plugin_registration_request_fields(deferred):
    request = session_for(deferred).registration_request()
    assert request.plugin_name == "kubefence"
    assert request.plugin_idx == "10"
    assert request.NRI_version == "v0.12.0"


def test_plugin_closed_log_stream_keeps_reply(deferred):
    from kubefence.common.logs import configure_logging

    stream = io.TextIOWrapper(io.BytesIO(), encoding="utf-8", write_through=True)
    configure_logging("info", stream=stream)
    stream.close()
    session = session_for(deferred)
    pod = PS.__class__(**{**PS.__dict__, "annotations": {"nono.sh/profile": "--allow-all"}})
    outcome = call(session, "CreateContainer", create_request(pod, make_container("x")))
    assert outcome.status[0] == 2
    assert "'--allow-all'" in outcome.status[1]
    assert session.metrics.log_failures._value.get() >= 1

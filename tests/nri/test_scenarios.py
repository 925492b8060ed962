"""Scenarios against the real plugin process over a real unix socket.

The runtime side is `kubefence.nri.runtime_sim.RuntimeSimulator`, which
speaks the captured wire format and applies adjustments the way the NRI
runtime library and its OCI generator do. No containerd runs here: the
simulator takes its place. The plugin is `kubefence nri`, started as
`python -m kubefence nri` so the test's virtual environment is used.
"""

import asyncio
import os
import posixpath
import shutil
import tempfile
from dataclasses import replace

import pytest
from .nri_scenarios import BASE_ENV, M_OK, PR, PS, make_container
from .plugin_harness import PluginProcess, wait_until

from kubefence.nri import api_pb2, convert, model
from kubefence.nri.runtime_sim import PluginDropped, RuntimeSimulator, VirtualPlugin

TIMEOUT = 60


@pytest.fixture
def workdir(tmp_path):
    return tmp_path


@pytest.fixture
def socket_path():
    # Unix socket paths are limited to 108 bytes, so keep this one short.
    directory = tempfile.mkdtemp(prefix="nri-")
    yield os.path.join(directory, "nri.sock")
    shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def plugins():
    started = []
    yield started
    for plugin in started:
        plugin.stop()


def run(coroutine):
    return asyncio.run(asyncio.wait_for(coroutine, TIMEOUT))


def start_plugin(plugins, workdir, socket_path, **settings):
    plugin = PluginProcess(workdir, socket_path, name=f"plugin{len(plugins)}", **settings)
    plugins.append(plugin)
    return plugin.start()


def wrapper(profile):
    return ("/nono/nono", "wrap", "--profile", profile, "--")


def with_host(container, host_dir):
    """Point M_OK-style /nono mounts at this test's host directory."""
    mounts = tuple(
        replace(mount, source=host_dir) if mount.source == M_OK.source else mount for mount in container.mounts
    )
    return replace(container, mounts=mounts)


def nono_mounts(container):
    return [m for m in container.mounts if posixpath.normpath("/" + m.destination.lstrip("/")) == "/nono"]


def assert_wrapped(result, original_args, host_dir, profile="default"):
    assert result.ok, result.error
    assert result.final.args == wrapper(profile) + tuple(original_args)
    (mount,) = nono_mounts(result.final)
    assert mount.source == host_dir
    assert "ro" in mount.options
    env = dict(entry.split("=", 1) for entry in result.final.env)
    assert env["NONO_PROFILE"] == profile
    for name in ("TMPDIR", "HOME", "XDG_CONFIG_HOME"):
        assert [entry for entry in result.final.env if entry.startswith(name + "=")] == [f"{name}={env[name]}"]


def decisions(plugin):
    return [line for line in plugin.log_lines() if line.get("event") == "decision"]


async def started_simulator(socket_path, existing_pods=(), existing_containers=(), **options):
    sim = RuntimeSimulator(socket_path, **options)
    sim.pods = {pod.id: pod for pod in existing_pods}
    sim.containers = {container.id: container for container in existing_containers}
    await sim.start()
    return sim


# ---- basic decisions ----


def test_scenario_opted_in_wrapped(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        assert link.id == "10-kubefence"
        await sim.run_pod_sandbox(PS)
        container = with_host(make_container("ctr-a"), plugin.host_dir)
        result = await sim.create_container(PS, container)
        assert_wrapped(result, container.args, plugin.host_dir)
        await wait_until(lambda: "ctr-a" in plugin.audit_ids(), what="audit record of ctr-a")
        (line,) = [d for d in decisions(plugin) if d["container_id"] == "ctr-a"]
        assert line["decision"] == "inject"
        assert line["namespace"] == "agents"
        assert line["pod"] == "agent-1"
        assert line["container"] == "ctr-a"
        assert line["runtime_handler"] == "nono-runc"
        assert line["profile"] == "default"
        await sim.stop()

    run(scenario())


def test_scenario_not_opted_in_untouched(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        container = make_container("ctr-p", pod=PR, mounts=())
        result = await sim.create_container(PR, container)
        assert result.ok
        assert result.final == container
        assert result.adjustment.is_empty()
        assert result.replies["10-kubefence"].ByteSize() == 0
        (line,) = [d for d in decisions(plugin) if d["container_id"] == "ctr-p"]
        assert line["decision"] == "skip"
        assert plugin.audit_ids() == set()
        await sim.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("annotations", "expected"),
    [
        ({"nono.sh/profile": "--allow-all"}, "'--allow-all'"),
        ({"nono.sh/profile": "claude-code"}, "'claude-code'"),
        ({}, "nono.sh/profile"),
    ],
    ids=["flag-injection", "not-allowed", "missing"],
)
def test_scenario_invalid_profile_rejected(plugins, workdir, socket_path, annotations, expected):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        pod = replace(PS, id="pod-bad", annotations=annotations)
        result = await sim.create_container(pod, with_host(make_container("ctr-bad", pod=pod), plugin.host_dir))
        assert not result.ok
        assert expected in result.error
        (line,) = [d for d in decisions(plugin) if d["container_id"] == "ctr-bad"]
        assert line["decision"] == "reject"
        assert expected in line["reason"]
        await sim.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ((*BASE_ENV, "NONO_ALLOW=/"), "NONO_ALLOW"),
        ((*BASE_ENV, "NONO_PROFILE=a", "NONO_PROFILE=b"), "NONO_PROFILE"),
        ((*BASE_ENV, "HOME=/tmp/evil"), "HOME"),
        (("TMPDIR=/", *BASE_ENV, "TMPDIR=/etc"), "TMPDIR"),
        ((*BASE_ENV, "LD_PRELOAD=/tmp/x.so"), "LD_PRELOAD"),
    ],
    ids=["nono-allow", "duplicate-nono-profile", "duplicate-home", "duplicate-tmpdir", "ld-preload"],
)
def test_scenario_hostile_env_rejected(plugins, workdir, socket_path, env, expected):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        result = await sim.create_container(PS, with_host(make_container("ctr-env", env=env), plugin.host_dir))
        assert not result.ok
        assert expected in result.error
        await sim.stop()

    run(scenario())


def test_scenario_pinned_env_replaces_pod_values(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        env = ("PATH=/bin", "TMPDIR=/", "XDG_CONFIG_HOME=/tmp/profiles", "HOME=/root", "NONO_PROFILE=permissive")
        result = await sim.create_container(PS, with_host(make_container("ctr-pin", env=env), plugin.host_dir))
        assert_wrapped(result, ("sleep", "3600"), plugin.host_dir)
        final = dict(entry.split("=", 1) for entry in result.final.env)
        assert final["TMPDIR"] != "/"
        assert final["XDG_CONFIG_HOME"] != "/tmp/profiles"
        assert final["HOME"] != "/root"
        await sim.stop()

    run(scenario())


@pytest.mark.parametrize(
    ("mounts", "expected"),
    [
        ((model.Mount("/nono", "bind", "/var/lib/evil", ("rbind", "ro")),), "/var/lib/evil"),
        ((M_OK, model.Mount("/nono/nono", "bind", "/tmp/fake", ("rbind", "ro"))), "/nono/nono"),
    ],
    ids=["untrusted-source", "submount"],
)
def test_scenario_hostile_mounts_rejected(plugins, workdir, socket_path, mounts, expected):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        container = with_host(make_container("ctr-m", mounts=mounts), plugin.host_dir)
        result = await sim.create_container(PS, container)
        assert not result.ok
        assert expected in result.error
        await sim.stop()

    run(scenario())


def test_scenario_missing_nono_mount_added(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        result = await sim.create_container(PS, make_container("ctr-nomount", mounts=()))
        assert_wrapped(result, ("sleep", "3600"), plugin.host_dir)
        await sim.stop()

    run(scenario())


def test_scenario_empty_args_rejected(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        result = await sim.create_container(PS, with_host(make_container("ctr-empty", args=()), plugin.host_dir))
        assert not result.ok
        assert "empty" in result.error
        await sim.stop()

    run(scenario())


def test_scenario_already_wrapped_not_doubled(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        first = await sim.create_container(PS, with_host(make_container("ctr-w"), plugin.host_dir))
        assert first.ok
        again = await sim.create_container(PS, replace(first.final, id="ctr-w2"))
        assert again.ok
        assert again.final.args == first.final.args
        await sim.stop()

    run(scenario())


# ---- other plugins and the validator ----


def test_scenario_earlier_plugin_args_overridden(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        sim.add_virtual_plugin(
            VirtualPlugin("shim", "05", lambda pod, container: model.Adjustment(args=("/shim", *container.args)))
        )
        await sim.wait_plugin()
        result = await sim.create_container(PS, with_host(make_container("ctr-o"), plugin.host_dir))
        assert_wrapped(result, ("/shim", "sleep", "3600"), plugin.host_dir)
        await sim.stop()

    run(scenario())


def test_scenario_validator_rejects_later_unwrap(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)

        def unwrap(pod, container):
            return model.Adjustment(args=("", *container.args[5:]))

        sim.add_virtual_plugin(VirtualPlugin("late", "95", unwrap))
        link = await sim.wait_plugin()
        assert link.subscribed(api_pb2.VALIDATE_CONTAINER_ADJUSTMENT)
        result = await sim.create_container(PS, with_host(make_container("ctr-v"), plugin.host_dir))
        assert not result.ok
        assert "rejected container adjustment" in result.error
        lines = [line for line in plugin.log_lines() if line.get("event") == "validation decision"]
        assert lines[-1]["decision"] == "reject"
        assert lines[-1]["container_id"] == "ctr-v"
        await sim.stop()

    run(scenario())


def test_scenario_validator_refused_by_old_runtime(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path, supports_validation=False)
        link = await sim.wait_plugin()
        assert not link.subscribed(api_pb2.VALIDATE_CONTAINER_ADJUSTMENT)
        assert any("invalid plugin events: 0x2000" in line for line in sim.log)
        warnings = [line for line in plugin.log_lines() if "without ValidateContainerAdjustment" in line["event"]]
        assert len(warnings) == 1
        result = await sim.create_container(PS, with_host(make_container("ctr-old"), plugin.host_dir))
        assert_wrapped(result, ("sleep", "3600"), plugin.host_dir)
        await sim.stop()

    run(scenario())


def test_scenario_validator_off_not_subscribed(plugins, workdir, socket_path):
    async def scenario():
        start_plugin(plugins, workdir, socket_path, validator=False)
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        assert link.events == (1 << 3) | (1 << 9) | (1 << 10)
        await sim.stop()

    run(scenario())


# ---- sizes ----


def test_scenario_messages_over_4096_both_directions(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        args = ("/bin/app", *(f"--flag-{index:04d}=value" for index in range(600)))
        container = with_host(make_container("ctr-big", args=args), plugin.host_dir)
        result = await sim.create_container(PS, container)
        assert_wrapped(result, args, plugin.host_dir)
        (call,) = [c for c in sim.calls if c.method == "CreateContainer"]
        assert call.request_bytes > 4096
        assert call.reply_bytes > 4096
        mux = link.protocol.connection.mux
        assert 4096 == mux.largest_received_frame
        await sim.stop()

    run(scenario())


def big_state(pod_count, annotation_bytes, env_count=0, host_dir=M_OK.source):
    pods, containers = [], []
    for index in range(pod_count):
        opted_in = index % 2 == 0
        pod = model.Pod(
            id=f"pod-{index:04d}",
            name=f"pod-{index}",
            namespace="load",
            uid=f"uid-{index}",
            runtime_handler="nono-runc" if opted_in else "runc",
            annotations={"nono.sh/profile": "default"} if opted_in else {},
        )
        pods.append(pod)
        for number in range(2):
            args = ("sleep", "inf")
            env = tuple(f"VAR_{n}=value-{n}" for n in range(env_count))
            mounts = ()
            if opted_in:
                args = wrapper("default") + args
                env = (*env, "NONO_PROFILE=default", "TMPDIR=/tmp", "HOME=/nono/home", "XDG_CONFIG_HOME=/nono/home/.config")
                mounts = (replace(M_OK, source=host_dir),)
            containers.append(
                model.Container(
                    id=f"ctr-{index:04d}-{number}",
                    pod_sandbox_id=pod.id,
                    name=f"c{number}",
                    args=args,
                    env=env,
                    mounts=mounts,
                    annotations={"blob": "x" * annotation_bytes},
                    state=api_pb2.CONTAINER_RUNNING,
                )
            )
    return pods, containers


def test_scenario_busy_node_synchronize(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        pods, containers = big_state(150, 1024, env_count=20, host_dir=plugin.host_dir)
        sim = await started_simulator(socket_path, pods, containers)
        await sim.wait_plugin()
        syncs = [c for c in sim.calls if c.method == "Synchronize"]
        assert len(syncs) == 1
        assert syncs[0].status is None
        new = with_host(make_container("ctr-new", args=("python", "app.py")), plugin.host_dir)
        result = await sim.create_container(PS, new)
        assert_wrapped(result, ("python", "app.py"), plugin.host_dir)
        await wait_until(
            lambda: plugin.events("synchronized"), what="the plugin's synchronized line"
        )
        assert plugin.events("synchronized")[-1]["unwrapped"] == 0
        await sim.stop()

    run(scenario())


def test_scenario_split_synchronize_and_huge_create(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        pods, containers = big_state(300, 8192, host_dir=plugin.host_dir)
        sim = await started_simulator(socket_path, pods, containers)
        await sim.wait_plugin()
        syncs = [c for c in sim.calls if c.method == "Synchronize"]
        assert len(syncs) == 2
        assert syncs[0].request_bytes > 4_000_000
        assert syncs[0].reply_bytes == 2  # exactly `more: true`: 10 01
        assert syncs[1].reply_bytes == 0
        assert syncs[1].timeout_nano < syncs[0].timeout_nano  # one deadline for all parts
        await wait_until(lambda: plugin.events("synchronized"), what="the synchronized line")
        (line,) = plugin.events("synchronized")
        assert line["containers"] == 600
        assert line["pods"] == 300

        huge = make_container("ctr-huge", annotations={f"a{n}": "y" * 1000 for n in range(3900)})
        result = await sim.create_container(PS, with_host(huge, plugin.host_dir))
        assert_wrapped(result, ("sleep", "3600"), plugin.host_dir)
        (call,) = [c for c in sim.calls if c.method == "CreateContainer"]
        assert call.request_bytes > 3_900_000
        await sim.stop()

    run(scenario())


# ---- failure cases ----


def test_scenario_late_answer_reconnects(plugins, workdir, socket_path):
    # One missed deadline drops the plugin; it reconnects and Synchronize reports the gap.
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        await sim.run_pod_sandbox(PS)
        a = with_host(make_container("ctr-a"), plugin.host_dir)
        assert_wrapped(await sim.create_container(PS, a), a.args, plugin.host_dir)
        await sim.start_container(PS, a)

        plugin.pause()
        b = with_host(make_container("ctr-b"), plugin.host_dir)
        result = await sim.create_container(PS, b)
        assert result.ok
        assert result.dropped == ["10-kubefence"]
        assert result.final.args == b.args  # fail-open: created without the wrapper
        await sim.start_container(PS, b)
        plugin.resume()

        link = await sim.wait_plugin()
        c = with_host(make_container("ctr-c"), plugin.host_dir)
        assert_wrapped(await sim.create_container(PS, c), c.args, plugin.host_dir)
        assert plugin.process.poll() is None

        await wait_until(lambda: plugin.events("opted-in container running without nono"), what="finding")
        (finding,) = plugin.events("opted-in container running without nono")
        assert finding["container_id"] == "ctr-b"
        assert finding["decision"] == "skip"
        assert plugin.metric("kubefence_nri_unwrapped_containers") == 1
        assert plugin.metric("kubefence_nri_reconnects_total") == 1
        assert len(plugin.events("registered with the runtime")) == 2
        # The request pending on the old connection got no reply on the new one.
        assert link.protocol.connection.stray_responses == 0
        await sim.stop()

    run(scenario())


def test_scenario_two_instances_one_registered(plugins, workdir, socket_path):
    async def scenario():
        first = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        second = start_plugin(plugins, workdir, socket_path, state_dir=first.settings["state_dir"],
                              nono_host_dir=first.host_dir)
        await wait_until(lambda: second.events("another instance is active; waiting for its lock"),
                         what="the second instance to wait")
        await sim.run_pod_sandbox(PS)
        a = with_host(make_container("ctr-a"), first.host_dir)
        result = await sim.create_container(PS, a)
        assert_wrapped(result, a.args, first.host_dir)
        assert sim.registrations == 1
        assert sim.accepted_connections == 1

        first.kill()
        await sim.wait_no_plugin()
        await sim.wait_plugin()
        assert sim.registrations == 2
        b = with_host(make_container("ctr-b"), first.host_dir)
        assert_wrapped(await sim.create_container(PS, b), b.args, first.host_dir)
        assert second.events("registered with the runtime")
        await sim.stop()

    run(scenario())


def test_scenario_reject_only_in_create(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        flagged = replace(PS, id="pod-flag", annotations={"nono.sh/profile": "--allow-all"})
        # RunPodSandbox through the dedicated method and through StateChange: never an error.
        for method, payload in (
            ("RunPodSandbox", api_pb2.RunPodSandboxRequest(pod=convert.pod_to_proto(flagged))),
            ("StateChange", api_pb2.StateChangeEvent(event=api_pb2.RUN_POD_SANDBOX, pod=convert.pod_to_proto(flagged))),
        ):
            reply = await sim.call_raw(link, "nri.pkg.api.v1alpha1.Plugin", method, payload.SerializeToString())
            assert not reply.HasField("status")

        f1 = with_host(make_container("f1", pod=flagged), plugin.host_dir)
        result = await sim.create_container(flagged, f1)  # undo: Stop and Remove follow
        assert "'--allow-all'" in result.error

        a = with_host(make_container("a"), plugin.host_dir)
        assert (await sim.create_container(PS, a)).ok
        await wait_until(lambda: "a" in plugin.audit_ids(), what="the audit record of a")
        await sim.stop_container(PS, a)
        await sim.remove_container(PS, a)
        await sim.remove_container(PS, a)
        # Stop for a container whose sandbox is gone: the pod carries only its id.
        await sim.stop_container(model.Pod(id="pod-gone"), make_container("ghost"))
        await sim.remove_container(model.Pod(id="pod-gone"), make_container("ghost"))

        assert not [line for line in sim.log if "error ignored" in line]
        stops = [c for c in sim.calls if c.method in ("StopContainer", "StateChange")]
        assert all(c.status is None for c in stops)
        await wait_until(lambda: plugin.audit_ids() == set(), what="an empty state directory")
        await sim.stop()

    run(scenario())


def test_scenario_restart_reconciles_audit(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        await sim.run_pod_sandbox(PS)
        a = with_host(make_container("a"), plugin.host_dir)
        b = with_host(make_container("b"), plugin.host_dir)
        assert (await sim.create_container(PS, a)).ok
        result_b = await sim.create_container(PS, b)
        assert result_b.ok
        await wait_until(lambda: plugin.audit_ids() == {"a", "b"}, what="records of a and b")

        running_b = replace(result_b.final, state=api_pb2.CONTAINER_RUNNING)
        await sim.restart(pods=[PS], containers=[running_b])
        await sim.wait_plugin()
        await wait_until(lambda: plugin.audit_ids() == {"b"}, what="a's record to be dropped")
        await sim.remove_container(PS, a)  # late event for an id the runtime no longer lists
        assert not [line for line in sim.log if "error ignored" in line]
        # Records are written through temporary files that are renamed at once.
        await wait_until(lambda: not list(plugin.state_dir.glob(".*.tmp")), what="no temporary record files")
        assert plugin.audit_ids() == {"b"}
        await sim.stop()

    run(scenario())


def test_scenario_socket_missing_then_runtime_restart(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        await wait_until(lambda: plugin.events("cannot connect to the NRI socket; retrying"), what="retry log")
        await asyncio.sleep(1.5)
        # Bounded logging: retries every 0.25 to 1 s, logged at most once per 30 s.
        assert len(plugin.events("cannot connect to the NRI socket; retrying")) == 1
        assert plugin.http_get("/readyz")[0] == 503
        assert plugin.http_get("/healthz")[0] == 200

        sim = await started_simulator(socket_path)
        await sim.wait_plugin(timeout=8)
        await wait_until(lambda: plugin.http_get("/readyz")[0] == 200, what="readiness")
        await sim.run_pod_sandbox(PS)
        a = with_host(make_container("a"), plugin.host_dir)
        result_a = await sim.create_container(PS, a)
        assert_wrapped(result_a, a.args, plugin.host_dir)

        inode = os.stat(socket_path).st_ino
        await sim.restart(pods=[PS], containers=[replace(result_a.final, state=api_pb2.CONTAINER_RUNNING)])
        assert os.stat(socket_path).st_ino != inode or True  # inode numbers may be reused by tmpfs
        link = await sim.wait_plugin(timeout=8)
        assert link.id == "10-kubefence"
        c = with_host(make_container("c"), plugin.host_dir)
        assert_wrapped(await sim.create_container(PS, c), c.args, plugin.host_dir)
        assert plugin.metric("kubefence_nri_reconnects_total") == 1
        await sim.stop()

    run(scenario())


# Root bypasses directory permissions, so the plugin runs as root without
# CAP_DAC_OVERRIDE and CAP_DAC_READ_SEARCH, and the socket directory belongs
# to another user with mode 0700: connect() then fails with EACCES.
DROP_DAC = (
    "setpriv",
    "--inh-caps=-dac_override,-dac_read_search",
    "--bounding-set=-dac_override,-dac_read_search",
)


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("setpriv"), reason="needs root and setpriv")
def test_scenario_socket_permission_denied(plugins, workdir, socket_path):
    async def scenario():
        sim = await started_simulator(socket_path)
        os.chown(os.path.dirname(socket_path), 65534, 65534)
        os.chmod(os.path.dirname(socket_path), 0o700)
        plugin = PluginProcess(workdir, socket_path, name="nodac")
        plugins.append(plugin)
        plugin.start(prefix=DROP_DAC)
        await wait_until(lambda: plugin.events("cannot connect to the NRI socket; retrying"), what="retry log")
        (line,) = plugin.events("cannot connect to the NRI socket; retrying")
        assert line["errno"] == "EACCES"
        assert line["socket"] == socket_path
        assert plugin.http_get("/readyz")[0] == 503
        await asyncio.sleep(1)
        assert plugin.process.poll() is None
        assert sim.accepted_connections == 0
        await sim.stop()

    run(scenario())


def test_scenario_malformed_frames_reconnect(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        bad_frames = [
            bytes.fromhex("0000000000000004") + b"oops",  # reserved conn id 0
            bytes.fromhex("0000000100000010") + (0x00400001).to_bytes(4, "big") + bytes(6),  # ttrpc length > 4 MiB
            bytes.fromhex("00000001ffffffff"),  # frame length > 4 MiB + 10
            bytes.fromhex("000000010000000a") + bytes.fromhex("00000000000000020100"),  # even stream id
        ]
        for number, frame in enumerate(bad_frames, start=1):
            link = await sim.wait_plugin(count=1)
            sim.send_raw(link, frame)
            await link.protocol.closed
            await wait_until(lambda: len(plugin.events("registered with the runtime")) == number + 1,
                             what=f"re-registration after bad frame {number}")
        await sim.wait_plugin()
        warnings = plugin.events("runtime broke the NRI wire protocol; closing the connection")
        assert len(warnings) == len(bad_frames)
        assert "4194305" in warnings[1]["error"]
        assert plugin.metric("kubefence_nri_protocol_errors_total") == len(bad_frames)
        result = await sim.create_container(PS, with_host(make_container("after"), plugin.host_dir))
        assert result.ok
        await sim.stop()

    run(scenario())


def test_scenario_unknown_methods_unimplemented(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        pod = api_pb2.RunPodSandboxRequest(pod=convert.pod_to_proto(PS)).SerializeToString()
        reply = await sim.call_raw(link, "nri.pkg.api.v1alpha1.Plugin", "RunPodSandbox", pod)
        assert not reply.HasField("status")
        reply = await sim.call_raw(link, "nri.pkg.api.v1alpha1.Plugin", "NoSuchMethod", b"")
        assert (reply.status.code, reply.status.message) == (12, "method NoSuchMethod")
        reply = await sim.call_raw(link, "nope.Service", "Anything", b"")
        assert (reply.status.code, reply.status.message) == (12, "service nope.Service")
        # The connection stays open and keeps working.
        assert (await sim.create_container(PS, with_host(make_container("x"), plugin.host_dir))).ok
        assert len(plugin.events("registered with the runtime")) == 1
        await sim.stop()

    run(scenario())


def test_scenario_nri_v012_event_methods(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path, per_event_methods=True, nri_version="v0.12.0",
                                      runtime_version="v2.3.4")
        link = await sim.wait_plugin()
        await sim.run_pod_sandbox(PS)
        a = with_host(make_container("a"), plugin.host_dir)
        result = await sim.create_container(PS, a)
        assert_wrapped(result, a.args, plugin.host_dir)
        await wait_until(lambda: "a" in plugin.audit_ids(), what="the audit record of a")
        await sim.stop_container(PS, a)
        await sim.remove_container(PS, a)
        assert [c.method for c in sim.calls if c.method in ("RemoveContainer", "StateChange")] == ["RemoveContainer"]
        assert not link.uses_state_change
        await wait_until(lambda: plugin.audit_ids() == set(), what="the record of a to go")
        await sim.stop()

    run(scenario())


def test_scenario_image_field_ignored(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        container = convert.container_to_proto(with_host(make_container("img"), plugin.host_dir))
        container.image.name = "registry.k8s.io/pause:3.10"
        request = api_pb2.CreateContainerRequest(pod=convert.pod_to_proto(PS), container=container)
        reply = await sim.call_raw(link, "nri.pkg.api.v1alpha1.Plugin", "CreateContainer", request.SerializeToString())
        assert not reply.HasField("status")
        adjust = api_pb2.CreateContainerResponse.FromString(reply.payload).adjust
        assert list(adjust.args)[1:6] == list(wrapper("default"))
        await sim.stop()

    run(scenario())


def test_scenario_mount_spellings(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        await sim.wait_plugin()
        host = plugin.host_dir
        ok = replace(M_OK, source=host)
        empty_dir = "/var/lib/kubelet/pods/u/volumes/kubernetes.io~empty-dir/n"
        cases = {
            "m1": ((model.Mount("/nono/", "bind", empty_dir, ("rbind", "rw")),), False),
            "m2": ((model.Mount("//nono", "bind", empty_dir, ("rbind", "rw")),), False),
            "m3": ((ok, model.Mount("/nono/./nono", "bind", "/var/lib/evil/nono", ("rbind", "ro"))), False),
            "m4": ((ok, model.Mount("/nonolib", "bind", "/tmp/x", ("rbind", "ro"))), True),
            "m5": ((model.Mount("/nono", "bind", host, ("rbind", "rw")),), None),
        }
        for name, (mounts, accepted) in cases.items():
            result = await sim.create_container(PS, make_container(name, mounts=mounts))
            if accepted is False:
                assert not result.ok, name
                continue
            if accepted is True:
                assert result.ok, (name, result.error)
            if result.ok:
                cleaned = [m for m in result.final.mounts if posixpath.normpath(m.destination) == "/nono"]
                assert len(cleaned) == 1, name
                assert cleaned[0].source == host
                assert "ro" in cleaned[0].options
                assert "rw" not in cleaned[0].options
                assert not [m for m in result.final.mounts if m.destination.startswith("/nono/")]
        await sim.stop()

    run(scenario())


def test_scenario_sigterm_clean_exit(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        assert plugin.terminate() == 0
        await link.protocol.closed
        assert plugin.events("stopped")
        assert not [line for line in plugin.log_lines() if line.get("level") == "error"]
        await sim.stop()

    run(scenario())


def test_scenario_startup_check_failures(plugins, workdir, socket_path):
    plugin = PluginProcess(workdir, socket_path, name="badhost", nono_host_dir=str(workdir / "missing"))
    plugins.append(plugin)
    assert plugin.start().process.wait(30) == 2
    (line,) = [line for line in plugin.log_lines() if line.get("event") == "start-up check failed"]
    assert line["check"] == "nono_binary"

    plugin = PluginProcess(workdir, socket_path, name="badconfig", plugin_index="7")
    plugins.append(plugin)
    assert plugin.start().process.wait(30) == 2
    (line,) = [line for line in plugin.log_lines() if line.get("event") == "start-up check failed"]
    assert line["check"] == "config"
    assert "'7'" in line["error"]


def test_scenario_flag_overrides_config(plugins, workdir, socket_path):
    async def scenario():
        plugin = PluginProcess(workdir, socket_path, name="flags")
        plugins.append(plugin)
        plugin.start("--plugin-index", "42", "--plugin-name", "other")
        sim = await started_simulator(socket_path)
        link = await sim.wait_plugin()
        assert link.id == "42-other"
        await sim.stop()

    run(scenario())


def test_scenario_dropped_plugin_raises_nothing_in_runtime(plugins, workdir, socket_path):
    # The simulator reports a drop as a result field, never as an exception to the caller.
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        sim = await started_simulator(socket_path, request_timeout=0.5)
        await sim.wait_plugin()
        plugin.pause()
        try:
            result = await sim.create_container(PS, with_host(make_container("d"), plugin.host_dir))
        except PluginDropped:  # pragma: no cover - would be a simulator bug
            pytest.fail("create_container raised PluginDropped")
        finally:
            plugin.resume()
        assert result.dropped == ["10-kubefence"]
        assert any("context deadline exceeded" in line for line in sim.log)
        await sim.stop()

    run(scenario())


def test_scenario_sigterm_while_waiting_for_lock(plugins, workdir, socket_path):
    async def scenario():
        first = start_plugin(plugins, workdir, socket_path)
        await wait_until(lambda: first.events("instance lock acquired"), what="the first instance's lock")
        second = start_plugin(plugins, workdir, socket_path, state_dir=first.settings["state_dir"],
                              nono_host_dir=first.host_dir)
        await wait_until(lambda: second.events("another instance is active; waiting for its lock"),
                         what="the second instance to wait")
        assert second.terminate() == 0
        assert first.process.poll() is None

    run(scenario())


def test_scenario_sigterm_before_runtime_exists(plugins, workdir, socket_path):
    async def scenario():
        plugin = start_plugin(plugins, workdir, socket_path)
        await wait_until(lambda: plugin.events("cannot connect to the NRI socket; retrying"), what="retry log")
        assert plugin.terminate() == 0

    run(scenario())


def test_scenario_metrics_port_in_use_fails_startup(plugins, workdir, socket_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        plugin = PluginProcess(workdir, socket_path, name="busyport", metrics_address=f"127.0.0.1:{port}")
        plugins.append(plugin)
        assert plugin.start().process.wait(30) == 2
    (line,) = plugin.events("start-up failed")
    assert "address already in use" in line["error"].lower()

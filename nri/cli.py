"""`kubefence nri`: run the NRI plugin on a node.

Start-up runs these checks in order and stops at the first failure with
exit status 2 and a message that names the problem:

1. Landlock is available (probed with the landlock syscall);
2. the configuration file and flags are valid;
3. the nono binary in `nono_host_dir` is a regular, executable file and
   not a symbolic link;
4. with `verify_hook` on, the hook script `kubefence-verify` in
   `nono_host_dir` passes the same checks.

A state directory that cannot be created or a metrics address that cannot
be bound also stops start-up with exit status 2.

SIGTERM and SIGINT stop the plugin cleanly with exit status 0.
"""

import argparse

EXIT_STARTUP_FAILED = 2


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "nri",
        help="run the NRI plugin that wraps opted-in containers with nono",
        description="Connect to the container runtime's NRI socket and wrap the containers of opted-in "
        "pods with `/nono/nono wrap --profile <p> --`.",
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    from kubefence.nri.config import add_config_arguments

    parser.add_argument("--config", metavar="FILE", help="TOML configuration file; flags override its keys")
    add_config_arguments(parser)


def run(args: argparse.Namespace) -> int:
    import asyncio
    import os
    import sys

    from kubefence.common.logs import configure_logging, get_logger
    from kubefence.common.settings import ConfigError
    from kubefence.nri import checks
    from kubefence.nri.config import load_config, overrides_from_args

    configure_logging(getattr(args, "log_level", None) or "info")
    log = get_logger("kubefence.nri.cli")

    # 1. Landlock, before anything else: without it nono fails every container.
    try:
        abi = checks.landlock_abi()
    except checks.LandlockUnavailableError as error:
        log.error("start-up check failed", check="landlock", error=str(error))
        print(f"kubefence nri: {error}", file=sys.stderr)
        return EXIT_STARTUP_FAILED

    # 2. Configuration file and flags.
    try:
        config = load_config(args.config, overrides_from_args(args))
    except ConfigError as error:
        log.error("start-up check failed", check="config", error=str(error))
        print(f"kubefence nri: invalid configuration: {error}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    configure_logging(config.log_level)

    # 3. The nono binary the containers will run.
    try:
        checks.check_nono_binary(config.nono_host_dir)
    except (checks.NonoBinaryError, OSError) as error:
        log.error("start-up check failed", check="nono_binary", error=str(error))
        print(f"kubefence nri: {error}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    _warn_if_dynamic(log, os.path.join(config.nono_host_dir, "nono"))

    # 4. The createContainer hook script, when the plugin adds it to containers.
    if config.verify_hook:
        try:
            checks.check_verify_hook(config.nono_host_dir)
        except (checks.NonoBinaryError, OSError) as error:
            log.error("start-up check failed", check="verify_hook", error=str(error))
            print(f"kubefence nri: {error}", file=sys.stderr)
            return EXIT_STARTUP_FAILED

    log.info("effective configuration", landlock_abi=abi, **_config_fields(config))
    try:
        asyncio.run(serve(config))
    except OSError as error:
        # Only start-up steps let OSError out: the state directory and the
        # metrics listener. Connection errors are retried inside the runner.
        log.error("start-up failed", error=str(error), state_dir=config.state_dir,
                  metrics_address=config.metrics_address)
        print(f"kubefence nri: {error}", file=sys.stderr)
        return EXIT_STARTUP_FAILED
    log.info("stopped")
    return 0


def _config_fields(config) -> dict:
    from dataclasses import asdict

    return {key: list(value) if isinstance(value, tuple) else value for key, value in asdict(config).items()}


async def serve(config, stop=None) -> None:
    """Run the plugin and its health endpoint until `stop` is set or SIGTERM/SIGINT arrives."""
    import asyncio
    import signal

    from kubefence.common.logs import get_logger
    from kubefence.nri.audit import AuditStore
    from kubefence.nri.health import HealthServer
    from kubefence.nri.metrics import Metrics
    from kubefence.nri.plugin import Plugin
    from kubefence.nri.runner import DeferredWork, Runner

    log = get_logger("kubefence.nri")
    loop = asyncio.get_running_loop()
    stop = stop or asyncio.Event()
    for signal_number in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(signal_number, stop.set)

    metrics = Metrics()
    deferred = DeferredWork(log)
    plugin = Plugin(config, audit_store=AuditStore(config.state_dir), metrics=metrics, defer=deferred)
    runner = Runner(config, plugin, stop=stop)
    metrics.registered.set_function(lambda: 1 if runner.ready else 0)

    health = None
    if config.metrics_address:
        health = HealthServer(config.metrics_address, metrics, lambda: runner.ready)
        await health.start()
    try:
        await runner.run()
    finally:
        if health is not None:
            await health.close()
        deferred.close()
        for signal_number in (signal.SIGTERM, signal.SIGINT):
            loop.remove_signal_handler(signal_number)


def main(argv: list[str] | None = None) -> int:
    """Run `kubefence nri` alone (`python -m kubefence.nri.cli`)."""
    parser = argparse.ArgumentParser(prog="kubefence nri")
    add_arguments(parser)
    return run(parser.parse_args(argv))


if __name__ == "__main__":
    raise SystemExit(main())


def _warn_if_dynamic(log, path: str) -> None:
    """Warn when nono is not a static ELF binary.

    A dynamically linked nono loads the dynamic loader and libc from the
    container's image before it applies Landlock, so a hostile image could
    run code in it before the sandbox exists. Not fatal, because some
    distributions only ship a dynamic build; the musl release is static.
    """
    from kubefence.nri import checks

    try:
        interpreter = checks.elf_interpreter(path)
    except (OSError, ValueError) as error:
        log.warning("nono binary is not a static ELF executable", path=path, error=str(error))
        return
    if interpreter is not None:
        log.warning(
            "nono binary is dynamically linked: the container image supplies its loader and libc; "
            "install a static (musl) build",
            path=path,
            interpreter=interpreter,
        )

"""``webrelease operator``: the operator process (kopf underneath, in this process).

Settings are read from the environment once (:mod:`.settings`) and refused before anything starts
when invalid. Then, with leader election (the default, :mod:`.leader`), the process stands by until
it holds the Lease: kopf is not even started before that, so a standby watches nothing, handles
nothing and holds no finalizer, while its liveness endpoint answers and its metrics say
``webrelease_leader 0``. Once it leads, kopf runs (standalone: the Lease, not kopf's peering, is what
keeps it alone) with JSON logs and its own liveness endpoint; the Lease is renewed in the background,
and if that fails for the renew deadline the process exits at once with :data:`EXIT_LOST_LEADERSHIP`
(Kubernetes restarts it as a standby). Stopped cleanly (SIGTERM), it stops kopf and then releases
the Lease, so a standby takes over at its next look.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import threading
import urllib.parse
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import Any, Final

import kopf

from webrelease.operator.leader import ElectionConfig, LeaderElector
from webrelease.operator.metrics import OperatorMetrics
from webrelease.operator.settings import OperatorSettings, SettingsError

LOG_FORMATS: Final = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}
LOG_LEVELS: Final = ("quiet", "normal", "verbose", "debug")
EXIT_BAD_SETTINGS: Final = 2
#: The leader could not renew its Lease in time (or found it taken): it stopped acting at once.
EXIT_LOST_LEADERSHIP: Final = 3
#: Where a pod's ServiceAccount namespace is mounted.
IN_CLUSTER_NAMESPACE_FILE: Final = Path("/var/run/secrets/kubernetes.io/serviceaccount/namespace")

logger = logging.getLogger("webrelease.operator")


@dataclass(frozen=True)
class OperatorOptions:
    """The command line of ``webrelease operator``."""

    log_format: str = "json"
    log_level: str = "normal"
    liveness: str | None = None
    namespaces: Sequence[str] = field(default_factory=tuple)
    #: ``--leader-elect`` / ``--no-leader-elect``; None: ``WEBRELEASE_LEADER_ELECTION`` decides.
    leader_elect: bool | None = None


#: Handlers that run on every watch event: their routine "succeeded" lines are not worth a log line.
QUIET_HANDLERS: Final = ("shard_pods", "releases")


class _QuietRoutine(logging.Filter):
    """Drops kopf's "Handler 'x' succeeded." for the per-event handlers (errors still pass)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno > logging.INFO:
            return True
        message = record.getMessage()
        return not any(message == f"Handler {h!r} succeeded." for h in QUIET_HANDLERS)


def configure_logging(options: OperatorOptions) -> None:
    # one handler: kopf's (the CLI may have installed a plain one on the root logger)
    logging.getLogger().handlers.clear()
    kopf.configure(
        debug=options.log_level == "debug",
        verbose=options.log_level == "verbose",
        quiet=options.log_level == "quiet",
        log_format=LOG_FORMATS[options.log_format],
        log_prefix=options.log_format != "json",
        log_refkey="k8s" if options.log_format == "json" else None,
    )
    logging.getLogger("kopf.objects").addFilter(_QuietRoutine())
    # the Kubernetes client and boto are chatty at INFO; their warnings are enough
    for noisy in ("kubernetes", "urllib3", "botocore", "boto3"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def own_identity(settings: OperatorSettings) -> str:
    """Who this replica is: the Lease holder identity, also kopf's own (``POD_NAME`` in a pod)."""
    return settings.leader_election_identity or settings.pod_name or f"{socket.gethostname()}-{os.getpid()}"


def election_config(settings: OperatorSettings) -> ElectionConfig:
    """Where the Lease is and who this replica is: the settings, else the pod (downward API), else
    the in-cluster namespace or the kubeconfig's, and ``<hostname>-<pid>``."""
    namespace = settings.leader_election_namespace or settings.pod_namespace
    if namespace is None:
        try:
            namespace = IN_CLUSTER_NAMESPACE_FILE.read_text(encoding="utf-8").strip() or None
        except OSError:
            namespace = None
    if namespace is None:
        from webrelease.operator.commands import default_namespace  # noqa: PLC0415

        namespace = default_namespace(None)
    return ElectionConfig(
        namespace=namespace,
        name=settings.leader_election_lease_name,
        identity=own_identity(settings),
        lease_duration_seconds=settings.leader_election_lease_duration_seconds,
        renew_deadline_seconds=settings.leader_election_renew_deadline_seconds,
        renew_period_seconds=settings.leader_election_renew_period_seconds,
    )


def _exit_at_once(reason: str) -> None:
    """Leadership is lost: stop acting now, whatever kopf is doing (the state is in the WebRelease
    status; a restart loses nothing)."""
    logger.error(
        "stopping at once (exit %d) so that only the new leader acts: %s", EXIT_LOST_LEADERSHIP, reason
    )
    for handler in logging.getLogger().handlers:
        handler.flush()
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(EXIT_LOST_LEADERSHIP)


def _health_handler(
    path: str, status: Callable[[], tuple[bool, dict[str, Any]]]
) -> type[BaseHTTPRequestHandler]:
    class StandbyHealth(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            if urllib.parse.urlsplit(self.path).path != path:
                self.send_error(404)
                return
            healthy, body = status()
            data = json.dumps(body).encode()
            self.send_response(200 if healthy else 503)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, format: str, *args: Any) -> None:
            return  # probes every few seconds are not worth a log line

    return StandbyHealth


@contextmanager
def standby_liveness(url: str | None, elector: LeaderElector) -> Iterator[None]:
    """Answer the liveness endpoint (kopf's URL) while standing by: healthy while this replica keeps
    looking at the Lease. Closed before kopf binds the same address."""
    if url is None:
        yield
        return
    parts = urllib.parse.urlsplit(url)
    stall = 4 * elector.config.renew_period_seconds + 30.0

    def status() -> tuple[bool, dict[str, Any]]:
        healthy = elector.looking(within=stall)
        return healthy, {"leader": False, "identity": elector.config.identity, "holder": elector.holder}

    server = ThreadingHTTPServer(
        (parts.hostname or "0.0.0.0", parts.port or 80),  # noqa: S104 - kopf's URL says where
        _health_handler(parts.path or "/", status),
    )
    thread = threading.Thread(target=server.serve_forever, name="standby-liveness", daemon=True)
    thread.start()
    try:
        yield
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=5)


def stand_by(elector: LeaderElector, liveness: str | None) -> bool:
    """Block until this replica leads (True), or SIGTERM/SIGINT came first (False)."""
    stop = threading.Event()

    def on_signal(_signum: int, _frame: FrameType | None) -> None:
        stop.set()  # nothing else here: the main thread may be inside a logging call

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        cfg = elector.config
        logger.info(
            "leader election: %s as %s (lease %ds, renew every %gs, deadline %gs)",
            cfg.where,
            cfg.identity,
            cfg.lease_duration_seconds,
            cfg.renew_period_seconds,
            cfg.renew_deadline_seconds,
        )
        with standby_liveness(liveness, elector):
            leading = elector.acquire(stop)
    finally:
        # kopf installs its own handlers when it starts; until then a signal ends the process
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if stop.is_set():
        logger.info("asked to stop while standing by: stopping without acting")
        return False
    return leading


def run_operator(options: OperatorOptions) -> int:
    """Run until SIGTERM/SIGINT; the exit code of the process."""
    try:
        settings = OperatorSettings.from_env(os.environ)
    except SettingsError as exc:
        print(f"webrelease operator: {exc}", file=sys.stderr)
        return EXIT_BAD_SETTINGS
    configure_logging(options)
    # registering the handlers is importing them
    from webrelease.operator import handlers  # noqa: PLC0415
    from webrelease.operator.kube import Kube, api_client  # noqa: PLC0415

    kopf_settings = kopf.OperatorSettings()
    # Watching listed namespaces, the operator has Roles in those namespaces only (the chart's
    # namespaced mode): kopf must not list namespaces or CRDs cluster-wide, which it would only be
    # refused (403s in the log) before falling back to the names it was given.
    kopf_settings.scanning.disabled = bool(options.namespaces)
    metrics = OperatorMetrics()
    metrics_server = (
        metrics.serve(settings.metrics_port, settings.metrics_host) if settings.metrics_port else None
    )
    elect = settings.leader_election if options.leader_elect is None else options.leader_elect
    elector: LeaderElector | None = None
    try:
        if elect:
            # a client of its own: renewals never queue behind the handlers' requests
            elector = LeaderElector(
                Kube(api_client()), election_config(settings), on_leadership=metrics.set_leader
            )
            if not stand_by(elector, options.liveness):
                return 0
            elector.start(on_lost=_exit_at_once)
        else:
            logger.info("leader election is off: this replica acts alone (run only one)")
            metrics.set_leader(True)
        kopf.run(
            settings=kopf_settings,
            standalone=True,
            # given, so that kopf does not guess one from the user name: the image's UID 65532
            # has no passwd entry, and kopf's guess (getpass.getuser) fails without one
            identity=own_identity(settings),  # type: ignore[arg-type]  # kopf: a NewType of str, not exported
            clusterwide=not options.namespaces,
            namespaces=list(options.namespaces),
            liveness_endpoint=options.liveness,
            memo=kopf.Memo({handlers.SETTINGS: settings, handlers.METRICS: metrics}),
        )
    finally:
        if elector is not None:
            elector.release()  # kopf has stopped: nothing acts any more
        if metrics_server is not None:
            metrics_server.shutdown()
            metrics_server.server_close()
    return 0

"""``webrelease operator``: the operator process (kopf underneath, in this process).

Settings are read from the environment once (:mod:`.settings`) and refused before anything starts
when invalid. kopf runs standalone (one operator at a time; the chart's Deployment has one replica
and the ``Recreate`` strategy), with JSON logs and a liveness endpoint when asked.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Final

import kopf

from webrelease.operator.settings import OperatorSettings, SettingsError

LOG_FORMATS: Final = {"json": kopf.LogFormat.JSON, "plain": kopf.LogFormat.PLAIN, "full": kopf.LogFormat.FULL}
LOG_LEVELS: Final = ("quiet", "normal", "verbose", "debug")
EXIT_BAD_SETTINGS: Final = 2


@dataclass(frozen=True)
class OperatorOptions:
    """The command line of ``webrelease operator``."""

    log_format: str = "json"
    log_level: str = "normal"
    liveness: str | None = None
    namespaces: Sequence[str] = field(default_factory=tuple)


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

    kopf_settings = kopf.OperatorSettings()
    # Watching listed namespaces, the operator has Roles in those namespaces only (the chart's
    # namespaced mode): kopf must not list namespaces or CRDs cluster-wide, which it would only be
    # refused (403s in the log) before falling back to the names it was given.
    kopf_settings.scanning.disabled = bool(options.namespaces)
    kopf.run(
        settings=kopf_settings,
        standalone=True,
        clusterwide=not options.namespaces,
        namespaces=list(options.namespaces),
        liveness_endpoint=options.liveness,
        memo=kopf.Memo({handlers.SETTINGS: settings}),
    )
    return 0

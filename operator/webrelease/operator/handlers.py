"""The kopf glue: which events call which function of :mod:`.reconcile`. Nothing else lives here.

- ``run`` (create, resume, spec change): :func:`.reconcile.start_run` for the new generation.
- ``results`` (a daemon per WebRelease): waits for something to happen (a shard pod changed, the
  WebRelease changed, or ``resyncSeconds`` passed), lets more events gather for ``batchSeconds``,
  then calls :func:`.reconcile.advance` once: one status write per batch, not one per pod event.
- ``shard_pods`` (every event of a pod of ours): remembers its state and wakes its release's daemon.
- ``releases`` (every event of a WebRelease): wakes its daemon; forgets it when deleted.

The daemon makes kopf put a finalizer on each WebRelease (``webrelease.dev/finalizer``) so that it
is stopped before the object goes; the Job and its pods then go by owner reference.
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime
import logging
from typing import Any

import kopf

from webrelease.copier.storage import StorageError
from webrelease.operator.constants import (
    GROUP,
    KOPF_ANNOTATION_PREFIX,
    LABEL_COMPONENT,
    LABEL_MANAGED_BY,
    MANAGED_BY,
    PLURAL,
    VERSION,
)
from webrelease.operator.kube import ApiError, Kube, api_client
from webrelease.operator.metrics import OperatorMetrics
from webrelease.operator.reconcile import Context, advance, shard_finished, start_run
from webrelease.operator.settings import OperatorSettings

CONTEXT = "context"
SETTINGS = "settings"
#: The process's OperatorMetrics (``webrelease operator`` serves them before kopf starts).
METRICS = "metrics"


def context_of(memo: Any) -> Context:
    ctx = memo.get(CONTEXT)
    if not isinstance(ctx, Context):
        raise kopf.PermanentError("the operator was not started by `webrelease operator`")
    return ctx


@kopf.on.startup()
def startup(settings: kopf.OperatorSettings, memo: kopf.Memo, logger: kopf.Logger, **_: Any) -> None:
    """Every kopf setting, and the shared context. Settings were validated before kopf started."""
    ours = memo.get(SETTINGS)
    if not isinstance(ours, OperatorSettings):
        raise RuntimeError("start the operator with `webrelease operator` (settings are missing)")
    # Progress and the last handled spec live in annotations under our own prefix; status is
    # ours alone and fully declared in the CRD.
    settings.persistence.progress_storage = kopf.AnnotationsProgressStorage(prefix=KOPF_ANNOTATION_PREFIX)
    settings.persistence.diffbase_storage = kopf.AnnotationsDiffBaseStorage(
        prefix=KOPF_ANNOTATION_PREFIX, key="last-handled-configuration"
    )
    settings.persistence.finalizer = f"{GROUP}/finalizer"
    # Events come from explicit milestones (events.py) and kopf's own warnings, not every log line.
    settings.posting.level = logging.WARNING
    # `kubectl describe wr` shows who said it: the operator, not the framework
    settings.posting.reporting_component = MANAGED_BY
    settings.posting.reporting_instance = ours.pod_name or MANAGED_BY
    settings.posting.event_name_prefix = "webrelease-"
    # Watches are re-established regularly, so a silently dropped connection is noticed.
    settings.watching.server_timeout = 300
    settings.watching.client_timeout = 330
    settings.watching.connect_timeout = 30
    settings.networking.request_timeout = 60
    metrics = memo.get(METRICS)
    if not isinstance(metrics, OperatorMetrics):
        raise RuntimeError("start the operator with `webrelease operator` (metrics are missing)")
    memo[CONTEXT] = Context(settings=ours, kube=Kube(api_client()), metrics=metrics)
    logger.info("webrelease operator started (worker image %s)", ours.worker_image)


@kopf.on.probe(id="releases")
def probe(memo: kopf.Memo, **_: Any) -> int:
    """Liveness: how many WebReleases have metrics (the endpoint answers while the loop runs)."""
    return len(context_of(memo).metrics.releases)


@kopf.on.resume(GROUP, VERSION, PLURAL, id="run")
@kopf.on.create(GROUP, VERSION, PLURAL, id="run")
@kopf.on.update(GROUP, VERSION, PLURAL, field="spec", id="run")
async def run(
    namespace: str | None, name: str, memo: kopf.Memo, retry: int, runtime: datetime.timedelta, **_: Any
) -> None:
    namespace = namespace or ""  # WebReleases are namespaced: never empty
    ctx = context_of(memo)
    async with ctx.lock(namespace, name):
        body = await asyncio.to_thread(ctx.kube.get_release, namespace, name)
        if body is not None:
            await start_run(ctx, body, retry=retry, waited=runtime.total_seconds())
    ctx.wake(namespace, name)


async def _until(wake: asyncio.Event, stopped: kopf.DaemonStopped, timeout: float) -> bool:
    """Wait for a wake-up, the daemon's stop, or ``timeout``; whether something happened."""

    async def stop() -> None:
        await stopped.wait()

    waiters = {asyncio.ensure_future(wake.wait()), asyncio.ensure_future(stop())}
    try:
        done, _pending = await asyncio.wait(waiters, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
        return bool(done)
    finally:
        for w in waiters:
            w.cancel()
        for w in waiters:
            with contextlib.suppress(asyncio.CancelledError):
                await w


@kopf.daemon(GROUP, VERSION, PLURAL, id="results", cancellation_timeout=10.0)
async def results(
    namespace: str | None,
    name: str,
    stopped: kopf.DaemonStopped,
    memo: kopf.Memo,
    logger: kopf.Logger,
    **_: Any,
) -> None:
    namespace = namespace or ""
    ctx = context_of(memo)
    wake = ctx.waker(namespace, name)
    relist = True  # after a (re)start, list the pods once: the watch only tells what changes
    while not stopped:
        wake.clear()
        try:
            async with ctx.lock(namespace, name):
                body = await asyncio.to_thread(ctx.kube.get_release, namespace, name)
                if body is None:
                    return
                await advance(ctx, body, relist=relist)
            relist = False
        except (kopf.TemporaryError, ApiError, StorageError, OSError) as exc:
            logger.warning("will try again: %s", exc)
            relist = True
        except Exception:
            # a bug must not stop the results of this release for good: log it, try again later
            logger.exception("unexpected error; will try again")
            relist = True
        # a quiet period (no event until the resync) lists the pods again, in case a watch event was lost
        relist = not await _until(wake, stopped, ctx.settings.resync_seconds) or relist
        # a batch: let the other pods' events of this moment arrive before writing status
        await stopped.wait(ctx.settings.batch_seconds)


@kopf.on.event("", "v1", "pods", labels={LABEL_MANAGED_BY: MANAGED_BY, LABEL_COMPONENT: "shard"})
async def shard_pods(body: kopf.Body, memo: kopf.Memo, **_: Any) -> None:
    ctx = context_of(memo)
    (namespace, release), attempt, just_finished = ctx.pods.observe(body)
    if attempt is None:
        return
    if just_finished:
        shard_finished(ctx, namespace, release, attempt)
    ctx.wake(namespace, release)


@kopf.on.event(GROUP, VERSION, PLURAL, id="releases")
async def releases(event: kopf.RawEvent, namespace: str | None, name: str, memo: kopf.Memo, **_: Any) -> None:
    namespace = namespace or ""
    ctx = context_of(memo)
    if event.get("type") == "DELETED":
        ctx.forget(namespace, name)
        ctx.metrics.forget_release(namespace, name)
        return
    ctx.wake(namespace, name)

"""``webrelease status`` and ``webrelease retry``: a WebRelease in a cluster, from a terminal or a script.

Exit codes of ``status`` (and of ``status --wait`` once the run has ended):

====  ==============================================================
0     the run of the current generation is Complete
2     no such WebRelease, or bad input: an invalid spec, customer list or build (nothing was released)
3     the run ended with failed customers (Degraded or Failed)
4     the run is still going (without ``--wait``), or ``--wait`` timed out
====  ==============================================================
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, Protocol, TextIO

from webrelease.operator.conditions import RESTARTABLE, Reason
from webrelease.operator.constants import ANNOTATION_RETRY
from webrelease.operator.kube import Kube, api_client, kubeconfig_namespace
from webrelease.operator.status import ConditionType, StepKind, WebReleaseStatus

EXIT_COMPLETE: Final = 0
EXIT_NOT_FOUND: Final = 2
EXIT_FAILED_CUSTOMERS: Final = 3
EXIT_IN_PROGRESS: Final = 4
#: Failed before any customer was released, because of what the user gave: exit code 2.
BAD_INPUT_REASONS: Final = frozenset(
    {Reason.INVALID_SPEC, Reason.INVALID_CUSTOMER_LIST, Reason.BUILD_UNUSABLE, Reason.SNAPSHOT_FAILED}
)


class ReleaseReader(Protocol):
    def get_release(self, namespace: str, name: str) -> dict[str, Any] | None: ...


def default_namespace(kubeconfig: str | None) -> str:
    """The current context's namespace, or ``default``."""
    return kubeconfig_namespace(kubeconfig)


def connect(kubeconfig: str | None) -> Kube:
    return Kube(api_client(kubeconfig))


def exit_code(body: dict[str, Any]) -> int:
    """What the object says, as an exit code (see the module doc)."""
    status = WebReleaseStatus.from_k8s(body.get("status"))
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    accepted = status.condition(ConditionType.ACCEPTED)
    if accepted is not None and accepted.status == "False" and status.observed_generation == generation:
        return EXIT_NOT_FOUND
    failed = status.condition(ConditionType.FAILED)
    if (
        failed is not None
        and failed.status == "True"
        and failed.observed_generation == generation
        and failed.reason in BAD_INPUT_REASONS
    ):
        return EXIT_NOT_FOUND
    if status.observed_generation != generation or status.run is None or status.run.generation != generation:
        return EXIT_IN_PROGRESS
    if retry_waiting(body, status):
        return EXIT_IN_PROGRESS  # `webrelease retry` was asked for and not taken up yet
    if status.completion_time is None or status.is_true(ConditionType.PROGRESSING):
        return EXIT_IN_PROGRESS
    if status.is_true(ConditionType.COMPLETE):
        return EXIT_COMPLETE
    return EXIT_FAILED_CUSTOMERS


def retry_waiting(body: dict[str, Any], status: WebReleaseStatus) -> bool:
    """The retry annotation holds a token the operator has not acted on yet."""
    token = ((body.get("metadata") or {}).get("annotations") or {}).get(ANNOTATION_RETRY)
    return bool(token) and token != status.retry_token


def headline(body: dict[str, Any], status: WebReleaseStatus) -> str:
    """One line: what the release is doing or how it ended, and never a state of another generation."""
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    if status.observed_generation is None:
        return "Pending: the operator has not taken the release up yet (is it running?)"
    if status.observed_generation != generation:
        return (
            f"Pending: the operator has not taken generation {generation} up yet "
            f"(what follows is of generation {status.observed_generation})"
        )
    progressing = status.condition(ConditionType.PROGRESSING)
    if progressing is None:
        return "Pending"
    line = progressing.reason
    first_true = next((c for c in status.conditions if c.status == "True"), None)
    if first_true is not None and first_true.reason != line and first_true.type != ConditionType.ACCEPTED:
        line += f" ({first_true.reason})"
    if status.completion_time is not None and retry_waiting(body, status):
        line += "; a retry was asked for and is not taken up yet"
    return line


def render(body: dict[str, Any], out: TextIO, *, max_shards: int | None = None) -> None:
    """The per-shard table and the totals, for a human."""
    meta = body.get("metadata") or {}
    status = WebReleaseStatus.from_k8s(body.get("status"))
    dry_run = status.run is not None and status.run.step == StepKind.PLAN
    print(
        f"WebRelease {meta.get('namespace')}/{meta.get('name')}  generation {meta.get('generation')}"
        + ("  (dry run: nothing is written)" if dry_run else ""),
        file=out,
    )
    print(f"state:      {headline(body, status)}", file=out)
    for cond in status.conditions:
        if cond.status == "True" and cond.message:
            print(f"  {cond.type.value}: {cond.message}", file=out)
    accepted = status.condition(ConditionType.ACCEPTED)
    if accepted is not None and accepted.status == "False":
        print(f"  Accepted=False: {accepted.message}", file=out)
    c, s, o = status.customers, status.shards, status.objects
    done = "planned" if dry_run else "succeeded"
    line = f"customers:  {c.total} total, {c.succeeded} {done}, {c.failed} failed"
    if c.pending or not c.not_released:
        line += f", {c.pending} pending"
    if c.not_released:
        line += f", {c.not_released} not released"
    print(line, file=out)
    if not dry_run:
        print(
            f"shards:     {s.total} total, {s.succeeded} succeeded, {s.failed} failed, {s.active} active, "
            f"{s.pending} pending",
            file=out,
        )
    if dry_run:
        print(
            f"objects:    a release would copy {o.copied}, render {o.rendered}, leave {o.unchanged} "
            f"unchanged, delete {o.deleted}, and write {o.bytes} bytes",
            file=out,
        )
    else:
        print(
            f"objects:    {o.copied} copied, {o.rendered} rendered, {o.unchanged} unchanged, "
            f"{o.deleted} deleted, {o.bytes} bytes written",
            file=out,
        )
    if status.canary is not None:
        shown = ", ".join(status.canary.ids)
        more = status.canary.count - len(status.canary.ids)
        print(f"canary:     {shown}" + (f" and {more} more" if more > 0 else ""), file=out)
    if status.run is not None:
        r = status.run
        job = "no Job (a dry run plans in the operator)" if dry_run else f"Job {r.job}"
        print(f"step:       {r.step.value} ({r.step_id}), {job}", file=out)
    if status.snapshot is not None:
        print(
            f"snapshot:   {status.snapshot.url} "
            f"({status.snapshot.count}, sha256 {status.snapshot.sha256[:12]}…)",
            file=out,
        )
    if status.report is not None:
        print(f"report:     {status.report.index or status.report.url}", file=out)
        if status.report.page:
            print(f"page:       {status.report.page}  (webrelease report {meta.get('name')})", file=out)
    if status.start_time:
        print(
            f"started:    {status.start_time}"
            + (f", ended {status.completion_time}" if status.completion_time else ""),
            file=out,
        )
    rows = status.shard_statuses if max_shards is None else status.shard_statuses[:max_shards]
    if rows:
        print("", file=out)
        print(
            f"{'SHARD':>6}  {'STATE':<9}  {'CUSTOMERS':>9}  {'OK':>6}  {'FAILED':>6}  {'TRIES':>5}  "
            f"{'SECONDS':>7}  FAILED IDS",
            file=out,
        )
        for e in rows:
            seconds = "" if e.seconds is None else str(e.seconds)
            print(
                f"{e.index:>6}  {e.state.value:<9}  {e.customers:>9}  {e.succeeded:>6}  {e.failed:>6}  "
                f"{e.attempts:>5}  {seconds:>7}  {', '.join(e.failed_ids)}",
                file=out,
            )
        hidden = status.shard_statuses_omitted + len(status.shard_statuses) - len(rows)
        if hidden:
            print(f"({hidden} more shard(s) not shown; every shard is in the report)", file=out)
    if status.failed_customers.sample:
        print("", file=out)
        print(f"failed customers ({status.failed_customers.total}):", file=out)
        for f in status.failed_customers.sample:
            print(f"  {f.id}  (shard {f.shard}): {f.reason}", file=out)
        more = status.failed_customers.total - len(status.failed_customers.sample)
        if more > 0:
            print(f"  ... and {more} more (see the report)", file=out)


def status_command(  # noqa: PLR0913 (clock and sleep are test seams)
    kube: ReleaseReader,
    namespace: str,
    name: str,
    out: TextIO,
    *,
    as_json: bool = False,
    wait: float | None = None,
    poll: float = 2.0,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    """Print the release's status; with ``wait`` (seconds), first wait for its run to end."""
    deadline = clock() + wait if wait is not None else None
    while True:
        body = kube.get_release(namespace, name)
        if body is None:
            print(f"webrelease: WebRelease {namespace}/{name} not found", file=out)
            return EXIT_NOT_FOUND
        code = exit_code(body)
        if code != EXIT_IN_PROGRESS or deadline is None or clock() >= deadline:
            break
        sleep(min(poll, max(0.0, deadline - clock())))
    if as_json:
        print(json.dumps(body.get("status") or {}, indent=2), file=out)
    else:
        render(body, out)
    return code


def retry_outlook(body: dict[str, Any]) -> tuple[bool, str]:
    """Whether a retry can do something for this release, and what it will do (or why not)."""
    status = WebReleaseStatus.from_k8s(body.get("status"))
    generation = int((body.get("metadata") or {}).get("generation") or 0)
    failed = status.condition(ConditionType.FAILED)
    accepted = status.condition(ConditionType.ACCEPTED)
    if accepted is not None and accepted.status == "False" and status.observed_generation == generation:
        return False, (
            "the spec is invalid; a retry cannot help: fix the spec (a new generation starts a new run): "
            + accepted.message
        )
    if status.observed_generation != generation or status.completion_time is None:
        return True, "the run is still going: the retry is acted on once it has ended"
    if failed is not None and failed.status == "True" and failed.reason in RESTARTABLE:
        return True, "the run failed before its first Job: it starts again from the customer source"
    c = status.customers
    if dry_run_of(status):
        return False, "a dry run writes nothing: there is nothing to retry"
    if c.failed == 0 and c.pending == 0 and c.not_released == 0:
        return False, f"nothing to retry: all {c.succeeded} customers of the run succeeded"
    again = c.failed + c.pending + c.not_released
    return True, (
        f"{again} customer(s) of the run that did not succeed will be released again, "
        "as their records are now in the customer source"
    )


def dry_run_of(status: WebReleaseStatus) -> bool:
    return status.run is not None and status.run.step == StepKind.PLAN


def retry_command(kube: Kube, namespace: str, name: str, out: TextIO, *, token: str | None = None) -> int:
    """Set the retry annotation to a new token: the operator re-runs the customers of the last run
    that did not succeed (once the run has ended). Says first what the retry will do, and sets
    nothing when it cannot do anything (exit 0 when there is nothing to do, 2 for an invalid spec)."""
    body = kube.get_release(namespace, name)
    if body is None:
        print(f"webrelease: WebRelease {namespace}/{name} not found", file=out)
        return EXIT_NOT_FOUND
    useful, what = retry_outlook(body)
    if not useful:
        print(f"webrelease: {namespace}/{name}: {what}; no retry set", file=out)
        return EXIT_NOT_FOUND if "spec is invalid" in what else EXIT_COMPLETE
    token = token or datetime.now(UTC).strftime("%Y%m%dT%H%M%S.%fZ")
    annotated = kube.annotate_release(namespace, name, {ANNOTATION_RETRY: token})
    if annotated is None:
        print(f"webrelease: WebRelease {namespace}/{name} not found", file=out)
        return EXIT_NOT_FOUND
    print(f"{ANNOTATION_RETRY}={token} set on {namespace}/{name}: {what}", file=out)
    return EXIT_COMPLETE

"""What a person looks at: ``webrelease status NAME --watch`` (a live view of a running release)
and ``webrelease report NAME|RUN_URL`` (the run's ``report.html``, fetched to a local file).

The watch follows the WebRelease through the API's watch (a fresh read, then every change) and
redraws one frame per change: a progress bar over customers with the rate and the time left, the
shards by state (one mark per shard while they fit), the latest failures and where the report is.
On a terminal the frame is redrawn in place; otherwise (a pipe, a CI log) one plain line is printed
whenever the numbers change. It ends as ``webrelease status`` does, with the same exit codes, after
printing the full status once.
"""

from __future__ import annotations

import shutil
import time
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Final, Protocol, TextIO

from webrelease.copier.runlayout import PAGE_NAME
from webrelease.copier.spec import Storage, parse_spec
from webrelease.copier.storage import Credentials, Location, NotFound, StorageError, parse_url
from webrelease.copier.storage.storeset import StoreSet
from webrelease.operator.commands import EXIT_IN_PROGRESS, EXIT_NOT_FOUND, exit_code, render
from webrelease.operator.conditions import Reason
from webrelease.operator.reports import credentials_from_secret
from webrelease.operator.status import ConditionType, ShardState, WebReleaseStatus

Obj = dict[str, Any]
#: Seconds of history the rate is measured over.
RATE_WINDOW: Final = 60.0
#: Shards drawn one mark each up to this many; beyond, counts only.
MAX_MARKS: Final = 400
#: Failures listed under the bar.
LATEST_FAILURES: Final = 5
BAR_WIDTH: Final = 40
_MARK: Final = {
    ShardState.SUCCEEDED: ("#", "\x1b[32m"),
    ShardState.FAILED: ("x", "\x1b[31m"),
    ShardState.ACTIVE: ("~", "\x1b[33m"),
    ShardState.PENDING: (".", "\x1b[90m"),
}
_RESET: Final = "\x1b[0m"
_HOME_CLEAR: Final = "\x1b[H\x1b[2J"
EXIT_WATCH_FAILED: Final = 1


class ReleaseWatcher(Protocol):
    def get_release(self, namespace: str, name: str) -> Obj | None: ...

    def watch_release(self, namespace: str, name: str, *, seconds: int = 60) -> Iterator[Obj | None]: ...


def _duration(seconds: float) -> str:
    s = max(0, round(seconds))
    h, rest = divmod(s, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


@dataclass
class Rate:
    """Customers done per second over the last :data:`RATE_WINDOW` seconds."""

    samples: deque[tuple[float, int]] = field(default_factory=deque)

    def add(self, when: float, done: int) -> None:
        if self.samples and done < self.samples[-1][1]:
            self.samples.clear()  # a new run or step started over
        self.samples.append((when, done))
        while len(self.samples) > 2 and when - self.samples[0][0] > RATE_WINDOW:
            self.samples.popleft()

    def per_second(self) -> float | None:
        if len(self.samples) < 2:
            return None
        (t0, d0), (t1, d1) = self.samples[0], self.samples[-1]
        return (d1 - d0) / (t1 - t0) if t1 > t0 and d1 > d0 else None


def frame(body: Obj, rate: Rate, *, color: bool, width: int = 100) -> list[str]:
    """One picture of the release: headline, progress bar, shards, latest failures, report."""
    meta = body.get("metadata") or {}
    status = WebReleaseStatus.from_k8s(body.get("status"))
    progressing = status.condition(ConditionType.PROGRESSING)
    reason = progressing.reason if progressing is not None else "Pending"
    message = progressing.message if progressing is not None else ""
    c, s = status.customers, status.shards
    done = c.succeeded + c.failed
    total = max(c.total, done)
    filled = round(BAR_WIDTH * done / total) if total else 0
    ok = round(BAR_WIDTH * c.succeeded / total) if total else 0
    bar = "#" * ok + "x" * max(0, filled - ok) + "-" * (BAR_WIDTH - filled)
    if color:
        bar = f"\x1b[32m{'#' * ok}\x1b[31m{'x' * max(0, filled - ok)}{_RESET}{'-' * (BAR_WIDTH - filled)}"
    per_second = rate.per_second()
    speed = f"{per_second:.1f}/s" if per_second else "-/s"
    eta = f"ETA {_duration((total - done) / per_second)}" if per_second and done < total else ""
    percent = f"{100 * done / total:.0f}%" if total else "0%"
    lines = [
        f"WebRelease {meta.get('namespace')}/{meta.get('name')}  generation {meta.get('generation')}  "
        f"{reason}{': ' + message if message else ''}"[:width],
        f"[{bar}] {done}/{total} customers {percent}  {speed}  {eta}".rstrip(),
        f"shards: {s.total} total, {s.succeeded} succeeded, {s.failed} failed, {s.active} active, "
        f"{s.pending} pending",
    ]
    if 0 < len(status.shard_statuses) <= MAX_MARKS and not status.shard_statuses_omitted:
        marks = []
        for e in status.shard_statuses:
            mark, code = _MARK[e.state]
            marks.append(f"{code}{mark}{_RESET}" if color else mark)
        per_line = max(10, width - 2)
        for i in range(0, len(marks), per_line):
            lines.append("  " + "".join(marks[i : i + per_line]))
    if status.failed_customers.sample:
        lines.append(f"latest failures ({status.failed_customers.total}):")
        for f in status.failed_customers.sample[-LATEST_FAILURES:]:
            lines.append(f"  {f.id} (shard {f.shard}): {f.reason}"[:width])
    if status.report is not None:
        lines.append(f"report: {status.report.page or status.report.url}")
    return lines


def plain_line(body: Obj, rate: Rate, now: str) -> str:
    """One line for a log: the numbers that change."""
    status = WebReleaseStatus.from_k8s(body.get("status"))
    progressing = status.condition(ConditionType.PROGRESSING)
    reason = progressing.reason if progressing is not None else "Pending"
    c, s = status.customers, status.shards
    per_second = rate.per_second()
    speed = f", {per_second:.1f} customers/s" if per_second else ""
    return (
        f"{now} {reason}: {c.succeeded + c.failed}/{c.total} customers ({c.failed} failed), "
        f"{s.succeeded + s.failed}/{s.total} shards ({s.active} active){speed}"
    )


def watch_command(
    kube: ReleaseWatcher,
    namespace: str,
    name: str,
    out: TextIO,
    *,
    tty: bool,
    wait: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> int:
    """Follow the release until its run ends (or ``wait`` seconds pass: exit 4); the exit code of
    ``webrelease status``."""
    deadline = clock() + wait if wait is not None else None
    rate = Rate()
    shown = [""]

    def show(body: Obj) -> int:
        customers = WebReleaseStatus.from_k8s(body.get("status")).customers
        rate.add(clock(), customers.succeeded + customers.failed)
        if tty:
            columns = shutil.get_terminal_size((100, 40)).columns
            out.write(_HOME_CLEAR + "\n".join(frame(body, rate, color=True, width=columns)) + "\n")
            out.flush()
        else:
            numbers = plain_line(body, Rate(), "")
            if numbers != shown[0]:
                print(plain_line(body, rate, time.strftime("%H:%M:%S")), file=out, flush=True)
            shown[0] = numbers
        return exit_code(body)

    def end(body: Obj, code: int) -> int:
        if tty:
            out.write(_HOME_CLEAR)
        print("", file=out)
        render(body, out)
        return code

    body = kube.get_release(namespace, name)
    while True:
        if body is None:
            print(f"webrelease: WebRelease {namespace}/{name} not found", file=out)
            return EXIT_NOT_FOUND
        code = show(body)
        if code != EXIT_IN_PROGRESS or (deadline is not None and clock() >= deadline):
            return end(body, code)
        remaining = 60.0 if deadline is None else max(1.0, deadline - clock())
        for changed in kube.watch_release(namespace, name, seconds=int(min(60.0, remaining))):
            if changed is None:
                break
            body = changed
            code = show(body)
            if code != EXIT_IN_PROGRESS or (deadline is not None and clock() >= deadline):
                return end(body, code)
        else:
            # the apiserver ended the watch: read again, watch again
            body = kube.get_release(namespace, name)
            continue
        body = None


# ------------------------------------------------------------------------------------ report


class ReleaseReader(Protocol):
    def get_release(self, namespace: str, name: str) -> Obj | None: ...

    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None: ...


@dataclass(frozen=True)
class PageSource:
    """Where a run's page is and how to reach that storage."""

    folder: Location
    storage: Storage
    credentials: Credentials | None = None


def run_folder_of(url: str) -> Location:
    """A run's folder from its URL, or from the URL of its ``report.html`` or ``index.json``."""
    for suffix in (PAGE_NAME, "index.json"):
        if url.endswith("/" + suffix):
            url = url[: -len(suffix)]
    return parse_url(url if url.endswith("/") else url + "/")


def page_source_of_release(kube: ReleaseReader, namespace: str, name: str) -> PageSource | str:
    """Where the page of the release's latest run is (its storage as the release reaches it, with
    the release's Secret when this user may read it), or why there is none."""
    body = kube.get_release(namespace, name)
    if body is None:
        return f"WebRelease {namespace}/{name} not found"
    status = WebReleaseStatus.from_k8s(body.get("status"))
    report = status.report
    if report is None or report.index is None:
        failed = status.condition(ConditionType.FAILED)
        if failed is not None and failed.status == "True" and failed.reason != Reason.TOO_MANY_FAILURES:
            return f"WebRelease {namespace}/{name} has no report: {failed.reason}: {failed.message}"
        return f"WebRelease {namespace}/{name} has no report yet (its first step has not ended)"
    spec = parse_spec(body.get("spec") or {})
    credentials = None
    if spec.storage.secret_ref is not None:
        try:
            values = kube.secret_values(namespace, spec.storage.secret_ref.name)
            credentials = credentials_from_secret(spec.storage.secret_ref.name, values)
        except Exception:  # not allowed to read it, or it is incomplete: use our own identity
            credentials = None
    return PageSource(run_folder_of(report.page or report.index), spec.storage, credentials)


def fetch_page(source: PageSource, out_dir: Path) -> Path:
    """The page as a local file: itself for ``file://``, else downloaded into ``out_dir``
    (``<namespace>-<release>-<run>-report.html``, from the folder's last three names)."""
    folder = source.folder
    if folder.scheme == "file":
        path = Path(folder.prefix) / PAGE_NAME
        if not path.exists():
            raise NotFound(f"{folder.url}{PAGE_NAME} not found")
        return path
    stores = StoreSet(source.storage, max_in_flight=2, credentials=source.credentials)
    data = stores(folder).get(folder, PAGE_NAME)
    parts = [p for p in folder.url.rstrip("/").split("/") if p][-3:]
    target = out_dir / ("-".join(parts) + "-" + PAGE_NAME)
    target.write_bytes(data)
    return target


def report_command(
    source: PageSource | str, out: TextIO, *, out_dir: Path, open_it: bool, opener: Callable[[str], bool]
) -> int:
    """``webrelease report``: fetch the page, print its path, open it when asked."""
    if isinstance(source, str):
        print(f"webrelease: {source}", file=out)
        return EXIT_NOT_FOUND
    try:
        path = fetch_page(source, out_dir)
    except NotFound:
        print(f"webrelease: no {PAGE_NAME} in {source.folder.url}", file=out)
        return EXIT_NOT_FOUND
    except StorageError as exc:
        print(f"webrelease: reading {source.folder.url}{PAGE_NAME}: {exc}", file=out)
        return EXIT_WATCH_FAILED
    print(path, file=out)
    if open_it and not opener(path.resolve().as_uri()):
        print(f"no browser found here: open {path} in one", file=out)
    return 0

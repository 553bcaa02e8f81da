"""``webrelease``: the command line.

Subcommands are small self-contained pairs: an ``_add_<name>(subparsers)`` that declares the
parser and sets ``handler``, and the handler ``(args) -> exit code``. To add one, write the pair
and append the adder to :data:`COMMANDS`. Handlers import what they need *inside* the function,
so that ``webrelease run`` never imports kopf or the Kubernetes client.

Exit codes (:mod:`webrelease.copier.exitcodes`): 0 ok, 1 unexpected error, 2 bad input,
3 some customers failed (``verify``: some sites differ).
"""

# Handlers import lazily on purpose (see above).
# ruff: noqa: PLC0415
from __future__ import annotations

import argparse
import json
import logging
import os
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from webrelease.copier.spec import WebReleaseSpec

Handler = Callable[[argparse.Namespace], int]
Subparsers = Any  # argparse._SubParsersAction: private, so not named in annotations

EXIT_BAD_INPUT = 2  # the same as webrelease.copier.exitcodes (kept importable without it)


def _err(message: str) -> None:
    print(f"webrelease: {message}", file=sys.stderr)


def _load(path: str) -> tuple[WebReleaseSpec, str]:
    """A release file: its spec with relative ``file://`` URLs resolved against the file's folder,
    and its name. Raises SpecError."""
    from webrelease.copier.fileurls import resolve_file_urls
    from webrelease.copier.spec import load_release

    release = load_release(path)
    return resolve_file_urls(release.spec, Path(path).resolve().parent), release.metadata.name


def _namespace_of(path: str) -> str:
    """The release file's ``metadata.namespace``, else the namespace ``kubectl apply`` would use."""
    from webrelease.copier.runlayout import LOCAL_NAMESPACE
    from webrelease.copier.spec import load_release

    return load_release(path).metadata.namespace or LOCAL_NAMESPACE


def _release_argument(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "release", metavar="release.yaml", help="a WebRelease manifest (the file you would kubectl apply)"
    )


# -- run ---------------------------------------------------------------------------------------


def _add_run(sub: Subparsers) -> None:
    p = sub.add_parser(
        "run",
        help="release locally: every shard as a local worker process",
        description="Snapshot the customer list, run every shard as a local worker process with a "
        "progress bar, and write the report (file:// and s3:// both work).",
    )
    _release_argument(p)
    p.add_argument(
        "--workers", type=int, default=None, help="shards at a time (default: CPUs, at most parallelism)"
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="show a progress bar"
    )
    p.set_defaults(handler=_run)


def _run(args: argparse.Namespace) -> int:
    from webrelease.copier.localrun import describe, run_local
    from webrelease.copier.spec import SpecError

    try:
        spec, name = _load(args.release)
        namespace = _namespace_of(args.release)
    except (SpecError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if spec.dry_run:
        print("spec.dryRun is true: planning only, nothing is written")
        return _plan_spec(spec, name, out=None, verbose=False, progress=args.progress)
    if args.workers is not None and args.workers < 1:
        _err("--workers must be at least 1")
        return EXIT_BAD_INPUT
    outcome = run_local(spec, name, namespace=namespace, workers=args.workers, progress=args.progress)
    if outcome.report is None:
        _err(str(outcome.error))
    else:
        for line in describe(outcome, spec):
            print(line)
    return outcome.exit_code


# -- plan --------------------------------------------------------------------------------------


def _add_plan(sub: Subparsers) -> None:
    p = sub.add_parser(
        "plan",
        help="what each customer would get; writes nothing",
        description="Print, per customer, how many files would be copied, rendered, overridden, left "
        "unchanged or deleted. Only read requests are sent.",
    )
    _release_argument(p)
    p.add_argument(
        "--out", type=Path, default=None, help="also write the plan as JSON Lines to this local file"
    )
    p.add_argument("-v", "--verbose", action="store_true", help="list every file that would change")
    p.add_argument(
        "--customers",
        metavar="FILE",
        type=Path,
        default=None,
        help="read the customer list from this local file (JSON lines, JSON or CSV) instead of the "
        "release's source: for a list that lives in a ConfigMap, `kubectl get configmap NAME "
        "-o jsonpath='{.data.KEY}' > FILE`",
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="show a progress bar"
    )
    p.set_defaults(handler=_plan)


def _plan(args: argparse.Namespace) -> int:
    from webrelease.copier.spec import SpecError

    try:
        spec, name = _load(args.release)
    except (SpecError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    if args.customers is not None:
        spec = _with_local_customers(spec, args.customers)
    elif spec.customers.config_map_ref is not None:
        ref = spec.customers.config_map_ref
        _err(
            f"spec.customers.configMapRef: the list is in ConfigMap {ref.name!r} of a cluster; plan it "
            f"with --customers FILE (kubectl get configmap {ref.name} -o jsonpath='{{.data.{ref.key}}}' "
            "> FILE)"
        )
        return EXIT_BAD_INPUT
    return _plan_spec(spec, name, out=args.out, verbose=args.verbose, progress=args.progress)


def _with_local_customers(spec: WebReleaseSpec, path: Path) -> WebReleaseSpec:
    """``spec`` with its customer list read from a local file (its format as the release says)."""
    from webrelease.copier.spec import Customers

    customers = Customers(url=path.resolve().as_uri(), format=spec.customers.format)
    return spec.model_copy(update={"customers": customers})


def _plan_spec(
    spec: WebReleaseSpec, name: str, *, out: Path | None, verbose: bool, progress: bool | None
) -> int:
    from webrelease.copier.customers import CustomerListError
    from webrelease.copier.desired import BuildError
    from webrelease.copier.dryrun import encode_plan, plan_release
    from webrelease.copier.exitcodes import EXIT_CUSTOMERS_FAILED, EXIT_OK
    from webrelease.copier.localrun import load_run_customers
    from webrelease.copier.progress import Progress
    from webrelease.copier.shard import store_set_for
    from webrelease.copier.storage import StorageError

    stores = store_set_for(spec)
    try:
        customers = load_run_customers(spec, stores)
    except (CustomerListError, StorageError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    with Progress(len(customers), enabled=progress, desc="planning") as bar:
        try:
            planned = plan_release(
                spec, name, customers, stores, on_customer=lambda p: bar.advance(p.plan is not None)
            )
        except BuildError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
    for p in planned:
        print(p.line(verbose=verbose))
    failed = [p for p in planned if p.plan is None]
    print(f"{len(planned)} customer(s) planned, {len(failed)} cannot be released")
    if out is not None:
        out.write_bytes(encode_plan(planned))
        print(f"plan written to {out}")
    return EXIT_CUSTOMERS_FAILED if failed else EXIT_OK


# -- verify ------------------------------------------------------------------------------------


def _add_verify(sub: Subparsers) -> None:
    p = sub.add_parser(
        "verify",
        help="audit every site against what the release should have produced",
        description="Recompute what every site should hold and compare it with what it holds, "
        "listing every missing, different or (with prune) extra file. Exit 0 when every site is "
        "exactly right, 3 when there are differences. Writes nothing.",
    )
    _release_argument(p)
    p.add_argument(
        "--out", type=Path, default=None, help="also write the differences as JSON Lines to this file"
    )
    p.add_argument(
        "--progress", action=argparse.BooleanOptionalAction, default=None, help="show a progress bar"
    )
    p.set_defaults(handler=_verify)


def _verify(args: argparse.Namespace) -> int:
    from webrelease.copier.customers import CustomerListError
    from webrelease.copier.desired import BuildError
    from webrelease.copier.exitcodes import EXIT_CUSTOMERS_FAILED, EXIT_OK
    from webrelease.copier.localrun import load_run_customers
    from webrelease.copier.progress import Progress
    from webrelease.copier.shard import store_set_for
    from webrelease.copier.spec import SpecError
    from webrelease.copier.storage import StorageError
    from webrelease.copier.verify import audit

    try:
        spec, name = _load(args.release)
        stores = store_set_for(spec)
        customers = load_run_customers(spec, stores)
    except (SpecError, CustomerListError, StorageError, ValueError) as exc:
        _err(str(exc))
        return EXIT_BAD_INPUT
    with Progress(len(customers), enabled=args.progress, desc="verifying") as bar:
        try:
            audits = audit(
                spec, name, customers, stores, on_customer=lambda a: bar.advance(not a.differences)
            )
        except BuildError as exc:
            _err(str(exc))
            return EXIT_BAD_INPUT
    diffs = [d for a in audits for d in a.differences]
    for d in diffs:
        print(f"{d.customer}  {d.problem}  {d.key}  {d.detail}".rstrip())
    bad = sum(1 for a in audits if a.differences)
    files = sum(a.files for a in audits)
    print(f"{len(audits)} site(s), {files} file(s) checked: {len(diffs)} difference(s) in {bad} site(s)")
    if args.out is not None:
        args.out.write_bytes(b"".join(json.dumps(d.to_json()).encode() + b"\n" for d in diffs))
    return EXIT_CUSTOMERS_FAILED if diffs else EXIT_OK


# -- shard -------------------------------------------------------------------------------------


def _add_shard(sub: Subparsers) -> None:
    p = sub.add_parser(
        "shard",
        help="release one shard of a snapshot (what a Job pod runs)",
        description="Release the customers of one shard. Every option can also come from the "
        "environment (see docs/copier.md): WEBRELEASE_SPEC or WEBRELEASE_SPEC_FILE, "
        "WEBRELEASE_SNAPSHOT_URL, WEBRELEASE_SNAPSHOT_SHA256, JOB_COMPLETION_INDEX, "
        "WEBRELEASE_SHARD_SIZE, WEBRELEASE_REPORT_URL, WEBRELEASE_RELEASE_NAME, TERMINATION_MESSAGE_PATH.",
    )
    p.add_argument(
        "--spec-file", default=None, help="the release: a WebRelease manifest or its spec (YAML/JSON)"
    )
    p.add_argument("--release-name", default=None, help="default: the manifest's metadata.name")
    p.add_argument("--snapshot-url", default=None)
    p.add_argument("--snapshot-sha256", default=None)
    p.add_argument("--index", type=int, default=None, help="default: JOB_COMPLETION_INDEX")
    p.add_argument("--shard-size", type=int, default=None, help="default: spec.sharding.customersPerShard")
    p.add_argument(
        "--report-url", default=None, help="the run's report folder (default: the snapshot's folder)"
    )
    p.add_argument("--termination-message-path", default=None)
    p.set_defaults(handler=_shard)


def _shard(args: argparse.Namespace) -> int:
    from webrelease.copier.exitcodes import EXIT_CRASH
    from webrelease.copier.invocation import index_hint, shard_settings, termination_target
    from webrelease.copier.progress import ProgressLines
    from webrelease.copier.results import ShardResult, ShardSummary, write_termination_message
    from webrelease.copier.shard import ShardJob, run_shard, store_set_for
    from webrelease.copier.spec import SpecError
    from webrelease.copier.storage import parse_url

    flags = vars(args)
    environ = dict(os.environ)
    term = termination_target(flags, environ)
    try:
        settings = shard_settings(flags, environ)
        job = ShardJob(
            settings.spec,
            settings.release_name,
            settings.snapshot_url,
            settings.snapshot_sha256,
            settings.index,
            settings.shard_size,
            parse_url(settings.report_url),
        )
    except (SpecError, ValueError) as exc:
        _err(str(exc))
        summary = ShardSummary(
            index=index_hint(flags, environ), exitCode=EXIT_BAD_INPUT, error=str(exc)[:1000]
        )
        write_termination_message(term, summary)
        return EXIT_BAD_INPUT
    try:
        # progress lines on stderr: what `kubectl logs` of a shard pod shows while it runs
        lines = ProgressLines(f"shard {job.index}")
        result = run_shard(
            job, store_set_for(job.spec), on_start=lines.start, on_customer=lambda r: lines.advance(r.ok)
        )
    except Exception as exc:
        logging.getLogger("webrelease.shard").exception("shard %d failed", job.index)
        result = ShardResult(job.index, error=f"{type(exc).__name__}: {exc}", error_code=EXIT_CRASH)
    summary = result.summary()
    write_termination_message(term, summary)
    print(summary.to_bytes().decode())
    if result.error:
        _err(f"shard {job.index}: {result.error}")
    return result.exit_code


# -- status, retry, operator (the cluster side; kopf and the Kubernetes client load only here) ----


def _cluster_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("name", help="the WebRelease's name")
    p.add_argument("-n", "--namespace", default=None, help="default: the kubeconfig context's namespace")
    p.add_argument(
        "--kubeconfig", default=None, help="default: in-cluster, else $KUBECONFIG or ~/.kube/config"
    )


def _add_status(sub: Subparsers) -> None:
    p = sub.add_parser(
        "status",
        help="a WebRelease's per-shard table and totals",
        description="Print the status of a WebRelease in a cluster: totals, every shard, failed customers. "
        "Exit 0 when its run is Complete, 2 when it does not exist or its input is bad, 3 when the "
        "run ended with failed customers, 4 while it is still going.",
    )
    _cluster_arguments(p)
    p.add_argument("-o", "--output", choices=("table", "json"), default="table")
    p.add_argument(
        "--wait", type=float, default=None, metavar="SECONDS", help="wait for the run to end first"
    )
    p.add_argument(
        "--watch",
        action="store_true",
        help="follow the run live until it ends (progress bar, rate, ETA, shards, latest failures; "
        "plain lines when not on a terminal); --wait limits how long",
    )
    p.set_defaults(handler=_status)


def _status(args: argparse.Namespace) -> int:
    from webrelease.operator.commands import connect, default_namespace, status_command

    namespace = args.namespace or default_namespace(args.kubeconfig)
    if args.watch:
        from webrelease.operator.views import watch_command

        tty = sys.stdout.isatty() and os.environ.get("TERM") != "dumb"
        return watch_command(
            connect(args.kubeconfig), namespace, args.name, sys.stdout, tty=tty, wait=args.wait
        )
    return status_command(
        connect(args.kubeconfig),
        namespace,
        args.name,
        sys.stdout,
        as_json=args.output == "json",
        wait=args.wait,
    )


def _add_report(sub: Subparsers) -> None:
    p = sub.add_parser(
        "report",
        help="fetch the report page (report.html) of a WebRelease's latest run, or of a run folder",
        description="Fetch report.html: of the latest run of the WebRelease NAME (its status names it; "
        "the release's storage Secret is used when you may read it, else your own credentials), or "
        "from RUN_URL (a run folder, or its report.html or index.json: s3://… or file://…). Prints "
        "the local path; --open opens it in a browser.",
    )
    p.add_argument("target", metavar="NAME|RUN_URL")
    p.add_argument("-n", "--namespace", default=None, help="default: the kubeconfig context's namespace")
    p.add_argument(
        "--kubeconfig", default=None, help="default: in-cluster, else $KUBECONFIG or ~/.kube/config"
    )
    p.add_argument(
        "--endpoint-url",
        default=os.environ.get("AWS_ENDPOINT_URL"),
        help="the S3 endpoint of RUN_URL (default: $AWS_ENDPOINT_URL, else AWS)",
    )
    p.add_argument("--out-dir", type=Path, default=Path(), help="where a fetched page is written")
    p.add_argument("--open", action="store_true", help="open the page in a browser")
    p.set_defaults(handler=_report)


def _report(args: argparse.Namespace) -> int:
    import webbrowser

    from webrelease.copier.spec import Storage
    from webrelease.operator.views import PageSource, page_source_of_release, report_command, run_folder_of

    source: PageSource | str
    if "://" in args.target:
        try:
            source = PageSource(run_folder_of(args.target), Storage(endpoint_url=args.endpoint_url))
        except ValueError as exc:
            _err(f"{args.target}: {exc}")
            return EXIT_BAD_INPUT
    else:
        from webrelease.operator.commands import connect, default_namespace

        namespace = args.namespace or default_namespace(args.kubeconfig)
        source = page_source_of_release(connect(args.kubeconfig), namespace, args.target)
    return report_command(source, sys.stdout, out_dir=args.out_dir, open_it=args.open, opener=webbrowser.open)


def _add_retry(sub: Subparsers) -> None:
    p = sub.add_parser(
        "retry",
        help="re-run the customers of a WebRelease's last run that did not succeed",
        description="Set the webrelease.dev/retry annotation to a new token; once the run has ended, the "
        "operator releases again only the customers that did not succeed.",
    )
    _cluster_arguments(p)
    p.add_argument("--token", default=None, help="the annotation's value (default: the current time)")
    p.set_defaults(handler=_retry)


def _retry(args: argparse.Namespace) -> int:
    from webrelease.operator.commands import connect, default_namespace, retry_command

    namespace = args.namespace or default_namespace(args.kubeconfig)
    return retry_command(connect(args.kubeconfig), namespace, args.name, sys.stdout, token=args.token)


def _add_operator(sub: Subparsers) -> None:
    p = sub.add_parser(
        "operator",
        help="run the operator (kopf) in this process",
        description="Run the WebRelease operator. Settings come from WEBRELEASE_* environment variables "
        "(docs/operator.md); the Kubernetes API from in-cluster credentials or the kubeconfig.",
    )
    p.add_argument("--log-format", choices=("json", "plain", "full"), default="json")
    p.add_argument(
        "--log-level",
        dest="operator_log_level",
        choices=("quiet", "normal", "verbose", "debug"),
        default="normal",
    )
    p.add_argument("--liveness", default=None, metavar="URL", help="e.g. http://0.0.0.0:8080/healthz")
    scope = p.add_mutually_exclusive_group()
    scope.add_argument("-A", "--all-namespaces", action="store_true", help="watch every namespace (default)")
    scope.add_argument(
        "-n", "--namespace", action="append", default=[], help="watch this namespace (repeatable)"
    )
    p.add_argument(
        "--leader-elect",
        action=argparse.BooleanOptionalAction,
        default=None,
        help="act only while holding the leader-election Lease, so replicas can stand by (default: "
        "WEBRELEASE_LEADER_ELECTION, true); --no-leader-elect for a single local operator",
    )
    p.set_defaults(handler=_operator)


def _operator(args: argparse.Namespace) -> int:
    from webrelease.operator.main import OperatorOptions, run_operator

    return run_operator(
        OperatorOptions(
            log_format=args.log_format,
            log_level=args.operator_log_level,
            liveness=args.liveness,
            namespaces=tuple(args.namespace),
            leader_elect=args.leader_elect,
        )
    )


# -- main --------------------------------------------------------------------------------------

COMMANDS: list[Callable[[Subparsers], None]] = [
    _add_run,
    _add_plan,
    _add_verify,
    _add_shard,
    _add_status,
    _add_report,
    _add_retry,
    _add_operator,
]


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="webrelease",
        description="Release a web build to every customer's own site, customised per customer.",
    )
    parser.add_argument("--log-level", default="WARNING", help="DEBUG, INFO, WARNING (default), ERROR")
    sub = parser.add_subparsers(dest="command", required=True, metavar="command")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(
        level=str(args.log_level).upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    handler: Handler = args.handler
    try:
        return handler(args)
    except BrokenPipeError:
        # `webrelease status NAME | head`: the reader has gone; say nothing more, like other tools
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer killed by the pipe


if __name__ == "__main__":
    sys.exit(main())

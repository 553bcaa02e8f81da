"""Customer lists at scale: 1,000,000 customers frozen from a JSON Lines object and from PostgreSQL.

``python -m bench.bench_sources [--customers N] [--tracemalloc]`` starts the harness's S3 server
(versitygw, bench/s3.py) and a throw-away PostgreSQL (tests/harness/postgres.py), puts the same N
customers in both (a JSON Lines object, uploaded multipart; a table, loaded with COPY), then
measures, each in a fresh child process so that its peak RSS (``ru_maxrss``) is its own:

- ``freeze_snapshot`` from the object and from the table (the operator's snapshot step): seconds,
  peak RSS, Python's own peak (``tracemalloc``, with ``--tracemalloc``: slower), and the sha256,
  which must be the same for both;
- for comparison, the in-memory path (``load_customers`` + ``write_snapshot``) on the object;
- one shard reading its slice of the frozen list by range (``read_slice``), against reading the
  whole snapshot: bytes fetched and peak RSS.

Peak RSS is the child's ``VmHWM`` (see ``peak_rss_mib``); the data are generated in a child too, so
that the parent stays small.

Prints a Markdown table and checks the 300 MiB target (issue 7). Not a test: nothing is timed
against a threshold, and it takes minutes.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
import tracemalloc
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests.harness.customer_lists import FIELDS, iter_jsonl, load_table, make_customers
from tests.harness.postgres import running_postgres

from bench.report import table
from bench.s3 import BenchServer, client

BUCKET = "sources-bench"
LIST_KEY = "lists/customers.jsonl"
TARGET_MIB = 300.0
SHARD_SIZE = 50
QUERY = "SELECT " + ", ".join(f'"{f}"' for f in FIELDS) + " FROM customers"


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def peak_rss_mib() -> float:
    """This process's peak resident set size, in MiB.

    ``VmHWM`` (the high-water mark of this process's own memory map): on Linux
    ``getrusage(RUSAGE_SELF).ru_maxrss`` keeps the *parent's* peak across fork + exec, so in a child
    started by a big parent it measures the parent. ``ru_maxrss`` is the fallback elsewhere.
    """
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # KiB on Linux


# --- the child: one measured operation -----------------------------------------------------------------


def child(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.bench_sources child")
    p.add_argument(
        "what",
        choices=["setup", "freeze-object", "freeze-sql", "load-and-write", "shard-ranged", "shard-whole"],
    )
    p.add_argument("--config", required=True, help="JSON: endpoint, keys, bucket, sql url, snapshot")
    p.add_argument("--tracemalloc", action="store_true")
    a = p.parse_args(argv)
    cfg: dict[str, Any] = json.loads(a.config)
    if a.what == "setup":
        print(json.dumps({"bytes": setup(cfg)}))
        return 0

    from webrelease.copier.customers import load_customers, source_for
    from webrelease.copier.snapshot import read_slice, read_snapshot, write_snapshot
    from webrelease.copier.snapshot.freeze import freeze_snapshot
    from webrelease.copier.sources import SqlSource
    from webrelease.copier.spec import Customers, Storage
    from webrelease.copier.storage import Credentials, parse_url
    from webrelease.copier.storage.storeset import StoreSet

    storage = Storage(endpoint_url=cfg["endpoint"], region=cfg["region"])
    credentials = Credentials(cfg["access_key"], cfg["secret_key"])
    requests: list[str] = []
    stores = StoreSet(
        storage, max_in_flight=8, credentials=credentials, on_request=lambda e: requests.append(e[0])
    )
    folder = parse_url(f"s3://{cfg['bucket']}/runs/{a.what}/")
    list_url = f"s3://{cfg['bucket']}/{LIST_KEY}"
    counted = _ByteCounter()

    def run() -> dict[str, Any]:
        if a.what == "freeze-object":
            source = source_for(Customers(url=list_url), stores)
            ref = freeze_snapshot(source, stores(folder), folder, target_template="s3://sites/{id}/")
            return {"sha256": ref.sha256, "count": ref.count}
        if a.what == "freeze-sql":
            ref = freeze_snapshot(
                SqlSource.from_url(cfg["sql_url"], QUERY),
                stores(folder),
                folder,
                target_template="s3://sites/{id}/",
            )
            return {"sha256": ref.sha256, "count": ref.count}
        if a.what == "load-and-write":
            records = load_customers(
                source_for(Customers(url=list_url), stores), target_template="s3://sites/{id}/"
            )
            ref = write_snapshot(stores(folder), folder, records)
            return {"sha256": ref.sha256, "count": ref.count}
        snapshot = cfg["snapshot"]
        store = counted.wrap(stores(parse_url(snapshot["url"].rsplit("/", 1)[0] + "/")))
        index = snapshot["count"] // SHARD_SIZE // 2
        if a.what == "shard-ranged":
            got = read_slice(store, snapshot["url"], snapshot["sha256"], index, SHARD_SIZE)
        else:
            got = read_snapshot(store, snapshot["url"], snapshot["sha256"])[
                index * SHARD_SIZE : (index + 1) * SHARD_SIZE
            ]
        return {"count": len(got), "bytes_read": counted.bytes}

    if a.tracemalloc:
        tracemalloc.start()
    start = time.perf_counter()
    out = run()
    out["seconds"] = time.perf_counter() - start
    if a.tracemalloc:
        out["traced_peak_mib"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    out["peak_rss_mib"] = peak_rss_mib()
    out["requests"] = {op: requests.count(op) for op in sorted(set(requests))}
    print(json.dumps(out))
    return 0


class _ByteCounter:
    """Counts the bytes a store hands out (wraps the real store)."""

    def __init__(self) -> None:
        self.bytes = 0

    def wrap(self, store: Any) -> Any:
        counter = self

        class Counting:
            def __getattr__(self, name: str) -> Any:
                return getattr(store, name)

            def get(self, loc: Any, key: str) -> bytes:
                data: bytes = store.get(loc, key)
                counter.bytes += len(data)
                return data

            def get_range(self, loc: Any, key: str, start: int, end: int) -> bytes:
                data: bytes = store.get_range(loc, key, start, end)
                counter.bytes += len(data)
                return data

        return Counting()


# --- the parent: set up, run the children, print -------------------------------------------------------


def run_child(what: str, cfg: dict[str, Any], traced: bool) -> dict[str, Any]:
    cmd = [sys.executable, "-m", "bench.bench_sources", "child", what, "--config", json.dumps(cfg)]
    if traced:
        cmd.append("--tracemalloc")
    log(f"  {what}{' (tracemalloc)' if traced else ''} ...")
    proc = subprocess.run(
        cmd, capture_output=True, text=True, check=False, cwd=Path(__file__).resolve().parents[1]
    )
    if proc.returncode != 0:
        raise RuntimeError(f"{what} failed:\n{proc.stderr[-4000:]}")
    result: dict[str, Any] = json.loads(proc.stdout.strip().splitlines()[-1])
    return result


def setup(cfg: dict[str, Any]) -> int:
    """The same customers as a JSON Lines object and as a table; the object's size."""
    from tests.harness.s3server import S3Endpoint

    n = int(cfg["customers"])
    ep = S3Endpoint(cfg["endpoint"], cfg["access_key"], cfg["secret_key"], cfg["region"])
    path = Path(cfg["tmp"]) / "customers.jsonl"
    with path.open("wb") as f:
        f.writelines(iter_jsonl(make_customers(n)))
    client(ep).upload_file(str(path), cfg["bucket"], LIST_KEY)
    size = path.stat().st_size
    path.unlink()
    load_table(cfg["sql_url"], make_customers(n))
    return size


def mib(x: float) -> str:
    return f"{x:,.0f}"


def main(argv: list[str]) -> int:
    if argv[:1] == ["child"]:
        return child(argv[1:])
    p = argparse.ArgumentParser(prog="python -m bench.bench_sources")
    p.add_argument("--customers", type=int, default=1_000_000)
    p.add_argument("--tracemalloc", action="store_true", help="also measure Python's own peak (slower)")
    p.add_argument("--skip-in-memory", action="store_true", help="skip the in-memory comparison")
    a = p.parse_args(argv)
    n = a.customers
    with tempfile.TemporaryDirectory(prefix="bench-sources-") as tmp_s:
        tmp = Path(tmp_s)
        with BenchServer(tmp / "s3") as server, running_postgres() as pg:
            ep = server.endpoint
            s3 = client(ep)
            s3.create_bucket(Bucket=BUCKET)
            cfg: dict[str, Any] = {
                "endpoint": ep.endpoint_url,
                "region": ep.region,
                "access_key": ep.access_key,
                "secret_key": ep.secret_key,
                "bucket": BUCKET,
                "sql_url": pg.new_database(),
                "customers": n,
                "tmp": str(tmp),
            }
            log(f"{n:,} customers: a JSON Lines object and a PostgreSQL table ...")
            t = time.perf_counter()
            size = int(run_child("setup", cfg, False)["bytes"])
            log(f"  {size / 2**20:,.0f} MiB of JSON Lines; both ready in {time.perf_counter() - t:.0f} s")
            runs: list[tuple[str, str, Callable[[], dict[str, Any]]]] = [
                ("freeze_snapshot", "JSON Lines object", lambda: run_child("freeze-object", cfg, False)),
                ("freeze_snapshot", "PostgreSQL table", lambda: run_child("freeze-sql", cfg, False)),
            ]
            if not a.skip_in_memory:
                runs.append(
                    (
                        "load_customers + write_snapshot",
                        "JSON Lines object",
                        lambda: run_child("load-and-write", cfg, False),
                    )
                )
            results = [(how, src, fn()) for how, src, fn in runs]
            traced: dict[str, float] = {}
            if a.tracemalloc:
                for what in ("freeze-object", "freeze-sql"):
                    traced[what] = run_child(what, cfg, True)["traced_peak_mib"]
            frozen = results[0][2]
            cfg["snapshot"] = {
                "url": f"s3://{BUCKET}/runs/freeze-object/customers.jsonl",
                "sha256": frozen["sha256"],
                "count": frozen["count"],
            }
            shard = {w: run_child(w, cfg, False) for w in ("shard-ranged", "shard-whole")}
    print(report(n, size, results, traced, shard))
    ok = all(r["peak_rss_mib"] < TARGET_MIB for how, _s, r in results if how == "freeze_snapshot")
    same = len({r["sha256"] for _h, _s, r in results}) == 1
    print(
        f"\nfreeze_snapshot under {TARGET_MIB:.0f} MiB: {'yes' if ok else 'NO'};"
        f" same sha256 from every source: {'yes' if same else 'NO'}"
    )
    return 0 if ok and same else 1


def report(
    n: int,
    size: int,
    results: list[tuple[str, str, dict[str, Any]]],
    traced: dict[str, float],
    shard: dict[str, dict[str, Any]],
) -> str:
    traced_of = {
        "JSON Lines object": traced.get("freeze-object"),
        "PostgreSQL table": traced.get("freeze-sql"),
    }
    rows = []
    for how, src, r in results:
        t = traced_of.get(src) if how == "freeze_snapshot" else None
        rows.append(
            [
                how,
                src,
                f"{r['count']:,}",
                f"{r['seconds']:.1f}",
                mib(r["peak_rss_mib"]),
                "n/a" if t is None else mib(t),
                r["sha256"][:16],
            ]
        )
    out = [
        f"## Customer lists: {n:,} customers ({size / 2**20:,.0f} MiB of JSON Lines),"
        f" peak memory target {TARGET_MIB:.0f} MiB",
        "",
        table(
            ["path", "source", "customers", "seconds", "peak RSS MiB", "Python peak MiB", "sha256"],
            rows,
            "llrrrrl",
        ),
        "",
        f"## One shard of {SHARD_SIZE} customers reading its slice of the {n:,}-customer snapshot",
        "",
        table(
            ["read", "customers", "bytes fetched", "GETs", "seconds", "peak RSS MiB"],
            [
                [
                    name,
                    f"{r['count']}",
                    f"{r['bytes_read']:,}",
                    str(r["requests"].get("GetObject", 0)),
                    f"{r['seconds']:.2f}",
                    mib(r["peak_rss_mib"]),
                ]
                for name, r in (
                    ("by range (slice index)", shard["shard-ranged"]),
                    ("whole snapshot", shard["shard-whole"]),
                )
            ],
            "lrrrrr",
        ),
    ]
    return "\n".join(out)


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

"""``python -m bench.opscale``'s child: one run start as the operator does it, phase by phase.

A fresh process, so that the peak memory it reports (``ru_maxrss``) is the operator's own work and
its imports, nothing of the bench. Prints one JSON object: seconds per phase, customers, shards,
the Job manifest's size and the peak RSS in MiB. The operator's modules are imported inside
:func:`main` on purpose: importing them is the first phase measured.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from pathlib import Path


def main(argv: list[str]) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.opchild")
    p.add_argument("--release", type=Path, required=True, help="the WebRelease object (JSON, with its uid)")
    p.add_argument("--kubeconfig", required=True)
    a = p.parse_args(argv)
    phases: dict[str, float] = {}
    t = time.perf_counter()

    def phase(name: str) -> None:
        nonlocal t
        now = time.perf_counter()
        phases[name] = now - t
        t = now

    from webrelease.copier.spec import parse_spec
    from webrelease.operator.jobs import Owner, Step, build_job
    from webrelease.operator.kube import Kube, NamespacedReaders, api_client
    from webrelease.operator.reports import ReleaseStorage, run_location
    from webrelease.operator.runs import run_id, step_folder
    from webrelease.operator.settings import WorkerDefaults
    from webrelease.operator.status import StepKind

    phase("import the operator's modules")
    body = json.loads(a.release.read_text(encoding="utf-8"))
    meta = body["metadata"]
    spec = parse_spec(body["spec"])
    kube = Kube(api_client(a.kubeconfig))
    readers = NamespacedReaders(kube, meta["namespace"])
    storage = ReleaseStorage.open(spec, None)
    phase("validate the spec, open the S3 and API clients")
    folder = run_location(spec, meta["namespace"], meta["name"], run_id(1, meta["uid"]))
    snapshot = storage.freeze_customers(folder, secrets=readers, config_maps=readers)
    phase("read, validate, sort and write the snapshot (freeze)")
    step = Step(
        owner=Owner(meta["name"], meta["namespace"], meta["uid"]),
        spec=spec,
        generation=1,
        kind=StepKind.MAIN,
        snapshot=snapshot,
        folder=folder.child(step_folder(StepKind.MAIN)).url,
    )
    manifest = build_job(step, WorkerDefaults(image="webrelease:bench"))
    phase("lay out the shards, build the Job")
    _job, created = kube.create_job(manifest)
    phase("create the Job on the API server")
    print(
        json.dumps(
            {
                "phases": phases,
                "customers": snapshot.count,
                "shards": step.layout.shards,
                "created": created,
                "job_bytes": len(json.dumps(manifest, separators=(",", ":"))),
                "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        )
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))

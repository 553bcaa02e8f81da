"""``webrelease plan``: what each customer would get, with nothing written.

Every customer is prepared exactly as a shard would (site listed, templates rendered, overrides
listed; undecidable keys HEADed) and planned; the plan is returned, never executed. Only read
requests (list, get, head) are sent.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

from webrelease.copier.customers import Record
from webrelease.copier.desired import CustomerError, prepare_build
from webrelease.copier.plan import CustomerPlan, Op
from webrelease.copier.shard import Releaser, customers_in_flight
from webrelease.copier.spec import WebReleaseSpec
from webrelease.copier.storage import StorageError
from webrelease.copier.storage.storeset import StoreSet

_COLUMNS = (Op.COPY, Op.RENDER, Op.OVERRIDE, Op.UNCHANGED, Op.DELETE)


@dataclass(frozen=True)
class PlannedCustomer:
    id: str
    site: str | None
    plan: CustomerPlan | None
    error: str | None = None

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {"id": self.id, "site": self.site}
        if self.plan is None:
            out["status"] = "failed"
            out["reason"] = self.error
            return out
        out["status"] = "ok"
        out.update({op.value: self.plan.count(op) for op in _COLUMNS})
        out["bytes"] = self.plan.bytes_to_write
        out["actions"] = [{"op": a.op.value, "key": a.key} for a in self.plan.actions()]
        return out

    def line(self, *, verbose: bool = False) -> str:
        if self.plan is None:
            return f"{self.id}  FAILED  {self.error}"
        counts = "  ".join(f"{op.value} {self.plan.count(op)}" for op in _COLUMNS)
        text = f"{self.id}  {counts}  -> {self.site}"
        if verbose:
            text += "".join(
                f"\n    {a.op.value:9} {a.key}" for a in self.plan.actions() if a.op is not Op.UNCHANGED
            )
        return text


def plan_release(
    spec: WebReleaseSpec,
    release_name: str,
    customers: Sequence[Record],
    stores: StoreSet,
    *,
    on_customer: Callable[[PlannedCustomer], None] | None = None,
) -> list[PlannedCustomer]:
    """Plan every customer (BuildError if the build cannot be read)."""
    with ThreadPoolExecutor(max_workers=spec.worker.objects_in_flight, thread_name_prefix="plan") as pool:
        build = prepare_build(spec, release_name, stores, pool)
        releaser = Releaser(spec, release_name, stores, build, pool)

        def one(record: Record) -> PlannedCustomer:
            cid = str(record.get("id"))
            site = None
            try:
                work = releaser.prepare(record)
                site = work.site.url
                out = PlannedCustomer(cid, site, releaser.plan(work))
            except (CustomerError, StorageError, ValueError) as exc:
                out = PlannedCustomer(cid, site, None, str(exc))
            if on_customer is not None:
                on_customer(out)
            return out

        with ThreadPoolExecutor(max_workers=customers_in_flight(spec.worker.objects_in_flight)) as cp:
            return list(cp.map(one, customers))


def encode_plan(planned: Sequence[PlannedCustomer]) -> bytes:
    return b"".join(json.dumps(p.to_json(), ensure_ascii=False).encode() + b"\n" for p in planned)

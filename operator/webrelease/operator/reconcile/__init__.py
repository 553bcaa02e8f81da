"""The run lifecycle (docs/design.md "The run flow"): what the handlers do, in plain async functions.

- :func:`start_run` (a new generation: create, spec change, operator start): check the spec,
  supersede the previous run, snapshot the customer list, create the first step's Job.
- :func:`advance` (the per-release daemon, in batches): fold the step's pods into status; when the
  Job has ended, start the next step or finish the run (report index, final condition, Event);
  after the run, act on a new retry annotation.

Every decision is a pure function (:mod:`.runs`, :mod:`.aggregate`, :mod:`.conditions`,
:mod:`.jobs`); this package sequences them with the API (:class:`..api.ReleaseApi`) and storage
(:mod:`.reports`), along its seams:

- :mod:`.context` — what the handlers share, a release as read, the spec as a cluster checks it,
  the one way status is written;
- :mod:`.steps` — supersede another generation's Jobs, create a step's Job, fail a run;
- :mod:`.start` — :func:`start_run`, and :func:`~.start.restart` of a run that failed before its
  first Job;
- :mod:`.dry_run` — ``dryRun``: every customer planned, no Job;
- :mod:`.advance` — :func:`advance`: fold, end a step, the next step or the outcome, retries.

Each module imports only those listed before it (import-linter). Both entry points run under the
release's lock and start from a fresh read of the object, so they never act on stale status. Status
is written whole (:meth:`to_patch`), once per pass, and only when it changed.

Idempotency: Job names are deterministic per step, snapshots are canonical (same list, same
bytes, same sha256), and status is written after the Job exists. A restart at any point re-does
at most a snapshot and finds the Job already there (``create_job`` returns it): never a second Job.
"""

from __future__ import annotations

from webrelease.operator.reconcile.advance import advance, shard_finished
from webrelease.operator.reconcile.context import Context, PodBook, cluster_spec
from webrelease.operator.reconcile.start import start_run

__all__ = ["Context", "PodBook", "advance", "cluster_spec", "shard_finished", "start_run"]

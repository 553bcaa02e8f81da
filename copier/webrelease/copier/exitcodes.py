"""Exit codes of ``webrelease run``, ``webrelease shard`` and ``webrelease verify``: one table that
scripts, the operator's ``podFailurePolicy`` and the docs (docs/copier.md) all rely on.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

#: Every customer succeeded (``verify``: every site is exactly as the release says).
EXIT_OK: Final = 0
#: Something unexpected: a crash, a storage outage that outlived the retries. Worth retrying.
EXIT_CRASH: Final = 1
#: Bad input that no retry can fix: an invalid spec, an unreadable or invalid customer list, a
#: snapshot whose sha256 does not match, a shard index out of range, a missing or empty build.
#: The operator's ``podFailurePolicy`` fails the index at once on this code.
EXIT_BAD_INPUT: Final = 2
#: The run went through but some customers failed (``verify``: some sites differ); the reasons are
#: in the report. A retry redoes only what differs.
EXIT_CUSTOMERS_FAILED: Final = 3

# When several shards end differently, the run's code is the most severe one in this order.
_SEVERITY: Final = (EXIT_BAD_INPUT, EXIT_CRASH, EXIT_CUSTOMERS_FAILED, EXIT_OK)


def combine(codes: Iterable[int]) -> int:
    """The exit code of a run made of shards that exited with ``codes`` (unknown codes count as a crash)."""
    seen = {c if c in _SEVERITY else EXIT_CRASH for c in codes}
    for code in _SEVERITY:
        if code in seen:
            return code
    return EXIT_OK

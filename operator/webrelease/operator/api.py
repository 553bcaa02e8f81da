"""The Kubernetes calls the run lifecycle makes, as a Protocol.

:class:`webrelease.operator.kube.Kube` makes them against an apiserver; the unit tier drives the
whole run lifecycle (:mod:`.reconcile`) against an in-memory fake of the same calls
(``tests/harness/fake_cluster.py``), as :class:`webrelease.operator.leader.LeaseApi` does for the
Lease. Objects are plain dicts, as the API serves them. This module imports no client library.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

Obj = dict[str, Any]


class JobRefused(ValueError):
    """The apiserver refused a Job (400, 422: e.g. resources that are no quantities); the message
    is the apiserver's."""


class ReleaseApi(Protocol):
    """Every call :mod:`.reconcile` and :mod:`.handlers` make to the API."""

    def get_release(self, namespace: str, name: str) -> Obj | None: ...

    def patch_release_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj | None:
        """Merge-patch ``status`` (``None`` values delete fields); None if the release is gone."""
        ...

    def get_job(self, namespace: str, name: str) -> Obj | None: ...

    def create_job(self, manifest: Mapping[str, Any]) -> tuple[Obj, bool]:
        """Create the Job, or return the one of that name: ``(job, created)``; JobRefused."""
        ...

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (foreground) its pods; False if it was gone already."""
        ...

    def list_jobs(self, namespace: str, release: str) -> list[Obj]: ...

    def list_step_pods(self, namespace: str, release: str, step_id: str) -> list[Obj]: ...

    def config_map_value(self, namespace: str, name: str, key: str) -> str | bytes:
        """``data[key]`` or ``binaryData[key]``; MissingReference naming the object and key."""
        ...

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded; MissingReference naming the object and key."""
        ...

    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        """Every key of a Secret, decoded; None if there is no such Secret."""
        ...


class NamespacedReaders:
    """The copier's ``ConfigMapReader`` and ``SecretReader`` for one namespace."""

    def __init__(self, api: ReleaseApi, namespace: str) -> None:
        self._api = api
        self._namespace = namespace

    def config_map_value(self, name: str, key: str) -> str | bytes:
        return self._api.config_map_value(self._namespace, name, key)

    def secret_value(self, name: str, key: str) -> str:
        return self._api.secret_value(self._namespace, name, key)

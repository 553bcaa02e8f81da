"""``StoreSet``: one store per scheme per process, opened on first use and shared by every thread."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING

from webrelease.copier.storage import Credentials, Location, RequestHook, Store, open_store

if TYPE_CHECKING:
    from webrelease.copier.spec import Storage

Opener = Callable[..., Store]

#: ``WEBRELEASE_S3_FAST_PATH=0`` (or ``false``, ``no``, ``off``) turns the S3 fast path off in
#: this process, whatever the spec says: a switch that needs no new image nor spec change.
ENV_FAST_PATH = "WEBRELEASE_S3_FAST_PATH"
_OFF = frozenset({"0", "false", "no", "off"})


def fast_path_wanted(settings: Storage, environ: Mapping[str, str] | None = None) -> bool:
    """Whether S3 requests may take the fast path: ``storage.fastPath`` and the environment agree."""
    env = os.environ if environ is None else environ
    return settings.fast_path and env.get(ENV_FAST_PATH, "").strip().lower() not in _OFF


class StoreSet:
    """The stores a run needs (``file`` and/or ``s3``), keyed by scheme.

    All ``s3://`` locations share one S3 store (one endpoint, one client): a copy between two S3
    locations is therefore always a server-side ``CopyObject``.
    """

    def __init__(
        self,
        settings: Storage,
        *,
        max_in_flight: int,
        credentials: Credentials | None = None,
        on_request: RequestHook | None = None,
        opener: Opener = open_store,
    ) -> None:
        self._settings = settings
        self._max_in_flight = max_in_flight
        self._credentials = credentials
        self._on_request = on_request
        self._opener = opener
        self._stores: dict[str, Store] = {}
        self._lock = threading.Lock()

    def __call__(self, loc: Location) -> Store:
        with self._lock:
            store = self._stores.get(loc.scheme)
            if store is None:
                extra = {"fast_path": fast_path_wanted(self._settings)} if loc.scheme == "s3" else {}
                store = self._opener(
                    loc.scheme,
                    self._settings,
                    max_in_flight=self._max_in_flight,
                    credentials=self._credentials,
                    on_request=self._on_request,
                    **extra,
                )
                self._stores[loc.scheme] = store
            return store

    @staticmethod
    def same_store(a: Location, b: Location) -> bool:
        """Whether a server-side copy from ``a`` to ``b`` is possible."""
        return a.scheme == b.scheme

"""Every Kubernetes API call the operator (and ``webrelease status``/``retry``) makes, and nothing else.

Objects go in and come out as plain dicts, exactly as the API serves them (camelCase JSON), so that
the pure modules (:mod:`.aggregate`, :mod:`.jobs`) work on the same data in tests and in a
cluster. The calls are synchronous (the ``kubernetes`` client); the async handlers run them in a
thread (``asyncio.to_thread``). A Job the apiserver refuses (400, 422) raises :class:`JobRefused`;
other errors than the expected ones (404, 409) propagate as :data:`ApiError`. This is the only
module that imports ``kubernetes`` (an import-linter contract says so).
"""

from __future__ import annotations

import base64
import json
from collections.abc import Callable, Iterator, Mapping
from typing import Any, Final, cast

from kubernetes import client as k8s
from kubernetes import config as k8s_config
from kubernetes import watch as k8s_watch
from kubernetes.client import ApiException

from webrelease.copier.sources import missing_config_map, missing_secret
from webrelease.operator.api import JobRefused, NamespacedReaders
from webrelease.operator.constants import GROUP, LABEL_RELEASE, LABEL_STEP, PLURAL, VERSION

Obj = dict[str, Any]
#: What a failed API request raises (the client's exception, for callers that must not import it).
ApiError = ApiException
MERGE_PATCH: Final = "application/merge-patch+json"
#: Seconds any one API request may take.
REQUEST_TIMEOUT: Final = 30


def _json(response: Any) -> Obj:
    data: Obj = json.loads(response.data)
    return data


def api_message(exc: ApiException) -> str:
    """The apiserver's own message of a failed request."""
    try:
        return str(json.loads(exc.body or "{}").get("message") or exc.reason)
    except ValueError:
        return str(exc.reason)


def _missing(exc: ApiException) -> bool:
    return bool(exc.status == 404)


def _unless_missing(
    call: Callable[..., Any], *args: Any, timeout: float = REQUEST_TIMEOUT, **kwargs: Any
) -> Obj | None:
    """``call(*args, **kwargs)`` as JSON, or None when the object is not there (404)."""
    try:
        return _json(call(*args, _preload_content=False, _request_timeout=timeout, **kwargs))
    except ApiException as exc:
        if _missing(exc):
            return None
        raise


def api_client(kubeconfig: str | None = None) -> k8s.ApiClient:
    """A client for the cluster: in-cluster credentials when running in a pod, else the kubeconfig
    (``kubeconfig``, or the standard ``KUBECONFIG`` lookup)."""
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config()  # type: ignore[no-untyped-call]
            return k8s.ApiClient()
        except k8s_config.ConfigException:
            pass
    client: k8s.ApiClient = k8s_config.new_client_from_config(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    return client


def kubeconfig_namespace(kubeconfig: str | None) -> str:
    """The kubeconfig's current context's namespace, or ``default``."""
    try:
        _contexts, current = k8s_config.list_kube_config_contexts(config_file=kubeconfig)  # type: ignore[no-untyped-call]
    except (k8s_config.ConfigException, OSError, TypeError):
        return "default"
    namespace = (current or {}).get("context", {}).get("namespace")
    return str(namespace) if namespace else "default"


class Kube:
    """The API calls, bound to one ApiClient (:class:`webrelease.operator.api.ReleaseApi` and
    :class:`webrelease.operator.leader.LeaseApi` among them)."""

    def __init__(self, api: k8s.ApiClient) -> None:
        self.api = api
        self._custom = k8s.CustomObjectsApi(api)
        self._batch = k8s.BatchV1Api(api)
        self._core = k8s.CoreV1Api(api)
        self._coordination = k8s.CoordinationV1Api(api)

    # -- WebRelease ---------------------------------------------------------------------------

    def get_release(self, namespace: str, name: str) -> Obj | None:
        return _unless_missing(
            self._custom.get_namespaced_custom_object, GROUP, VERSION, namespace, PLURAL, name
        )

    def list_releases(self, namespace: str) -> list[Obj]:
        out = _json(
            self._custom.list_namespaced_custom_object(
                GROUP, VERSION, namespace, PLURAL, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
            )
        )
        items: list[Obj] = out.get("items") or []
        return items

    def watch_release(self, namespace: str, name: str, *, seconds: int = 60) -> Iterator[Obj | None]:
        """The release each time it changes (None once deleted), for up to ``seconds`` (the
        apiserver then ends the watch; start another)."""
        stream = k8s_watch.Watch().stream(  # type: ignore[no-untyped-call]
            self._custom.list_namespaced_custom_object,
            GROUP,
            VERSION,
            namespace,
            PLURAL,
            field_selector=f"metadata.name={name}",
            timeout_seconds=max(1, int(seconds)),
        )
        for event in stream:
            obj = event.get("object")
            if event.get("type") == "DELETED":
                yield None
            elif event.get("type") in ("ADDED", "MODIFIED") and isinstance(obj, dict):
                yield cast(Obj, obj)

    def patch_release_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> Obj | None:
        """Merge-patch ``status`` (``None`` values delete fields); None if the release is gone."""
        return _unless_missing(
            self._custom.patch_namespaced_custom_object_status,
            *(GROUP, VERSION, namespace, PLURAL, name, {"status": dict(status)}),
            _content_type=MERGE_PATCH,
        )

    def annotate_release(
        self, namespace: str, name: str, annotations: Mapping[str, str | None]
    ) -> Obj | None:
        return _unless_missing(
            self._custom.patch_namespaced_custom_object,
            *(GROUP, VERSION, namespace, PLURAL, name, {"metadata": {"annotations": dict(annotations)}}),
            _content_type=MERGE_PATCH,
        )

    # -- Jobs -----------------------------------------------------------------------------------

    def get_job(self, namespace: str, name: str) -> Obj | None:
        return _unless_missing(self._batch.read_namespaced_job, name, namespace)

    def create_job(self, manifest: Mapping[str, Any]) -> tuple[Obj, bool]:
        """Create the Job; if one of that name exists already, return it. ``(job, created)``.
        Raises :class:`JobRefused` when the apiserver refuses it."""
        namespace = manifest["metadata"]["namespace"]
        try:
            created = _json(
                self._batch.create_namespaced_job(
                    namespace,
                    cast(Any, dict(manifest)),  # a plain dict is sent as is
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
            )
            return created, True
        except ApiException as exc:
            if exc.status in (400, 422):
                raise JobRefused(api_message(exc)) from None
            if exc.status != 409:
                raise
        existing = self.get_job(namespace, manifest["metadata"]["name"])
        if existing is None:  # deleted in between: let the caller try again
            raise RuntimeError(f"Job {manifest['metadata']['name']} exists and does not: try again")
        return existing, False

    def delete_job(self, namespace: str, name: str) -> bool:
        """Delete a Job and (foreground) its pods first; False if it was gone already."""
        try:
            self._batch.delete_namespaced_job(
                name,
                namespace,
                propagation_policy="Foreground",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            return True
        except ApiException as exc:
            if _missing(exc):
                return False
            raise

    def list_jobs(self, namespace: str, release: str) -> list[Obj]:
        out = _json(
            self._batch.list_namespaced_job(
                namespace,
                label_selector=f"{LABEL_RELEASE}={release}",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        items: list[Obj] = out.get("items") or []
        return items

    # -- Leases (leader election: leader.py) -----------------------------------------------------

    def get_lease(self, namespace: str, name: str, *, timeout: float = REQUEST_TIMEOUT) -> Obj | None:
        return _unless_missing(self._coordination.read_namespaced_lease, name, namespace, timeout=timeout)

    def create_lease(self, lease: Mapping[str, Any], *, timeout: float = REQUEST_TIMEOUT) -> Obj | None:
        """Create the Lease; None if one of that name exists already (someone else was first)."""
        try:
            return _json(
                self._coordination.create_namespaced_lease(
                    lease["metadata"]["namespace"],
                    cast(Any, dict(lease)),
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            )
        except ApiException as exc:
            if exc.status == 409:
                return None
            raise

    def replace_lease(self, lease: Mapping[str, Any], *, timeout: float = REQUEST_TIMEOUT) -> Obj | None:
        """Replace the Lease if it is still at ``metadata.resourceVersion``; None if it changed
        since (409: someone else wrote it) or is gone."""
        meta = lease["metadata"]
        try:
            return _json(
                self._coordination.replace_namespaced_lease(
                    meta["name"],
                    meta["namespace"],
                    cast(Any, dict(lease)),
                    _preload_content=False,
                    _request_timeout=timeout,
                )
            )
        except ApiException as exc:
            if exc.status == 409 or _missing(exc):
                return None
            raise

    # -- Pods -----------------------------------------------------------------------------------

    def list_step_pods(self, namespace: str, release: str, step_id: str) -> list[Obj]:
        out = _json(
            self._core.list_namespaced_pod(
                namespace,
                label_selector=f"{LABEL_RELEASE}={release},{LABEL_STEP}={step_id}",
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
        )
        items: list[Obj] = out.get("items") or []
        return items

    # -- ConfigMaps and Secrets (read only) ----------------------------------------------------

    def config_map_value(self, namespace: str, name: str, key: str) -> str | bytes:
        """``data[key]`` or ``binaryData[key]``; MissingReference naming the object and key."""
        cm = _unless_missing(self._core.read_namespaced_config_map, name, namespace)
        if cm is None:
            raise missing_config_map(name, key, None)
        data: dict[str, str] = cm.get("data") or {}
        binary: dict[str, str] = cm.get("binaryData") or {}
        if key in data:
            return data[key]
        if key in binary:
            return base64.b64decode(binary[key])
        raise missing_config_map(name, key, [*data, *binary])

    def secret_value(self, namespace: str, name: str, key: str) -> str:
        """One key of a Secret, decoded; MissingReference naming the object and key (never a value)."""
        values = self.secret_values(namespace, name)
        if values is None:
            raise missing_secret(name, key, None)
        if key not in values:
            raise missing_secret(name, key, list(values))
        return values[key]

    def secret_values(self, namespace: str, name: str) -> dict[str, str] | None:
        """Every key of a Secret, decoded; None if there is no such Secret."""
        secret = _unless_missing(self._core.read_namespaced_secret, name, namespace)
        if secret is None:
            return None
        raw: dict[str, str] = secret.get("data") or {}
        return {k: base64.b64decode(v).decode("utf-8", errors="replace") for k, v in raw.items()}


__all__ = [
    "ApiError",
    "JobRefused",
    "Kube",
    "NamespacedReaders",
    "api_client",
    "api_message",
    "kubeconfig_namespace",
]

"""Names the WebRelease API and its children share: group, labels, annotations, container name.

Everything here is part of the public contract of the operator (users select Jobs and pods by
these labels, and set the retry annotation with ``kubectl``); change none of it lightly.
"""

from __future__ import annotations

from typing import Final

from webrelease.copier.spec import API_GROUP, API_VERSION, KIND

GROUP: Final = API_GROUP
VERSION: Final = API_VERSION
API_VERSION_FULL: Final = f"{API_GROUP}/{API_VERSION}"
PLURAL: Final = "webreleases"
SINGULAR: Final = "webrelease"
SHORT_NAMES: Final = ("wr",)
CRD_NAME: Final = f"{PLURAL}.{GROUP}"
__all__ = ["KIND"]

#: Label on every Job and pod of a release: the WebRelease's name.
LABEL_RELEASE: Final = f"{GROUP}/release"
#: Longest WebRelease name: it is the value of :data:`LABEL_RELEASE` (a label value: at most 63
#: characters). The CRD refuses longer names (a CEL rule on ``metadata.name``).
MAX_RELEASE_NAME: Final = 63
#: Label on every Job and pod: the step id (``g3-main-1a2b3c``), unique per WebRelease.
LABEL_STEP: Final = f"{GROUP}/step"
#: Label on every Job and pod: the generation of the WebRelease the Job was made for.
LABEL_GENERATION: Final = f"{GROUP}/generation"
LABEL_MANAGED_BY: Final = "app.kubernetes.io/managed-by"
LABEL_NAME: Final = "app.kubernetes.io/name"
LABEL_COMPONENT: Final = "app.kubernetes.io/component"
MANAGED_BY: Final = "webrelease-operator"

#: ``kubectl annotate wr NAME webrelease.dev/retry=<any new token>`` re-runs the customers of the
#: last run that did not succeed. The token is remembered in ``status.run.retryToken``; setting
#: the same token again does nothing.
ANNOTATION_RETRY: Final = f"{GROUP}/retry"

#: On every Job: the sha256 of the step's snapshot and the step's report folder.
ANNOTATION_SNAPSHOT_SHA256: Final = f"{GROUP}/snapshot-sha256"
ANNOTATION_REPORT_URL: Final = f"{GROUP}/report-url"

#: Prefix of kopf's own bookkeeping annotations (progress, last handled spec).
KOPF_ANNOTATION_PREFIX: Final = f"kopf.{GROUP}"

#: Set by the Job controller on every pod of an Indexed Job.
JOB_INDEX_ANNOTATION: Final = "batch.kubernetes.io/job-completion-index"
#: Set by the Job controller on every pod of a Job.
JOB_NAME_LABEL: Final = "batch.kubernetes.io/job-name"

#: Keys of the Secret named by ``spec.storage.secretRef``: access key id, secret key, session token
#: (optional). The shard pods get them as environment variables of the same names.
STORAGE_SECRET_KEYS: Final = ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN")

#: The shard container's name in the Job's pod template.
CONTAINER_NAME: Final = "shard"

"""How a Job pod tells ``webrelease shard`` what to do: flags or environment, parsed once.

Every setting can be a flag or an environment variable (a flag wins), except the termination
message path, where ``TERMINATION_MESSAGE_PATH`` wins over the flag (the node sets it):

================================  ===========================  ==================================
flag                              environment                  meaning
================================  ===========================  ==================================
``--spec-file PATH``              ``WEBRELEASE_SPEC_FILE``     the release as a file (YAML/JSON)
(none)                            ``WEBRELEASE_SPEC``          the release as JSON (or YAML) text
``--release-name``                ``WEBRELEASE_RELEASE_NAME``  defaults to the manifest's name
``--snapshot-url``                ``WEBRELEASE_SNAPSHOT_URL``  the frozen customer list
``--snapshot-sha256``             ``WEBRELEASE_SNAPSHOT_SHA256``  checked before anything is done
``--index``                       ``JOB_COMPLETION_INDEX``     the shard index
``--shard-size``                  ``WEBRELEASE_SHARD_SIZE``    defaults to customersPerShard
``--report-url``                  ``WEBRELEASE_REPORT_URL``    defaults to the snapshot's folder
``--termination-message-path``    ``TERMINATION_MESSAGE_PATH`` default /dev/termination-log
================================  ===========================  ==================================

The release document is either a whole ``WebRelease`` manifest or just its ``spec`` mapping. S3
credentials are not settings: boto3 reads ``AWS_ACCESS_KEY_ID`` / ``AWS_SECRET_ACCESS_KEY``
(/``AWS_SESSION_TOKEN``) from the environment, or uses the pod's identity.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Annotated, Any, Final

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from webrelease.copier.results import termination_path
from webrelease.copier.snapshot import SNAPSHOT_NAME
from webrelease.copier.spec import (
    KIND,
    SpecError,
    WebRelease,
    WebReleaseSpec,
    describe_validation_error,
    load_yaml_document,
    parse_spec,
    read_release_text,
)

ENV_SPEC: Final = "WEBRELEASE_SPEC"
ENV_SPEC_FILE: Final = "WEBRELEASE_SPEC_FILE"
ENV_RELEASE_NAME: Final = "WEBRELEASE_RELEASE_NAME"
ENV_SNAPSHOT_URL: Final = "WEBRELEASE_SNAPSHOT_URL"
ENV_SNAPSHOT_SHA256: Final = "WEBRELEASE_SNAPSHOT_SHA256"
ENV_SHARD_SIZE: Final = "WEBRELEASE_SHARD_SIZE"
ENV_REPORT_URL: Final = "WEBRELEASE_REPORT_URL"
ENV_INDEX: Final = "JOB_COMPLETION_INDEX"
ENV_TERMINATION_PATH: Final = "TERMINATION_MESSAGE_PATH"

DEFAULT_RELEASE_NAME: Final = "release"


class ShardSettings(BaseModel):
    model_config = ConfigDict(frozen=True)

    spec: WebReleaseSpec
    release_name: Annotated[str, Field(min_length=1, max_length=253, pattern=r"^[A-Za-z0-9._/-]+$")]
    snapshot_url: Annotated[str, Field(min_length=1)]
    snapshot_sha256: Annotated[str, Field(pattern=r"^[0-9a-fA-F]{64}$")] | None = None
    index: Annotated[int, Field(ge=0)]
    shard_size: Annotated[int, Field(ge=1)]
    report_url: str
    termination_message_path: str | None = None


def parse_release_document(text: str, origin: str) -> tuple[WebReleaseSpec, str | None]:
    """A manifest or a bare spec (YAML or JSON) -> (spec, the manifest's name if any)."""
    data = load_yaml_document(text, origin)
    if not isinstance(data, dict):
        raise SpecError("", f"{origin}: expected a WebRelease manifest or its spec (a mapping)")
    if data.get("kind") == KIND and "spec" in data:
        try:
            release = WebRelease.model_validate(data)
        except ValidationError as exc:
            raise describe_validation_error(exc, prefix="") from None
        return release.spec, release.metadata.name
    return parse_spec(data), None


def termination_target(flags: Mapping[str, Any], environ: Mapping[str, str]) -> Path | None:
    """Where the termination message goes (known even when the other settings are bad)."""
    return termination_path(flags.get("termination_message_path"), environ.get(ENV_TERMINATION_PATH))


def index_hint(flags: Mapping[str, Any], environ: Mapping[str, str]) -> int:
    """The shard index if it can be told at all (for a termination message about bad settings), else -1."""
    value = _pick(flags, "index", environ, ENV_INDEX)
    try:
        return int(value)
    except (TypeError, ValueError):
        return -1


def _pick(flags: Mapping[str, Any], flag: str, environ: Mapping[str, str], env: str) -> Any:
    value = flags.get(flag)
    if value is not None and value != "":
        return value
    return environ.get(env) or None


def shard_settings(flags: Mapping[str, Any], environ: Mapping[str, str]) -> ShardSettings:
    """Settings from ``flags`` (argparse names) and ``environ``; SpecError naming what is wrong."""
    spec_file = _pick(flags, "spec_file", environ, ENV_SPEC_FILE)
    if spec_file:
        text = read_release_text(spec_file)
        spec, name = parse_release_document(text, spec_file)
    elif environ.get(ENV_SPEC):
        spec, name = parse_release_document(environ[ENV_SPEC], ENV_SPEC)
    else:
        raise SpecError("--spec-file", f"the release is required: --spec-file, {ENV_SPEC_FILE} or {ENV_SPEC}")
    snapshot_url = _pick(flags, "snapshot_url", environ, ENV_SNAPSHOT_URL)
    if not snapshot_url:
        raise SpecError("--snapshot-url", f"required (or {ENV_SNAPSHOT_URL})")
    index = _pick(flags, "index", environ, ENV_INDEX)
    if index is None:
        raise SpecError("--index", f"required (or {ENV_INDEX})")
    report_url = _pick(flags, "report_url", environ, ENV_REPORT_URL)
    if not report_url:
        if not snapshot_url.endswith("/" + SNAPSHOT_NAME):
            raise SpecError("--report-url", "required when the snapshot is not <report>/customers.jsonl")
        report_url = snapshot_url[: -len(SNAPSHOT_NAME)]
    term = termination_target(flags, environ)
    try:
        return ShardSettings(
            spec=spec,
            release_name=_pick(flags, "release_name", environ, ENV_RELEASE_NAME)
            or name
            or DEFAULT_RELEASE_NAME,
            snapshot_url=snapshot_url,
            snapshot_sha256=_pick(flags, "snapshot_sha256", environ, ENV_SNAPSHOT_SHA256),
            index=index,
            shard_size=_pick(flags, "shard_size", environ, ENV_SHARD_SIZE)
            or spec.sharding.customers_per_shard,
            report_url=report_url,
            termination_message_path=str(term) if term is not None else None,
        )
    except ValidationError as exc:
        raise describe_validation_error(exc, prefix="") from None

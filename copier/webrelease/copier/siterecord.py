"""What webrelease last wrote to one site: a small record that saves the Content-Type HEADs.

The listing of a site gives each object's MD5 (its ETag) but not its Content-Type, so checking the
type of every file whose bytes are right takes one HEAD per file. Instead, after a customer's
writes all succeed, the shard keeps a *site record*: for every file of the site, the MD5 and the
Content-Type / Content-Encoding it wrote (or checked). On the next run a file whose listed MD5
equals both the release's and the record's, and whose recorded type is the one the release gives
it, is *vouched for* and needs no HEAD; anything else (no record, a new key, another MD5, another
type, a record that cannot be read or is not for this site) is HEADed as before.

The record lives beside the reports, never in the site (sites are served publicly):
``<spec.reports.url>/_site-records/<sha256 of the site's URL>.json`` — a hash, so that a long
site location never makes a key too long; a folder whose name cannot be a namespace, so it never
meets a run's folder. Sites never overlap the reports (:mod:`webrelease.copier.places`), so a
prune never deletes a record. Cost per customer: one GET; one PUT only when the record changed.

What a record cannot make wrong: the bytes (the listing's MD5 decides them, the record is only
consulted for a file the listing already calls right). What it trusts: that nobody changed only
the metadata of an object webrelease wrote, keeping its bytes. ``webrelease verify`` trusts no
record (it HEADs every file) and forgets the record of a site it finds different, so the next
run HEADs that site again.
"""

from __future__ import annotations

import hashlib
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Final

from webrelease.copier.plan import Served, Want, served_as
from webrelease.copier.storage import Location, NotFound, StorageError, parse_url
from webrelease.copier.storage.storeset import StoreSet
from webrelease.copier.targets import canonical_url

log = logging.getLogger(__name__)

#: The folder of the records, under the reports location.
RECORDS_FOLDER: Final = "_site-records"
FORMAT: Final = "webrelease-site-record/1"


def record_place(reports_url: str, site: Location) -> tuple[Location, str]:
    """The reports folder of the records and the key of ``site``'s record in it."""
    folder = parse_url(reports_url).child(RECORDS_FOLDER)
    digest = hashlib.sha256(canonical_url(site.url).encode("utf-8", "surrogatepass")).hexdigest()
    return folder, f"{digest}.json"


@dataclass(frozen=True, slots=True)
class SiteRecord:
    """The record of one site (``files`` empty when there is none or it cannot be used)."""

    folder: Location
    key: str
    site: str
    files: Mapping[str, Served]
    #: whether an object exists under ``key`` (a stale or unusable one too)
    exists: bool = False

    def encode(self, files: Mapping[str, Served]) -> bytes:
        body = {
            "format": FORMAT,
            "site": self.site,
            "files": {k: [s.md5, s.content_type, s.content_encoding] for k, s in sorted(files.items())},
        }
        return json.dumps(body, separators=(",", ":")).encode("ascii")


def _decode(raw: bytes, site: str) -> dict[str, Served] | None:
    try:
        doc = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT or doc.get("site") != site:
        return None
    files = doc.get("files")
    if not isinstance(files, dict):
        return None
    out: dict[str, Served] = {}
    for key, entry in files.items():
        if (
            not isinstance(entry, list)
            or len(entry) != 3
            or not all(isinstance(v, str) for v in entry[:2])
            or not (entry[2] is None or isinstance(entry[2], str))
        ):
            return None
        out[key] = Served(entry[0], entry[1], entry[2])
    return out


def read_record(stores: StoreSet, reports_url: str, site: Location) -> SiteRecord:
    """``site``'s record; an empty one if there is none, or it cannot be read or trusted."""
    folder, key = record_place(reports_url, site)
    url = canonical_url(site.url)
    try:
        raw = stores(folder).get(folder, key)
    except NotFound:
        return SiteRecord(folder, key, url, {})
    except StorageError as exc:
        log.warning("site record of %s unreadable (its files are HEADed): %s", site.url, exc)
        return SiteRecord(folder, key, url, {}, exists=True)
    files = _decode(raw, url)
    if files is None:
        log.warning("site record %s%s is not usable (its files are HEADed)", folder.url, key)
    return SiteRecord(folder, key, url, files or {}, exists=True)


def write_record(stores: StoreSet, record: SiteRecord, files: Mapping[str, Served]) -> None:
    """Store ``files`` as ``record``'s site's record (raises StorageError)."""
    stores(record.folder).put(
        record.folder, record.key, record.encode(files), content_type="application/json"
    )


def forget_record(stores: StoreSet, reports_url: str, site: Location) -> None:
    """Delete ``site``'s record (missing is fine)."""
    folder, key = record_place(reports_url, site)
    stores(folder).delete(folder, [key])


def written_files(desired: Mapping[str, Want]) -> dict[str, Served]:
    """The record of a site that holds exactly ``desired`` (files of unknown MD5 left out)."""
    return {k: served_as(k, w) for k, w in desired.items() if w.md5 is not None}

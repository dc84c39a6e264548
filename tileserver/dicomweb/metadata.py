"""WADO-RS metadata: each instance's stored DICOM JSON, BulkDataURIs made absolute.

The stored JSON is spliced as bytes (no parse): relative ``bulk/<tag>`` URIs become
``<instance URL>/bulk/<tag>``, and the Pixel Data BulkDataURI, the Available Transfer
Syntax UID and the file meta's Transfer Syntax UID (0002,0010) are added, as Google's
Healthcare API store does, so a client needs no extra request to pick a transfer syntax.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence

import orjson

from tileserver.catalog import Catalog
from tileserver.dicomweb.dicomjson import AVAILABLE_TRANSFER_SYNTAX, FILE_TRANSFER_SYNTAX, element
from tileserver.dicomweb.instances import InstanceRef
from tileserver.errors import NotFoundError
from tileserver.formats import TRANSFER_SYNTAXES


def instance_url(base: str, ref: InstanceRef) -> str:
    return (
        f"{base}/studies/{ref.study_uid}/series/{ref.series_uid}/instances/{ref.sop_instance_uid}"
    )


def instance_metadata(stored: bytes, ref: InstanceRef, base: str) -> bytes:
    """One instance's metadata object (orjson bytes)."""
    url = instance_url(base, ref).encode()
    body = stored.replace(b'"BulkDataURI":"bulk/', b'"BulkDataURI":"' + url + b"/bulk/")
    syntax = TRANSFER_SYNTAXES.get(ref.header.transfer_syntax)
    wide = ref.header.pixel_format.bits_allocated > 8 and syntax is not None
    vr = "OW" if wide and not syntax.encapsulated else "OB"  # type: ignore[union-attr]
    extra = {
        FILE_TRANSFER_SYNTAX: element(FILE_TRANSFER_SYNTAX, ref.header.transfer_syntax),
        AVAILABLE_TRANSFER_SYNTAX: element(AVAILABLE_TRANSFER_SYNTAX, ref.header.transfer_syntax),
        "7FE00010": {"vr": vr, "BulkDataURI": (url + b"/bulk/7FE00010").decode()},
    }
    prefix = orjson.dumps(extra)[:-1]
    rest = body.strip()[1:]
    return prefix + (b"}" if rest.strip() == b"}" else b"," + rest)


def stored_json(catalog: Catalog, ref: InstanceRef) -> bytes:
    rows = catalog.query("SELECT dataset_json FROM served_instances WHERE path = ?", (ref.path,))
    if not rows:
        raise NotFoundError(f"instance {ref.sop_instance_uid} vanished from the catalog")
    return bytes(rows[0][0])


def iter_metadata(catalog: Catalog, refs: Sequence[InstanceRef], base: str) -> Iterator[bytes]:
    """The JSON array of ``refs``' metadata, one instance per chunk (bounded memory)."""
    yield b"["
    for i, ref in enumerate(refs):
        item = instance_metadata(stored_json(catalog, ref), ref, base)
        yield (b"," if i else b"") + item
    yield b"]"

"""DICOMweb (PS3.18) building blocks, free of HTTP framework types.

* ``dicomjson``  DICOM JSON elements: tags by keyword, values by VR
* ``qido``       search: query parameters -> SQL over indexed catalog columns -> results
* ``accept``     Accept header parsing (q-values) and frame/instance media negotiation
* ``multipart``  multipart/related: a streaming writer and an incremental parser
* ``instances``  locate an instance, read its frames (stored or transcoded), bulk data
* ``metadata``   WADO-RS metadata: stored DICOM JSON with absolute BulkDataURIs
* ``rendered``   rendered and thumbnail images of instances and frames
* ``stow``       STOW-RS: validate uploaded parts, store, index, the store response

``tileserver.http.dicomweb`` maps routes onto these.
"""

from tileserver.dicomweb.accept import AcceptEntry, parse_accept
from tileserver.dicomweb.multipart import MultipartParser, PartEvent, part_header

__all__ = ["AcceptEntry", "MultipartParser", "PartEvent", "parse_accept", "part_header"]

"""Who a request is from and what it may see (standard library only).

The access check (``http/access.py``) makes a ``Grant`` for every request; ``CURRENT_GRANT``
carries it to the layers below (the service, DICOMweb searches) without passing it through
every call, so a grant limited to some studies hides the others everywhere.
"""

from __future__ import annotations

from contextvars import ContextVar
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Grant:
    """Who made a request and what they may do (fronts read it for finer rules)."""

    principal: str = "anonymous"
    role: str = "admin"
    #: Study Instance UIDs the principal may see (None: all).
    studies: frozenset[str] | None = None
    #: Let in by a signed URL (``http/signing.py``): read-only, one slide, cacheable.
    signed: bool = False


ANONYMOUS = Grant()
#: The grant of the request being served: set by ``AccessMiddleware``, read where studies
#: are looked up (``TileService.slide``, DICOMweb) to hide what the grant may not see.
CURRENT_GRANT: ContextVar[Grant] = ContextVar("tileserver_grant", default=ANONYMOUS)


def may_see(study_uid: str | None, grant: Grant | None = None) -> bool:
    """Whether the grant (default: the current request's) may see a study."""
    studies = (grant or CURRENT_GRANT.get()).studies
    return studies is None or (study_uid is not None and study_uid in studies)

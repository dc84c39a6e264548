"""QIDO-RS search: query parameters -> SQL over indexed catalog columns -> DICOM JSON.

Matching runs in the catalog's database (SQLite or PostgreSQL: one query builder, the few
differences in the catalog's ``Dialect``) on its search columns (indexes from ``ensure_indexes``);
result attributes come from each group's representative instance header (the catalog's
header JSON), so a study search never parses a full dataset. Only instance searches, and
study/series searches whose ``includefield`` names attributes the header lacks, read the
stored DICOM JSON.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

import orjson

from tileserver.catalog import Catalog
from tileserver.catalog.store import Dialect, Row
from tileserver.dicom.header import VL_WSI
from tileserver.dicomweb.dicomjson import (
    AVAILABLE_TRANSFER_SYNTAX,
    FILE_TRANSFER_SYNTAX,
    RETRIEVE_URL,
    SERIES_UID,
    SOP_CLASS_UID,
    SOP_INSTANCE_UID,
    STUDY_UID,
    JsonDataset,
    absolute_bulk_uris,
    element,
    keyword_of,
    tag_of,
)
from tileserver.errors import InvalidRequestError
from tileserver.grants import CURRENT_GRANT

Level = Literal["study", "series", "instance"]

#: The most results one search returns; more are reached with ``offset``.
MAX_RESULTS = 10_000

_TEXT, _NAME, _DATE, _LIST, _UID = "text", "name", "date", "list", "uid"
#: Matching key tag -> (catalog column, kind of matching).
_MATCHERS: dict[str, tuple[str, str]] = {
    "00100020": ("patient_id", _TEXT),
    "00100010": ("patient_name", _NAME),
    "00080020": ("study_date", _DATE),
    "00080050": ("accession_number", _TEXT),
    "00080060": ("modality", _LIST),
    STUDY_UID: ("study_uid", _UID),
    SERIES_UID: ("series_uid", _UID),
    SOP_INSTANCE_UID: ("sop_instance_uid", _UID),
}
_MODALITIES_IN_STUDY = "00080061"

INSTANCE_AVAILABILITY = "00080056"
_PATIENT_FIELDS = ("00100010", "00100020", "00100030", "00100040")
STUDY_FIELDS = (
    *_PATIENT_FIELDS,
    *("00080020", "00080030", "00080050", "00080090", "00081030", "00200010"),
)
SERIES_FIELDS = ("00080060", "0008103E", "00200011")
INSTANCE_FIELDS = (
    *("00080008", "00200013", "00280010", "00280011", "00280008", "00280100"),
    *("00480006", "00480007", "00209161", "00400512"),
)

INDEXES = {
    "dicomweb_study_series": "instances(study_uid, series_uid, modality)",
    "dicomweb_series_sop": "instances(series_uid, sop_instance_uid)",
    "dicomweb_study_date": "instances(study_date)",
    "dicomweb_accession": "instances(accession_number)",
    "dicomweb_patient_name": "instances(patient_name)",
    "dicomweb_modality": "instances(modality, study_uid)",
}
_ensured: set[str] = set()


def ensure_indexes(catalog: Catalog) -> None:
    """Create the search indexes QIDO needs (once per catalog and process)."""
    if catalog.name in _ensured:
        return
    catalog.ensure_indexes(INDEXES)
    _ensured.add(catalog.name)


@dataclass(frozen=True)
class Wildcard:
    """A DICOM wildcard pattern parameter (``*``, ``?``), written for the catalog's
    database when the search runs; its condition says ``{match}`` for the operator."""

    text: str


_MATCH = "{match}"


def _for_dialect(query: Query, dialect: Dialect) -> tuple[list[str], list[Any]]:
    """``query``'s conditions and parameters in the words of the catalog's database."""
    where = [w.replace(_MATCH, dialect.match) for w in query.where]
    params = [dialect.pattern(p.text) if isinstance(p, Wildcard) else p for p in query.params]
    return where, params


@dataclass(frozen=True)
class Query:
    level: Level
    where: tuple[str, ...] = ()
    params: tuple[Any, ...] = ()
    include: frozenset[str] = frozenset()
    include_all: bool = False
    limit: int | None = None
    offset: int = 0
    #: Matching keys this server ignores (reported in a Warning header).
    ignored: tuple[str, ...] = ()
    #: Higher levels whose attributes each result also carries (PS3.18 10.6.3.3): a search
    #: of all series has study attributes, of a study's instances series attributes, ...
    context: tuple[Level, ...] = ()


@dataclass
class _Builder:
    fuzzy: bool
    where: list[str] = field(default_factory=list)
    params: list[Any] = field(default_factory=list)

    def add(self, sql: str, *params: Any) -> None:
        self.where.append(sql)
        self.params.extend(params)


def parse_query(
    level: Level, items: Sequence[tuple[str, str]], scope: dict[str, str] | None = None
) -> Query:
    """The search for ``level`` restricted to ``scope`` (path UIDs by tag) and ``items``."""
    reserved = {"limit", "offset", "fuzzymatching", "includefield", "orderby"}
    values = {k.lower(): v for k, v in items if k.lower() in reserved}
    builder = _Builder(fuzzy=values.get("fuzzymatching", "false").lower() == "true")
    for tag, uid in (scope or {}).items():
        _match(builder, tag, [uid])
    ignored: list[str] = []
    grouped: dict[str, list[str]] = {}
    for key, value in items:
        if key.lower() in reserved:
            continue
        try:
            grouped.setdefault(tag_of(key), []).append(value)
        except InvalidRequestError:  # not a DICOM attribute (a browser's cache-buster "_")
            ignored.append(_printable(key))
    for tag, vals in grouped.items():
        if not _match(builder, tag, vals):
            ignored.append(keyword_of(tag))
    include = [v for k, v in items if k.lower() == "includefield" for v in v.split(",")]
    include_all = any(v.strip().lower() == "all" for v in include)
    return Query(
        level,
        tuple(builder.where),
        tuple(builder.params),
        frozenset(tag_of(v) for v in include if v.strip() and v.strip().lower() != "all"),
        include_all,
        _int(values.get("limit"), "limit"),
        _int(values.get("offset"), "offset") or 0,
        tuple(ignored),
        _context(level, scope or {}),
    )


_ABOVE: dict[Level, tuple[Level, ...]] = {
    "study": (),
    "series": ("study",),
    "instance": ("study", "series"),
}


def _context(level: Level, scope: dict[str, str]) -> tuple[Level, ...]:
    """The levels above ``level`` that the resource path does not fix."""
    fixed = {"study": STUDY_UID in scope, "series": SERIES_UID in scope}
    return tuple(above for above in _ABOVE[level] if not fixed[above])


_COUNT = re.compile(r"[0-9]{1,9}")  # ASCII digits; SQLite takes any 9-digit offset


def _printable(key: str) -> str:
    """``key`` fit for a Warning header's quoted text."""
    return re.sub(r"[^A-Za-z0-9_.-]", "?", key[:64]) or "?"


def _int(raw: str | None, name: str) -> int | None:
    if raw is None or raw == "":
        return None
    if _COUNT.fullmatch(raw) is None:
        raise InvalidRequestError(f"{name} must be an integer 0..999999999, not {raw[:20]!r}")
    return int(raw)


def _match(b: _Builder, tag: str, values: list[str]) -> bool:
    """Add the condition for one matching key; False when the key is not supported."""
    if tag == SOP_CLASS_UID:
        if VL_WSI not in _split(values):
            b.add("FALSE")
        return True
    if tag == _MODALITIES_IN_STUDY:
        mods = _split(values)
        if mods:
            marks = ",".join("?" * len(mods))
            sub = f"SELECT study_uid FROM served_instances WHERE modality IN ({marks})"
            b.add(f"study_uid IN ({sub})", *mods)
        return True
    matcher = _MATCHERS.get(tag)
    if matcher is None:
        return False
    column, kind = matcher
    if kind == _UID:
        uids = _split(values)
        if uids:
            b.add(f"{column} IN ({','.join('?' * len(uids))})", *uids)
    elif kind == _LIST:
        items = _split(values)
        if items:
            b.add(f"{column} IN ({','.join('?' * len(items))})", *items)
    elif kind == _DATE:
        _match_date(b, column, values[-1])
    else:
        _match_text(b, column, values[-1], fuzzy=b.fuzzy and kind == _NAME)
    return True


def _split(values: list[str]) -> list[str]:
    """Items of list-valued keys: comma or backslash separated, or the key repeated."""
    return [u.strip() for v in values for u in re.split(r"[,\\]", v) if u.strip()]


def _match_text(b: _Builder, column: str, value: str, *, fuzzy: bool) -> None:
    value = value.strip()
    if value in ("", "*"):
        return
    wild = "*" in value or "?" in value
    if fuzzy:  # the name, or any of its components, starts with the value
        pattern = value.lower().rstrip("*") + "*"
        starts = [Wildcard(pattern), Wildcard("* " + pattern), Wildcard("*^" + pattern)]
        b.add("(" + " OR ".join([f"lower({column}) {_MATCH} ?"] * 3) + ")", *starts)
    elif wild:
        b.add(f"{column} {_MATCH} ?", Wildcard(value))
    else:
        b.add(f"{column} = ?", value)


# YYYYMMDD, or a range with a dash and either end (an end date only after the dash).
_DATE_RE = re.compile(r"([0-9]{8})?(?:(-)([0-9]{8})?)?")


def _match_date(b: _Builder, column: str, value: str) -> None:
    value = value.strip()
    m = _DATE_RE.fullmatch(value)
    if value == "" or value == "-":
        return
    if m is None:
        raise InvalidRequestError(f"bad date or date range {value!r} (YYYYMMDD[-YYYYMMDD])")
    start, dash, end = m.groups()
    if dash is None:
        b.add(f"{column} = ?", start)
        return
    if start:
        b.add(f"{column} >= ?", start)
    if end:
        b.add(f"{column} <= ?", end)


# -- running a search ---------------------------------------------------------------------

#: Level -> (grouping key, aggregates ({} is the dialect's list aggregate), columns of the
#: group's representative instance: the one of its first path).
_GROUPS = {
    "study": (
        "study_uid",
        "COUNT(DISTINCT series_uid) AS n_series, COUNT(*) AS n_instances, {} AS modalities",
        "",
    ),
    "series": ("series_uid", "COUNT(DISTINCT sop_instance_uid) AS n_instances", ", study_uid"),
    "instance": ("sop_instance_uid", "", ", series_uid, study_uid, dataset_json"),
}


def _aggregate_columns(level: Level, dialect: Dialect) -> str:
    columns = _GROUPS[level][1].replace("{}", dialect.list_agg.format("modality"))
    return f", {columns}" if columns else ""


#: A search result row: its group's key and counts and its representative's columns.
Found = dict[str, Any]


@dataclass(frozen=True)
class SearchResult:
    matches: list[JsonDataset]
    #: More matches exist beyond the server's own cap (the client gave no ``limit``).
    truncated: bool


def search(catalog: Catalog, query: Query, base_url: str) -> SearchResult:
    """Run ``query``; ``base_url`` is the DICOMweb root that RetrieveURLs start with."""
    ensure_indexes(catalog)
    key = _GROUPS[query.level][0]
    conditions, params = _for_dialect(query, catalog.dialect)
    visible = CURRENT_GRANT.get().studies
    if visible is not None:  # a grant limited to some studies finds no others
        marks = ", ".join("?" for _ in visible) or "NULL"
        conditions, params = [*conditions, f"study_uid IN ({marks})"], [*params, *sorted(visible)]
    where = " AND ".join(conditions) or "TRUE"
    if query.level != "instance" and conditions:
        where = f"{key} IN (SELECT {key} FROM served_instances WHERE {where})"
    limit = min(query.limit if query.limit is not None else MAX_RESULTS, MAX_RESULTS)
    sql = (
        f"SELECT {key} AS k, MIN(path) AS rep{_aggregate_columns(query.level, catalog.dialect)} "
        f"FROM served_instances WHERE {where} GROUP BY {key} ORDER BY {key} LIMIT ? OFFSET ?"
    )
    groups = catalog.query(sql, (*params, limit + 1, query.offset))
    truncated = len(groups) > limit and query.limit is None
    rows = _with_representatives(catalog, query.level, groups[:limit])
    build = {"study": _study, "series": _series, "instance": _instance}[query.level]
    matches = [build(catalog, row, query, base_url) for row in rows]
    for level in query.context:
        _add_context(catalog, level, rows, matches)
    return SearchResult(matches, truncated)


def _with_representatives(catalog: Catalog, level: Level, groups: Sequence[Row]) -> list[Found]:
    """Each group with the columns of its representative instance, looked up by path (a
    second indexed query, as the group's other columns are not in its GROUP BY)."""
    columns = f"path, header{_GROUPS[level][2]}"
    paths = [g["rep"] for g in groups]
    reps: dict[str, Row] = {}
    for i in range(0, len(paths), 500):
        batch = paths[i : i + 500]
        sql = f"SELECT {columns} FROM served_instances WHERE path IN ({','.join('?' * len(batch))})"
        reps.update({r["path"]: r for r in catalog.query(sql, batch)})
    # A group whose representative was removed between the two queries is left out.
    return [_merged(g, reps[g["rep"]]) for g in groups if g["rep"] in reps]


def _merged(*rows: Row) -> Found:
    # Rows iterate over values, not names (sqlite3.Row): ``keys()`` is needed.
    return {key: row[key] for row in rows for key in row.keys()}  # noqa: SIM118


_CONTEXT_FIELDS: dict[str, tuple[str, ...]] = {"study": STUDY_FIELDS, "series": SERIES_FIELDS}
_CONTEXT_KEYS = {"study": "study_uid", "series": "series_uid"}


def _add_context(
    catalog: Catalog, level: Level, rows: Sequence[Found], matches: list[JsonDataset]
) -> None:
    """The ``level`` attributes of each match's study or series (headers and counts)."""
    key = _CONTEXT_KEYS[level]
    counts = _aggregates(catalog, level, {row[key] for row in rows})
    for row, match in zip(rows, matches, strict=True):
        attrs = _attributes(row)
        for tag in _CONTEXT_FIELDS[level]:
            match.setdefault(tag, element(tag, attrs.get(keyword_of(tag))))
        match.update(counts.get(row[key], {}))


def _aggregates(catalog: Catalog, level: Level, uids: set[str]) -> dict[str, JsonDataset]:
    """Counts (and ModalitiesInStudy) of each study or series in ``uids``."""
    key, columns = _GROUPS[level][0], _aggregate_columns(level, catalog.dialect)
    counted = _study_counts if level == "study" else _series_counts
    found: dict[str, JsonDataset] = {}
    ordered = sorted(uids)
    for i in range(0, len(ordered), 500):
        batch = ordered[i : i + 500]
        sql = (
            f"SELECT {key} AS k{columns} FROM served_instances "
            f"WHERE {key} IN ({','.join('?' * len(batch))}) GROUP BY {key}"
        )
        found.update({row["k"]: counted(_merged(row)) for row in catalog.query(sql, batch)})
    return found


def _study_counts(row: Found) -> JsonDataset:
    return {
        "00080061": element("00080061", sorted(set((row["modalities"] or "").split(",")))),
        "00201206": element("00201206", row["n_series"]),
        "00201208": element("00201208", row["n_instances"]),
    }


def _series_counts(row: Found) -> JsonDataset:
    return {"00201209": element("00201209", row["n_instances"])}


def _attributes(row: Found) -> dict[str, Any]:
    attributes: dict[str, Any] = orjson.loads(row["header"])["attributes"]
    return attributes


def _fields(catalog: Catalog, row: Found, query: Query, defaults: tuple[str, ...]) -> JsonDataset:
    attrs = _attributes(row)
    wanted = set(defaults) | set(query.include)
    if query.include_all:
        wanted |= {tag_of(k) for k in attrs}
    out = {tag: element(tag, attrs.get(keyword_of(tag))) for tag in sorted(wanted)}
    missing = [t for t in query.include if keyword_of(t) not in attrs]
    if missing:
        stored = _stored_json(catalog, row["rep"])
        out.update({t: stored[t] for t in missing if t in stored and _plain(stored[t])})
    return out


def _stored_json(catalog: Catalog, path: str) -> JsonDataset:
    rows = catalog.query("SELECT dataset_json FROM served_instances WHERE path = ?", (path,))
    stored: JsonDataset = orjson.loads(rows[0][0]) if rows else {}
    return stored


def _plain(value: dict[str, Any]) -> bool:
    """Not bulk data itself (bulk values inside a sequence keep absolute BulkDataURIs)."""
    return "BulkDataURI" not in value and "InlineBinary" not in value


def _study(catalog: Catalog, row: Found, query: Query, base: str) -> JsonDataset:
    out = _fields(catalog, row, query, STUDY_FIELDS)
    out[STUDY_UID] = element(STUDY_UID, row["k"])
    out.update(_study_counts(row))
    out[INSTANCE_AVAILABILITY] = element(INSTANCE_AVAILABILITY, "ONLINE")
    out[RETRIEVE_URL] = element(RETRIEVE_URL, f"{base}/studies/{row['k']}")
    return out


def _series(catalog: Catalog, row: Found, query: Query, base: str) -> JsonDataset:
    out = _fields(catalog, row, query, (*SERIES_FIELDS, *_PATIENT_FIELDS, "00080020"))
    out[STUDY_UID] = element(STUDY_UID, row["study_uid"])
    out[SERIES_UID] = element(SERIES_UID, row["k"])
    out.update(_series_counts(row))
    out[INSTANCE_AVAILABILITY] = element(INSTANCE_AVAILABILITY, "ONLINE")
    url = f"{base}/studies/{row['study_uid']}/series/{row['k']}"
    out[RETRIEVE_URL] = element(RETRIEVE_URL, url)
    return out


def _instance(catalog: Catalog, row: Found, query: Query, base: str) -> JsonDataset:
    stored: JsonDataset = orjson.loads(row["dataset_json"])
    header = orjson.loads(row["header"])
    wanted = set(stored) if query.include_all else set(INSTANCE_FIELDS) | set(query.include)
    url = f"{base}/studies/{row['study_uid']}/series/{row['series_uid']}/instances/{row['k']}"
    out = {
        t: absolute_bulk_uris(stored[t], url)
        for t in sorted(wanted)
        if t in stored and _plain(stored[t])
    }
    out[SOP_CLASS_UID] = element(SOP_CLASS_UID, VL_WSI)
    out[SOP_INSTANCE_UID] = element(SOP_INSTANCE_UID, row["k"])
    out[STUDY_UID] = element(STUDY_UID, row["study_uid"])
    out[SERIES_UID] = element(SERIES_UID, row["series_uid"])
    out["00080060"] = stored.get("00080060", element("00080060", "SM"))
    out[AVAILABLE_TRANSFER_SYNTAX] = element(AVAILABLE_TRANSFER_SYNTAX, header["transfer_syntax"])
    if query.include_all or FILE_TRANSFER_SYNTAX in query.include:
        # File meta is not in the stored dataset; cloud stores answer it (EZ-WSI needs it).
        out[FILE_TRANSFER_SYNTAX] = element(FILE_TRANSFER_SYNTAX, header["transfer_syntax"])
    out[INSTANCE_AVAILABILITY] = element(INSTANCE_AVAILABILITY, "ONLINE")
    out[RETRIEVE_URL] = element(RETRIEVE_URL, url)
    return out

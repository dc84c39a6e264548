"""QIDO-RS answers the same on both catalog backends, and what an oracle says it should.

One synthetic catalog of 60 studies is written to SQLite and to PostgreSQL alike; each
search runs on both and must return identical DICOM JSON, whose study UIDs must be the
ones a plain Python matcher of the DICOM rules picks (wildcards ``*``/``?`` with every
other character literal, LIKE's ``%``/``_`` and GLOB's ``[`` included; fuzzy names by
component start; date ranges; UID lists; paging in UID byte order).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import catalogs
import orjson
import pgserver
import pytest

from tileserver.catalog import Catalog
from tileserver.dicomweb import qido
from tileserver.formats import JPEG_BASELINE

pg_cluster, pg_database = pgserver.pg_cluster, pgserver.pg_database

NAMES = (
    "Doe^Jane",
    "doe^jane",
    "A_B%C^X",  # LIKE's wildcards, literal here
    "AxByC^X",
    "[Q]R^S",  # GLOB's class bracket, literal here
    "Q^R",
    "Smith^John Paul",
    "Roe^John",
    "O'Neil^Sean",
)
N_STUDIES = 60


def study_attributes(study: int) -> dict[str, Any]:
    return {
        "PatientID": f"P{study % 13:03d}",
        "PatientName": NAMES[study % len(NAMES)],
        "StudyDate": f"2024{1 + study % 12:02d}{1 + study % 27:02d}",
        "AccessionNumber": f"A{study}",
        "Modality": "SM" if study % 5 else "OT",
    }


def instance_rows(study: int) -> Iterator[tuple[tuple[Any, ...], tuple[Any, ...]]]:
    """(files row, instances row) of each of the study's 2 x 2 instances."""
    attrs = study_attributes(study)
    header = orjson.dumps({"attributes": attrs, "transfer_syntax": JPEG_BASELINE})
    for series in range(2):
        for number in range(2):
            path = f"/data/{study}/{series}/{number}.dcm"
            uid = f"1.2.{study}"
            dataset = orjson.dumps({"00200013": {"vr": "IS", "Value": [number + 1]}})
            searched = (attrs["PatientID"], attrs["PatientName"], attrs["StudyDate"])
            searched += (attrs["AccessionNumber"], attrs["Modality"])
            file_row = (path, "/data", 1, "t", "dicom", f"{uid}.{series}", None, "indexed", None, 0)
            instance = (path, f"{uid}.{series}.{number}", f"{uid}.{series}", uid, *searched)
            instance += (header, None, b"", "native", None, 0.0, b"[]", dataset)
            yield file_row, instance


def fill(catalog: Catalog) -> None:
    rows = [r for study in range(N_STUDIES) for r in instance_rows(study)]
    marks = ", ".join("?" * 17)
    with catalog.transaction() as tx:
        tx.executemany(f"INSERT INTO files VALUES ({', '.join('?' * 10)})", [f for f, _ in rows])
        tx.executemany(f"INSERT INTO instances VALUES ({marks})", [i for _, i in rows])


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory, pg_database: str) -> Iterator[list[Catalog]]:
    """The same synthetic catalog in SQLite and in PostgreSQL (served root /data)."""
    catalogs.empty_database(pg_database)
    sqlite_path = Path(tmp_path_factory.mktemp("qido")) / "catalog.sqlite"
    opened = [Catalog(sqlite_path, ["/data"]), Catalog(pg_database, ["/data"])]
    for catalog in opened:
        fill(catalog)
    yield opened
    for catalog in opened:
        catalog.close()


def wildcard(pattern: str) -> re.Pattern[str]:
    return re.compile("".join({"*": ".*", "?": "."}.get(c, re.escape(c)) for c in pattern))


def name_matches(name: str, value: str, fuzzy: bool) -> bool:
    if not fuzzy:
        return wildcard(value).fullmatch(name) is not None
    starts = [name.lower()] + [name.lower()[i + 1 :] for i, c in enumerate(name) if c in " ^"]
    return any(wildcard(value.lower().rstrip("*") + "*").fullmatch(s) for s in starts)


def expected(match: Any) -> list[str]:
    """Study UIDs whose attributes pass ``match``, in the catalog's byte order."""
    return sorted(f"1.2.{s}" for s in range(N_STUDIES) if match(study_attributes(s)))


SEARCHES: list[tuple[dict[str, str], Any]] = [
    ({"PatientID": "P007"}, lambda a: a["PatientID"] == "P007"),
    ({"PatientID": "P00?"}, lambda a: a["PatientID"].startswith("P00")),
    ({"PatientName": "A_B*"}, lambda a: a["PatientName"].startswith("A_B")),
    ({"PatientName": "A?B*"}, lambda a: name_matches(a["PatientName"], "A?B*", False)),
    ({"PatientName": "*%*"}, lambda a: "%" in a["PatientName"]),
    ({"PatientName": "[Q]*"}, lambda a: a["PatientName"].startswith("[Q]")),
    ({"PatientName": "O'*"}, lambda a: a["PatientName"].startswith("O'")),
    ({"PatientName": "Doe*"}, lambda a: a["PatientName"].startswith("Doe")),
    ({"PatientName": "john", "fuzzymatching": "true"}, lambda a: "John" in a["PatientName"]),
    (
        {"PatientName": "pa", "fuzzymatching": "true"},
        lambda a: name_matches(a["PatientName"], "pa", True),
    ),
    ({"StudyDate": "20240301-20240630"}, lambda a: "20240301" <= a["StudyDate"] <= "20240630"),
    ({"StudyDate": "-20240115"}, lambda a: a["StudyDate"] <= "20240115"),
    ({"AccessionNumber": "A42"}, lambda a: a["AccessionNumber"] == "A42"),
    ({"ModalitiesInStudy": "OT"}, lambda a: a["Modality"] == "OT"),
    ({"StudyInstanceUID": "1.2.3,1.2.30\\1.2.59"}, None),
    ({}, lambda a: True),
]


@pytest.mark.parametrize(("params", "match"), SEARCHES, ids=lambda v: str(v)[:40])
def test_study_searches_agree_with_each_other_and_the_oracle(
    both: list[Catalog], params: dict[str, str], match: Any
) -> None:
    query = qido.parse_query("study", list(params.items()))
    results = [qido.search(catalog, query, "http://h/dicomweb").matches for catalog in both]
    assert results[0] == results[1]
    found = [m["0020000D"]["Value"][0] for m in results[0]]
    want = ["1.2.3", "1.2.30", "1.2.59"] if match is None else expected(match)
    assert found == want and want


@pytest.mark.parametrize("level", ["study", "series", "instance"])
def test_pages_agree_in_byte_order(both: list[Catalog], level: qido.Level) -> None:
    pages = []
    for catalog in both:
        query = qido.parse_query(level, [("limit", "7"), ("offset", "11"), ("Modality", "SM")])
        pages.append(qido.search(catalog, query, "b").matches)
    assert pages[0] == pages[1] and len(pages[0]) == 7
    everything = qido.search(both[0], qido.parse_query(level, [("Modality", "SM")]), "b").matches
    assert pages[0] == everything[11:18]


def test_instance_results_carry_study_and_series_context_alike(both: list[Catalog]) -> None:
    items = [("StudyInstanceUID", "1.2.7"), ("includefield", "all")]
    results = [qido.search(c, qido.parse_query("instance", items), "b").matches for c in both]
    assert results[0] == results[1] and len(results[0]) == 4
    assert {m["00201208"]["Value"][0] for m in results[0]} == {4}  # instances in the study
    assert {m["00201209"]["Value"][0] for m in results[0]} == {2}  # instances in the series


def test_a_server_of_other_roots_finds_nothing(both: list[Catalog], pg_database: str) -> None:
    elsewhere = [Catalog(both[0].name, ["/data-other"]), Catalog(pg_database, ["/data-other"])]
    try:
        for catalog in elsewhere:
            assert qido.search(catalog, qido.parse_query("study", []), "b").matches == []
    finally:
        for catalog in elsewhere:
            catalog.close()

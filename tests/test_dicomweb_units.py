"""DICOMweb building blocks without a server: multipart, Accept negotiation, QIDO over SQL."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pytest

from tileserver.catalog import Catalog
from tileserver.dicomweb import accept, qido
from tileserver.dicomweb.accept import Offer
from tileserver.dicomweb.instances import parse_frame_list
from tileserver.dicomweb.multipart import (
    PART_END,
    MultipartError,
    MultipartParser,
    closing,
    part_header,
)
from tileserver.errors import InvalidRequestError, NotAcceptableError

JPEG_BASELINE = "1.2.840.10008.1.2.4.50"
J2K_LOSSLESS = "1.2.840.10008.1.2.4.90"
EXPLICIT = "1.2.840.10008.1.2.1"
VL_WSI = "1.2.840.10008.5.1.4.1.1.77.1.6"


# -- multipart ---------------------------------------------------------------------------


def encode(parts: list[bytes], boundary: str = "b0undary") -> bytes:
    body = b"preamble\r\n"
    for p in parts:
        body += part_header(boundary, "application/dicom") + p + PART_END
    return body + closing(boundary) + b"epilogue"


def parse(body: bytes, step: int, boundary: str = "b0undary") -> tuple[list[bytes], bool]:
    parser = MultipartParser(boundary)
    parts: list[bytes] = []
    for i in range(0, len(body), step):
        for event in parser.feed(body[i : i + step]):
            if event.kind == "start":
                parts.append(b"")
            elif event.kind == "data":
                parts[-1] += event.data
    return parts, parser.complete


@pytest.mark.parametrize("step", [1, 2, 3, 7, 64, 100_000])
def test_multipart_round_trip_at_any_chunking(step: int) -> None:
    parts = [b"", b"\r\n--b0undar", b"x" * 5000, b"--b0undary", b"\r\n\r\nend"]
    assert parse(encode(parts), step) == (parts, True)


def test_multipart_truncated_body_leaves_a_part_open() -> None:
    body = encode([b"first", b"second" * 100])[:-60]
    parser = MultipartParser("b0undary")
    parser.feed(body)
    assert parser.in_part and not parser.complete and parser.parts == 2


def test_multipart_rejects_garbage_after_boundary() -> None:
    parser = MultipartParser("b")
    assert parser.feed(b"--b junk\r\n") == []
    assert isinstance(parser.error, MultipartError) and not parser.complete


def test_multipart_rejects_a_header_line_without_colon() -> None:
    parser = MultipartParser("b")
    parser.feed(b"--b\r\nnot a header\r\n\r\nbody")
    assert isinstance(parser.error, MultipartError)
    assert parser.feed(b"\r\n--b--\r\n") == []  # nothing after the error


def test_multipart_delivers_a_complete_part_before_a_malformed_one() -> None:
    body = part_header("b", "application/dicom") + b"first" + PART_END + b"--b\r\nbad\r\n\r\n"
    parser = MultipartParser("b")
    events = parser.feed(body)
    assert [e.kind for e in events] == ["start", "data", "end"]
    assert events[1].data == b"first" and isinstance(parser.error, MultipartError)


def test_multipart_without_closing_delimiter_is_incomplete() -> None:
    parser = MultipartParser("b")
    events = parser.feed(part_header("b", "application/dicom") + b"x" + PART_END + b"--b")
    assert [e.kind for e in events] == ["start", "data", "end"]
    assert not parser.complete and not parser.in_part and parser.error is None


def test_multipart_needs_a_boundary() -> None:
    with pytest.raises(MultipartError):
        MultipartParser("")


# -- Accept --------------------------------------------------------------------------------


def test_accept_orders_by_q_then_position() -> None:
    entries = accept.parse_accept('image/png;q=0.5, multipart/related; type="image/jpeg", x/y;q=0')
    assert [e.media_type for e in entries] == ["multipart/related", "image/png", "x/y"]
    assert entries[0].params["type"] == "image/jpeg" and entries[1].q == 0.5
    assert entries[2].q == 0  # kept as an exclusion, last


def test_q_zero_excludes_what_it_names() -> None:
    jpeg = accept.frame_offers(JPEG_BASELINE, decodable=True, eight_bit=True)
    choice = accept.negotiate(accept.parse_accept("image/jpeg;q=0, */*"), jpeg, 1)
    assert choice.offer.media_type != "image/jpeg"
    more_specific = accept.parse_accept('*/*;q=0, multipart/related; type="image/jpeg"')
    assert accept.negotiate(more_specific, jpeg, 1).offer.media_type == "image/jpeg"
    for header in ("*/*;q=0", "*/*;q=0, image/gif"):
        with pytest.raises(NotAcceptableError):
            accept.negotiate(accept.parse_accept(header), jpeg, 1)
    with pytest.raises(NotAcceptableError):
        accept.negotiate_bulk(accept.parse_accept("*/*;q=0"))
    with pytest.raises(NotAcceptableError):
        accept.negotiate_dicom(accept.parse_accept("application/dicom;q=0, */*"), {EXPLICIT})
    assert accept.negotiate_rendered(accept.parse_accept("image/jpeg;q=0, */*")) == "png"


def test_bulk_negotiation() -> None:
    assert not accept.negotiate_bulk(accept.parse_accept(None))
    assert not accept.negotiate_bulk(accept.parse_accept("application/octet-stream"))
    multipart = 'multipart/related; type="application/octet-stream"'
    assert accept.negotiate_bulk(accept.parse_accept(multipart))
    with pytest.raises(NotAcceptableError):
        accept.negotiate_bulk(accept.parse_accept("image/gif"))


@pytest.mark.parametrize(
    ("stored", "media_type", "expected"),
    [
        # image/jpeg means JPEG Baseline: JPEG Extended is transcoded, never sent as stored.
        ("1.2.840.10008.1.2.4.51", "image/jpeg", (JPEG_BASELINE, "jpeg")),
        # image/jp2 means JPEG 2000 lossless: lossy JPEG 2000 cannot be sent under it.
        ("1.2.840.10008.1.2.4.91", "image/jp2", None),
        (J2K_LOSSLESS, "image/jp2", (J2K_LOSSLESS, None)),
        # application/octet-stream means Explicit VR Little Endian: decoded, not stored bytes.
        (JPEG_BASELINE, "application/octet-stream", (EXPLICIT, "native")),
    ],
)
def test_media_types_default_to_their_ps318_transfer_syntax(
    stored: str, media_type: str, expected: tuple[str, str | None] | None
) -> None:
    offers = accept.frame_offers(stored, decodable=True, eight_bit=True)
    entries = accept.parse_accept(f'multipart/related; type="{media_type}"')
    if expected is None:
        with pytest.raises(NotAcceptableError):
            accept.negotiate(entries, offers, 1)
    else:
        offer = accept.negotiate(entries, offers, 1).offer
        assert (offer.transfer_syntax, offer.transcode) == expected


def test_quoted_commas_do_not_split() -> None:
    (entry,) = accept.parse_accept('multipart/related; type="a,b"')
    assert entry.params["type"] == "a,b"


J2K_OFFERS = accept.frame_offers(J2K_LOSSLESS, decodable=True, eight_bit=True)


@pytest.mark.parametrize(
    ("header", "expected"),
    [
        ('multipart/related; type="application/octet-stream"; transfer-syntax=*', None),
        ('multipart/related; type="image/jp2"', None),
        ('multipart/related; type="image/jpeg"', "jpeg"),
        (f'multipart/related; type="image/jpeg"; transfer-syntax={JPEG_BASELINE}', "jpeg"),
        ('multipart/related; type="application/octet-stream"', "native"),
        ('multipart/related; type="image/jp2";q=0.4, multipart/related; type="image/jpeg"', "jpeg"),
        ('multipart/related; type="image/jp2", multipart/related; type="image/jpeg";q=0.9', None),
        ('multipart/related; type="image/gif", */*;q=0.1', None),
        (None, None),
    ],
)
def test_frame_negotiation(header: str | None, expected: str | None) -> None:
    choice = accept.negotiate(accept.parse_accept(header), J2K_OFFERS, 3)
    assert choice.offer.transcode == expected and choice.multipart


def test_frame_negotiation_406_only_when_nothing_matches() -> None:
    with pytest.raises(NotAcceptableError):
        accept.negotiate(accept.parse_accept('multipart/related; type="image/gif"'), J2K_OFFERS, 1)
    offers = accept.frame_offers(J2K_LOSSLESS, decodable=False, eight_bit=True)
    with pytest.raises(NotAcceptableError):
        accept.negotiate(accept.parse_accept('multipart/related; type="image/jpeg"'), offers, 1)


def test_bare_media_type_is_a_single_part_for_one_frame_only() -> None:
    entries = accept.parse_accept("image/jp2")
    assert not accept.negotiate(entries, J2K_OFFERS, 1).multipart
    with pytest.raises(NotAcceptableError):
        accept.negotiate(entries, J2K_OFFERS, 2)


def test_stored_jpeg_is_never_transcoded_to_itself() -> None:
    offers = accept.frame_offers(JPEG_BASELINE, decodable=True, eight_bit=True)
    assert Offer("image/jpeg", JPEG_BASELINE, "jpeg") not in offers
    assert offers[0] == Offer("image/jpeg", JPEG_BASELINE)


def test_rendered_negotiation() -> None:
    assert accept.negotiate_rendered(accept.parse_accept("image/png, image/jpeg;q=0.5")) == "png"
    assert accept.negotiate_rendered(accept.parse_accept("*/*")) == "jpeg"
    with pytest.raises(NotAcceptableError):
        accept.negotiate_rendered(accept.parse_accept("image/gif"))


# -- QIDO over a synthetic catalog ------------------------------------------------------------

N_STUDIES = 10_000


def _row(study: int, series: int, inst: int) -> tuple[object, ...]:
    path = f"/data/s{study}/{series}/{inst}.dcm"
    attributes = {
        "PatientID": f"P{study % 500:04d}",
        "PatientName": f"Doe{study % 7}^Jane" if study % 2 else f"Roe^John{study % 3}",
        "StudyDate": f"2023{1 + study % 12:02d}{1 + study % 28:02d}",
        "AccessionNumber": f"A{study}",
        "Modality": "SM" if study % 10 else "OT",
    }
    header = orjson.dumps({"attributes": attributes, "transfer_syntax": JPEG_BASELINE})
    ds = {"00200013": {"vr": "IS", "Value": [inst]}, "00282000": {"vr": "OB", "BulkDataURI": "x"}}
    return (
        path,
        f"1.2.{study}.{series}.{inst}",
        f"1.2.{study}.{series}",
        f"1.2.{study}",
        attributes["PatientID"],
        attributes["PatientName"],
        attributes["StudyDate"],
        attributes["AccessionNumber"],
        attributes["Modality"],
        header,
        orjson.dumps(ds),
    )


@pytest.fixture(scope="module")
def catalog(tmp_path_factory: pytest.TempPathFactory) -> Catalog:
    cat = Catalog(tmp_path_factory.mktemp("qido") / "catalog.sqlite")
    rows = [_row(s, se, i) for s in range(N_STUDIES) for se in range(2) for i in range(2)]
    with cat.transaction() as conn:
        conn.executemany(
            "INSERT INTO files VALUES (?, '/data', 1, '1', 'dicom', ?, NULL, 'indexed', NULL, 0)",
            [(r[0], r[2]) for r in rows],
        )
        conn.executemany(
            "INSERT INTO instances (path, sop_instance_uid, series_uid, study_uid, patient_id, "
            "patient_name, study_date, accession_number, modality, header, dataset_json, "
            "frames, frame_table_kind, z_base, notes) "
            "VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, x'', 'bot', 0, x'5b5d')",
            rows,
        )
    qido.ensure_indexes(cat)
    return cat


def run(catalog: Catalog, level: qido.Level, **params: str) -> list[dict[str, object]]:
    query = qido.parse_query(level, list(params.items()))
    return qido.search(catalog, query, "http://h/dicomweb").matches


def values(matches: list[dict[str, object]], tag: str) -> list[object]:
    return [m[tag]["Value"][0] for m in matches]  # type: ignore[index]


def test_study_search_counts_series_and_instances(catalog: Catalog) -> None:
    (study,) = run(catalog, "study", StudyInstanceUID="1.2.17")
    assert values([study], "00201206") == [2] and values([study], "00201208") == [4]
    assert values([study], "00080061") == ["SM"]
    assert values([study], "00081190") == ["http://h/dicomweb/studies/1.2.17"]
    assert values([study], "00100010") == [{"Alphabetic": "Doe3^Jane"}]


def test_patient_id_exact_and_wildcard(catalog: Catalog) -> None:
    assert len(run(catalog, "study", PatientID="P0007")) == N_STUDIES // 500
    assert len(run(catalog, "study", PatientID="P000?")) == 10 * N_STUDIES // 500
    assert len(run(catalog, "study", PatientID="P00*")) == 100 * N_STUDIES // 500


def test_patient_name_wildcards_and_fuzzy(catalog: Catalog) -> None:
    assert len(run(catalog, "study", PatientName="Doe3^Jane")) == len(
        [s for s in range(N_STUDIES) if s % 2 and s % 7 == 3]
    )
    assert len(run(catalog, "study", PatientName="Roe*")) == N_STUDIES // 2
    assert run(catalog, "study", PatientName="roe*") == []
    fuzzy = run(catalog, "study", PatientName="john1", fuzzymatching="true")
    assert len(fuzzy) == len([s for s in range(N_STUDIES) if s % 2 == 0 and s % 3 == 1])


def test_study_date_ranges(catalog: Catalog) -> None:
    def count(value: str) -> int:
        return len(run(catalog, "study", StudyDate=value, limit="100000"))

    assert count("20230101") == len([s for s in range(N_STUDIES) if s % 12 == 0 and s % 28 == 0])
    assert count("20231201-") == len([s for s in range(N_STUDIES) if s % 12 == 11])
    assert count("-20230131") == len([s for s in range(N_STUDIES) if s % 12 == 0])
    assert count("20230201-20230331") == len([s for s in range(N_STUDIES) if s % 12 in (1, 2)])
    with pytest.raises(InvalidRequestError):
        count("2023-01-01")


def test_uid_lists_accession_modality(catalog: Catalog) -> None:
    assert len(run(catalog, "study", StudyInstanceUID="1.2.1,1.2.2\\1.2.3")) == 3
    assert values(run(catalog, "study", AccessionNumber="A42"), "0020000D") == ["1.2.42"]
    assert len(run(catalog, "series", Modality="OT")) == 2 * N_STUDIES // 10
    assert len(run(catalog, "study", ModalitiesInStudy="SM", limit="100000")) == 9000


def test_uid_list_as_repeated_parameters(catalog: Catalog) -> None:
    items = [("SeriesInstanceUID", "1.2.5.0"), ("SeriesInstanceUID", "1.2.5.1")]
    matches = qido.search(catalog, qido.parse_query("instance", items), "b").matches
    assert len(matches) == 4


def test_sop_class_matching(catalog: Catalog) -> None:
    assert len(run(catalog, "instance", StudyInstanceUID="1.2.9", SOPClassUID=VL_WSI)) == 4
    assert run(catalog, "instance", StudyInstanceUID="1.2.9", SOPClassUID="1.2.3") == []


def test_limit_offset_and_server_cap(catalog: Catalog) -> None:
    page = run(catalog, "study", limit="5", offset="10")
    everything = qido.search(catalog, qido.parse_query("study", []), "b")
    assert values(page, "0020000D") == values(everything.matches[10:15], "0020000D")
    assert len(everything.matches) == qido.MAX_RESULTS and not everything.truncated
    all_series = qido.search(catalog, qido.parse_query("series", []), "b")
    assert len(all_series.matches) == qido.MAX_RESULTS and all_series.truncated


def test_includefield_and_instance_attributes(catalog: Catalog) -> None:
    (inst,) = run(catalog, "instance", SOPInstanceUID="1.2.3.1.1", includefield="00282000")
    assert values([inst], "00200013") == [1] and values([inst], "00083002") == [JPEG_BASELINE]
    assert "00282000" not in inst  # bulk data never appears in search results
    (study,) = run(catalog, "study", StudyInstanceUID="1.2.3", includefield="all")
    assert values([study], "00080050") == ["A3"]


def test_unsupported_matching_keys_are_reported(catalog: Catalog) -> None:
    query = qido.parse_query("study", [("StudyDescription", "x"), ("PatientID", "P0001")])
    assert query.ignored == ("StudyDescription",)


@pytest.mark.parametrize(
    "params",
    [
        {"PatientID": "P0123"},
        {"PatientName": "Doe*", "limit": "100"},
        {"StudyDate": "20230301-20230331", "limit": "100"},
        {"AccessionNumber": "A9999"},
        {"ModalitiesInStudy": "SM", "limit": "100"},
        {"limit": "100", "offset": "5000"},
    ],
)
def test_searches_over_10000_studies_use_indexes(
    catalog: Catalog, params: dict[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every table access of every statement a search runs goes through an index (a plain
    ``SCAN`` would read all 40,000 instance rows); how fast that is, is ``make bench``'s."""
    statements: list[tuple[str, tuple[object, ...]]] = []
    query = catalog.query

    def recording(sql: str, args: tuple[object, ...] = ()) -> list[sqlite3.Row]:
        statements.append((sql, args))
        return query(sql, args)

    monkeypatch.setattr(catalog, "query", recording)
    assert run(catalog, "study", **params), params
    assert statements
    for sql, args in statements:
        plan = [row[3] for row in query(f"EXPLAIN QUERY PLAN {sql}", args)]
        accesses = [step for step in plan if step.startswith(("SCAN", "SEARCH"))]
        assert accesses and all(" USING " in step for step in accesses), (params, plan)


def test_indexes_exist(catalog: Catalog, tmp_path: Path) -> None:
    names = {r[0] for r in catalog.query("SELECT name FROM sqlite_master WHERE type='index'")}
    assert set(qido.INDEXES) <= names


def test_study_date_without_dash_is_rejected(catalog: Catalog) -> None:
    fullwidth = "".join(chr(0xFF10 + int(c)) for c in "20230101")  # str.isdigit, not ASCII
    for value in ("2023010120230131", "20230101-2023013", fullwidth):
        with pytest.raises(InvalidRequestError):
            run(catalog, "study", StudyDate=value)


def test_unknown_non_dicom_keys_are_ignored_with_a_warning(catalog: Catalog) -> None:
    query = qido.parse_query("study", [("_", "1700000000"), ("Patient\u2713", "x")])
    assert query.ignored == ("_", "Patient?") and query.where == ()


@pytest.mark.parametrize("raw", ["\u00b2", "-1", "1e3", " 5", "99999999999999999999", "9" * 5000])
def test_limit_and_offset_must_be_small_ascii_integers(catalog: Catalog, raw: str) -> None:
    for name in ("limit", "offset"):
        with pytest.raises(InvalidRequestError):
            run(catalog, "study", **{name: raw})


def test_largest_offset_answers_empty(catalog: Catalog) -> None:
    assert run(catalog, "study", offset="999999999") == []


@pytest.mark.parametrize("text", ["\u00b2", "1,\u00b2", "9" * 5000, "1" * 10, "0", "", "1,,2"])
def test_frame_lists_reject_what_int_cannot_take(text: str) -> None:
    with pytest.raises(InvalidRequestError):
        parse_frame_list(text)


def test_frame_list() -> None:
    assert parse_frame_list("1, 3,999999999") == [1, 3, 999999999]


def test_all_instances_carry_study_and_series_attributes(catalog: Catalog) -> None:
    (inst,) = run(catalog, "instance", SOPInstanceUID="1.2.3.1.1")
    assert values([inst], "00100020") == ["P0003"]  # PatientID
    assert values([inst], "00100010") == [{"Alphabetic": "Doe3^Jane"}]
    assert values([inst], "00080020") == ["20230404"]  # StudyDate
    assert values([inst], "00080050") == ["A3"]
    assert values([inst], "0020000D") == ["1.2.3"] and values([inst], "0020000E") == ["1.2.3.1"]
    assert values([inst], "00080060") == ["SM"]
    assert values([inst], "00201206") == [2] and values([inst], "00201208") == [4]
    assert values([inst], "00201209") == [2]
    assert values([inst], "00080056") == ["ONLINE"]


def test_instances_of_a_study_carry_series_but_not_study_attributes(catalog: Catalog) -> None:
    query = qido.parse_query("instance", [], {"0020000D": "1.2.3"})
    matches = qido.search(catalog, query, "b").matches
    assert len(matches) == 4 and all("00201209" in m for m in matches)
    assert all("00201208" not in m for m in matches)
    scoped = qido.parse_query("instance", [], {"0020000D": "1.2.3", "0020000E": "1.2.3.1"})
    assert qido.parse_query("instance", []).context == ("study", "series")
    assert scoped.context == ()


def test_study_and_series_results_are_online(catalog: Catalog) -> None:
    for level in ("study", "series"):
        (match,) = run(catalog, level, StudyInstanceUID="1.2.3", limit="1")  # type: ignore[arg-type]
        assert values([match], "00080056") == ["ONLINE"]

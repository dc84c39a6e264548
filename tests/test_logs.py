"""Logs at default settings carry no patient data, and the audit log says which subject read
or stored which study."""

from __future__ import annotations

import json
from pathlib import Path

import httpx
from serverproc import ServerProcess

from fixtures import FixtureSet


def test_no_patient_data_in_any_log_and_reads_are_audited(
    tmp_path: Path, fixture_dir: dict[str, FixtureSet]
) -> None:
    fs = fixture_dir["jpeg_bot"]
    access, audit = tmp_path / "access.jsonl", tmp_path / "audit.jsonl"
    keys = tmp_path / "keys.txt"
    keys.write_text("reader-key-1 read\n")
    extra = ["--access-log", str(access), "--audit-log", str(audit), "--api-keys", str(keys)]
    extra += ["--log-level", "info"]  # the default level (the last flag wins)
    process = ServerProcess([fs.directory], tmp_path, extra_args=extra).start()
    headers = {"authorization": "Bearer reader-key-1", "x-request-id": "req-42"}
    try:
        with httpx.Client(base_url=process.url, headers=headers) as client:
            assert client.get("/slides").status_code == 200
            assert client.get(f"/slides/{fs.series_uid}").status_code == 200
            assert client.get(f"/slides/{fs.series_uid}/tiles/0/0/0?format=png").status_code == 200
            search = client.get("/dicomweb/studies", params={"PatientName": "Fixture*"})
            assert search.status_code == 200 and search.json()
            assert client.get("/dicomweb/studies", params={"PatientID": "FIXTURE-PATIENT"}).json()
            assert client.get("/slides/no-such-slide").status_code == 404
    finally:
        process.stop()
    texts = {p.name: p.read_text() for p in (access, audit, process.log)}
    for name, text in texts.items():
        for phi in ("Fixture^Synthetic", "FIXTURE-PATIENT", "Fixture*"):
            assert phi not in text, (name, phi)
    logged = [json.loads(line) for line in access.read_text().splitlines()]
    lines = [line for line in logged if line["path"] != "/readyz"]  # the start-up probes
    assert len(lines) == 6 and all(line["id"] == "req-42" for line in lines)
    assert all(len(line["id"]) == 16 for line in logged if line["path"] == "/readyz")
    searches = [line for line in lines if line["path"] == "/dicomweb/studies"]
    assert {line["query"] for line in searches} == {"PatientName=", "PatientID="}
    audited = [json.loads(line) for line in audit.read_text().splitlines()]
    assert audited and all(a["subject"].startswith("key:") for a in audited)
    assert {(a["action"], a["study"], a["slide"]) for a in audited} == {
        ("read", fs.study_uid, fs.series_uid)
    }  # once per subject, study and slide within the minute

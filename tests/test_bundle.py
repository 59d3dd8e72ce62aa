"""The reviewers' bundle of the dev corpus, checked file by file against the truth."""

from __future__ import annotations

import hashlib
import io
import os
import re
import subprocess
import sys
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pdfplumber
import pikepdf
import pytest
import tomli_w
from openpyxl import load_workbook

from mailbot.admin.bundle import safe_component
from mailbot.admin.bundle_command import build
from mailbot.admin.bundle_index import INDEX_COLUMNS, PERSONAL_COLUMNS, iter_manifest
from mailbot.admin.importer import import_one
from mailbot.config import Settings, parse_settings
from mailbot.demo import local_config
from mailbot.worker import Worker
from parsers.convert import office_binary
from parsers.message import extract_parts
from storage.models import Message
from tests.conftest import _missing, corpus_truth
from tests.support.office_runs import counting_runs

CURRENT = ("accepted", "incomplete", "duplicate")
WINDOWS_UNSAFE = re.compile(r'[<>:"\\|?*\x00-\x1f]')


@pytest.fixture(scope="module")
def decided_corpus(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> tuple[Settings, dict[str, Any]]:
    """The dev corpus taken in (as ``mailbot import`` does) and decided; nothing is sent."""
    root = tmp_path_factory.mktemp("bundle")
    raw = local_config(root / "data", ("127.0.0.1", 9), ("127.0.0.1", 9), "MAILBOT_UNUSED_PASSWORD")
    settings = parse_settings(raw, "bundle test")
    truth = corpus_truth(corpus_dir)
    with Worker(settings, inline=True) as bot:
        for name in sorted(truth, key=lambda n: truth[n]["arrival"]):
            info = truth[name]
            eml = (corpus_dir / f"{name}.eml").read_bytes()
            import_one(settings, bot.store, eml, call_id=info["call"], arrival=datetime.fromisoformat(info["arrival"]))
        bot.deciding.decide()
        with bot.store.sessions() as session:
            stored = {m.message_id: m for m in session.query(Message)}
            for info in truth.values():
                message = stored[info["message_id"]]
                info["reference"] = message.reference
                # decided, but held in the review queue until an admin confirms it (another sender's form)
                info["held"] = message.state == "review" and message.application_id is None and bool(message.decision)
                info["held"] = info["held"] and message.outcome in (*CURRENT, "revision")
    return settings, truth


def _applications(truth: dict[str, Any], call: str) -> dict[str, str]:
    """First message of each current application → its latest on-time form, from the truth alone."""
    root: dict[str, str] = {}
    latest: dict[str, str] = {}
    for name in sorted(truth, key=lambda n: truth[n]["arrival"]):
        info = truth[name]
        if info["call"] != call or info["held"]:
            continue
        if info["outcome"] in CURRENT:
            root[name] = name
            latest[name] = name
        elif info["outcome"] == "revision":
            first = root[info["supersedes"]]
            root[name] = first
            latest[first] = name
    return latest


def _form_sha(corpus_dir: Path, name: str, truth: dict[str, Any]) -> str:
    """The sha256 of the form as the truth names it: the attachment, or the form inside a .zip sent."""
    form = truth[name]["form"]
    wanted = (form.get("zip_members") or [form["attachment"]])[0]
    parts = extract_parts((corpus_dir / f"{name}.eml").read_bytes())
    for attachment, data in parts:
        if attachment.filename == wanted:
            return hashlib.sha256(data).hexdigest()
        if attachment.kind == "zip" and form.get("zip_members"):
            with zipfile.ZipFile(io.BytesIO(data)) as archive:
                for member in archive.infolist():
                    if member.filename.endswith(wanted) or wanted.endswith(member.filename.rsplit("/", 1)[-1]):
                        return hashlib.sha256(archive.read(member)).hexdigest()
    raise AssertionError(f"{name}: no attachment {wanted!r}")


def _rows(sheet: Any) -> list[dict[str, Any]]:
    rows = list(sheet.iter_rows(values_only=True))
    header = list(rows[0])
    return [dict(zip(header, row, strict=True)) for row in rows[1:]]


@pytest.mark.parametrize("call_id", ["smp-zhipu-2024", "caai-ant-2024"])
def test_bundle_matches_the_truth(
    decided_corpus: tuple[Settings, dict[str, Any]], corpus_dir: Path, tmp_path: Path, call_id: str
) -> None:
    settings, truth = decided_corpus
    call = settings.call_by_id(call_id)
    target = tmp_path / "bundle.zip"
    lines: list[str] = []
    bundle = build(settings, call_id, target, progress=lines.append)
    assert lines and lines[-1].startswith(f"[{len(bundle.entries)}/{len(bundle.entries)}]")

    # the same data gives the same bytes
    again = tmp_path / "again.zip"
    build(settings, call_id, again)
    assert target.read_bytes() == again.read_bytes()

    archive = zipfile.ZipFile(target)
    names = archive.namelist()
    assert names == sorted(names), "entries in a fixed order"
    assert {info.date_time for info in archive.infolist()} == {(1980, 1, 1, 0, 0, 0)}
    files = {name: archive.read(name) for name in names}

    # the manifest lists every other file with its checksum
    manifest = dict((path, digest) for digest, path in iter_manifest(files["MANIFEST.sha256"].decode()))
    assert set(manifest) == set(files) - {"MANIFEST.sha256"}
    for path, digest in manifest.items():
        assert hashlib.sha256(files[path]).hexdigest() == digest, path

    for path in files:
        for part in path.split("/"):
            assert part == part.strip(" .") and not WINDOWS_UNSAFE.search(part), path
            assert len(part.encode()) <= 200, path
    casefolded = [path.casefold() for path in files]
    assert len(set(casefolded)) == len(casefolded), "names differ on a case-insensitive file system"

    workbook = load_workbook(io.BytesIO(files["index.xlsx"]))
    index = _rows(workbook["Applications"])
    assert list(index[0]) == [*INDEX_COLUMNS, *PERSONAL_COLUMNS]
    by_reference = {row["reference"]: row for row in index}
    assert len(by_reference) == len(index), "one row per entry"

    # one entry per current application, with its latest on-time form
    expected = _applications(truth, call_id)
    current_rows = [row for row in index if row["status"] in CURRENT]
    assert len(current_rows) == len(expected)
    topics = {topic.code: topic for topic in call.topic}
    for first, latest in expected.items():
        row = by_reference[truth[first]["reference"]]
        fields = truth[latest]["fields"]
        assert row["form_reference"] == truth[latest]["reference"], first
        assert row["status"] == truth[first]["outcome"], first
        assert row["applicant"] == fields["applicant_name"], first
        assert row["institution"] == fields["institution"], first
        assert row["title"] == fields["project_title"], first
        assert row["topic"] == fields["topic"], first
        assert row["email"] == fields["email"] and row["phone"] == fields["phone"], first
        assert row["arrival"] == datetime.fromisoformat(truth[latest]["arrival"]).strftime("%Y-%m-%d %H:%M:%S")
        form_sha = _form_sha(corpus_dir, latest, truth)
        assert row["sha256"] == form_sha, first
        entry_files = row["files"].split("\n")
        form_file = entry_files[0]
        assert hashlib.sha256(files[form_file]).hexdigest() == form_sha, first
        stem = "_".join(
            part
            for part in (
                safe_component(truth[first]["reference"]),
                safe_component(fields["applicant_name"] or "", ""),
                safe_component(fields["institution"] or "", ""),
            )
            if part
        )
        topic = topics.get(fields["topic"])
        folder = safe_component(f"{topic.code} {topic.name}") if topic else row["folder"]
        assert form_file.startswith(f"{folder}/{stem}."), (first, form_file)
        assert all(name.startswith(f"{folder}/{stem}") for name in entry_files), first
        # the other files sent with the form come along, unaltered
        sent = {
            hashlib.sha256(data).hexdigest() for _, data in extract_parts((corpus_dir / f"{latest}.eml").read_bytes())
        }
        assert sent <= {hashlib.sha256(files[name]).hexdigest() for name in entry_files}, first
        chain = [
            truth[name]["reference"]
            for name in sorted(truth, key=lambda n: truth[n]["arrival"])
            if truth[name]["call"] == call_id
            and truth[name]["outcome"] in (*CURRENT, "revision")
            and _root(truth, name) == first
            and name != latest
            and not truth[name]["held"]
        ]
        assert row["superseded"] == (", ".join(chain) or None), first
        if truth[first]["outcome"] == "duplicate":
            original = truth[truth[first]["duplicate_of"]]["reference"]
            assert original in row["flags"] and "duplicate" in row["flags"], first
        else:
            assert "duplicate" not in (row["flags"] or ""), first

    # superseded versions are out of the bundle and on their own sheet
    replaced = [
        name
        for name in truth
        if truth[name]["call"] == call_id
        and name not in expected.values()
        and not truth[name]["held"]
        and (truth[name]["outcome"] in CURRENT or truth[name]["outcome"] == "revision")
    ]
    old_rows = {row["reference"] for row in _rows(workbook["Superseded"])}
    assert old_rows == {truth[name]["reference"] for name in replaced}
    in_bundle = {hashlib.sha256(data).hexdigest() for data in files.values()}
    for name in replaced:
        if _form_sha(corpus_dir, name, truth) not in {_form_sha(corpus_dir, n, truth) for n in expected.values()}:
            assert _form_sha(corpus_dir, name, truth) not in in_bundle, name

    # late, unreadable and held mail in folders of their own
    for outcome, folder in (("late", "逾期 late"), ("unreadable", "无法读取 unreadable"), ("held", "待确认 held")):
        wanted = {
            info["reference"]
            for info in truth.values()
            if info["call"] == call_id and (info["outcome"] == outcome or (outcome == "held" and info["held"]))
        }
        rows = {row["reference"] for row in index if row["status"] == outcome}
        assert rows == wanted, outcome
        for row in index:
            if row["status"] == outcome:
                assert row["folder"] == folder and all(f.startswith(folder + "/") for f in row["files"].split("\n"))


def _root(truth: dict[str, Any], name: str) -> str:
    while truth[name]["outcome"] == "revision":
        name = truth[name]["supersedes"]
    return name


def test_redacted_bundle_leaves_personal_fields_out_of_the_index(
    decided_corpus: tuple[Settings, dict[str, Any]], tmp_path: Path
) -> None:
    settings, truth = decided_corpus
    folder = tmp_path / "out"
    build(settings, "smp-zhipu-2024", folder, grouping="direction", redact=True)
    workbook = load_workbook(folder / "index.xlsx")
    index = _rows(workbook["Applications"])
    assert list(index[0]) == list(INDEX_COLUMNS)
    text = "\n".join(str(cell) for row in workbook["Applications"].iter_rows(values_only=True) for cell in row)
    for info in truth.values():
        for contact in ("email", "phone"):
            value = (info.get("fields") or {}).get(contact)
            if value and info["call"] == "smp-zhipu-2024":
                assert value not in text
    about = "\n".join(str(row[0]) for row in workbook["About"].iter_rows(values_only=True))
    assert "not altered" in about
    directions = {topic.direction for topic in settings.call_by_id("smp-zhipu-2024").topic}
    assert {row["folder"] for row in index if row["status"] in CURRENT} <= {safe_component(d) for d in directions}
    # the documents themselves are whole: the files are the ones the applicants sent
    manifest = (folder / "MANIFEST.sha256").read_text()
    for digest, path in iter_manifest(manifest):
        assert hashlib.sha256((folder / path).read_bytes()).hexdigest() == digest


def test_safe_component_is_safe_on_windows() -> None:
    assert safe_component('a<b>:c"d/e\\f|g?h*') == "abcdefgh"
    assert safe_component("CON") == "_CON"
    assert safe_component("name. ") == "name"
    assert safe_component("张 伟") == "张-伟"
    assert safe_component("") == "_"
    assert len(safe_component("长" * 400).encode()) <= 150


def test_bundle_command_without_libreoffice_says_so(
    decided_corpus: tuple[Settings, dict[str, Any]], tmp_path: Path
) -> None:
    """``mailbot bundle`` as an admin runs it, off a terminal: a plain line per entry, and --pdf explained."""
    settings, truth = decided_corpus
    config = tmp_path / "mailbot.toml"
    config.write_text(tomli_w.dumps(settings.model_dump(mode="json", exclude_none=True)), encoding="utf-8")
    target = tmp_path / "out.zip"
    environment = dict(os.environ, PATH=str(Path(sys.executable).parent))  # no soffice on it
    command = [sys.executable, "-m", "mailbot", "--config", str(config), "bundle", "--call", "caai-ant-2024"]
    done = subprocess.run(
        [*command, "--pdf", "-o", str(target)],
        capture_output=True,
        text=True,
        timeout=300,
        env=environment,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    entries = [line for line in done.stderr.splitlines() if line.startswith("[")]
    current = [n for n, info in truth.items() if info["call"] == "caai-ant-2024" and info["outcome"] in CURRENT]
    assert len(entries) >= len(current)
    assert "LibreOffice is not installed" in done.stderr
    assert f"{len(current)} application(s)" in done.stdout
    without = build(settings, "caai-ant-2024", tmp_path / "plain.zip")
    with zipfile.ZipFile(target) as archive:
        assert archive.namelist() == [item.path for item in without.files], "no renderings were added"
        about = load_workbook(io.BytesIO(archive.read("index.xlsx")))["About"]
        assert any("LibreOffice is not installed" in str(row[0]) for row in about.iter_rows(values_only=True))


WORD_FORMS = 3  # enough to show the renderings are the same bytes, few enough for LibreOffice to be quick


@pytest.fixture(scope="module")
def decided_word_forms(tmp_path_factory: pytest.TempPathFactory, corpus_dir: Path) -> Settings:
    """A few accepted submissions of the dev corpus that carry a Word form, taken in and decided."""
    root = tmp_path_factory.mktemp("bundle-pdf")
    settings = parse_settings(
        local_config(root / "data", ("127.0.0.1", 9), ("127.0.0.1", 9), "MAILBOT_UNUSED_PASSWORD"), "bundle --pdf test"
    )
    truth = corpus_truth(corpus_dir)
    chosen = []
    for name in sorted(truth, key=lambda n: truth[n]["arrival"]):
        eml = (corpus_dir / f"{name}.eml").read_bytes()
        words = [a for a, _ in extract_parts(eml) if a.filename.lower().endswith((".docx", ".doc"))]
        if truth[name]["outcome"] == "accepted" and truth[name]["call"] == "caai-ant-2024" and words:
            chosen.append((name, eml))
        if len(chosen) == WORD_FORMS:
            break
    with Worker(settings, inline=True) as bot:
        for name, eml in chosen:
            arrival = datetime.fromisoformat(truth[name]["arrival"])
            import_one(settings, bot.store, eml, call_id="caai-ant-2024", arrival=arrival)
        bot.deciding.decide()
    return settings


def test_a_bundle_with_pdf_renderings_is_the_same_bytes_twice(decided_word_forms: Settings, tmp_path: Path) -> None:
    """``--pdf`` renders Word forms with LibreOffice, which dates each PDF and gives it a random
    identifier: the bundle stays the same bytes for the same data, each PDF dated its form's arrival."""
    if office_binary() is None:
        _missing("LibreOffice (soffice) is not installed")
    first = build(decided_word_forms, "caai-ant-2024", tmp_path / "first.zip", pdf=True)
    build(decided_word_forms, "caai-ant-2024", tmp_path / "second.zip", pdf=True)
    digests = [hashlib.sha256((tmp_path / name).read_bytes()).hexdigest() for name in ("first.zip", "second.zip")]
    assert digests[0] == digests[1], "the same data gave other bytes"
    data = {item.path: item.data for item in first.files}
    rendered = [
        (entry, path)
        for entry in first.entries
        for path in entry.files
        if path.endswith(".pdf") and {path[:-4] + ".docx", path[:-4] + ".doc"} & set(entry.files)
    ]
    assert rendered, "no Word form was rendered: the test proves nothing"
    for entry, path in rendered:
        with pikepdf.open(io.BytesIO(data[path])) as pdf:
            assert str(pdf.docinfo["/CreationDate"]) == f"D:{entry.arrival.astimezone(UTC):%Y%m%d%H%M%S}Z", path


def test_a_bundles_word_forms_are_rendered_in_one_run_each_pdf_beside_its_own_form(
    decided_word_forms: Settings, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """LibreOffice starts once for a batch of forms, not once per form (seconds each, for hundreds
    of forms); each PDF still shows its own form and is listed right after it."""
    if office_binary() is None:
        _missing("LibreOffice (soffice) is not installed")
    runs = counting_runs(monkeypatch)
    bundle = build(decided_word_forms, "caai-ant-2024", tmp_path / "bundle.zip", pdf=True)
    data = {item.path: item.data for item in bundle.files}
    rendered = 0
    for entry in bundle.entries:
        form = entry.files[0]
        if not form.endswith((".docx", ".doc")):
            continue
        pdf_path = entry.files[1]
        assert pdf_path == form.rpartition(".")[0] + ".pdf", entry.files
        with pdfplumber.open(io.BytesIO(data[pdf_path])) as pdf:
            text = "".join(page.extract_text() or "" for page in pdf.pages)
        name = str(entry.fields.get("applicant_name") or "")
        assert name and name in text.replace(" ", ""), (pdf_path, name)
        rendered += 1
    assert rendered == WORD_FORMS
    assert runs == [WORD_FORMS]

"""Field extraction measured on a corpus: per-field accuracy, outcomes, time per message, peak memory.

    python -m benchmarks.extraction [--corpus DIR] [--json FILE] [--sandbox] [--timeout S] [--memory MB]
                                    [--shape-forms N | --no-shapes]

DIR holds NAME.eml messages, each with an optional NAME.json truth (``call``, ``fields``, ``reason``)
as in the development corpus; any other file (.docx, .pdf, .zip …) is read as the attachment of a
message made around it. Messages without truth are read with the first call's form and only
counted by outcome. ``--sandbox`` reads through the worker pool with its time and memory limits.

Then the per-shape table: every readable form of the corpus (at most ``--shape-forms``) is sent
again in each shape of benchmarks.shapes (inside .7z/.rar, winmail.dat, forwarded, with Word
placeholders or tracked changes, under odd names and types, beside a scanned copy) by its own
sender, and each shape's outcomes, field accuracy and time per document are reported; "plain" is
the same forms attached as they are, the baseline the other rows compare with.
"""

from __future__ import annotations

import argparse
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from benchmarks.shapes import SHAPES, Sent
from mailbot.config import Settings, load_settings
from parsers import extract_parts, read_message
from parsers.mime import read_envelope
from parsers.model import Submission
from parsers.sandbox import ParserPool
from parsers.spec import FormSpec

REPO = Path(__file__).resolve().parents[1]
DEFAULT_CORPUS = REPO.parent / "shared" / "corpus" / "dev"


@dataclass
class Tally:
    outcomes: Counter[str] = field(default_factory=Counter)
    right: Counter[str] = field(default_factory=Counter)
    compared: Counter[str] = field(default_factory=Counter)
    reasons_right: int = 0
    reasons_compared: int = 0
    status_wrong: list[str] = field(default_factory=list)
    field_errors: list[dict[str, Any]] = field(default_factory=list)
    seconds: list[tuple[float, str]] = field(default_factory=list)

    def record(self, name: str, truth: dict[str, Any] | None, submission: Submission, seconds: float) -> None:
        self.seconds.append((seconds, name))
        outcome = submission.status if submission.unreadable is None else f"unreadable:{submission.unreadable.reason}"
        self.outcomes[outcome] += 1
        if truth is None:
            return
        expected_fields = truth.get("fields")
        if expected_fields:
            values = submission.form.values() if submission.form is not None else {}
            if submission.form is None:
                self.status_wrong.append(f"{name}: expected a form, got {outcome}")
            for key, expected in expected_fields.items():
                self.compared[key] += 1
                if values.get(key) == expected:
                    self.right[key] += 1
                else:
                    self.field_errors.append(
                        {"message": name, "field": key, "expected": expected, "got": values.get(key)}
                    )
        elif truth.get("reason"):
            self.reasons_compared += 1
            got = submission.unreadable.reason if submission.unreadable else None
            if got == truth["reason"]:
                self.reasons_right += 1
            else:
                self.status_wrong.append(f"{name}: expected unreadable {truth['reason']}, got {outcome}")
        elif submission.status != "no_form":
            self.status_wrong.append(f"{name}: expected no form, got {outcome}")

    def summary(self, peak_mib: float | None) -> dict[str, Any]:
        times = sorted(seconds for seconds, _ in self.seconds)
        slowest = max(self.seconds, default=(0.0, ""))
        return {
            "messages": len(self.seconds),
            "outcomes": dict(sorted(self.outcomes.items())),
            "field_accuracy": {key: round(self.right[key] / count, 4) for key, count in sorted(self.compared.items())},
            "fields_right": sum(self.right.values()),
            "fields_compared": sum(self.compared.values()),
            "reasons_right": self.reasons_right,
            "reasons_compared": self.reasons_compared,
            "status_wrong": self.status_wrong,
            "field_errors": self.field_errors,
            "seconds_mean": round(sum(times) / len(times), 4) if times else 0.0,
            "seconds_median": round(times[len(times) // 2], 4) if times else 0.0,
            "seconds_max": round(slowest[0], 4),
            "slowest": slowest[1],
            "peak_rss_mib": round(peak_mib, 1) if peak_mib is not None else None,
        }


def message_around(path: Path) -> bytes:
    """A minimal message carrying ``path`` as its only attachment."""
    message = EmailMessage()
    message["From"] = "benchmark@example.org"
    message["To"] = "intake@example.org"
    message["Subject"] = path.name
    message["Message-ID"] = f"<{path.stem}@benchmark.invalid>"
    message.set_content("attached")
    message.add_attachment(path.read_bytes(), maintype="application", subtype="octet-stream", filename=path.name)
    return message.as_bytes()


def corpus_items(folder: Path) -> list[tuple[str, bytes, dict[str, Any] | None]]:
    items = []
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix == ".json" or path.name.startswith("."):
            continue
        truth_path = path.with_suffix(".json")
        truth = json.loads(truth_path.read_text(encoding="utf-8")) if truth_path.is_file() else None
        raw = path.read_bytes() if path.suffix in (".eml", ".msg") else message_around(path)
        items.append((path.name, raw, truth))
    return items


def spec_for(settings: Settings, truth: dict[str, Any] | None) -> FormSpec:
    call = settings.call_by_id(truth["call"]) if truth and truth.get("call") else settings.call[0]
    return call.form_spec


def run(folder: Path, sandbox: bool, timeout_s: float, memory_mb: int) -> dict[str, Any]:
    settings = load_settings(REPO / "config.example.toml")
    items = corpus_items(folder)
    tally = Tally()
    pool = ParserPool(1, timeout_s, memory_mb) if sandbox else None
    try:
        for number, (name, raw, truth) in enumerate(items, start=1):
            print(f"\r[{number}/{len(items)}] {name[:60]:<60}", end="", file=sys.stderr, flush=True)
            spec = spec_for(settings, truth)
            started = time.perf_counter()
            submission = pool.submit(raw, spec).result() if pool is not None else read_message(raw, spec)
            tally.record(name, truth, submission, time.perf_counter() - started)
    finally:
        if pool is not None:
            pool.close()
    print(file=sys.stderr)
    # In the sandbox the reading happens in forkserver children this process never waits for; their
    # memory is bounded by the allowance instead, so only an in-process run measures the peak.
    peak = None if sandbox else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return tally.summary(peak)


@dataclass
class ShapeTally:
    documents: int = 0
    forms_read: int = 0
    fields_right: int = 0
    fields_compared: int = 0
    seconds: list[float] = field(default_factory=list)
    misses: list[str] = field(default_factory=list)

    def record(self, name: str, expected: dict[str, Any], submission: Submission, seconds: float) -> None:
        self.documents += 1
        self.seconds.append(seconds)
        values = submission.form.values() if submission.form is not None else {}
        if submission.form is not None:
            self.forms_read += 1
        else:
            reason = submission.unreadable.reason if submission.unreadable else submission.status
            self.misses.append(f"{name}: no form ({reason})")
        for key, value in expected.items():
            self.fields_compared += 1
            if values.get(key) == value:
                self.fields_right += 1
            elif submission.form is not None:
                self.misses.append(f"{name}: {key} expected {value!r}, got {values.get(key)!r}")

    def summary(self) -> dict[str, Any]:
        return {
            "documents": self.documents,
            "outcome_accuracy": round(self.forms_read / self.documents, 4) if self.documents else 0.0,
            "field_accuracy": round(self.fields_right / self.fields_compared, 4) if self.fields_compared else 0.0,
            "seconds_mean": round(sum(self.seconds) / len(self.seconds), 4) if self.seconds else 0.0,
            "seconds_max": round(max(self.seconds, default=0.0), 4),
            "misses": self.misses[:20],
        }


def shape_bases(folder: Path, limit: int | None) -> list[tuple[str, Sent, dict[str, Any], dict[str, Any]]]:
    """(name, the form and its sender, the truth's fields, the truth) of every readable corpus form."""
    bases = []
    for path in sorted(folder.glob("*.eml")):
        truth_path = path.with_suffix(".json")
        truth = json.loads(truth_path.read_text(encoding="utf-8")) if truth_path.is_file() else None
        form_name = ((truth or {}).get("form") or {}).get("attachment")
        if not truth or not truth.get("fields") or not form_name:
            continue
        raw = path.read_bytes()
        parts = {attachment.filename: data for attachment, data in extract_parts(raw)}
        if form_name not in parts:
            continue
        envelope = read_envelope(raw)
        sent = Sent(parts[form_name], form_name, envelope.from_name, envelope.from_addr, "intake@example.org")
        bases.append((path.stem, sent, truth["fields"], truth))
    return bases[:limit] if limit is not None else bases


def run_shapes(folder: Path, sandbox: bool, timeout_s: float, memory_mb: int, limit: int | None) -> dict[str, Any]:
    settings = load_settings(REPO / "config.example.toml")
    bases = shape_bases(folder, limit)
    tallies = {shape.name: ShapeTally() for shape in SHAPES}
    pool = ParserPool(1, timeout_s, memory_mb) if sandbox else None
    try:
        for number, (name, sent, expected, truth) in enumerate(bases, start=1):
            print(f"\r[shapes {number}/{len(bases)}] {name[:50]:<50}", end="", file=sys.stderr, flush=True)
            spec = spec_for(settings, truth)
            for shape in SHAPES:
                if shape.docx_only and not sent.form_name.lower().endswith(".docx"):
                    continue
                raw = shape.build(sent)
                started = time.perf_counter()
                submission = pool.submit(raw, spec).result() if pool is not None else read_message(raw, spec)
                tallies[shape.name].record(name, expected, submission, time.perf_counter() - started)
    finally:
        if pool is not None:
            pool.close()
    print(file=sys.stderr)
    return {"forms": len(bases), "shapes": {name: tally.summary() for name, tally in tallies.items()}}


def print_shapes(result: dict[str, Any]) -> None:
    print(f"\nper shape ({result['forms']} corpus forms, each sent again in every shape; Word edits: .docx only)")
    print(f"  {'shape':<26} {'docs':>5} {'outcomes':>9} {'fields':>8} {'s/doc':>7} {'max s':>7}")
    for name, row in result["shapes"].items():
        print(
            f"  {name:<26} {row['documents']:>5} {row['outcome_accuracy']:>9.2%} {row['field_accuracy']:>8.2%} "
            f"{row['seconds_mean']:>7.3f} {row['seconds_max']:>7.3f}"
        )
    for name, row in result["shapes"].items():
        for miss in row["misses"]:
            print(f"  miss in {name}: {miss}")


def print_summary(folder: Path, result: dict[str, Any]) -> None:
    print(f"corpus {folder}: {result['messages']} messages")
    print("outcomes: " + ", ".join(f"{key} {count}" for key, count in result["outcomes"].items()))
    if result["field_accuracy"]:
        print(f"fields right: {result['fields_right']}/{result['fields_compared']}")
        for key, accuracy in result["field_accuracy"].items():
            print(f"  {key:<15} {accuracy:7.2%}")
    if result["reasons_compared"]:
        print(f"unreadable reasons right: {result['reasons_right']}/{result['reasons_compared']}")
    for line in result["status_wrong"]:
        print(f"  wrong outcome: {line}")
    for error in result["field_errors"]:
        print(
            f"  wrong field: {error['message']} {error['field']}: expected {error['expected']!r}, got {error['got']!r}"
        )
    print(
        f"time per message: mean {result['seconds_mean']:.3f} s, median {result['seconds_median']:.3f} s, "
        f"max {result['seconds_max']:.3f} s ({result['slowest']})"
    )
    if result["peak_rss_mib"] is None:
        print("peak memory: not measured in the sandbox (each worker is held to its allowance)")
    else:
        print(f"peak memory: {result['peak_rss_mib']:.0f} MiB (whole process)")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m benchmarks.extraction", description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--corpus", type=Path, default=DEFAULT_CORPUS, help="folder of .eml (+ .json truth) or documents"
    )
    parser.add_argument("--json", type=Path, help="also write the results to this file")
    parser.add_argument("--sandbox", action="store_true", help="read in a worker process with time and memory limits")
    parser.add_argument("--timeout", type=float, default=30.0, help="seconds per message in the sandbox")
    parser.add_argument("--memory", type=int, default=1024, help="MiB per message in the sandbox")
    parser.add_argument("--shape-forms", type=int, help="at most this many corpus forms in the per-shape table")
    parser.add_argument("--no-shapes", action="store_true", help="leave out the per-shape table")
    args = parser.parse_args(argv)
    if not args.corpus.is_dir():
        print(f"no corpus at {args.corpus}", file=sys.stderr)
        return 2
    result = run(args.corpus, args.sandbox, args.timeout, args.memory)
    print_summary(args.corpus, result)
    if not args.no_shapes:
        result["per_shape"] = run_shapes(args.corpus, args.sandbox, args.timeout, args.memory, args.shape_forms)
        print_shapes(result["per_shape"])
    if args.json:
        args.json.write_text(json.dumps(result, ensure_ascii=False, indent=2), encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())

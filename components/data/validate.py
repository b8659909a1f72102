"""Validate stage: read raw QA rows, run a Great Expectations suite, quarantine bad rows.

Hard failures (unreadable file, missing fields everywhere, too many bad rows) raise DataError with
the file, row and rule. Row-level failures are quarantined with their reasons. The report always
satisfies rows_in == rows_kept + rows_quarantined.
"""

from __future__ import annotations

import json
import re
import unicodedata
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from components.data.readers import read_file
from components.data.records import DataError
from components.core.atomic import atomic_dir, atomic_write_json, atomic_write_text
from components.config.params import DataConfig, ValidateConfig

__all__ = ["DataError", "run_validate", "validate_file", "normalise_question"]

CONTROL_CHARS = r"[\x00-\x08\x0b\x0c\x0e-\x1f\x7f]"
REPLACEMENT_CHAR = "\ufffd"
# chat control tokens written as text (ChatML <|im_end|>, Llama 3 <|eot_id|>, GLM <|user|>, ...): the tokenizer would
# turn them into the real tokens, and a row could fake a turn boundary
CONTROL_TOKENS = r"<\|[^|<>\s]{1,40}\|>"
KEPT_FIELDS = ("id", "question", "answer", "answers", "messages")


@dataclass
class Quarantine:
    entries: list[dict] = field(default_factory=list)
    left_out: list[dict] = field(default_factory=list)  # rows a file holds that the pipeline cannot train: one note each

    def add(self, file: str, row: int, rule: str, reason: str, raw: str | dict | None = None) -> None:
        self.entries.append({"file": file, "row": row, "rule": rule, "reason": reason, "raw": raw})

    def leave_out(self, file: str, rows: list[int], rule: str, reason: str) -> None:
        """Rows left out with one message for the file (conversations with tool calls), not quarantined one by one."""
        self.left_out.append({"file": file, "rule": rule, "rows": len(rows), "row_numbers": rows, "reason": reason})


def normalise_question(text: str) -> str:
    """Key for duplicate and leakage checks: NFKC, case-folded, punctuation and spaces collapsed."""
    text = unicodedata.normalize("NFKC", text).casefold()
    return re.sub(r"\s+", " ", re.sub(r"[^\w\s]", " ", text)).strip()


def question_id(question: str) -> str:
    """A stable id for a row without one: a hash of its normalised question (unique: duplicates are quarantined),
    so evaluations pair the same question across runs however rows are added, removed or reordered."""
    import hashlib

    return "q-" + hashlib.sha256(normalise_question(question).encode()).hexdigest()[:12]


def build_suite(cfg: ValidateConfig, leakage_keys: set[str]):
    """The expectations, each tagged with the rule name used in quarantine reasons."""
    import great_expectations as gx

    E = gx.expectations
    rules = [
        ("non_empty", "question is empty or whitespace", E.ExpectColumnValuesToNotBeNull(column="question")),
        ("non_empty", "answer is empty or whitespace", E.ExpectColumnValuesToNotBeNull(column="answer")),
        ("non_empty", "question has no letters or digits", E.ExpectColumnValuesToNotBeNull(column="question_key")),
        ("length_bounds", "question length out of bounds",
         E.ExpectColumnValueLengthsToBeBetween(column="question", min_value=cfg.min_question_chars, max_value=cfg.max_question_chars)),
        ("length_bounds", "answer length out of bounds",
         E.ExpectColumnValueLengthsToBeBetween(column="answer", min_value=cfg.min_answer_chars, max_value=cfg.max_answer_chars)),
        ("control_characters", "question contains control characters",
         E.ExpectColumnValuesToNotMatchRegex(column="question", regex=CONTROL_CHARS)),
        ("control_characters", "answer contains control characters",
         E.ExpectColumnValuesToNotMatchRegex(column="answer", regex=CONTROL_CHARS)),
        ("control_tokens", "question contains a chat control token (such as <|im_end|>)",
         E.ExpectColumnValuesToNotMatchRegex(column="question", regex=CONTROL_TOKENS)),
        ("control_tokens", "answer contains a chat control token (such as <|im_end|>)",
         E.ExpectColumnValuesToNotMatchRegex(column="answer", regex=CONTROL_TOKENS)),
        ("control_tokens", "a conversation turn contains a chat control token (such as <|im_end|>)",
         E.ExpectColumnValuesToNotMatchRegex(column="turns", regex=CONTROL_TOKENS)),
        ("encoding", "question contains U+FFFD (mis-decoded text)",
         E.ExpectColumnValuesToNotMatchRegex(column="question", regex=REPLACEMENT_CHAR)),
        ("encoding", "answer contains U+FFFD (mis-decoded text)",
         E.ExpectColumnValuesToNotMatchRegex(column="answer", regex=REPLACEMENT_CHAR)),
        ("duplicates", "duplicate question", E.ExpectColumnValuesToBeUnique(column="question_key")),
    ]
    if leakage_keys:
        rules.append(("leakage", "question also in the test file",
                      E.ExpectColumnValuesToNotBeInSet(column="question_key", value_set=sorted(leakage_keys))))
    return rules


def run_suite(df: pd.DataFrame, rules, docs_dir: str | Path | None = None) -> list[tuple[str, str, list[int]]]:
    """Run the expectations with GX; return (rule, reason, failing dataframe indices), in the order of `rules`.

    With docs_dir, the run goes through a Checkpoint that renders Great Expectations Data Docs (HTML),
    copied to docs_dir.
    """
    import shutil
    import tempfile

    import great_expectations as gx

    tmp = tempfile.mkdtemp(prefix="peftpipe-gx-") if docs_dir else None
    try:
        context = gx.get_context(mode="file", project_root_dir=tmp) if tmp else gx.get_context(mode="ephemeral")
        try:
            context.variables.progress_bars = gx.data_context.types.base.ProgressBarsConfig(globally=False)
        except Exception:  # older/newer GX: progress bars stay on
            pass
        batch_def = context.data_sources.add_pandas("qa").add_dataframe_asset("rows").add_batch_definition_whole_dataframe("all")
        suite = context.suites.add(gx.ExpectationSuite(name="qa_rows"))
        for _, _, expectation in rules:
            suite.add_expectation(expectation)
        vd = context.validation_definitions.add(gx.ValidationDefinition(data=batch_def, suite=suite, name="qa_rows"))
        if tmp:
            from great_expectations.checkpoint import UpdateDataDocsAction

            checkpoint = context.checkpoints.add(gx.Checkpoint(name="inspect", validation_definitions=[vd],
                                                               actions=[UpdateDataDocsAction(name="docs")],
                                                               result_format="COMPLETE"))
            result = next(iter(checkpoint.run(batch_parameters={"dataframe": df}).run_results.values()))
            site = Path(tmp) / "gx" / "uncommitted" / "data_docs" / "local_site"
            shutil.rmtree(docs_dir, ignore_errors=True)
            shutil.copytree(site, docs_dir)
        else:
            result = vd.run(batch_parameters={"dataframe": df}, result_format="COMPLETE")
    finally:
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    by_id = {expectation.id: n for n, (_, _, expectation) in enumerate(rules)}
    failures = []
    for res in result.results:  # GX does not keep the suite's order: match by expectation id
        if not res.success:
            idx = res.result.get("unexpected_index_list") or []
            failures.append((by_id[res.expectation_config.id], [int(i) for i in idx]))
    return [(rules[n][0], rules[n][1], idx) for n, idx in sorted(failures)]  # a row's first failing rule wins


def validate_file(path: Path, cfg: DataConfig, vcfg: ValidateConfig, leakage_keys: set[str] | None = None,
                  docs_dir: str | Path | None = None):
    """Validate one file: returns (kept rows, quarantine entries, rows in, format, left-out notes); rows in = kept +
    quarantined + the rows the notes count."""
    quarantine = Quarantine()
    fmt, records, n_in = read_file(path, cfg, quarantine)
    df = pd.DataFrame([{"_row": i, **r, "question": r["question"].strip(), "answer": r["answer"].strip()}
                       for i, r in records], columns=["_row", "question", "answer", "id", "answers", "messages", "_raw"])
    if len(df):
        df = df.reset_index(drop=True)
        df["question_key"] = df["question"].map(normalise_question)
        df["turns"] = df["messages"].map(lambda m: "\n".join(t.get("content", "") for t in m) if isinstance(m, list) else "")
        checked = df[["question", "answer", "question_key"]].replace("", None)  # empty after strip -> null
        checked["turns"] = df["turns"]
        failures = run_suite(checked, build_suite(vcfg, leakage_keys or set()), docs_dir)
        bad: dict[int, tuple[str, str]] = {}
        for rule, reason, idx in failures:
            if rule == "duplicates":
                continue  # handled below: keep the first occurrence
            for i in idx:
                bad.setdefault(i, (rule, reason))
        dup_rows = {i for rule, _, idx in failures if rule == "duplicates" for i in idx}
        first_seen: dict[str, int] = {}
        for i in sorted(dup_rows):
            if i in bad:
                continue
            key = df.at[i, "question_key"]
            if key not in first_seen:
                first_seen[key] = i
                continue
            j = first_seen[key]
            same = df.at[i, "answer"].strip().casefold() == df.at[j, "answer"].strip().casefold()
            what = "duplicate of" if same else "conflicting answer with"
            bad[i] = ("duplicates", f"{what} row {df.at[j, '_row']}")
        for i, (rule, reason) in sorted(bad.items()):
            raw = df.at[i, "_raw"]
            quarantine.add(str(path), int(df.at[i, "_row"]), rule, reason,
                           raw if isinstance(raw, dict) else {"question": df.at[i, "question"], "answer": df.at[i, "answer"]})
        df = df.drop(index=list(bad))
    kept = [{k: r[k] for k in KEPT_FIELDS if isinstance(r.get(k), (str, list))} for r in df.to_dict("records")]
    for r in kept:
        r.setdefault("id", question_id(r["question"]))
    return kept, quarantine.entries, n_in, fmt, quarantine.left_out


def _check_hard(path: Path, kept: list, quarantined: list, n_in: int, vcfg: ValidateConfig,
                left_out: list[dict] = ()) -> None:
    if n_in == 0:
        raise DataError(f"{path}: file has no rows (rule: non_empty_file)")
    considered = n_in - sum(n["rows"] for n in left_out)  # the quarantine share is of the rows the pipeline can use
    if considered == 0:
        raise DataError(left_out[0]["reason"])
    frac = len(quarantined) / considered
    if frac > vcfg.max_quarantine_fraction:
        first = quarantined[0]
        raise DataError(
            f"{path}: {len(quarantined)}/{considered} rows quarantined ({frac:.0%} > validate.max_quarantine_fraction="
            f"{vcfg.max_quarantine_fraction:.0%}); first: row {first['row']}: rule {first['rule']}: {first['reason']}"
        )
    if len(kept) < vcfg.min_rows:
        raise DataError(f"{path}: only {len(kept)} rows kept (rule: min_rows={vcfg.min_rows})")


def _json_line(row: dict) -> str:
    line = json.dumps(row, ensure_ascii=False, sort_keys=True, default=str)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:  # a quarantined row's lone surrogates: keep them as \u escapes
        line = json.dumps(row, sort_keys=True, default=str)
    return line + "\n"


def _jsonl(rows: list[dict]) -> str:
    return "".join(map(_json_line, rows))


def run_validate(cfg: DataConfig, vcfg: ValidateConfig, out_dir: str | Path) -> dict:
    """Validate the train (and optional test) file; write kept rows, quarantine and report."""
    out_dir = Path(out_dir)
    files = {"train": Path(cfg.path)}
    if cfg.test_path:
        files["test"] = Path(cfg.test_path)
    results = {}
    test_keys: set[str] = set()
    if "test" in files:
        kept, quarantined, n_in, _, left_out = validate_file(files["test"], cfg, vcfg)
        _check_hard(files["test"], kept, quarantined, n_in, vcfg, left_out)
        results["test"] = (kept, quarantined, n_in, left_out)
        test_keys = {normalise_question(r["question"]) for r in kept}
    kept, quarantined, n_in, fmt, left_out = validate_file(files["train"], cfg, vcfg, test_keys)
    _check_hard(files["train"], kept, quarantined, n_in, vcfg, left_out)
    results["train"] = (kept, quarantined, n_in, left_out)

    report: dict = {"format": fmt, "files": {}, "rows_in": 0, "rows_kept": 0, "rows_quarantined": 0,
                    "rows_left_out": 0, "by_rule": {}, "left_out": []}
    all_quarantined = []
    with atomic_dir(out_dir) as tmp:  # the whole folder is replaced: no file of an earlier run survives
        for split, (kept, quarantined, n_in, left_out) in results.items():
            n_out = sum(n["rows"] for n in left_out)
            assert n_in == len(kept) + len(quarantined) + n_out, "row accounting broken"
            atomic_write_text(tmp / f"{split}.jsonl", _jsonl(kept))
            report["files"][split] = {"path": str(files[split]), "rows_in": n_in, "rows_kept": len(kept),
                                      "rows_quarantined": len(quarantined), "rows_left_out": n_out}
            report["rows_in"] += n_in
            report["rows_kept"] += len(kept)
            report["rows_quarantined"] += len(quarantined)
            report["rows_left_out"] += n_out
            report["left_out"] += left_out
            for note in left_out:
                print(f"validate: {note['reason']}")
            for q in quarantined:
                report["by_rule"][q["rule"]] = report["by_rule"].get(q["rule"], 0) + 1
            all_quarantined += quarantined
        atomic_write_text(tmp / "quarantine.jsonl", _jsonl(all_quarantined))
        atomic_write_json(tmp / "report.json", report)
    return report

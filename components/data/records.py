"""Records from a data file, before any format is known: bytes (BOM, encoding), JSON/JSONL, CSV, Parquet.

Whole-file problems raise DataError naming file and rule; a broken JSON line is quarantined, not fatal.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Iterator

from components.core.errors import UserError

JSON_SUFFIXES = (".jsonl", ".json", ".ndjson", ".jsonlines")
SURROGATE_REASON = "contains a lone surrogate (a broken \\uXXXX escape)"


class DataError(UserError, ValueError):
    """A hard data failure: the pipeline stops. The message names file, row and rule."""


def file_bytes(path: Path) -> bytes:
    """The file's bytes without a UTF-8 BOM; missing, empty and UTF-16/32 files are DataErrors."""
    if not path.exists():
        raise DataError(f"{path}: file not found (rule: file_exists)")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, expected a data file (rule: regular_file)")
    data = path.read_bytes()
    if data.startswith(b"\xef\xbb\xbf"):
        data = data[3:]
    if not data.strip():
        raise DataError(f"{path}: file is empty (rule: non_empty_file)")
    if data[:2] in (b"\xff\xfe", b"\xfe\xff") or b"\x00" in data[:4]:
        raise DataError(f"{path}: row 1: rule encoding: the file looks like UTF-16 or UTF-32 (byte order mark or NUL "
                        "bytes); save it as UTF-8")
    return data


def one_line(e: Exception) -> str:
    return " ".join(str(e).split())


def json_error(path: Path, e: Exception, data: bytes) -> DataError:
    """A whole JSON document that does not parse, as a DataError with where and rule."""
    if isinstance(e, UnicodeDecodeError):
        line = data[:e.start].count(b"\n") + 1
        return DataError(f"{path}: line {line}: rule encoding: not valid UTF-8 at byte {e.start}; save the file as UTF-8")
    if isinstance(e, json.JSONDecodeError):
        return DataError(f"{path}: line {e.lineno} column {e.colno}: rule json: not valid JSON: {e.msg}")
    return DataError(f"{path}: rule json: not valid JSON: {json_reason(e)}")


def json_reason(e: Exception) -> str:
    return "nested too deeply" if isinstance(e, RecursionError) else one_line(e)


def has_surrogate(value) -> bool:
    """A lone surrogate (from a broken \\uXXXX escape) cannot be written as UTF-8, nor held by Arrow strings."""
    try:
        json.dumps(value, ensure_ascii=False, default=str).encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def csv_line(line: int) -> str:
    return f"row {line - 1} (line {line})" if line > 1 else "line 1 (header)"


def no_nan(df) -> list[dict]:
    """DataFrame rows as dicts, with missing values (NaN) as None."""
    return df.astype(object).where(df.notna(), None).to_dict("records")


def raw_records(path: Path, quarantine) -> Iterator[tuple[int, dict]]:
    """(row number, object) from JSONL, a JSON array, CSV or Parquet; broken JSON lines are quarantined."""
    suffix = path.suffix.lower()
    if suffix in (".csv", ".tsv"):
        import io

        import pandas as pd

        data = file_bytes(path)
        try:
            text = data.decode("utf-8")
        except UnicodeDecodeError as e:
            where = csv_line(data[:e.start].count(b"\n") + 1)
            raise DataError(f"{path}: {where}: rule encoding: not valid UTF-8 at byte {e.start}; "
                            "save the file as UTF-8") from None
        try:
            df = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False, sep="\t" if suffix == ".tsv" else ",")
        except pd.errors.ParserError as e:
            m = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(e))
            if m:
                raise DataError(f"{path}: {csv_line(int(m[2]))}: rule csv: expected {m[1]} fields, saw {m[3]}") from None
            raise DataError(f"{path}: rule csv: not a readable CSV file: {one_line(e)}") from None
        yield from ((i, r) for i, r in enumerate(no_nan(df), start=1))
        return
    if suffix == ".parquet":
        import pandas as pd

        file_bytes(path)
        try:
            df = pd.read_parquet(path)
        except Exception as e:  # pyarrow raises several types for a damaged file
            raise DataError(f"{path}: rule parquet: not a readable Parquet file: {one_line(e)}") from None
        yield from ((i, r) for i, r in enumerate(no_nan(df), start=1))
        return
    data = file_bytes(path)
    if data.lstrip()[:1] == b"[":  # a JSON array of rows
        try:
            rows = json.loads(data.decode("utf-8"))
        except (ValueError, RecursionError) as e:  # also UnicodeDecodeError
            raise json_error(path, e, data) from None
        for i, obj in enumerate(rows, start=1):
            if isinstance(obj, dict):
                yield i, obj
            else:
                quarantine.add(str(path), i, "json", f"expected an object, got {type(obj).__name__}", obj)
        return
    for i, raw in enumerate(data.split(b"\n"), start=1):
        if not raw.strip():
            continue  # blank lines are not rows
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            quarantine.add(str(path), i, "encoding", f"not valid UTF-8 at byte {e.start}", raw.decode("utf-8", "replace"))
            continue
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            quarantine.add(str(path), i, "json", f"not valid JSON: {e.msg.removesuffix(' at')} at column {e.colno}", line)
            continue
        except (ValueError, RecursionError) as e:  # nested too deeply, an integer too long to convert
            quarantine.add(str(path), i, "json", f"not valid JSON: {json_reason(e)}", line)
            continue
        if not isinstance(obj, dict):
            quarantine.add(str(path), i, "json", f"expected an object, got {type(obj).__name__}", line)
            continue
        yield i, obj

"""Shard files: Arrow IPC *stream* format (what `datasets.Dataset.from_file` memory-maps), one schema per split.

Names: `shard-00000.arrow`, or `shard-p0001of0004-00000.arrow` for part 1 (from 0) of a 4-part job
array, so that the shards of different parts never clash when merged into one run.

`labeler export` also writes Parquet (`.parquet`) and JSON Lines (`.jsonl`) shards; a shard's format is
its file's suffix, and every reader verifies and reads all three into the split's Arrow schema.
"""

from __future__ import annotations

import json
import re
import stat
from pathlib import Path
from typing import Literal

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import ValidationError

from labeler.core.errors import InputError
from labeler.core.records import Record
from labeler.store.fingerprint import sha256_bytes
from labeler.store.manifest import ShardInfo, manifest_path

ShardFormat = Literal["arrow", "parquet", "jsonl"]
SUFFIXES: dict[ShardFormat, str] = {"arrow": ".arrow", "parquet": ".parquet", "jsonl": ".jsonl"}

_SHARD_NAME = re.compile(r"^shard-(?:p(?P<index>\d+)of(?P<num>\d+)-)?(?P<seq>\d+)\.arrow$")


def shard_name(seq: int, part: tuple[int, int] | None, shard_format: ShardFormat = "arrow") -> str:
    """File name of the `seq`-th shard of a run (or of one part of a job array).

    >>> shard_name(3, None)
    'shard-00003.arrow'
    >>> shard_name(0, (1, 4), "parquet")
    'shard-p0001of0004-00000.parquet'
    """
    suffix = SUFFIXES[shard_format]
    if part is None:
        return f"shard-{seq:05d}{suffix}"
    index, num = part
    return f"shard-p{index:04d}of{num:04d}-{seq:05d}{suffix}"


def shard_seq(name: str) -> int | None:
    """The sequence number in an Arrow shard's file name, or None if `name` is not a shard name.

    >>> shard_seq("shard-p0001of0004-00012.arrow"), shard_seq("notes.arrow")
    (12, None)
    """
    match = _SHARD_NAME.match(name)
    return int(match["seq"]) if match else None


def shard_format(file: str | Path) -> ShardFormat:
    """A shard's format, from its file's suffix; `InputError` for any other file.

    >>> shard_format("preferences/shard-00000.parquet")
    'parquet'
    """
    suffix = Path(file).suffix
    for name, known in SUFFIXES.items():
        if suffix == known:
            return name
    raise InputError(f"not a shard file: expected one of {', '.join(SUFFIXES.values())}", file=file)


def encode_shard(table: pa.Table) -> bytes:
    """The bytes of an Arrow IPC stream holding `table` (with its schema, even when it has no rows)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def encode_table(table: pa.Table, shard_format: ShardFormat) -> bytes:
    """The bytes of a shard file of `table` in `shard_format` (Arrow IPC stream, Parquet or JSON Lines)."""
    if shard_format == "arrow":
        return encode_shard(table)
    if shard_format == "parquet":
        sink = pa.BufferOutputStream()
        pq.write_table(table, sink)
        return sink.getvalue().to_pybytes()
    # One JSON object per row; non-finite floats are written as Python's json writes them (-Infinity).
    lines = (json.dumps(row, ensure_ascii=False) for row in table.to_pylist())
    return "".join(line + "\n" for line in lines).encode("utf-8")


def decode_shard(data: bytes, *, file: Path, record_type: type[Record], upgrade: bool = False) -> pa.Table:
    """Read a whole shard (its format from the file's suffix) into the split's Arrow schema; `InputError`
    naming `file` if it does not parse or has other columns.

    With `upgrade`, a shard in an earlier layout of the split is read into the current columns
    (`Record.upgrade_table`); without it (a run being resumed) it is refused.
    """
    kind = shard_format(file)
    expected = record_type.arrow_schema()
    if kind == "jsonl":
        return _decode_jsonl(data, file=file, record_type=record_type)
    try:
        if kind == "arrow":
            table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
        else:
            table = pq.read_table(pa.BufferReader(data))
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        what = "Arrow IPC stream" if kind == "arrow" else "Parquet file"
        raise InputError(f"not a readable {what} ({exc}); the file is truncated or damaged", file=file) from exc
    if table.schema.equals(expected):
        # Parquet keeps the column descriptions only as Arrow metadata: give back the split's own schema.
        return table if kind == "arrow" else pa.Table.from_arrays(table.columns, schema=expected)
    upgraded = _upgraded(table, record_type)
    if upgraded is not None and not upgrade:
        raise InputError(
            f"written by an earlier labeler in the previous layout of the {record_type.split!r} split, so this "
            "run cannot be resumed; `labeler export RUN --out NEW` rewrites it in the current layout",
            file=file,
        )
    if upgraded is None:
        raise InputError(
            f"its columns do not match the {record_type.split!r} schema of this labeler version "
            f"(got: {', '.join(table.schema.names)})",
            file=file,
        )
    return upgraded


def _upgraded(table: pa.Table, record_type: type[Record]) -> pa.Table | None:
    try:
        upgraded = record_type.upgrade_table(table)
    except (KeyError, pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError):
        return None  # not the earlier layout either
    return upgraded if upgraded is not None and upgraded.schema.equals(record_type.arrow_schema()) else None


def _decode_jsonl(data: bytes, *, file: Path, record_type: type[Record]) -> pa.Table:
    records = []
    for number, line in enumerate(data.split(b"\n"), start=1):
        if not line.strip():
            continue
        try:
            records.append(record_type.from_row(json.loads(line)))
        except (UnicodeDecodeError, json.JSONDecodeError, ValidationError, TypeError) as exc:
            raise InputError(
                f"not a {record_type.split!r} row of this labeler version ({str(exc).splitlines()[0]})",
                file=file,
                line=number,
            ) from exc
    return record_type.to_table(records)


def read_verified_shard(
    run_dir: Path, shard: ShardInfo, record_type: type[Record], *, upgrade: bool = False
) -> pa.Table:
    """A committed shard's table after checking its sha256, schema and row count against the manifest.

    Every failure is an `InputError` naming the shard file: missing, truncated, altered. `upgrade` reads
    a shard written in an earlier layout of the split (see `decode_shard`).
    """
    path = confined_shard_path(run_dir, shard)
    try:
        if not stat.S_ISREG(path.stat().st_mode):  # a device (/dev/zero) or FIFO would be read forever
            raise InputError("shard listed in manifest.json is not a regular file", file=path)
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("shard listed in manifest.json is missing", file=path) from None
    except IsADirectoryError:
        raise InputError("is a folder, not a shard file (listed in manifest.json)", file=path) from None
    if sha256_bytes(data) != shard.sha256:
        raise InputError(
            "sha256 does not match manifest.json: the shard was truncated or altered after it was written",
            file=path,
        )
    table = decode_shard(data, file=path, record_type=record_type, upgrade=upgrade)
    if table.num_rows != shard.rows:
        raise InputError(f"has {table.num_rows} rows, manifest.json says {shard.rows}", file=path)
    return table


def confined_shard_path(run_dir: Path, shard: ShardInfo) -> Path:
    """Where a committed shard is: inside the run folder, its links followed. `InputError` naming
    manifest.json and the entry when it leads out of the run (a link out of the run, or a split folder
    that is one), or is not a regular file (a folder, a device, a FIFO)."""
    run = Path(run_dir)
    path = run / shard.file
    real = path.resolve()
    if not real.is_relative_to(run.resolve()):
        raise InputError(
            f"shard {shard.file!r} leads out of the run folder (a symbolic link to {real}); a run's shards "
            "must be inside it: the run was altered",
            file=manifest_path(run),
            where=f"shard {shard.file}",
        )
    if real.exists() and not real.is_file():
        what = "a folder" if real.is_dir() else "not a regular file"
        raise InputError(
            f"shard {shard.file!r} is {what}, not a shard file: the run was altered",
            file=manifest_path(run),
            where=f"shard {shard.file}",
        )
    return path


def ids_of(table: pa.Table) -> list[str]:
    """The `id` column of a shard table as Python strings."""
    return table.column("id").to_pylist()

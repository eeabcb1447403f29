"""Shard files: Arrow IPC *stream* format (what `datasets.Dataset.from_file` memory-maps), one schema per split.

Names: `shard-00000.arrow`, or `shard-p0001of0004-00000.arrow` for part 1 (from 0) of a 4-part job
array, so that the shards of different parts never clash when merged into one run.
"""

from __future__ import annotations

import re
from pathlib import Path

import pyarrow as pa

from labeler.errors import InputError
from labeler.records import Record
from labeler.store.fingerprint import sha256_bytes
from labeler.store.manifest import ShardInfo

_SHARD_NAME = re.compile(r"^shard-(?:p(?P<index>\d+)of(?P<num>\d+)-)?(?P<seq>\d+)\.arrow$")


def shard_name(seq: int, part: tuple[int, int] | None) -> str:
    """File name of the `seq`-th shard of a run (or of one part of a job array).

    >>> shard_name(3, None)
    'shard-00003.arrow'
    >>> shard_name(0, (1, 4))
    'shard-p0001of0004-00000.arrow'
    """
    if part is None:
        return f"shard-{seq:05d}.arrow"
    index, num = part
    return f"shard-p{index:04d}of{num:04d}-{seq:05d}.arrow"


def shard_seq(name: str) -> int | None:
    """The sequence number in a shard file name, or None if `name` is not a shard name.

    >>> shard_seq("shard-p0001of0004-00012.arrow"), shard_seq("notes.arrow")
    (12, None)
    """
    match = _SHARD_NAME.match(name)
    return int(match["seq"]) if match else None


def encode_shard(table: pa.Table) -> bytes:
    """The bytes of an Arrow IPC stream holding `table` (with its schema, even when it has no rows)."""
    sink = pa.BufferOutputStream()
    with pa.ipc.new_stream(sink, table.schema) as writer:
        writer.write_table(table)
    return sink.getvalue().to_pybytes()


def decode_shard(data: bytes, *, file: Path, record_type: type[Record]) -> pa.Table:
    """Read a whole shard; `InputError` naming `file` if it does not parse or has another schema."""
    try:
        table = pa.ipc.open_stream(pa.py_buffer(data)).read_all()
    except (pa.ArrowInvalid, pa.ArrowTypeError, OSError) as exc:
        raise InputError(
            f"not a readable Arrow IPC stream ({exc}); the file is truncated or damaged", file=file
        ) from exc
    expected = record_type.arrow_schema()
    if not table.schema.equals(expected):
        raise InputError(
            f"its columns do not match the {record_type.split!r} schema of this labeler version "
            f"(got: {', '.join(table.schema.names)})",
            file=file,
        )
    return table


def read_verified_shard(run_dir: Path, shard: ShardInfo, record_type: type[Record]) -> pa.Table:
    """A committed shard's table after checking its sha256, schema and row count against the manifest.

    Every failure is an `InputError` naming the shard file: missing, truncated, altered.
    """
    path = Path(run_dir) / shard.file
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise InputError("shard listed in manifest.json is missing", file=path) from None
    if sha256_bytes(data) != shard.sha256:
        raise InputError(
            "sha256 does not match manifest.json: the shard was truncated or altered after it was written",
            file=path,
        )
    table = decode_shard(data, file=path, record_type=record_type)
    if table.num_rows != shard.rows:
        raise InputError(f"has {table.num_rows} rows, manifest.json says {shard.rows}", file=path)
    return table


def ids_of(table: pa.Table) -> list[str]:
    """The `id` column of a shard table as Python strings."""
    return table.column("id").to_pylist()

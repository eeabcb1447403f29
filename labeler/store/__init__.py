"""The shard store: run directories of Arrow shards with a manifest, resumable and verified.

```
RUN/
  .lock                          # held by the one process writing the run (labeler.store.lock)
  manifest.json                  # per split: fingerprint, status, shards with rows and sha256
  README.md                      # dataset card (labeler.store.card)
  sft/shard-00000.arrow          # Arrow IPC stream format, one schema per split (labeler.core.records)
  preferences/shard-00000.arrow
```

Writing: `RunStore.open(run_dir, split, fingerprint)`, `store.done_ids()`, `store.write_shard(records)`,
`store.mark_complete(stats)`. Reading: `read_split`, `iter_records`. Job arrays: `in_part`, `merge_runs`.
"""

from labeler.store.fingerprint import (
    Fingerprint,
    fingerprint_diff,
    make_fingerprint,
    normalize_fingerprint,
    sha256_bytes,
    sha256_file,
    sha256_text,
)
from labeler.store.manifest import Manifest, ShardInfo, SplitEntry, load_manifest
from labeler.store.merge import in_part, merge_runs, part_of
from labeler.store.readers import iter_records, iter_shard_tables, read_split
from labeler.store.run_store import RunStore, check_run

__all__ = [
    "Fingerprint",
    "Manifest",
    "RunStore",
    "ShardInfo",
    "SplitEntry",
    "fingerprint_diff",
    "in_part",
    "iter_records",
    "iter_shard_tables",
    "load_manifest",
    "make_fingerprint",
    "merge_runs",
    "normalize_fingerprint",
    "part_of",
    "read_split",
    "sha256_bytes",
    "sha256_file",
    "sha256_text",
    "check_run",
]

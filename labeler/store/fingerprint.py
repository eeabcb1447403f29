"""Fingerprints: what a run's records depend on, so a resumed run never mixes in records made differently.

A fingerprint is a JSON-able dict: the stage config, the model ids, the sha256 of the constitution and
of every template, the labeler version and the seed. Two runs whose fingerprints are equal produce
interchangeable records; `fingerprint_diff` names what differs when they are not.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from labeler import __version__

Fingerprint = dict[str, Any]


def sha256_bytes(data: bytes) -> str:
    """Hex sha256 of bytes.

    >>> sha256_bytes(b"")[:16]
    'e3b0c44298fc1c14'
    """
    return hashlib.sha256(data).hexdigest()


def sha256_text(text: str) -> str:
    """Hex sha256 of text encoded as UTF-8 (for constitutions and templates).

    >>> sha256_text("abc")[:16]
    'ba7816bf8f01cfea'
    """
    return sha256_bytes(text.encode("utf-8"))


def sha256_file(path: Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def input_fingerprint(path: Path, *, split: str | None = None) -> dict[str, Any]:
    """What an input holds, for a fingerprint, whatever its path's spelling (relative, absolute, through a
    symbolic link): `{"name": ..., "sha256": ...}`, the name that of the file the path leads to.

    A file: the sha256 of its bytes. A run folder read for its `split`: the sha256 of that split's
    shard checksums, in order (what the run holds, not when it was written). Another folder (of
    templates): the sha256 of its `*.jinja` files, names and bytes. `sha256` is None for an input that
    is not there (yet: a pipeline's own run before its first stage).

    >>> import tempfile
    >>> folder = Path(tempfile.mkdtemp())
    >>> _ = (folder / "pairs.jsonl").write_text("{}\\n")
    >>> (folder / "link.jsonl").symlink_to(folder / "pairs.jsonl")
    >>> input_fingerprint(folder / "link.jsonl") == input_fingerprint(folder / ".." / folder.name / "pairs.jsonl")
    True
    """
    real = Path(path).resolve()
    digest: str | None = None
    if real.is_file():
        digest = sha256_file(real)
    elif real.is_dir() and split is not None:
        from labeler.store.manifest import read_manifest

        manifest = read_manifest(real)
        entry = manifest.splits.get(split) if manifest is not None else None
        if entry is not None:
            digest = sha256_text(json.dumps([shard.sha256 for shard in entry.shards]))
    elif real.is_dir():
        files = sorted(p for p in real.glob("*.jinja") if p.is_file())
        digest = sha256_text(json.dumps([[p.name, sha256_file(p)] for p in files]))
    return {"name": real.name, "sha256": digest}


def make_fingerprint(
    *,
    config: BaseModel | Mapping[str, Any],
    models: Mapping[str, str],
    constitution_sha256: str | None,
    template_sha256s: Mapping[str, str],
    seed: int | None,
    exclude: Collection[str] = (),
    labeler_version: str = __version__,
    constitution: Mapping[str, Any] | None = None,
) -> Fingerprint:
    """The fingerprint of a stage run, normalised to what `json` gives back.

    `exclude` names top-level config keys that do not change the records (the output folder, the
    part of a job array, verbosity); leave them out so that the parts of a job array, or a rerun
    into another folder, keep equal fingerprints. `constitution` is its name, version and license
    (`Constitution.summary()`): the dataset card states them.

    >>> fp = make_fingerprint(config={"n": 2, "out": "x"}, models={"judge": "m"}, constitution_sha256="c",
    ...                       template_sha256s={"judge.jinja": "t"}, seed=0, exclude={"out"}, labeler_version="1")
    >>> fp["config"], fp["seed"]
    ({'n': 2}, 0)
    """
    config_dict = config.model_dump(mode="json") if isinstance(config, BaseModel) else dict(config)
    fingerprint = {
        "config": {key: value for key, value in config_dict.items() if key not in exclude},
        "models": dict(models),
        "constitution_sha256": constitution_sha256,
        "template_sha256s": dict(template_sha256s),
        "labeler_version": labeler_version,
        "seed": seed,
    }
    if constitution is not None:
        fingerprint["constitution"] = dict(constitution)
    return normalize_fingerprint(fingerprint)


def normalize_fingerprint(fingerprint: Mapping[str, Any]) -> Fingerprint:
    """The fingerprint as it reads back from `manifest.json` (tuples become lists, keys strings).

    `TypeError` if something in it is not JSON-able, `ValueError` for NaN or infinity: a fingerprint
    must survive the manifest unchanged.

    >>> normalize_fingerprint({"stop": ("a",), "k": {1: 2}})
    {'k': {'1': 2}, 'stop': ['a']}
    """
    return json.loads(json.dumps(fingerprint, sort_keys=True, allow_nan=False))


def fingerprint_diff(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    """Dotted paths of the keys whose values differ (or that only one side has), sorted.

    >>> fingerprint_diff({"config": {"n": 2, "t": 0.7}, "seed": 0}, {"config": {"n": 4, "t": 0.7}, "seed": 0})
    ['config.n']
    >>> fingerprint_diff({"seed": 0}, {"seed": 0, "models": {"judge": "m"}})
    ['models']
    """
    return _diff(a, b, prefix="")


def _diff(a: Mapping[str, Any], b: Mapping[str, Any], *, prefix: str) -> list[str]:
    differing = []
    for key in sorted(set(a) | set(b), key=str):
        path = f"{prefix}{key}"
        if key not in a or key not in b:
            differing.append(path)
        elif isinstance(a[key], Mapping) and isinstance(b[key], Mapping):
            differing.extend(_diff(a[key], b[key], prefix=f"{path}."))
        elif a[key] != b[key]:
            differing.append(path)
    return differing

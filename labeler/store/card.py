"""The dataset card `RUN/README.md`: what the run is, how it was made, what is in it, how to use it.

Every number in the card is computed from the verified shards (not copied from what a stage said),
so the card cannot disagree with the data it describes. Its front matter is Hugging Face Hub metadata
(license, language, size and task categories, one config per split), and its usage snippets load the
data from the folder it sits in, or from the Hub id when the card is published (`labeler push`): the
card never names a path on the machine that made it (paths in fingerprints and commands become file names).
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from labeler.core.records import FLAG_CHOICE_OUTSIDE_TOPK, FLAG_LOW_MASS, FLAG_ORDER_FLIP, SPLITS, column_descriptions
from labeler.store.atomic import atomic_write_text
from labeler.store.manifest import ExportInfo, Manifest, SplitEntry, load_manifest
from labeler.store.published import published_manifest, text_without_local_paths
from labeler.store.readers import iter_shard_tables
from labeler.store.shards import SUFFIXES, ShardFormat, shard_format

CARD_NAME = "README.md"
P_A_BINS = 10
TASK_CATEGORIES = ("text-generation",)
# The `datasets` builder that loads each shard format.
LOADERS: dict[ShardFormat, str] = {"arrow": "arrow", "parquet": "parquet", "jsonl": "json"}


@dataclass(frozen=True)
class HubMetadata:
    """What the card says about where it is published and under which terms.

    `license` replaces the licenses of the constitutions the splits were made with; `repo_id` is the
    Hub dataset the card is published as (None: a folder on disk).
    """

    repo_id: str | None = None
    license: str | None = None
    language: tuple[str, ...] = ("en",)
    pretty_name: str | None = None


def size_category(rows: int) -> str:
    """The Hugging Face Hub's size category of a dataset of `rows` examples.

    >>> size_category(999), size_category(1000), size_category(25_000), size_category(3_000_000_000_000)
    ('n<1K', '1K<n<10K', '10K<n<100K', 'n>1T')
    """
    bounds = ("1K", "10K", "100K", "1M", "10M", "100M", "1B", "10B", "100B", "1T")
    if rows < 1000:
        return "n<1K"
    for exponent, (low, high) in enumerate(zip(bounds, bounds[1:]), start=3):
        if rows < 10 ** (exponent + 1):
            return f"{low}<n<{high}"
    return "n>1T"


def card_licenses(manifest: Manifest, splits: Iterable[str], hub: HubMetadata) -> tuple[str, ...]:
    """The license the card states: the one given, else those of the splits' constitutions (each once)."""
    if hub.license is not None:
        return (hub.license,)
    found: list[str] = []
    for name in splits:
        info = manifest.splits[name].fingerprint.get("constitution") or {}
        license_ = info.get("license") if isinstance(info, dict) else None
        if isinstance(license_, str) and license_ not in found:
            found.append(license_)
    return tuple(found)


@dataclass(frozen=True)
class PreferenceStatistics:
    """Label statistics of a preference split. Rates are fractions of rows; None when there are no rows."""

    rows: int
    p_a_histogram: tuple[int, ...]  # rows with p_a in [k/10, (k+1)/10), the last bin including 1.0
    consistency_rate: float | None  # both orders agree
    low_mass_rate: float | None  # flagged low_mass
    order_flip_rate: float | None  # flagged order_flip
    outside_topk_rate: float | None  # flagged choice_outside_topk (a server's top-k list missed a choice)
    mean_mass: float | None  # mean of (mass_ab + mass_ba) / 2
    chosen_a_rate: float | None  # chosen is response_a


@dataclass(frozen=True)
class SFTStatistics:
    """Statistics of an SFT split; means are None when there are no rows."""

    rows: int
    mean_rounds: float | None
    revised_rate: float | None  # final revision differs from the initial response
    mean_prompt_chars: float | None
    mean_initial_chars: float | None
    mean_revision_chars: float | None


def p_a_histogram(p_a: np.ndarray, bins: int = P_A_BINS) -> tuple[int, ...]:
    """Counts of p_a in `bins` equal bins over [0, 1]; 1.0 falls in the last bin.

    >>> p_a_histogram(np.array([0.0, 0.05, 0.5, 0.95, 1.0]))
    (2, 0, 0, 0, 0, 1, 0, 0, 0, 2)
    """
    index = np.minimum(np.floor(p_a * bins).astype(np.int64), bins - 1)
    return tuple(int(count) for count in np.bincount(index, minlength=bins))


def preference_statistics(tables: pa.Table | Iterable[pa.Table]) -> PreferenceStatistics:
    """Label statistics of a preference split, from one table or its shards one at a time.

    Only running sums are kept between shards, so the card of a large split costs one shard of memory.
    """
    rows = consistent = low_mass = order_flip = outside_topk = chosen_a = 0
    mass_sum = 0.0
    histogram = np.zeros(P_A_BINS, dtype=np.int64)
    for table in [tables] if isinstance(tables, pa.Table) else tables:
        rows += table.num_rows
        histogram += np.asarray(p_a_histogram(table.column("p_a").to_numpy()), dtype=np.int64)
        consistent += _count_true(table.column("consistent"))
        flags = table.column("flags")
        low_mass += _rows_flagged(flags, FLAG_LOW_MASS)
        order_flip += _rows_flagged(flags, FLAG_ORDER_FLIP)
        outside_topk += _rows_flagged(flags, FLAG_CHOICE_OUTSIDE_TOPK)
        chosen_a += _count_true(pc.equal(table.column("chosen_text"), table.column("response_a")))
        mass_sum += float(np.sum(table.column("mass_ab").to_numpy() + table.column("mass_ba").to_numpy())) / 2

    def rate(count: int) -> float | None:
        return count / rows if rows else None

    return PreferenceStatistics(
        rows=rows,
        p_a_histogram=tuple(int(count) for count in histogram),
        consistency_rate=rate(consistent),
        low_mass_rate=rate(low_mass),
        order_flip_rate=rate(order_flip),
        outside_topk_rate=rate(outside_topk),
        mean_mass=mass_sum / rows if rows else None,
        chosen_a_rate=rate(chosen_a),
    )


def sft_statistics(tables: pa.Table | Iterable[pa.Table]) -> SFTStatistics:
    """Statistics of an SFT split (lengths in characters), from one table or its shards one at a time."""
    rows = revised = rounds = 0
    chars = {"prompt": 0, "initial": 0, "revision": 0}
    for table in [tables] if isinstance(tables, pa.Table) else tables:
        rows += table.num_rows
        rounds += _sum_int(pc.list_value_length(table.column("rounds")))
        revised += _count_true(pc.not_equal(table.column("revision"), table.column("initial")))
        for column in chars:
            chars[column] += _sum_int(pc.utf8_length(table.column(column)))

    def mean(total: int) -> float | None:
        return total / rows if rows else None

    return SFTStatistics(
        rows=rows,
        mean_rounds=mean(rounds),
        revised_rate=mean(revised),
        mean_prompt_chars=mean(chars["prompt"]),
        mean_initial_chars=mean(chars["initial"]),
        mean_revision_chars=mean(chars["revision"]),
    )


def _count_true(values: pa.ChunkedArray | pa.Array) -> int:
    """Number of true values (nulls count as false)."""
    return int(pc.sum(pc.cast(pc.fill_null(values, False), pa.int64())).as_py() or 0)


def _rows_flagged(flags: pa.ChunkedArray, flag: str) -> int:
    """Rows whose list of flags holds `flag`."""
    parents = pc.list_parent_indices(flags)
    return len(pc.unique(parents.filter(pc.equal(pc.list_flatten(flags), flag))))


def _sum_int(values: pa.ChunkedArray | pa.Array) -> int:
    return int(pc.sum(values).as_py() or 0)


def write_card(run_dir: Path, *, command: str | None = None, hub: HubMetadata | None = None) -> Path:
    """Write `run_dir/README.md` atomically from the manifest and the verified shards; returns its path."""
    path = Path(run_dir) / CARD_NAME
    atomic_write_text(path, render_card(run_dir, command=command, hub=hub))
    return path


def render_card(
    run_dir: Path,
    *,
    command: str | None = None,
    hub: HubMetadata | None = None,
    splits: Iterable[str] | None = None,
) -> str:
    """The dataset card's Markdown (splits still running are included and marked incomplete).

    `splits` limits the card to some of the run's splits (what `labeler push` uploads). Every shard of
    those splits is read through the store's verified reader: a damaged one raises `InputError`.
    """
    run_dir = Path(run_dir)
    hub = hub or HubMetadata()
    # Fingerprints hold the paths a run was given (constitution, pairs, models): the card says names only.
    manifest = published_manifest(load_manifest(run_dir))
    command = text_without_local_paths(command) if command else command
    wanted = set(manifest.splits) if splits is None else set(splits)
    splits = [name for name in SPLITS if name in manifest.splits and name in wanted]
    # Statistics stream over the verified shards: a card never holds more than one shard in memory.
    pref_stats = (
        preference_statistics(iter_shard_tables(run_dir, "preferences", require_complete=False))
        if "preferences" in splits
        else None
    )
    sft_stats = sft_statistics(iter_shard_tables(run_dir, "sft", require_complete=False)) if "sft" in splits else None
    rows = {"preferences": pref_stats.rows if pref_stats else 0, "sft": sft_stats.rows if sft_stats else 0}
    # Every split the card describes is read verified, those without statistics of their own too:
    # `labeler push` relies on it to check each shard it sends.
    for name in splits:
        if name not in ("preferences", "sft"):
            rows[name] = sum(table.num_rows for table in iter_shard_tables(run_dir, name, require_complete=False))

    title = hub.pretty_name or (hub.repo_id.split("/")[-1] if hub.repo_id else run_dir.resolve().name)
    formats = {name: _split_format(manifest.splits[name]) for name in splits}
    lines = _front_matter(
        splits,
        formats,
        licenses=card_licenses(manifest, splits, hub),
        language=hub.language,
        pretty_name=title,
        rows=sum(rows[name] for name in splits),
    )
    lines += [
        f"# {title}",
        "",
        "AI-labelled data made by labeler from a written constitution "
        "(Constitutional AI / RLAIF): supervised critique-and-revise data (`sft`) and/or pairs of responses "
        "judged by a model in both orders (`preferences`), with soft labels.",
        "",
        "## Contents",
        "",
        "| split | rows | shards | status |",
        "| --- | ---: | ---: | --- |",
    ]
    for name in splits:
        entry = manifest.splits[name]
        lines.append(f"| {name} | {rows[name]} | {len(entry.shards)} | {entry.status} |")
    incomplete = [name for name in splits if manifest.splits[name].status != "complete"]
    if incomplete:
        lines += ["", f"**Incomplete:** {', '.join(incomplete)} still running; statistics cover the records so far."]
    lines += ["", f"Created {manifest.created}, updated {manifest.updated}, labeler {manifest.labeler_version}."]
    licenses = card_licenses(manifest, splits, hub)
    if licenses:
        lines += ["", f"License: {', '.join(f'`{name}`' for name in licenses)}."]

    if manifest.export is not None:
        lines += _export_section(manifest.export)
    lines += ["", "## How it was made", ""]
    if command:
        lines += ["```", command, "```", ""]
    for name in splits:
        lines += _provenance(name, manifest.splits[name])

    if pref_stats is not None:
        lines += _preference_section(pref_stats)
    if sft_stats is not None:
        lines += _sft_section(sft_stats)
    lines += _usage(splits, formats, hub.repo_id)
    for name in splits:
        lines += [f"## Columns of `{name}`", "", "| column | type | meaning |", "| --- | --- | --- |"]
        lines += [f"| `{col}` | `{kind}` | {text} |" for col, kind, text in column_descriptions(SPLITS[name])]
        lines.append("")
    return "\n".join(lines).rstrip() + "\n"


def _split_format(entry: SplitEntry) -> ShardFormat:
    """The shard format of a split (Arrow unless an export wrote Parquet or JSON Lines)."""
    return shard_format(entry.shards[0].file) if entry.shards else "arrow"


def _front_matter(
    splits: list[str],
    formats: dict[str, ShardFormat],
    *,
    licenses: tuple[str, ...],
    language: tuple[str, ...],
    pretty_name: str,
    rows: int,
) -> list[str]:
    """Hugging Face Hub metadata: license, language, sizes and tasks, and one config per split, so the Hub
    loads the shards as they are. Free text is written as JSON strings, which YAML reads unchanged."""
    lines = ["---"]
    if len(licenses) == 1:
        lines.append(f"license: {licenses[0]}")
    elif licenses:
        lines += ["license:", *(f"- {name}" for name in licenses)]
    lines += ["language:", *(f"- {json.dumps(code)}" for code in language)]
    lines.append(f"pretty_name: {json.dumps(pretty_name, ensure_ascii=False)}")
    lines += ["size_categories:", f"- {size_category(rows)}"]
    lines += ["task_categories:", *(f"- {task}" for task in TASK_CATEGORIES)]
    lines += ["tags:", "- labeler", "- rlaif", "- constitutional-ai"]
    if "preferences" in splits:
        lines += ["- preference", "- dpo", "- reward-modeling"]
    lines.append("configs:")
    for name in splits:
        suffix = SUFFIXES[formats[name]]
        lines += [f"- config_name: {name}", "  data_files:", "  - split: train", f"    path: {name}/*{suffix}"]
    return [*lines, "---", ""]


def _export_section(export: ExportInfo) -> list[str]:
    lines = [
        "",
        "## Export",
        "",
        f"Exported by `labeler export` from the run `{export.source}` as `{export.format}`. Filters, in the order "
        "applied (each counts the rows it removed of those the filters before it kept):",
        "",
        "| split | filter | rows removed |",
        "| --- | --- | ---: |",
    ]
    for name, split in export.splits.items():
        lines += [f"| {name} | {step.filter} | {step.removed} |" for step in split.removed]
        lines.append(f"| {name} | **kept** | {split.rows_out} of {split.rows_in} |")
    for name, split in export.splits.items():
        if split.human_labels is not None:
            lines += [
                "",
                f"**Human labels:** {split.human_labels} of the {split.rows_in} {name} rows take chosen, rejected, "
                "p_a and margin from people's labels (`labeler review`, exported with `--prefer-human`; flag "
                "`human_label`); the others keep the judge's.",
            ]
    partial = [name for name, split in export.splits.items() if not split.complete]
    if partial:
        lines += [
            "",
            f"**Partial:** {', '.join(partial)} exported with `--allow-partial` from a split not yet complete.",
        ]
    return lines


def _provenance(split: str, entry: SplitEntry) -> list[str]:
    fingerprint = entry.fingerprint
    lines = [f"### `{split}`", ""]
    if entry.part is not None:
        lines.append(f"- part {entry.part[0]} of {entry.part[1]} of a job array")
    for role, model in (fingerprint.get("models") or {}).items():
        lines.append(f"- {role} model: `{model}`")
    constitution = fingerprint.get("constitution")
    if isinstance(constitution, dict):
        license_ = constitution.get("license") or "not stated"
        lines.append(
            f"- constitution: `{constitution.get('name')}` version `{constitution.get('version')}`, license {license_}"
        )
    lines.append(f"- constitution sha256: `{fingerprint.get('constitution_sha256')}`")
    for template, sha in (fingerprint.get("template_sha256s") or {}).items():
        lines.append(f"- template `{template}` sha256: `{sha}`")
    lines.append(f"- seed: `{fingerprint.get('seed')}`, labeler `{fingerprint.get('labeler_version')}`")
    lines += ["", "Config:", "", "```json", json.dumps(fingerprint.get("config"), indent=2, sort_keys=True), "```", ""]
    if entry.stats:
        lines += ["Stage statistics:", "", "```json", json.dumps(entry.stats, indent=2, sort_keys=True), "```", ""]
    return lines


def _fmt(value: float | None, spec: str) -> str:
    """`value` formatted with `spec`, or "n/a" when there is nothing to measure.

    >>> _fmt(0.25, ".1%"), _fmt(None, ".3f")
    ('25.0%', 'n/a')
    """
    return "n/a" if value is None else format(value, spec)


def _preference_section(stats: PreferenceStatistics) -> list[str]:
    width = 1 / P_A_BINS
    lines = [
        "## Preference labels",
        "",
        "`p_a` is the judge's probability that `response_a` is better, averaged over both presentation "
        "orders; `chosen` is the response it favours.",
        "",
        "| statistic | value |",
        "| --- | ---: |",
        f"| rows | {stats.rows} |",
        f"| consistency rate (both orders agree) | {_fmt(stats.consistency_rate, '.1%')} |",
        f"| order-flip rate (`{FLAG_ORDER_FLIP}` flag) | {_fmt(stats.order_flip_rate, '.1%')} |",
        f"| low-mass rate (`{FLAG_LOW_MASS}` flag) | {_fmt(stats.low_mass_rate, '.1%')} |",
        f"| choice outside the server's top-k (`{FLAG_CHOICE_OUTSIDE_TOPK}` flag) | "
        f"{_fmt(stats.outside_topk_rate, '.1%')} |",
        f"| mean mass on the two choice tokens | {_fmt(stats.mean_mass, '.3f')} |",
        f"| chosen is response_a | {_fmt(stats.chosen_a_rate, '.1%')} |",
        "",
        "Histogram of `p_a`:",
        "",
        "| p_a | rows |",
        "| --- | ---: |",
    ]
    for k, count in enumerate(stats.p_a_histogram):
        closing = "]" if k == P_A_BINS - 1 else ")"
        lines.append(f"| [{k * width:.1f}, {(k + 1) * width:.1f}{closing} | {count} |")
    return [*lines, ""]


def _sft_section(stats: SFTStatistics) -> list[str]:
    return [
        "## SFT data",
        "",
        "| statistic | value |",
        "| --- | ---: |",
        f"| rows | {stats.rows} |",
        f"| mean critique-and-revise rounds | {_fmt(stats.mean_rounds, '.2f')} |",
        f"| revised (final differs from initial) | {_fmt(stats.revised_rate, '.1%')} |",
        f"| mean prompt length (chars) | {_fmt(stats.mean_prompt_chars, '.1f')} |",
        f"| mean initial response length (chars) | {_fmt(stats.mean_initial_chars, '.1f')} |",
        f"| mean final revision length (chars) | {_fmt(stats.mean_revision_chars, '.1f')} |",
        "",
    ]


def _usage(splits: list[str], formats: dict[str, ShardFormat], repo_id: str | None) -> list[str]:
    """How to load the data: from the Hub id when the card is published, else from the card's own folder."""
    lines = ["## Loading", ""]
    if repo_id is not None:
        lines += [
            "```python",
            "from datasets import load_dataset",
            "",
            *(f'{name} = load_dataset("{repo_id}", "{name}", split="train")' for name in splits),
            "```",
            "",
            "Or download the folder and read it verifying every shard's sha256 against `manifest.json`:",
            "",
            "```python",
            "from huggingface_hub import snapshot_download",
            "from labeler.store import read_split",
            "",
            f'run = snapshot_download("{repo_id}", repo_type="dataset")',
        ]
    else:
        lines += [
            "Each split is a folder of shards; `manifest.json` lists each with its row count and sha256. From this "
            "folder:",
            "",
            "```python",
            "from datasets import load_dataset",
            "",
        ]
        for name in splits:
            loader, suffix = LOADERS[formats[name]], SUFFIXES[formats[name]]
            lines.append(f'{name} = load_dataset("{loader}", data_files="{name}/*{suffix}", split="train")')
        lines += [
            "",
            "# or, verifying every shard's sha256 first:",
            "from labeler.store import read_split",
            "",
            'run = "."  # this folder',
        ]
    lines += [f'table = read_split(run, "{splits[0] if splits else "preferences"}")  # a pyarrow.Table', "```", ""]
    if "preferences" not in splits:
        return lines
    dataset = f'load_dataset("{repo_id}", "preferences", split="train")' if repo_id else "preferences"
    return [
        *lines,
        "## Training on the preferences",
        "",
        "`prompt`, `chosen` and `rejected` are in TRL's conversational form (`prompt` is the whole "
        "conversation as {role, content} messages, `chosen` and `rejected` each a list of the one assistant "
        "message), so TRL's `RewardTrainer` and `DPOTrainer` train on the split as it is, rendering each "
        "conversation with the model's chat template. The same text is in `prompt_text`, `chosen_text` and "
        "`rejected_text`. `RewardTrainer` also uses `margin` in its loss (drop the column with "
        "`remove_columns('margin')` to train without it). labeler's own trainer: `labeler train-rm --help`.",
        "",
        "```python",
        "from transformers import AutoModelForSequenceClassification, AutoTokenizer",
        "from trl import RewardConfig, RewardTrainer",
        "",
        'base = "HuggingFaceTB/SmolLM2-135M-Instruct"',
        "tokenizer = AutoTokenizer.from_pretrained(base)",
        "model = AutoModelForSequenceClassification.from_pretrained(base, num_labels=1)",
        "model.config.pad_token_id = tokenizer.pad_token_id",
        "trainer = RewardTrainer(",
        f'    model=model, args=RewardConfig(output_dir="rm"), train_dataset={dataset}, processing_class=tokenizer',
        ")",
        "trainer.train()",
        "```",
        "",
    ]


def statistics_dict(stats: PreferenceStatistics | SFTStatistics) -> dict[str, Any]:
    """Statistics as a JSON-able dict (for `RunStore.mark_complete(stats=...)` or a report)."""
    return dataclasses.asdict(stats)


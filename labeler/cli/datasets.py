"""`labeler export` and `labeler push`: datasets that leave the run folder."""

from __future__ import annotations

import typer

from labeler.cli.options import ConfigCommand, Opt, parse_names
from labeler.publish.export import ExportConfig
from labeler.publish.push import PushConfig


def run_export(config: ExportConfig) -> None:
    """Export a run's splits (filtered, compacted into shards of a target size) as TRL-ready Arrow, Parquet
    or JSON Lines, with a manifest and a card saying what each filter removed."""
    from labeler.publish.export import ExportWriteError, export_run

    try:
        result = export_run(config)
    except ExportWriteError as exc:  # a full disk: a message naming the file, exit 1, no export left
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(1) from None
    for folder in result.removed:
        typer.echo(f"removed {folder.name}, left next to {result.out.name} by an export that was interrupted")
    for split, counts in result.splits.items():
        removed = ", ".join(f"{step.filter}: {step.removed}" for step in counts.removed if step.removed)
        typer.echo(f"{split}: kept {counts.rows_out} of {counts.rows_in} rows" + (f" ({removed})" if removed else ""))
        if counts.human_labels is not None:
            typer.echo(f"{split}: {counts.human_labels} rows labelled by people (--prefer-human)")
    typer.echo(f"wrote {result.out}")


def run_push(config: PushConfig) -> None:
    """Publish a run's complete splits, its manifest and its card as a Hugging Face Hub dataset (token from
    HF_TOKEN); --dry-run prints the files and bytes it would send."""
    from labeler.publish.push import describe, push

    result = push(config)
    if config.dry_run:
        typer.echo(describe(result.plan, private=config.private))
        return
    deleted = f", {len(result.deleted)} stale file(s) deleted" if result.deleted else ""
    typer.echo(f"pushed {len(result.plan.uploads)} files ({result.plan.total_bytes} bytes{deleted}) to "
               f"{config.repo}" + (f": {result.url}" if result.url else ""))  # fmt: skip


COMMANDS = (
    ConfigCommand(
        "export",
        ExportConfig,
        (
            Opt("run", argument=True, metavar="RUN"),
            Opt("out"),
            Opt("format"),
            Opt("split", metavar="SPLIT"),
            Opt("drop_flags", parse=parse_names, cli_type=str, metavar="FLAG,..."),
            Opt("min_margin"),
            Opt("min_consistency"),
            Opt("shard_rows", metavar="N"),
            Opt("shard_size", metavar="SIZE"),
            Opt("allow_partial"),
            Opt("prefer_human"),
            Opt("ultrafeedback"),
        ),
        run_export,
    ),
    ConfigCommand(
        "push",
        PushConfig,
        (
            Opt("run", argument=True, metavar="RUN"),
            Opt("repo", metavar="ORG/NAME"),
            Opt("private"),
            Opt("dry_run"),
            Opt("with_report"),
            Opt("license", metavar="ID", cli_type=str),  # checked with the config, like every other option
            Opt("language", metavar="CODE"),
            Opt("pretty_name", metavar="TEXT"),
        ),
        run_push,
    ),
)

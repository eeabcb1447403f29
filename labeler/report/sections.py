"""The sections of a run's report page, each drawing its figures as it goes (or saying why it cannot)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from matplotlib.figure import Figure

from labeler.core.layout import METRICS_FILE
from labeler.core.records import FLAG_LOW_MASS, FLAG_ORDER_FLIP, SPLITS
from labeler.evaluate.policy_report import EVAL_POLICY_JSON
from labeler.evaluate.policy_report import interval as format_interval
from labeler.report import plots
from labeler.report.collect import PreferenceData, RankingSummary, RunData, SFTData
from labeler.report.human_agreement import Calibration, EvalJudgeResult, HumanMatch, calibration
from labeler.report.metrics import PLOTTED_METRICS, TrainingLog
from labeler.report.page import Block, Image, Note, Page, Paragraph, Section, Table, fmt
from labeler.report.policy import Evaluation
from labeler.store.atomic import atomic_write_bytes
from labeler.store.manifest import load_manifest

REPORT_DIR = "report"
EVAL_JUDGE_JSON = "eval_judge.json"
RUN_RM_DIR = "rm"

P_A_HISTOGRAM_PNG = "p_a_histogram.png"
ORDER_SCATTER_PNG = "order_scatter.png"
LABEL_RATES_PNG = "label_rates.png"
PRINCIPLE_SCORES_PNG = "principle_scores.png"
PRINCIPLE_CORRELATION_PNG = "principle_correlation.png"
SFT_LENGTHS_PNG = "sft_lengths.png"
SFT_ROUNDS_PNG = "sft_rounds.png"
RM_CURVES_PNG = "rm_curves.png"
CALIBRATION_HUMAN_PNG = "calibration_human.png"
CALIBRATION_EVAL_JUDGE_PNG = "calibration_eval_judge.png"
PREFERENCE_PLOT_TITLES = ("p_a histogram", "p_a in both orders", "label quality rates")


class Figures:
    """Draws each figure into the report folder and remembers what was drawn or skipped, and why."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.skipped: list[tuple[str, str]] = []  # (figure title, reason)

    def draw(self, file: str, title: str, caption: str, plot: Callable[[Any], Figure], data: Any) -> Image:
        atomic_write_bytes(self.folder / file, plots.png_bytes(plot(data)))
        return Image(file=file, title=title, caption=caption)

    def skip(self, title: str, reason: str) -> Note:
        self.skipped.append((title, reason))
        return Note(f"Plot skipped ({title}): {reason}.")


# --- sections ---------------------------------------------------------------------------------


def run_section(run: RunData, iterations: Sequence[Path] = ()) -> Section:
    """The run's splits; for an iterated run, each iteration's labels too."""
    manifest = run.manifest
    rows = tuple(
        (name, str(run.tables[name].num_rows), str(len(manifest.splits[name].shards)), manifest.splits[name].status)
        for name in SPLITS
        if name in run.tables
    )
    blocks: list[Block] = [
        Paragraph(f"Run folder `{run.run_dir.resolve()}`."),
        Table(("split", "rows", "shards", "status"), rows, numeric=(1, 2)),
    ]
    if iterations:
        blocks.append(Paragraph(f"The run iterates: each iteration's labels, reward model and policy are in "
                                f"its own folder. The label sections below show `{run.run_dir.name}`."))
        iteration_rows = []
        for folder in iterations:
            entry = load_manifest(folder).splits.get("preferences")
            iteration_rows.append((f"`{folder.name}`", "n/a" if entry is None else str(entry.rows),
                                   "n/a" if entry is None else entry.status))
        blocks.append(Table(("iteration", "preference pairs", "status"), tuple(iteration_rows), numeric=(1,)))
    incomplete = [name for name in run.tables if manifest.splits[name].status != "complete"]
    if incomplete:
        blocks.append(
            Note(f"Incomplete: {', '.join(incomplete)} still running; the numbers cover the records so far.")
        )
    generated = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    blocks.append(
        Paragraph(
            f"Run created {manifest.created}, updated {manifest.updated} (labeler {manifest.labeler_version}); "
            f"report written {generated}. Every number is computed from the verified shards."
        )
    )
    return Section("Run", tuple(blocks))


def preference_section(data: PreferenceData | None, figures: Figures) -> Section:
    title = "Preference labels"
    if data is None:
        reason = "the run has no preferences split"
        return Section(title, tuple(figures.skip(name, reason) for name in PREFERENCE_PLOT_TITLES))
    stats = data.stats
    blocks: list[Block] = [
        Paragraph(
            "`p_a` is the judge's probability that `response_a` is better, averaged over both presentation "
            "orders; rates are fractions of pairs."
        ),
        Table(
            ("statistic", "value"),
            (
                ("preference pairs", str(stats.rows)),
                ("mean p_a", fmt(data.mean_p_a)),
                ("consistency rate (both orders agree)", fmt(stats.consistency_rate)),
                (f"order-flip rate (`{FLAG_ORDER_FLIP}` flag)", fmt(stats.order_flip_rate)),
                (f"low-mass rate (`{FLAG_LOW_MASS}` flag)", fmt(stats.low_mass_rate)),
                ("mean mass on the two choice tokens", fmt(stats.mean_mass)),
                ("chosen is response_a (rate)", fmt(stats.chosen_a_rate)),
                ("mean probability on the response shown first (0.5: no position bias)", fmt(data.first_shown_rate)),
            ),
            numeric=(1,),
        ),
        Table(("p_a", "pairs"), _histogram_rows(stats.p_a_histogram), numeric=(1,)),
    ]
    if stats.rows == 0:
        reason = "the preferences split has no rows yet"
        blocks += [figures.skip(name, reason) for name in PREFERENCE_PLOT_TITLES]
        return Section(title, tuple(blocks))
    blocks += [
        figures.draw(
            P_A_HISTOGRAM_PNG,
            PREFERENCE_PLOT_TITLES[0],
            "Distribution of the soft labels. Mass near 0.5 means the judge rarely prefers either response.",
            plots.p_a_histogram_plot,
            data,
        ),
        figures.draw(
            ORDER_SCATTER_PNG,
            PREFERENCE_PLOT_TITLES[1],
            "Each pair's P(response_a better) with response_a shown first (x) and second (y). A judge that "
            "reads the content puts points on the diagonal y = x (green: same label in both orders); a judge "
            "that follows the position puts them on y = 1 − x (dashed), in the top-left and bottom-right "
            "corners. Red crosses are pairs whose preferred response changed with the order.",
            plots.order_scatter_plot,
            data,
        ),
        figures.draw(
            LABEL_RATES_PNG,
            PREFERENCE_PLOT_TITLES[2],
            f"Consistency, `{FLAG_ORDER_FLIP}` and `{FLAG_LOW_MASS}` rates, and how often response_a is chosen.",
            plots.label_rates_plot,
            data,
        ),
    ]
    return Section(title, tuple(blocks))


def _histogram_rows(histogram: tuple[int, ...]) -> tuple[tuple[str, str], ...]:
    """Rows "[0.0, 0.1)" → count of the p_a histogram (the last bin closed).

    >>> _histogram_rows((1, 2))
    (('[0.0, 0.5)', '1'), ('[0.5, 1.0]', '2'))
    """
    bins = len(histogram)
    return tuple(
        (f"[{k / bins:.1f}, {(k + 1) / bins:.1f}{']' if k == bins - 1 else ')'}", str(count))
        for k, count in enumerate(histogram)
    )


def principle_section(data: PreferenceData | None, figures: Figures) -> Section:
    title = "Principles"
    scores_title, correlation_title = "per-principle scores", "correlation between principles"
    if data is None or not data.principles:
        reason = "the run has no preferences split" if data is None else "no pair has principle scores"
        return Section(title, (figures.skip(scores_title, reason), figures.skip(correlation_title, reason)))
    blocks: list[Block] = [
        Paragraph(
            "A principle's score for a pair is log P(A) − log P(B) under that principle's question, averaged "
            "over both orders (SALMON); positive favours `response_a`."
        ),
        Table(
            ("principle", "pairs scored", "mean score", "std", "favours response_a (rate)"),
            tuple(
                (f"`{p.principle_id}`", str(len(p.scores)), fmt(p.mean), fmt(p.std), fmt(p.favours_a_rate))
                for p in data.principles
            ),
            numeric=(1, 2, 3, 4),
        ),
        figures.draw(
            PRINCIPLE_SCORES_PNG,
            scores_title,
            "Box plots of each principle's scores (box: quartiles; diamond: mean; dashed: no preference).",
            plots.principle_scores_plot,
            data,
        ),
    ]
    if len(data.principles) >= 2:
        blocks.append(
            figures.draw(
                PRINCIPLE_CORRELATION_PNG,
                correlation_title,
                "Pearson correlation of two principles' scores over the pairs scored under both. Principles "
                "that correlate near 1 ask the judge the same question.",
                plots.principle_correlation_plot,
                data,
            )
        )
    else:
        blocks.append(figures.skip(correlation_title, "only one principle has scores"))
    return Section(title, tuple(blocks))


def ranking_section(summary: RankingSummary) -> Section:
    """K responses per prompt: Bradley-Terry score spread and how often the judged pairs form a cycle."""
    return Section(
        "Rankings (K responses per prompt)",
        (
            Paragraph("Each prompt's responses were judged pair by pair and given Bradley-Terry scores "
                      "(logits: P(i beats j) = sigmoid(s_i - s_j)). A prompt is intransitive when its judged pairs "
                      "order some three responses in a cycle (A > B > C > A)."),
            Table(
                ("statistic", "value"),
                (
                    ("prompts ranked", str(summary.prompts)),
                    ("mean responses per prompt", fmt(summary.mean_responses, 2)),
                    ("mean judged pairs per prompt", fmt(summary.mean_comparisons, 2)),
                    ("mean score spread (highest - lowest)", fmt(summary.mean_score_spread)),
                    ("median score spread", fmt(summary.median_score_spread)),
                    ("mean standard error of a score", fmt(summary.mean_score_error)),
                    ("intransitive rate (prompts with a cycle)", fmt(summary.intransitive_rate)),
                    ("intransitive triples", str(summary.intransitive_triples)),
                ),
                numeric=(1,),
            ),
        ),
    )


def sft_section(data: SFTData | None, figures: Figures) -> Section:
    title = "SFT data (critique and revise)"
    lengths_title, rounds_title = "SFT response lengths", "SFT rounds and principle usage"
    if data is None:
        reason = "the run has no sft split"
        return Section(title, (figures.skip(lengths_title, reason), figures.skip(rounds_title, reason)))
    stats = data.stats
    blocks: list[Block] = [
        Table(
            ("statistic", "value"),
            (
                ("SFT records", str(stats.rows)),
                ("mean critique-and-revise rounds", fmt(stats.mean_rounds)),
                ("revised rate (final differs from initial)", fmt(stats.revised_rate)),
                ("mean prompt length (chars)", fmt(stats.mean_prompt_chars, 2)),
                ("mean initial response length (chars)", fmt(stats.mean_initial_chars, 2)),
                ("mean final revision length (chars)", fmt(stats.mean_revision_chars, 2)),
            ),
            numeric=(1,),
        ),
    ]
    if data.principle_usage:
        blocks.append(
            Table(
                ("principle", "rounds"),
                tuple((f"`{name}`", str(count)) for name, count in data.principle_usage),
                numeric=(1,),
            )
        )
    if stats.rows == 0:
        reason = "the sft split has no rows yet"
        blocks += [figures.skip(lengths_title, reason), figures.skip(rounds_title, reason)]
        return Section(title, tuple(blocks))
    blocks += [
        figures.draw(
            SFT_LENGTHS_PNG,
            lengths_title,
            "Lengths of the initial responses and of the final revisions, in characters.",
            plots.sft_lengths_plot,
            data,
        ),
        figures.draw(
            SFT_ROUNDS_PNG,
            rounds_title,
            "Critique-and-revise rounds per record, and how many rounds used each principle.",
            plots.sft_rounds_plot,
            data,
        ),
    ]
    return Section(title, tuple(blocks))


def rm_section(logs: list[TrainingLog], missing: list[Path], figures: Figures) -> Section:
    title, curves_title = "Reward model training", "reward-model training curves"
    blocks: list[Block] = [Note(f"No `{METRICS_FILE}` yet in `{path.parent}`.") for path in missing]
    for log in logs:
        if log.skipped_lines:
            lines = ", ".join(map(str, log.skipped_lines[:5])) + (", ..." if len(log.skipped_lines) > 5 else "")
            blocks.append(Note(f"`{log.file}`: {len(log.skipped_lines)} unreadable line(s) left out (line {lines})."))
    plotted = [log for log in logs if log.metrics() & set(PLOTTED_METRICS)]
    if logs:
        blocks.append(
            Table(
                ("model", "train steps logged", "last step", "last train loss", "last train accuracy",
                 "last eval loss", "last eval accuracy"),
                tuple(
                    (
                        log.name,
                        str(log.rows("train")),
                        fmt(max((p.step for p in log.points), default=None), 0),
                        fmt(log.last("train", "loss")),
                        fmt(log.last("train", "accuracy")),
                        fmt(log.last("eval", "loss")),
                        fmt(log.last("eval", "accuracy")),
                    )
                    for log in logs
                ),
                numeric=(1, 2, 3, 4, 5, 6),
            )
        )
    if plotted:
        blocks.append(
            figures.draw(
                RM_CURVES_PNG,
                curves_title,
                "Training (solid) and evaluation (dashed) loss, pairwise accuracy and margin per optimizer step.",
                plots.rm_curves_plot,
                plotted,
            )
        )
    elif logs:
        blocks.append(figures.skip(curves_title, f"the logs have none of {', '.join(PLOTTED_METRICS)}"))
    else:
        blocks.append(
            figures.skip(curves_title, f"no reward-model metrics (pass `--rm DIR`, or train into `RUN/{RUN_RM_DIR}`)")
        )
    return Section(title, tuple(blocks))


@dataclass(frozen=True)
class CalibrationSource:
    """One set of human choices the judge is compared with, and where its figure goes."""

    key: str  # its name in statistics.json
    file: Path
    figure_file: str
    figure_title: str
    result: Calibration


HUMAN_CALIBRATION_TITLE = "calibration against human labels"
JUDGE_CALIBRATION_TITLE = "calibration from eval-judge"


def calibrations(human: HumanMatch | None, eval_judge: EvalJudgeResult | None) -> list[CalibrationSource]:
    sources = []
    if human is not None and len(human.p_chosen):
        result = calibration(human.p_chosen, "human labels")
        sources.append(CalibrationSource("human", human.file, CALIBRATION_HUMAN_PNG, HUMAN_CALIBRATION_TITLE, result))
    if eval_judge is not None and len(eval_judge.p_chosen):
        result = calibration(eval_judge.p_chosen, "eval-judge")
        figure_file, title = CALIBRATION_EVAL_JUDGE_PNG, JUDGE_CALIBRATION_TITLE
        sources.append(CalibrationSource("eval_judge", eval_judge.file, figure_file, title, result))
    return sources


def calibration_section(
    human_pairs: Path | None,
    human: HumanMatch | None,
    eval_judge: EvalJudgeResult | None,
    sources: list[CalibrationSource],
    figures: Figures,
) -> Section:
    blocks: list[Block] = []
    if human_pairs is None:
        blocks.append(figures.skip(HUMAN_CALIBRATION_TITLE, "no human-labelled pairs given (`--human-pairs FILE`)"))
    elif human is None:
        blocks.append(figures.skip(HUMAN_CALIBRATION_TITLE, "the run has no preferences split to match them with"))
    else:
        found = f"{len(human.p_chosen)} of the {human.file_pairs} pairs in `{human.file}` are in the preferences split"
        blocks.append(Paragraph(found + "."))
        if not len(human.p_chosen):
            blocks.append(figures.skip(HUMAN_CALIBRATION_TITLE, "no human-labelled pair is in the preferences split"))
    if eval_judge is None:
        reason = f"no eval-judge results (`RUN/{REPORT_DIR}/{EVAL_JUDGE_JSON}`, or `--eval-judge FILE`)"
        blocks.append(figures.skip(JUDGE_CALIBRATION_TITLE, reason))
    else:
        if eval_judge.summary:
            blocks.append(Paragraph(f"Numbers from `{eval_judge.file}`:"))
            rows = tuple(
                (f"`{name}`", str(value) if isinstance(value, int) else fmt(value))
                for name, value in eval_judge.summary
            )
            blocks.append(Table(("eval-judge", "value"), rows, numeric=(1,)))
        if not len(eval_judge.p_chosen):
            blocks.append(figures.skip(JUDGE_CALIBRATION_TITLE, f"`{eval_judge.file}` lists no pairs with `p_chosen`"))
    if sources:
        results = [source.result for source in sources]
        blocks += [
            Paragraph(
                "`p_chosen` is the judge's probability for the response the humans preferred. Agreement counts "
                "pairs with p_chosen > 0.5 (ties count half); Brier is the mean of (1 − p_chosen)²; ECE is the "
                "count-weighted gap between the judge's confidence, max(p, 1 − p), and how often it sided with "
                "the humans, over ten confidence bins on [0.5, 1] (as `labeler eval-judge` computes it)."
            ),
            Table(
                ("statistic", *(result.source for result in results)),
                (
                    ("calibration pairs", *(str(r.pairs) for r in results)),
                    ("agreement with humans", *(fmt(r.agreement) for r in results)),
                    ("mean p_chosen", *(fmt(r.mean_p_chosen) for r in results)),
                    ("Brier score", *(fmt(r.brier) for r in results)),
                    ("expected calibration error (ECE)", *(fmt(r.ece) for r in results)),
                ),
                numeric=tuple(range(1, len(results) + 1)),
            ),
        ]
    for source in sources:
        blocks.append(
            figures.draw(
                source.figure_file,
                source.figure_title,
                "Reliability diagram: in each bin of the judge's confidence, the fraction of pairs where it "
                "sided with the humans. Points on the dashed diagonal mean the probabilities can be taken at "
                "face value; the bars below count the pairs per bin.",
                plots.calibration_plot,
                source.result,
            )
        )
    return Section("Judge calibration", tuple(blocks))


def figures_section(page: Page, figures: Figures) -> Section:
    blocks: list[Block] = [
        Table(("figure", "file"), tuple((image.title, f"`{image.file}`") for image in page.images()))
    ]
    if figures.skipped:
        blocks += [Paragraph("Skipped plots:"), Table(("plot", "reason"), tuple(figures.skipped))]
    return Section("Figures", tuple(blocks))




POLICY_EVALUATION_PNG = "policy_evaluation.png"
POLICY_PLOT_TITLE = "policy win rate, reward and KL"


def policy_section(evaluations: Sequence[Evaluation], figures: Figures) -> Section:
    """The eval-policy reports of the run (one per iteration) side by side, and their figure."""
    title = "Policy evaluation"
    if not evaluations:
        reason = (f"no `{EVAL_POLICY_JSON}` in the run or its iterations (`labeler eval-policy --out`, "
                  "or `--eval-policy FILE`)")
        return Section(title, (figures.skip(POLICY_PLOT_TITLE, reason),))

    def interval(figure: Any, percent: bool = False) -> str:
        value = figure.win_rate if hasattr(figure, "win_rate") else figure.mean
        return format_interval(value, figure.low, figure.high, percent=percent)

    rows = []
    for evaluation in evaluations:
        r = evaluation.report
        rows.append((
            evaluation.name,
            f"`{r.candidate}` vs `{r.baseline}`",
            str(r.overall.n),
            interval(r.overall, percent=True),
            f"{r.overall.wins} / {r.overall.ties} / {r.overall.losses}",
            "n/a" if r.rewards is None else f"{r.rewards.baseline.mean:.3f} → {r.rewards.candidate.mean:.3f}",
            "n/a" if r.rewards is None else interval(r.rewards.difference),
            "n/a" if r.kl is None else interval(r.kl.per_answer),
            f"{r.lengths.baseline_tokens.mean:.1f} → {r.lengths.candidate_tokens.mean:.1f}",
        ))  # fmt: skip
    blocks: list[Block] = [
        Paragraph(
            "Each row is one `labeler eval-policy` run: both policies answer the held-out prompts, the judge compares "
            "every pair in both orders under each principle, and the win rate is the mean P(candidate's answer "
            "better) with its 95% bootstrap interval over prompts (0.5: no better than the baseline). Reward is the "
            "reward model's mean score of each policy's answers; KL is log p_candidate − log p_baseline summed over "
            "the candidate's own answers (nats per answer)."
        ),
        Table(
            ("evaluation", "policies", "prompts", "win rate [95%]", "wins / ties / losses", "reward",
             "reward difference [95%]", "KL per answer [95%]", "answer tokens"),
            tuple(rows),
            numeric=(2, 3, 5, 6, 7, 8),
        ),
    ]
    last = evaluations[-1].report
    if len(last.principles) > 1 or last.groups:
        blocks.append(Paragraph(f"Win rate of {evaluations[-1].name} per principle and per group:"))
        parts = [(f"principle `{k}`", v) for k, v in last.principles.items()]
        parts += [(f"{last.group_by} = {k}", v) for k, v in last.groups.items()]
        blocks.append(Table(("", "prompts", "win rate [95%]"),
                            tuple((name, str(w.n), interval(w, percent=True)) for name, w in parts),
                            numeric=(1, 2)))
    blocks.append(
        figures.draw(
            POLICY_EVALUATION_PNG,
            POLICY_PLOT_TITLE,
            "Per evaluation (iteration): the candidate's win rate against the baseline, the mean reward of both "
            "policies' answers, and the candidate's KL to the baseline, with 95% intervals.",
            plots.policy_evaluation_plot,
            [(e.name, e.report) for e in evaluations],
        )
    )
    return Section(title, tuple(blocks))

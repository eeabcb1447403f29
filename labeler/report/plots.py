"""The report's figures, one function per PNG, drawn with matplotlib's Agg canvas.

Each function returns a `matplotlib.figure.Figure` on an explicit Agg canvas, never touching pyplot's
global state, so drawing works without a display and leaves the caller's backend alone; `png_bytes`
renders one.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import numpy as np
from matplotlib import colormaps
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from labeler.report.collect import PreferenceData, SFTData, pairwise_correlation
from labeler.report.human_agreement import Calibration
from labeler.report.metrics import PLOTTED_METRICS, TrainingLog
from labeler.store.card import P_A_BINS

if TYPE_CHECKING:
    from labeler.evaluate.policy_report import EvalPolicyReport

DPI = 110
MAX_SCATTER_POINTS = 20_000
"""More points than this are drawn as a seeded random sample (stated in the title)."""
MAX_USAGE_BARS = 25
CONSISTENT_COLOR = "#1f77b4"
FLIP_COLOR = "#d62728"


def _new_figure(width: float, height: float) -> Figure:
    figure = Figure(figsize=(width, height), layout="constrained")
    FigureCanvasAgg(figure)
    return figure


def png_bytes(figure: Figure) -> bytes:
    """The figure rendered as a PNG file's bytes."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=DPI)
    return buffer.getvalue()


def p_a_histogram_plot(data: PreferenceData) -> Figure:
    """Bars of the card's p_a histogram, with the coin-flip line and the mean."""
    figure = _new_figure(7, 4.2)
    ax = figure.add_subplot()
    width = 1 / P_A_BINS
    edges = np.arange(P_A_BINS) * width
    ax.bar(edges, data.stats.p_a_histogram, width=width, align="edge", color="#4c72b0", edgecolor="white")
    ax.axvline(0.5, color="gray", linestyle="--", linewidth=1, label="0.5: no preference")
    if data.mean_p_a is not None:
        ax.axvline(data.mean_p_a, color="#dd8452", linewidth=2, label=f"mean p_a = {data.mean_p_a:.3f}")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, max(data.stats.p_a_histogram) * 1.25 + 1)  # headroom for the legend
    ax.set_xlabel("p_a = P(response_a is better), mean of both orders")
    ax.set_ylabel("pairs")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Soft labels: distribution of p_a ({data.stats.rows} pairs)")
    ax.legend(loc="upper center", ncol=2)
    return figure


def order_scatter_plot(data: PreferenceData) -> Figure:
    """p_a judged in the ab order against the ba order: consistency and position bias at a glance.

    A judge that reads content gives the same answer in both orders: points on y = x. A judge that
    only follows the slot gives response_a what it gave the first slot, then what it gave the second:
    points on y = 1 − x, far from the diagonal at the top-left and bottom-right corners.
    """
    figure = _new_figure(6.6, 6.2)
    ax = figure.add_subplot()
    # The two quadrants where both orders prefer the same response.
    ax.fill_between([0, 0.5], 0, 0.5, color="#2ca02c", alpha=0.07, linewidth=0)
    ax.fill_between([0.5, 1], 0.5, 1, color="#2ca02c", alpha=0.07, linewidth=0, label="both orders agree")
    ax.plot([0, 1], [0, 1], color="#2ca02c", linewidth=1.5, label="y = x: same label in both orders (consistent)")
    ax.plot([0, 1], [1, 0], color="gray", linestyle="--", linewidth=1.5,
            label="y = 1 − x: follows the position, not the content")
    x, y, consistent = data.p_a_ab, data.p_a_ba, data.consistent
    title = f"p_a in both presentation orders ({len(x)} pairs)"
    if len(x) > MAX_SCATTER_POINTS:
        keep = np.random.default_rng(0).choice(len(x), MAX_SCATTER_POINTS, replace=False)
        x, y, consistent = x[keep], y[keep], consistent[keep]
        title = f"p_a in both presentation orders ({MAX_SCATTER_POINTS} of {len(data.p_a_ab)} pairs)"
    alpha = float(np.clip(300 / max(len(x), 1), 0.15, 0.8))
    ax.scatter(x[consistent], y[consistent], s=12, alpha=alpha, color=CONSISTENT_COLOR, label="consistent pair")
    ax.scatter(x[~consistent], y[~consistent], s=12, alpha=alpha, color=FLIP_COLOR, marker="x",
               label="order flip")
    ax.set_xlim(-0.02, 1.02)
    ax.set_ylim(-0.02, 1.02)
    ax.set_aspect("equal")
    ax.set_xlabel("p_a_ab: P(response_a better), response_a shown first")
    ax.set_ylabel("p_a_ba: P(response_a better), response_a shown second")
    ax.set_title(title)
    ax.legend(loc="upper center", bbox_to_anchor=(0.5, -0.12), fontsize=8, ncol=2)
    return figure


def label_rates_plot(data: PreferenceData) -> Figure:
    """Bars of the label-quality rates, each annotated with its value."""
    stats = data.stats
    rates = [
        ("consistent\n(both orders agree)", stats.consistency_rate),
        ("order flip", stats.order_flip_rate),
        ("low mass", stats.low_mass_rate),
        ("chosen is\nresponse_a", stats.chosen_a_rate),
    ]
    figure = _new_figure(7, 4.2)
    ax = figure.add_subplot()
    names = [name for name, _ in rates]
    values = [value or 0.0 for _, value in rates]
    bars = ax.bar(names, values, color=["#2ca02c", FLIP_COLOR, "#ff7f0e", "#7f7f7f"])
    ax.bar_label(bars, labels=[f"{value:.1%}" for value in values], padding=3)
    ax.set_ylim(0, 1.12)
    ax.set_ylabel("fraction of pairs")
    ax.set_title(f"Label quality ({stats.rows} pairs)")
    return figure


def principle_scores_plot(data: PreferenceData) -> Figure:
    """Box plots of each principle's scores (log P(A) − log P(B)), with their means."""
    principles = data.principles
    figure = _new_figure(max(6.0, 1.1 * len(principles) + 2), 4.6)
    ax = figure.add_subplot()
    ax.boxplot(
        [summary.scores for summary in principles],
        tick_labels=[summary.principle_id for summary in principles],
        showmeans=True,
        meanprops={"marker": "D", "markerfacecolor": "#dd8452", "markeredgecolor": "#dd8452"},
    )
    ax.axhline(0.0, color="gray", linestyle="--", linewidth=1)
    ax.set_ylabel("score = log P(A) − log P(B)\n(> 0 favours response_a)")
    ax.set_xlabel("principle (diamond: mean)")
    ax.set_title("Per-principle scores")
    if len(principles) > 4:
        ax.tick_params(axis="x", labelrotation=30)
    return figure


def principle_correlation_plot(data: PreferenceData) -> Figure:
    """Heatmap of the Pearson correlations between principles' scores on the pairs both scored."""
    correlation = pairwise_correlation(data.score_matrix)
    names = [summary.principle_id for summary in data.principles]
    size = max(4.5, 0.6 * len(names) + 3)
    figure = _new_figure(size + 1, size)
    ax = figure.add_subplot()
    colormap = colormaps["RdBu_r"].with_extremes(bad="#dddddd")  # grey: too few pairs scored by both
    image = ax.imshow(np.ma.masked_invalid(correlation), cmap=colormap, vmin=-1, vmax=1)
    ax.set_xticks(range(len(names)), names, rotation=45, ha="right")
    ax.set_yticks(range(len(names)), names)
    if len(names) <= 15:
        for i in range(len(names)):
            for j in range(len(names)):
                value = correlation[i, j]
                text = "n/a" if np.isnan(value) else f"{value:.2f}"
                ax.text(j, i, text, ha="center", va="center", color="white" if abs(value) > 0.6 else "black")
    figure.colorbar(image, ax=ax, label="Pearson r of the scores")
    ax.set_title("Correlation between principles")
    return figure


def sft_lengths_plot(data: SFTData) -> Figure:
    """Overlaid histograms of initial and final-revision lengths in characters."""
    figure = _new_figure(7, 4.2)
    ax = figure.add_subplot()
    both = np.concatenate([data.initial_chars, data.revision_chars])
    bins = np.histogram_bin_edges(both, bins=min(40, max(5, len(both) // 4))).tolist()
    ax.hist(data.initial_chars, bins=bins, alpha=0.55, color="#4c72b0",
            label=f"initial (mean {data.initial_chars.mean():.0f})")
    ax.hist(data.revision_chars, bins=bins, alpha=0.55, color="#dd8452",
            label=f"final revision (mean {data.revision_chars.mean():.0f})")
    ax.set_xlabel("response length (characters)")
    ax.set_ylabel("records")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"Response lengths before and after revision ({data.stats.rows} records)")
    ax.legend()
    return figure


def sft_rounds_plot(data: SFTData) -> Figure:
    """Rounds per record (left) and rounds per principle (right)."""
    figure = _new_figure(11, 4.4)
    left, right = figure.subplots(1, 2, width_ratios=[1, 1.4])
    counts = np.bincount(data.rounds, minlength=1)
    bars = left.bar(range(len(counts)), counts, color="#4c72b0")
    left.bar_label(bars, padding=2)
    left.set_xticks(range(len(counts)))
    left.set_xlabel("critique-and-revise rounds")
    left.set_ylabel("records")
    left.yaxis.set_major_locator(MaxNLocator(integer=True))
    left.set_title("Rounds per record")
    usage = data.principle_usage[:MAX_USAGE_BARS]
    if usage:
        names = [name for name, _ in usage][::-1]
        right.barh(names, [count for _, count in usage][::-1], color="#dd8452")
    right.xaxis.set_major_locator(MaxNLocator(integer=True))
    shown = f" (top {MAX_USAGE_BARS} of {len(data.principle_usage)})" if len(data.principle_usage) > len(usage) else ""
    right.set_xlabel("rounds using the principle")
    right.set_title("Principle usage" + shown)
    return figure


def rm_curves_plot(logs: Sequence[TrainingLog]) -> Figure:
    """One panel per metric: training (solid) and evaluation (dashed, dots) curves of each log."""
    metrics = [metric for metric in PLOTTED_METRICS if any(metric in log.metrics() for log in logs)]
    figure = _new_figure(4.6 * len(metrics) + 0.6, 4.2)
    axes = figure.subplots(1, len(metrics), squeeze=False)[0]
    colors = [f"C{k % 10}" for k in range(len(logs))]
    for ax, metric in zip(axes, metrics, strict=True):
        for log, color in zip(logs, colors, strict=True):
            steps, values = log.curve("train", metric)
            if steps:
                ax.plot(steps, values, color=color, linewidth=1.5, label=f"{log.name} train")
            steps, values = log.curve("eval", metric)
            if steps:
                ax.plot(steps, values, color=color, linestyle="--", marker="o", markersize=4,
                        label=f"{log.name} eval")
        ax.set_xlabel("optimizer step")
        ax.set_ylabel(metric)
        ax.set_title(f"Reward model {metric}")
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize=8)
    return figure


def calibration_plot(result: Calibration) -> Figure:
    """Reliability diagram (accuracy against confidence per bin) above the histogram of confidences."""
    figure = _new_figure(6.6, 6.6)
    top, bottom = figure.subplots(2, 1, height_ratios=[3, 1], sharex=True)
    filled = [b for b in result.bins if b.count]
    top.plot([0.5, 1], [0.5, 1], color="gray", linestyle="--", label="perfect calibration")
    top.plot([b.mean_confidence for b in filled], [b.accuracy for b in filled], color="#4c72b0", marker="o",
             label="judge")
    top.set_xlim(0.49, 1.01)
    top.set_ylim(-0.03, 1.03)
    top.set_ylabel("fraction where the judge sided with the humans")
    top.set_title(
        f"Calibration against {result.source} ({result.pairs} pairs)\n"
        f"agreement {result.agreement:.1%}, ECE {result.ece:.3f}, Brier {result.brier:.3f}"
    )
    top.legend(loc="upper left")
    bottom.bar([b.low for b in result.bins], [b.count for b in result.bins],
               width=result.bins[0].high - result.bins[0].low, align="edge", color="#4c72b0", edgecolor="white")
    bottom.set_xlabel("judge's confidence in its side, max(p, 1 - p)")
    bottom.set_ylabel("pairs")
    bottom.yaxis.set_major_locator(MaxNLocator(nbins=4, integer=True))
    return figure


def policy_evaluation_plot(evaluations: Sequence[tuple[str, EvalPolicyReport]]) -> Figure:
    """Per evaluation (iteration): the candidate's win rate, the mean reward of both policies and the
    candidate's KL to the baseline, each with its 95 % interval."""
    names = [name for name, _ in evaluations]
    reports = [report for _, report in evaluations]
    x = np.arange(len(reports))
    panels = ["win rate"]
    if any(r.rewards is not None for r in reports):
        panels.append("reward")
    if any(r.kl is not None for r in reports):
        panels.append("kl")
    figure = _new_figure(4.4 * len(panels) + 0.6, 4.2)
    axes = figure.subplots(1, len(panels), squeeze=False)[0]

    def errorbar(ax: Any, xs: np.ndarray, figures: Sequence[Any], **style: Any) -> None:
        means = np.array([f.mean if hasattr(f, "mean") else f.win_rate for f in figures])
        low = np.array([f.low for f in figures])
        high = np.array([f.high for f in figures])
        ax.errorbar(xs, means, yerr=[means - low, high - means], capsize=4, marker="o", **style)

    for ax, panel in zip(axes, panels, strict=True):
        if panel == "win rate":
            errorbar(ax, x, [r.overall for r in reports], color="#4c72b0", label="candidate's win rate")
            ax.axhline(0.5, color="gray", linestyle="--", linewidth=1, label="0.5: no better than the baseline")
            ax.set_ylim(0, 1)
            ax.set_ylabel("P(candidate's answer better)")
            ax.set_title("Win rate against the baseline (95% interval)")
        elif panel == "reward":
            scored = [(k, r.rewards) for k, r in enumerate(reports) if r.rewards is not None]
            xs = np.array([k for k, _ in scored], dtype=float)
            errorbar(ax, xs - 0.05, [s.baseline for _, s in scored], color="#7f7f7f", label="baseline")
            errorbar(ax, xs + 0.05, [s.candidate for _, s in scored], color="#dd8452", label="candidate")
            ax.set_ylabel("mean reward-model score")
            ax.set_title("Reward of each policy's answers")
        else:
            measured = [(k, r.kl) for k, r in enumerate(reports) if r.kl is not None]
            errorbar(ax, np.array([k for k, _ in measured], dtype=float), [m.per_answer for _, m in measured],
                     color="#55a868", label="KL(candidate || baseline)")
            ax.axhline(0.0, color="gray", linestyle="--", linewidth=1)
            ax.set_ylabel("nats per answer")
            ax.set_title("KL of the candidate to the baseline")
        ax.set_xticks(x, names, rotation=20 if len(names) > 4 else 0)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return figure

"""The report's charts, drawn with seaborn on a given matplotlib axis — notebooks call these."""
from __future__ import annotations

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import seaborn as sns
from matplotlib.ticker import PercentFormatter

from perflib.analysis import TrendResult

PALETTE = {"image": "#4C72B0", "video": "#DD8452"}


def _nothing_to_show(frame: pd.DataFrame, ax: plt.Axes, title: str) -> bool:
    """Say so on the axis when there is no data for a chart."""
    if len(frame):
        return False
    ax.text(0.5, 0.5, "no data in this period", ha="center", transform=ax.transAxes)
    ax.set(title=title)
    ax.set_axis_off()
    return True


def volume_per_day(daily: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Stacked jobs per day, one colour per pipeline."""
    if _nothing_to_show(daily, ax, "Jobs per day"):
        return ax
    table = daily.pivot_table(index="day", columns="pipeline_type", values="job_count",
                              aggfunc="sum").fillna(0)
    table.plot(kind="bar", stacked=True, ax=ax, color=[PALETTE.get(c) for c in table.columns],
               width=0.85)
    ax.set(xlabel="", ylabel="jobs", title="Jobs per day")
    ax.set_xticklabels([pd.Timestamp(d).strftime("%a %d %b") for d in table.index], rotation=45,
                       ha="right")
    return ax


def time_distribution(jobs: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Processing seconds of successful jobs per pipeline and job type (log scale)."""
    done = jobs[jobs.status == "success"]
    if _nothing_to_show(done, ax, "Generation time by job type"):
        return ax
    sns.boxplot(data=done, x="job_type", y="processing_seconds", hue="pipeline_type",
                palette=PALETTE, ax=ax, showfliers=False, log_scale=True)
    ax.set(xlabel="job type", ylabel="processing seconds", title="Generation time by job type")
    return ax


def trend_chart(trend: TrendResult, ax: plt.Axes) -> plt.Axes:
    """Normalised daily time, the STL trend, the regression with its 95% band, change-points."""
    daily = trend.daily
    if _nothing_to_show(daily, ax, f"{trend.pipeline_type}: normalised generation time"):
        return ax
    days = pd.to_datetime(daily.day)
    colour = PALETTE.get(trend.pipeline_type, "grey")
    ax.plot(days, daily.normalised_seconds, "o", color=colour, alpha=0.5, label="daily")
    ax.plot(days, daily.weekly_trend, "-", color=colour, label="trend (STL)")
    if "fitted_seconds" in daily:
        ax.plot(days, daily.fitted_seconds, "--", color="black", lw=1,
                label=f"regression ({trend.direction})")
        ax.fill_between(days, daily.fitted_low, daily.fitted_high, color="grey", alpha=0.2)
    for point in trend.change_points:
        ax.axvline(pd.Timestamp(point.day), color="red", ls=":", lw=1.5)
        ax.annotate(f"{point.change_pct:+.0f}%", (pd.Timestamp(point.day), ax.get_ylim()[1]),
                    color="red", ha="left", va="top")
    ax.set(title=f"{trend.pipeline_type}: normalised generation time", ylabel="seconds")
    ax.legend(loc="upper left", fontsize="small")
    ax.tick_params(axis="x", rotation=30)
    return ax


def queue_by_hour(table: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Mean queue seconds per UTC hour of submission."""
    if _nothing_to_show(table, ax, "Queue time by hour"):
        return ax
    sns.barplot(data=table, x="hour", y="mean_queue_seconds", hue="pipeline_type",
                palette=PALETTE, ax=ax)
    ax.set(xlabel="hour of day (UTC)", ylabel="mean queue seconds", title="Queue time by hour")
    return ax


def predicted_vs_actual(jobs: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Estimates given before jobs ran against their processing time."""
    known = jobs[(jobs.status == "success") & (jobs.predicted_seconds > 0)]
    if _nothing_to_show(known, ax, "Estimated vs actual"):
        return ax
    sns.scatterplot(data=known, x="predicted_seconds", y="processing_seconds",
                    hue="pipeline_type", palette=PALETTE, ax=ax, s=12, alpha=0.5)
    limits = [known[["predicted_seconds", "processing_seconds"]].min().min() * 0.8,
              known[["predicted_seconds", "processing_seconds"]].max().max() * 1.2]
    ax.plot(limits, limits, "k--", lw=1)
    ax.fill_between(limits, np.array(limits) * 0.8, np.array(limits) * 1.2, color="grey",
                    alpha=0.15, label="±20%")
    ax.set(xscale="log", yscale="log", xlabel="estimated seconds", ylabel="actual seconds",
           title="Estimated vs actual")
    return ax


def utilisation(jobs: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """GPU against CPU utilisation per job type: CPU-bound work sits bottom right."""
    if _nothing_to_show(jobs.dropna(subset=["cpu_avg_pct", "gpu_util_avg_pct"]), ax,
                        "GPU vs CPU utilisation"):
        return ax
    sns.scatterplot(data=jobs, x="cpu_avg_pct", y="gpu_util_avg_pct", hue="job_type",
                    style="pipeline_type", ax=ax, s=12, alpha=0.5)
    ax.set(xlabel="CPU %", ylabel="GPU utilisation %", title="GPU vs CPU utilisation")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def phase_shares(shares: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Stacked share of phase time per job type."""
    if _nothing_to_show(shares, ax, "Where job time goes"):
        return ax
    table = shares.pivot_table(index=["pipeline_type", "job_type"], columns="phase",
                               values="share", aggfunc="sum").fillna(0)
    table.plot(kind="barh", stacked=True, ax=ax, width=0.8)
    ax.set(xlabel="share of phase time", ylabel="", title="Where job time goes")
    return ax


def backtest_over_time(estimates: pd.DataFrame, axes, window: int = 30) -> None:
    """A backtest's estimates job by job in submission order: the rolling share within ±20%
    and ±10% (left), and the rolling 80%-interval coverage against its target (right)."""
    relative = (estimates.predicted_seconds - estimates.actual_seconds).abs() \
        / estimates.actual_seconds
    inside = (estimates.actual_seconds >= estimates.low_seconds) \
        & (estimates.actual_seconds <= estimates.high_seconds)
    when = pd.to_datetime(estimates.submitted, unit="s", utc=True)
    rolling = pd.DataFrame({"within ±20%": relative <= 0.2, "within ±10%": relative <= 0.1,
                            "interval coverage": inside}).set_index(when).astype(float) \
        .rolling(window, min_periods=max(5, window // 3)).mean()
    rolling[["within ±20%", "within ±10%"]].plot(ax=axes[0])
    axes[0].set(title=f"error over time (last {window} jobs)", xlabel="", ylim=(0, 1.02))
    rolling["interval coverage"].plot(ax=axes[1], color="tab:green")
    for bound in (0.75, 0.8, 0.85):
        axes[1].axhline(bound, color="grey", linestyle="--" if bound != 0.8 else "-",
                        linewidth=0.8)
    axes[1].set(title=f"80% interval coverage (last {window} jobs)", xlabel="", ylim=(0, 1.02))
    for ax in axes:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))


ARM_COLOURS = {"A": "#4C72B0", "B": "#C44E52"}


def comparison_chart(comparison, ax: plt.Axes) -> plt.Axes:
    """An A/B comparison (:class:`perflib.analysis.compare.Comparison`): each compared job's
    actual ÷ expected time against its expected seconds, so the arms sit side by side for the
    same work, with A's level and B's at the ratio found."""
    jobs = comparison.per_job
    title = "Actual ÷ expected time, for the same work"
    if _nothing_to_show(jobs, ax, title):
        return ax
    for arm, summary in (("A", comparison.a), ("B", comparison.b)):
        mine = jobs[jobs.arm == arm]
        ax.scatter(mine.expected_seconds, mine.normalised, s=8, alpha=0.35, linewidths=0,
                   color=ARM_COLOURS[arm], label=f"{arm}: {summary.label} ({len(mine)} jobs)")
    level = comparison.a.normalised_time
    ax.axhline(level, color=ARM_COLOURS["A"], lw=1.5)
    ax.axhline(level * comparison.ratio, color=ARM_COLOURS["B"], lw=1.5, ls="--",
               label=f"B ÷ A = {comparison.ratio:.3f} ({comparison.ratio_low:.3f}–"
                     f"{comparison.ratio_high:.3f})")
    ax.set(xscale="log", yscale="log", title=title, xlabel="expected seconds (cost model)",
           ylabel="actual ÷ expected")
    ax.legend(loc="upper right", fontsize="small")
    return ax


def backtest_over_time(estimates: pd.DataFrame, axes, window: int = 30) -> None:
    """A backtest's estimates job by job in submission order: the rolling share within ±20%
    and ±10% (left), and the rolling 80%-interval coverage against its target (right)."""
    relative = (estimates.predicted_seconds - estimates.actual_seconds).abs() \
        / estimates.actual_seconds
    inside = (estimates.actual_seconds >= estimates.low_seconds) \
        & (estimates.actual_seconds <= estimates.high_seconds)
    when = pd.to_datetime(estimates.submitted, unit="s", utc=True)
    rolling = pd.DataFrame({"within ±20%": relative <= 0.2, "within ±10%": relative <= 0.1,
                            "interval coverage": inside}).set_index(when).astype(float) \
        .rolling(window, min_periods=max(5, window // 3)).mean()
    rolling[["within ±20%", "within ±10%"]].plot(ax=axes[0])
    axes[0].set(title=f"error over time (last {window} jobs)", xlabel="", ylim=(0, 1.02))
    rolling["interval coverage"].plot(ax=axes[1], color="tab:green")
    for bound in (0.75, 0.8, 0.85):
        axes[1].axhline(bound, color="grey", linestyle="--" if bound != 0.8 else "-",
                        linewidth=0.8)
    axes[1].set(title=f"80% interval coverage (last {window} jobs)", xlabel="", ylim=(0, 1.02))
    for ax in axes:
        ax.yaxis.set_major_formatter(PercentFormatter(1.0))

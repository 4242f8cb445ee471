"""The report's charts, drawn with seaborn on a given matplotlib axis — notebooks call these,
and :func:`show` puts a figure on the page with its one-line caption."""
from __future__ import annotations

import base64
import io

import matplotlib.pyplot as plt
import pandas as pd
import seaborn as sns
from IPython.display import HTML, Markdown, display
from matplotlib.dates import DateFormatter
from matplotlib.ticker import FuncFormatter, PercentFormatter

from perflib.analysis import TrendResult
from perflib.analysis.estimate_accuracy import EstimateCheck
from perflib.prediction.metrics import CLOSE, WITHIN, is_inside, is_within
from perflib.report.presentation import format_change_point, safe_text, top_categories

PALETTE = {"image": "#4C72B0", "video": "#DD8452"}


def _day_axis(ax: plt.Axes) -> None:
    """Dates on the x axis as ``20 Nov``."""
    ax.xaxis.set_major_formatter(DateFormatter("%d %b"))
    ax.tick_params(axis="x", rotation=30)


def _nothing_to_show(frame: pd.DataFrame, ax: plt.Axes, title: str) -> bool:
    """Say so on the axis when there is no data for a chart."""
    if len(frame):
        return False
    ax.text(0.5, 0.5, "no data in this period", ha="center", transform=ax.transAxes)
    ax.set(title=title)
    ax.set_axis_off()
    return True


def show(figure: plt.Figure, caption: str) -> None:
    """Put a finished figure on the page, then its caption: one line on what to look at. The
    caption is also the image's alternative text, for readers who cannot see it."""
    figure.tight_layout()
    display(HTML(figure_html(figure, caption)))
    plt.close(figure)
    display(Markdown(f"*{safe_text(caption)}*"))


def figure_html(figure: plt.Figure, alt: str) -> str:
    """The figure as an inline PNG ``<img>`` with `alt` as its alternative text."""
    png = io.BytesIO()
    figure.savefig(png, format="png", bbox_inches="tight")
    encoded = base64.b64encode(png.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{encoded}" alt="{safe_text(alt)}">'


def volume_per_day(daily: pd.DataFrame, ax: plt.Axes, previous: pd.DataFrame | None = None
                   ) -> plt.Axes:
    """Stacked jobs per day, one colour per pipeline; with `previous` (the period before, per
    day), a black tick on each bar at the count of the same day of that period."""
    if _nothing_to_show(daily, ax, "Jobs per day"):
        return ax
    table = daily.pivot_table(index="day", columns="pipeline_type", values="job_count",
                              aggfunc="sum").fillna(0)
    table.columns.name = "pipeline"
    table.plot(kind="bar", stacked=True, ax=ax, color=[PALETTE.get(c) for c in table.columns],
               width=0.85)
    if previous is not None and len(previous):
        before = previous.groupby("day").job_count.sum()
        offset = pd.Timestamp(table.index[0]) - pd.Timestamp(min(before.index))
        offset = pd.Timedelta(days=round(offset / pd.Timedelta(days=7)) * 7)
        positions = {pd.Timestamp(d): i for i, d in enumerate(table.index)}
        points = [(positions[pd.Timestamp(d) + offset], n) for d, n in before.items()
                  if pd.Timestamp(d) + offset in positions]
        if points:
            ax.scatter(*zip(*points), marker="_", s=500, color="black", zorder=3,
                       label="same day, the period before")
            ax.legend()
    ax.set(xlabel="", ylabel="jobs", title="Jobs per day")
    ax.set_xticklabels([pd.Timestamp(d).strftime("%a %d %b") for d in table.index], rotation=45,
                       ha="right")
    return ax


def time_distribution(jobs: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Processing seconds of successful jobs per pipeline and job type (log scale; the
    MAX_CATEGORIES commonest job types, the rest as "other")."""
    done = jobs[(jobs.status == "success") & (jobs.processing_seconds > 0)]
    if _nothing_to_show(done, ax, "Generation time by job type"):
        return ax
    shown = done.assign(job_type=top_categories(done.job_type))
    sns.boxplot(data=shown.rename(columns={"pipeline_type": "pipeline"}), x="job_type",
                y="processing_seconds", hue="pipeline", palette=PALETTE, ax=ax, showfliers=False,
                log_scale=True)
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
    ax.set(title=f"{trend.pipeline_type.capitalize()}: normalised generation time",
           ylabel="seconds")
    ax.legend(loc="upper left", fontsize="small")
    _day_axis(ax)
    return ax


def trend_caption(trend: TrendResult) -> str:
    """What to look at in :func:`trend_chart`: its dated step changes, or that there are none."""
    name = trend.pipeline_type.capitalize()
    if not trend.change_points:
        return (f"{name}: no step change; the dashed line is the regression "
                f"({trend.direction}) with its 95% band, the solid line the trend without the "
                "weekly rhythm.")
    steps = "; ".join(map(format_change_point, (c.as_dict() for c in trend.change_points)))
    return (f"{name}: red dotted lines mark the step changes ({steps}); the dashed line is the "
            f"regression ({trend.direction}) with its 95% band.")


def queue_by_hour(table: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Mean queue seconds per UTC hour of submission."""
    if _nothing_to_show(table, ax, "Queue time by hour"):
        return ax
    sns.barplot(data=table.rename(columns={"pipeline_type": "pipeline"}), x="hour",
                y="mean_queue_seconds", hue="pipeline", palette=PALETTE, ax=ax)
    ax.set(xlabel="hour of day (UTC)", ylabel="mean queue seconds", title="Queue time by hour")
    return ax


def utilisation(jobs: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """GPU against CPU utilisation per job type (the MAX_CATEGORIES commonest, the rest as
    "other"): CPU-bound work sits bottom right."""
    measured = jobs.dropna(subset=["cpu_avg_pct", "gpu_util_avg_pct"])
    if _nothing_to_show(measured, ax, "GPU vs CPU utilisation"):
        return ax
    shown = measured.assign(job_type=top_categories(measured.job_type))
    sns.scatterplot(data=shown.rename(columns={"job_type": "job type",
                                               "pipeline_type": "pipeline"}),
                    x="cpu_avg_pct", y="gpu_util_avg_pct", hue="job type", style="pipeline",
                    ax=ax, s=12, alpha=0.5)
    ax.set(xlabel="CPU %", ylabel="GPU utilisation %", title="GPU vs CPU utilisation")
    ax.legend(fontsize="x-small", ncol=2)
    return ax


def phase_shares(shares: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Stacked share of phase time per job type (the MAX_CATEGORIES job types and phases with
    the most time, the rest as "other")."""
    if _nothing_to_show(shares, ax, "Where job time goes"):
        return ax
    folded = shares.assign(job_type=top_categories(shares.job_type, shares.seconds),
                           phase=top_categories(shares.phase, shares.seconds))
    seconds = folded.groupby(["pipeline_type", "job_type", "phase"]).seconds.sum()
    table = (seconds / seconds.groupby(level=[0, 1]).transform("sum")).unstack("phase")
    table = table.astype(float).fillna(0)
    table.index = [f"{pipeline} · {job_type}" for pipeline, job_type in table.index]
    table.plot(kind="barh", stacked=True, ax=ax, width=0.8)
    ax.set(xlabel="share of phase time", ylabel="", title="Where job time goes")
    ax.xaxis.set_major_formatter(PercentFormatter(1.0))
    return ax


def gpu_view(gpus: pd.DataFrame, axes) -> None:
    """Per GPU: busy hours, utilisation (time-weighted) and time for the same work against the
    fleet, side by side on three axes, so a slow or idle card stands out. One bar per row of
    `gpus`: :func:`perflib.report.data.busiest_gpus` bounds them."""
    titles = ("Busy time per GPU", "GPU utilisation", "Time for the same work vs the fleet")
    if gpus.empty:
        for ax, title in zip(axes, titles):
            _nothing_to_show(gpus, ax, title)
        return
    names = [f"{_gpu_label(h, i)}\n{n or ''}"
             for h, i, n in zip(gpus.hostname, gpus.gpu_index, gpus.gpu_name)]
    hours = gpus.busy_seconds.astype(float) / 3600  # a measure not recorded draws no bar
    axes[0].barh(names, hours, color="#4C72B0")
    axes[0].set(title=titles[0], xlabel="hours")
    axes[1].barh(names, gpus.gpu_util_pct.astype(float), color="#55A868")
    axes[1].set(title=titles[1], xlim=(0, 100))
    axes[1].xaxis.set_major_formatter(PercentFormatter())
    relative = (gpus.relative_time.astype(float) - 1) * 100
    axes[2].barh(names, relative, color=["#C44E52" if r > 10 else "#8C8C8C" for r in relative])
    axes[2].axvline(0, color="black", lw=1)
    axes[2].set(title=titles[2])
    axes[2].xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+g}%"))
    axes[0].invert_yaxis()  # the y axis is shared: first GPU on top in all three


def estimate_errors(check: EstimateCheck, ax: plt.Axes) -> plt.Axes:
    """How far actual times landed from the estimates given before jobs ran, with the ±20%
    band (errors beyond −100% / +200% are drawn at the edge)."""
    error = check.error * 100
    if _nothing_to_show(error.to_frame(), ax, "Actual against estimate"):
        return ax
    sns.histplot(error.clip(-100, 200), bins=60, ax=ax, color="#4C72B0")
    ax.axvspan(-WITHIN * 100, WITHIN * 100, color="green", alpha=0.1, label="within 20%")
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:+.0f}%"))
    ax.set(title="Actual against estimate", xlabel="actual ÷ estimate − 1", ylabel="jobs")
    ax.legend()
    return ax


def estimates_by_day(check: EstimateCheck, ax: plt.Axes) -> plt.Axes:
    """Per day: the share of stored estimates within 20%, and the share of jobs inside the
    replayed model's 80% interval against its target."""
    daily = check.daily()
    if _nothing_to_show(daily, ax, "Estimates day by day"):
        return ax
    days = pd.to_datetime(daily.day)
    ax.plot(days, daily.within_20_percent * 100, "o-", label="estimates within 20%")
    ax.plot(days, daily.interval_coverage * 100, "s-",
            label="inside the replayed model's 80% interval")
    ax.axhline(80, color="grey", ls="--", lw=1, label="interval target (80%)")
    ax.set(title="Estimates day by day", ylim=(0, 105))
    ax.yaxis.set_major_formatter(PercentFormatter())
    _day_axis(ax)
    ax.legend(loc="lower left", fontsize="small")
    return ax


def time_vs_work(jobs: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Compute seconds of successful jobs against their work units, both on log axes: jobs of
    one GPU and model lie on a line; a cloud above it ran slow for its size."""
    done = jobs[(jobs.status == "success") & (jobs.work_units > 0)
                & (jobs.compute_seconds > 0)]
    if _nothing_to_show(done, ax, "Time against work"):
        return ax
    sns.scatterplot(data=done.rename(columns={"pipeline_type": "pipeline"}), x="work_units",
                    y="compute_seconds", hue="pipeline", palette=PALETTE, ax=ax, s=10,
                    alpha=0.4, linewidth=0)
    ax.set(xscale="log", yscale="log", title="Time against work",
           xlabel="work units (latent tokens × frames × steps × CFG)",
           ylabel="seconds (without model loading)")
    return ax


def gpu_speed(speed: pd.DataFrame, ax: plt.Axes) -> plt.Axes:
    """Median seconds per million work units per GPU and pipeline (from
    :func:`perflib.report.explore.gpu_speed`): a longer bar is a slower card for the same work."""
    if _nothing_to_show(speed, ax, "Seconds per million work units, by GPU"):
        return ax
    gpus = pd.Series([f"{_gpu_label(h, i)} · {n or '?'}" for h, i, n
                      in zip(speed.hostname, speed.gpu_index, speed.gpu_name)], index=speed.index)
    table = speed.assign(gpu=top_categories(gpus))
    sns.barplot(data=table.rename(columns={"pipeline_type": "pipeline"}), y="gpu",
                x="median_seconds_per_mwu", hue="pipeline", palette=PALETTE, ax=ax)
    ax.set(xlabel="median seconds per million work units", ylabel="",
           title="Seconds per million work units, by GPU")
    return ax


def _gpu_label(hostname, index) -> str:
    """``render-01 / 0``: a GPU by host and index (``?`` for what was not recorded)."""
    return f"{hostname or '?'} / {'?' if pd.isna(index) else int(index)}"


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
    actual, predicted = estimates.actual_seconds, estimates.predicted_seconds
    inside = is_inside(actual, estimates.low_seconds, estimates.high_seconds)
    when = pd.to_datetime(estimates.submitted, unit="s", utc=True)
    rolling = pd.DataFrame({"within ±20%": is_within(actual, predicted),
                            "within ±10%": is_within(actual, predicted, CLOSE),
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


def wait_heatmap(hours: pd.DataFrame, column: str, ax: plt.Axes, target_seconds: float,
                 title: str) -> plt.Axes:
    """p95 queue wait per weekday × hour of a capacity plan's hours; the colour saturates at
    four times the target, so the hours over it stand out whatever the worst one is."""
    grid = hours.pivot(index="weekday", columns="hour", values=column)
    grid = grid.reindex(hours.weekday.drop_duplicates())
    sns.heatmap(grid, ax=ax, cmap="rocket_r", vmin=0, vmax=4 * target_seconds,
                cbar_kws={"label": f"p95 wait, s (target {target_seconds:g} s)"})
    ax.set(title=title, xlabel="hour of day (UTC)", ylabel="")
    return ax

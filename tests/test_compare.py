"""A/B comparison of settings: arms assigned by job id, tags stored from every way in, and a
comparison that finds a planted slowdown however differently the arms' jobs are mixed."""
from __future__ import annotations

import csv
import json
import math
import warnings
from datetime import datetime, timedelta, timezone

import numpy as np
import pytest

from perflib import track_generation_job, track_performance
from perflib.analysis.ab import assign
from perflib.analysis.arms import SelectionError, TooFewJobs
from perflib.analysis.compare import compare_settings, report_section
from perflib.analysis.stratified import stratified_shift, trimmed_mean_variance, van_elteren_p
from perflib.cli import main
from perflib.prediction.work_terms import stored_terms
from perflib.serve import create_app
from perflib.sim.simulate import generate_jobs
from perflib.store import Store, flush_all
from perflib.store.importer import import_jobs
from tests.conftest import row_counts

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's notice about httpx
    from fastapi.testclient import TestClient

API = "/api/anime/performance"
SLOWDOWN = 1.07
END = datetime(2025, 3, 3, tzinfo=timezone.utc)
MIDDLE = END - timedelta(days=7)


# -- simulated history with a planted slowdown --------------------------------------------------
def slowed(record: dict, factor: float) -> dict:
    """`record` with its processing (model load included) `factor` times longer."""
    extra = record["processing_seconds"] * (factor - 1)
    return {**record, "processing_seconds": record["processing_seconds"] + extra,
            "init_seconds": record["init_seconds"] * factor,
            "total_seconds": record["total_seconds"] + extra,
            "finished_at": record["finished_at"] + timedelta(seconds=extra)}


@pytest.fixture(scope="module")
def history() -> list[dict]:
    """Two simulated weeks on two GPUs, each job with its work units."""
    records = list(generate_jobs(weeks=2, gpus=2, seed=3, end=END))
    for record, terms in zip(records, stored_terms(records, {})):
        record["work"] = terms["work_units"]
    return records


def ab_history(history: list[dict], factor: float) -> list[dict]:
    """Jobs split into arms euler / dpmpp by job id, bigger jobs mostly to dpmpp (4 to 1), and
    dpmpp's jobs `factor` times slower."""
    big = np.median([record["work"] for record in history])
    jobs = []
    for record in history:
        weights = [0.2, 0.8] if record["work"] > big else [0.8, 0.2]
        arm = assign(record["job_id"], ["euler", "dpmpp"], weights)
        record = {key: value for key, value in record.items() if key != "work"}
        jobs.append({**(slowed(record, factor) if arm == "dpmpp" else record),
                     "tags": {"ab": arm}})
    return jobs


@pytest.fixture(scope="module")
def ab_url(history, tmp_path_factory) -> str:
    url = f"sqlite:///{tmp_path_factory.mktemp('ab') / 'ab.db'}"
    Store(url).write_jobs(ab_history(history, SLOWDOWN))
    return url


# -- arms by job id ---------------------------------------------------------------------------
def test_assign_is_deterministic_per_job_id_and_even():
    ids = [f"job-{n}" for n in range(20_000)]
    arms = [assign(job_id, ["euler", "dpmpp"]) for job_id in ids]
    assert arms == [assign(job_id, ("euler", "dpmpp")) for job_id in ids]
    assert abs(arms.count("euler") / len(ids) - 0.5) < 0.015
    other = [assign(job_id, ["euler", "dpmpp"], experiment="scheduler") for job_id in ids]
    agreement = np.mean([x == y for x, y in zip(arms, other)])
    assert abs(agreement - 0.5) < 0.02  # another experiment splits independently


def test_assign_honours_weights():
    ids = [f"job-{n}" for n in range(20_000)]
    arms = [assign(job_id, ["a", "b", "c"], weights=[1, 3, 0]) for job_id in ids]
    assert abs(arms.count("b") / len(ids) - 0.75) < 0.015
    assert "c" not in arms
    assert assign("x", ["a", "b"], weights=[0, 1]) == "b"
    assert assign("x", ["only"]) == "only"


@pytest.mark.parametrize("arms, weights, named", [
    ([], None, "arms"), (["a", "a"], None, "arms"), (["a", ""], None, "arms"),
    (["a", "b"], [1], "weights"), (["a", "b"], [1, -1], "weights"),
    (["a", "b"], [0, 0], "weights"), (["a", "b"], [1, float("nan")], "weights"),
    (["a", "b"], [True, 1], "weights")])
def test_assign_refuses_bad_arms_and_weights(arms, weights, named):
    with pytest.raises(ValueError, match=named):
        assign("job-1", arms, weights)
    with pytest.raises(ValueError, match="job_id"):
        assign("", ["a", "b"])


# -- tags, from every way in --------------------------------------------------------------------
def _tags(store: Store) -> dict:
    frame = store.jobs_frame()
    return dict(zip(frame.job_id, frame.tags))


def test_tracker_stores_tags(store):
    with track_generation_job("tagged", "image", {"resolution": "512x512", "steps": 20},
                              db=store, tags={"ab": "dpmpp"}):
        pass

    @track_performance("image", db=store, tags={"ab": "euler", "driver": "550.54"})
    def generate(job_id, resolution="512x512", steps=20):
        return job_id

    generate("decorated")
    with track_generation_job("bad-tags", "image", {"resolution": "512x512", "steps": 20},
                              db=store, tags={"ab": 3}):
        pass
    flush_all()
    tags = _tags(store)
    assert tags["tagged"] == {"ab": "dpmpp"}
    assert tags["decorated"] == {"ab": "euler", "driver": "550.54"}
    # A bad tag never loses the job: it is kept with the reason.
    assert tags["bad-tags"] is None
    frame = store.jobs_frame()
    invalid = frame[frame.job_id == "bad-tags"].extra_params.iloc[0]["invalid_fields"]["tags"]
    assert "string" in invalid["error"]


def test_record_metrics_and_import_take_tags(sqlite_url, settings, tmp_path):
    record = {"job_id": "posted", "pipeline_type": "image", "status": "success",
              "resolution": "512x512", "steps": 20, "started_at": "2025-01-06T10:00:00Z",
              "total_seconds": 4.0, "tags": {"ab": "dpmpp"}}
    with TestClient(base_url="http://127.0.0.1", app=create_app(sqlite_url, settings)) as client:
        assert client.post(f"{API}/record-metrics", json=record).status_code == 200
        refused = client.post(f"{API}/record-metrics",
                              json={**record, "job_id": "refused", "tags": {"ab": ["x"]}})
    assert refused.status_code == 422 and "tags" in json.dumps(refused.json()["detail"])
    path = tmp_path / "jobs.csv"
    columns = ["job_id", "pipeline_type", "job_type", "status", "resolution", "frame_count",
               "steps", "batch_size", "guidance_scale", "sampler", "model_name", "gpu_name",
               "started_at", "finished_at", "total_seconds", "tags"]
    with open(path, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(columns)
        writer.writerow(["imported", "image", "character", "success", "512x512", 1, 20, 1, 7.5,
                         "euler", "sd15", "gpu", "2025-01-06T10:00:00Z", "", 4.0,
                         '{"ab": "euler"}'])
        writer.writerow(["broken", "image", "character", "success", "512x512", 1, 20, 1, 7.5,
                         "euler", "sd15", "gpu", "2025-01-06T10:00:00Z", "", 4.0, "{ab"])
    store = Store(sqlite_url, settings)
    report = import_jobs(path, store)
    assert [error.field for error in report.errors] == ["tags"]
    assert _tags(store) == {"posted": {"ab": "dpmpp"}, "imported": {"ab": "euler"}}


# -- the comparison -------------------------------------------------------------------------------
@pytest.mark.parametrize("database", ["sqlite", pytest.param("postgres",
                                                             marks=pytest.mark.postgres)])
def test_planted_slowdown_is_found_for_the_same_work_where_mean_seconds_mislead(
        database, history, ab_url, request):
    url = ab_url
    if database == "postgres":
        url = request.getfixturevalue("pg_url")
        Store(url).write_jobs(ab_history(history, SLOWDOWN))
    result = compare_settings(Store(url), "tag:ab=euler", "tag:ab=dpmpp", days=30)
    assert result.b.median_work_units > 3 * result.a.median_work_units  # the mixes differ
    assert abs(result.change - (SLOWDOWN - 1)) <= 0.02
    assert result.ratio_low <= SLOWDOWN <= result.ratio_high
    assert result.significant and "slower" in result.verdict()
    assert abs(result.naive_ratio - SLOWDOWN) > 0.5  # mean seconds compare the job mixes
    assert result.a.jobs + result.b.jobs + result.excluded_jobs > 2000
    assert 0 < result.detectable_change < 0.05 and result.power_at_reference > 0.8
    assert result.jobs_per_arm_for_target > 0


def test_no_slowdown_is_no_difference(history, tmp_path):
    store = Store(f"sqlite:///{tmp_path / 'null.db'}")
    store.write_jobs(ab_history(history, 1.0))
    result = compare_settings(store, "tag:ab=euler", "tag:ab=dpmpp", days=30)
    assert abs(result.change) < 0.02
    assert result.ratio_low < 1.0 + 0.02 and result.ratio_high > 1.0 - 0.02
    assert abs(result.naive_ratio - 1) > 0.5


def test_before_and_after_a_date(history, tmp_path):
    """A driver update on MIDDLE made everything 7% slower; after it, small jobs got rarer."""
    later = [record for record in history if record["started_at"] >= MIDDLE]
    small = np.quantile([record["work"] for record in later], 0.5)
    jobs = [{key: value for key, value in record.items() if key != "work"}
            for record in history
            if record["started_at"] < MIDDLE or record["work"] > small
            or assign(record["job_id"], ["kept", "dropped"]) == "kept"]
    jobs = [slowed(job, SLOWDOWN) if job["started_at"] >= MIDDLE else job for job in jobs]
    store = Store(f"sqlite:///{tmp_path / 'driver.db'}")
    store.write_jobs(jobs)
    result = compare_settings(store, before=MIDDLE.isoformat(), pipeline_type="video")
    assert abs(result.change - (SLOWDOWN - 1)) <= 0.02
    assert result.a.label.startswith("before") and result.b.label.startswith("from")


def test_arms_that_differ_by_model_share_one_cost_model(ab_url):
    """Without pooling, each model's own cost model would make every ratio 1."""
    result = compare_settings(Store(ab_url), "model_name=sdxl-base", "model_name=anything-v5",
                              days=30)
    assert result.ratio < 0.85 and result.significant  # the SD1.5-class model is lighter
    assert any("model_name" in note for note in result.notes)


def test_power_statement_holds_by_simulation():
    """At the smallest change said to be detected with 80% probability, and at the jobs per
    arm said to detect 5%, about 80% of repeated experiments detect it (p < 0.05)."""
    rng = np.random.default_rng(0)
    sizes = (60, 80, 40)
    spread = 0.1

    def arms(shift, scale=1.0):
        counts = [round(n * scale) for n in sizes]
        return ([rng.normal(0, spread, n) for n in counts],
                [rng.normal(shift, spread, n) for n in counts])

    first = stratified_shift(*arms(0.0))
    detectable = first.detectable()
    detected = [van_elteren_p(*arms(detectable)) < 0.05 for _ in range(400)]
    assert 0.72 <= np.mean(detected) <= 0.88
    needed = first.jobs_per_arm(math.log1p(0.05))
    scale = needed / sum(sizes)
    detected = [van_elteren_p(*arms(math.log1p(0.05), scale)) < 0.05 for _ in range(400)]
    assert 0.72 <= np.mean(detected) <= 0.88
    assert trimmed_mean_variance(np.ones(5)) == 0.0


def test_identical_jobs_compare_as_equal(sqlite_url):
    """Every job alike (one size, one time): one stratum, ratio 1, an interval of width 0."""
    started = datetime(2025, 1, 6, tzinfo=timezone.utc)
    Store(sqlite_url).write_jobs([
        {"job_id": f"same-{n}", "pipeline_type": "image", "status": "success",
         "width": 512, "height": 512, "steps": 20, "sampler": "euler" if n % 2 else "ddim",
         "started_at": started + timedelta(minutes=n), "total_seconds": 5.0}
        for n in range(60)])
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        result = compare_settings(Store(sqlite_url), "sampler=euler", "sampler=ddim")
    assert result.strata == 1 and result.ratio == pytest.approx(1.0)
    assert (result.ratio_low, result.ratio_high) == pytest.approx((1.0, 1.0))
    assert not result.significant and result.power_at_reference == 1.0


# -- bad selections, and how each way in says so ---------------------------------------------
@pytest.mark.parametrize("a, b, field, words", [
    ("nonsense", "sampler=euler", "a", "nonsense"),
    ("sampler=euler", "steps=many", "b", "steps"),
    ("colour=red", "sampler=euler", "a", "colour"),
    ("resolution=big", "sampler=euler", "a", "resolution"),
    ("sampler=euler", "sampler=euler", "b", "both arms"),
    ("sampler=no-such-sampler", "sampler=euler", "a", "0 successful jobs")])
def test_bad_selections_name_the_argument(ab_url, a, b, field, words):
    with pytest.raises(SelectionError) as caught:
        compare_settings(Store(ab_url), a, b)
    assert caught.value.field == field and words in str(caught.value)


def test_an_empty_database_has_too_few_jobs(sqlite_url):
    with pytest.raises(TooFewJobs, match="a: 0 successful jobs"):
        compare_settings(Store(sqlite_url), "sampler=euler", "sampler=dpmpp_2m")
    assert "No comparison" in report_section(Store(sqlite_url), "sampler=euler",
                                             "sampler=dpmpp_2m")


def test_cli_compares_and_names_a_bad_selector(ab_url, capsys):
    assert main(["--database-url", ab_url, "compare", "--a", "tag:ab=euler",
                 "--b", "tag:ab=dpmpp", "--days", "30", "--json"]) == 0
    answer = json.loads(capsys.readouterr().out)
    assert abs(answer["change"] - (SLOWDOWN - 1)) <= 0.02 and answer["significant"]
    assert "to detect 2% you need about" in answer["power_statement"]
    assert main(["--database-url", ab_url, "compare", "--a", "tag:ab=euler",
                 "--b", "tag:ab=dpmpp"]) == 0
    assert "slower than A (tag:ab=euler) for the same work" in capsys.readouterr().out
    assert main(["--database-url", ab_url, "compare", "--a", "nonsense",
                 "--b", "sampler=euler"]) == 2
    error = capsys.readouterr().err
    assert error.startswith("perflib compare: a: 'nonsense' is not FIELD=VALUE")
    assert main(["--database-url", ab_url, "compare", "--a", "tag:ab=euler",
                 "--b", "tag:ab=dpmpp", "--end-date", "2025-02-30"]) == 2
    assert capsys.readouterr().err.startswith("perflib compare: end: '2025-02-30' is not")


def test_get_compare_answers_reads_only_and_names_bad_selectors(ab_url, settings):
    store = Store(ab_url)
    before = row_counts(store)
    with TestClient(base_url="http://127.0.0.1", app=create_app(ab_url, settings)) as client:
        answer = client.get(f"{API}/compare", params={"a": "tag:ab=euler", "b": "tag:ab=dpmpp",
                                                      "days_back": 30})
        bad = client.get(f"{API}/compare", params={"a": "nonsense", "b": "sampler=euler"})
        overlap = client.get(f"{API}/compare", params={"a": "sampler=euler",
                                                       "b": "sampler=euler"})
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert abs(body["change"] - (SLOWDOWN - 1)) <= 0.02 and body["a"]["label"] == "tag:ab=euler"
    assert bad.status_code == 422 and bad.json()["detail"][0]["loc"] == ["query", "a"]
    assert overlap.status_code == 422 and overlap.json()["detail"][0]["loc"] == ["query", "b"]
    assert row_counts(store) == before


def test_report_section_says_the_verdict(ab_url):
    section = report_section(Store(ab_url), "tag:ab=euler", "tag:ab=dpmpp", days=30)
    assert section.startswith("### A/B comparison: tag:ab=euler vs tag:ab=dpmpp")
    assert "slower than A" in section and "jobs per arm" in section

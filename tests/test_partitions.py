"""Day partitions of the job tables on PostgreSQL: creation, writes, retention, migration, many
writers (perflib.store.partitions, perflib.store.migration, perflib.ops.retention)."""
from __future__ import annotations

import os
import threading
from datetime import date, datetime, timedelta, timezone

import pytest
import sqlalchemy as sa

from perflib.cli import main as cli_main
from perflib.ops.maintenance import maintain
from perflib.store import Store, partitions, schema
from perflib.store.engine import engine_for
from perflib.store.migration import migrate
from perflib.store.migrations import baseline
from tools.loadtest import many_writers


NOW = datetime(2026, 11, 30, 12, 0, tzinfo=timezone.utc)


def job(job_id: str, started_at: datetime | None, status: str = "success", **extra) -> dict:
    return {"job_id": job_id, "pipeline_type": "image", "status": status, "width": 512,
            "height": 512, "steps": 20, "started_at": started_at,
            "submitted_at": started_at or NOW, "total_seconds": 3.0,
            "phases": [{"seq": 0, "name": "denoise", "seconds": 2.0}],
            "samples": [{"seq": 0, "sampled_at": started_at or NOW, "cpu_pct": 50.0}], **extra}


def placed(store: Store, table: str = "generation_performance") -> dict[str, list[str]]:
    """job_id → the partitions its rows sit in."""
    with store.engine.connect() as conn:
        rows = conn.execute(sa.text(f"SELECT tableoid::regclass::text, job_id "
                                    f"FROM {partitions.qualified(conn, table)}")).all()
    found: dict[str, list[str]] = {}
    for partition, job_id in rows:
        found.setdefault(job_id, []).append(partition.split(".")[-1])
    return found


def day_partitions(store: Store, table: str = "generation_performance") -> set[date]:
    with store.engine.connect() as conn:
        return {p.start.date() for p in partitions.list_partitions(conn, table) if p.start}


def old_schema_store(url: str) -> Store:
    """A store whose tables were made the way perflib made them before partitioning (the
    schema Alembic took over, revision 0001's), brought to head by perflib init-db (which
    leaves them unpartitioned)."""
    store = Store(url)
    with engine_for(store.url, store.config.db_schema).begin() as conn:
        conn.execute(sa.text(f'CREATE SCHEMA "{store.config.db_schema}"'))
        baseline.metadata.create_all(conn, tables=[
            table for table in baseline.metadata.sorted_tables if table is not baseline.schema_info])
    store.init_db()
    return store


def test_known_partitions_are_per_engine_and_forgotten_in_a_forked_child():
    """What a process knows of an engine's partitions: its own per engine, forgotten on
    request, and none in a forked child (whose parent may hold the registry's lock)."""
    engine, other = sa.create_engine("sqlite://"), sa.create_engine("sqlite://")
    partitions._known_days(engine).add(("generation_performance", NOW.date()))
    assert partitions._known_days(engine) == {("generation_performance", NOW.date())}
    assert partitions._known_days(other) == set()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child reports what it knows of the engine's partitions
        os.write(write, str(len(partitions._known_days(engine))).encode())
        os._exit(0)
    os.close(write)
    assert os.read(read, 16) == b"0"
    os.waitpid(pid, 0)
    partitions.forget_known(engine)
    assert partitions._known_days(engine) == set()


@pytest.mark.postgres
def test_new_database_is_partitioned_and_a_write_makes_its_days(pg_url):
    store = Store(pg_url)
    store.init_db()
    assert store.is_partitioned
    assert day_partitions(store) == set()  # only the DEFAULT until a day is written
    past = datetime(2001, 3, 4, 5, tzinfo=timezone.utc)
    future = datetime(2150, 6, 1, tzinfo=timezone.utc)
    assert store.write_jobs([job("now", NOW), job("past", past), job("future", future),
                             job("queued", None, status="queued")]) == 4
    assert {NOW.date(), past.date(), future.date()} <= day_partitions(store)
    where = placed(store)
    assert where["past"] == ["generation_performance_p20010304"]
    assert where["future"] == ["generation_performance_p21500601"]
    assert where["queued"] == ["generation_performance_default"]
    assert placed(store, "generation_phases")["past"] == ["generation_phases_p20010304"]
    assert placed(store, "resource_samples")["now"] == ["resource_samples_p20261130"]


@pytest.mark.postgres
def test_rows_in_default_move_when_their_day_gets_a_partition(pg_url):
    """A writer that believed the day existed put the row in DEFAULT; creating the day moves it."""
    store = Store(pg_url)
    store.init_db()
    partitions._known_days(store.engine).update((name, NOW.date()) for name in partitions.TABLES)
    store.write_jobs([job("stray", NOW)])
    assert placed(store)["stray"] == ["generation_performance_default"]
    partitions.forget_known(store.engine)
    assert partitions.ensure_partitions(store.engine, [NOW.date()]) == 3
    assert placed(store)["stray"] == ["generation_performance_p20261130"]
    assert placed(store, "generation_phases")["stray"] == ["generation_phases_p20261130"]


@pytest.mark.postgres
def test_a_job_written_twice_is_stored_once(pg_url):
    store = Store(pg_url)
    records = [job(f"j{n}", NOW - timedelta(days=n)) for n in range(4)]
    assert store.write_jobs(records + [records[0]]) == 4
    assert store.write_jobs(records) == 0
    # the same job again with another start time (a retried record): still the stored one
    assert store.write_jobs([job("j1", NOW - timedelta(days=1, minutes=30))]) == 0
    # a late report that the job is queued, hours after it started in another day's partition
    assert store.write_jobs([job("j2", None, status="queued",
                                 submitted_at=NOW - timedelta(days=2, hours=5))],
                            replace_live=True) == 0
    assert store.count() == 4
    assert store.count(schema.generation_phases) == 4
    assert store.count(schema.resource_samples) == 4


@pytest.mark.postgres
def test_replace_live_moves_a_job_from_default_to_its_day(pg_url):
    store = Store(pg_url)
    store.write_jobs([job("live", None, status="queued")], replace_live=True)
    assert placed(store)["live"] == ["generation_performance_default"]
    store.write_jobs([job("live", NOW - timedelta(minutes=1), status="running")],
                     replace_live=True)
    store.write_jobs([job("live", NOW - timedelta(minutes=1))], replace_live=True)
    assert placed(store)["live"] == ["generation_performance_p20261130"]
    assert placed(store, "generation_phases")["live"] == ["generation_phases_p20261130"]
    assert store.count(schema.generation_phases) == 1
    assert store.jobs_frame().status.tolist() == ["success"]
    # a finished job is never replaced
    store.write_jobs([job("live", NOW, status="running")], replace_live=True)
    assert store.jobs_frame().status.tolist() == ["success"]


@pytest.mark.postgres
def test_two_writers_replacing_one_live_job_store_it_once(pg_url):
    """Each round, two threads report the same job at once with different start times."""
    store = Store(pg_url)
    store.init_db()
    rounds = 30
    barrier = threading.Barrier(2)

    def report(offset_minutes: int) -> None:
        for n in range(rounds):
            barrier.wait(10)
            store.write_jobs([job(f"race{n}", NOW + timedelta(minutes=offset_minutes),
                                  status="running")], replace_live=True)

    threads = [threading.Thread(target=report, args=(offset,)) for offset in (0, 5)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert sorted(placed(store)) == sorted(f"race{n}" for n in range(rounds))
    assert all(len(where) == 1 for where in placed(store).values())
    assert store.count(schema.generation_phases) == rounds


@pytest.mark.postgres
def test_retention_drops_whole_days_and_leaves_kept_days_untouched(pg_url):
    store = Store(pg_url)
    cutoff = NOW - timedelta(days=90)  # 2026-09-01 12:00
    old = [job(f"old{d}-{n}", cutoff - timedelta(days=d, hours=n)) for d in (1, 2, 3)
           for n in range(3)]
    straddling = [job("same-day-before", cutoff - timedelta(hours=2)),
                  job("same-day-after", cutoff + timedelta(hours=2))]
    kept = [job(f"kept{d}", NOW - timedelta(days=d)) for d in range(0, 80, 10)]
    lost = job("never-started", None, status="queued", submitted_at=cutoff - timedelta(days=5))
    store.write_jobs(old + straddling + kept + [lost])
    kept_days = {record["started_at"].date() for record in kept}
    before = {day: rows for day, rows in _rows_per_day(store).items() if day in kept_days}

    plan = maintain(store, 90, dry_run=True, now=NOW)
    assert (plan.jobs, plan.phases, plan.samples) == (11, 11, 11)  # 9 + 1 + 1 never started
    assert plan.retention.whole_partitions == 3 * 3  # three old days of three tables
    assert "day partitions go whole" in plan.describe() and not plan.retention.estimated
    with store.engine.begin() as conn:  # analysed: whole partitions are counted from estimates
        conn.execute(sa.text(f"ANALYZE {partitions.qualified(conn, 'generation_performance')}"))
    plan = maintain(store, 90, dry_run=True, now=NOW)
    assert plan.retention.estimated and "about 11 jobs" in plan.describe()
    assert (plan.jobs, plan.phases, plan.samples) == (11, 11, 11)
    assert len(placed(store)) == 20  # a dry run deletes nothing

    maintain(store, 90, now=NOW)
    assert not any(day < cutoff.date() for day in day_partitions(store))
    assert not any(day < cutoff.date() for day in day_partitions(store, "resource_samples"))
    assert set(placed(store)) == {"same-day-after", *(r["job_id"] for r in kept)}
    assert set(placed(store, "generation_phases")) == set(placed(store))
    assert {day: rows for day, rows in _rows_per_day(store).items() if day in kept_days} == before
    ahead = {NOW.date() + timedelta(days=n) for n in range(partitions.AHEAD_DAYS + 1)}
    assert ahead <= day_partitions(store) and ahead <= day_partitions(store, "generation_phases")


@pytest.mark.postgres
def test_retention_does_not_wait_behind_a_long_reader(pg_url, monkeypatch):
    """A report holding the job table would keep DETACH waiting, and every writer behind it:
    maintain gives up after brief waits and leaves those days for its next run."""
    monkeypatch.setattr(partitions, "LOCK_WAIT", "100ms")
    monkeypatch.setattr(partitions, "RETRY_PAUSE_S", 0.05)
    store = Store(pg_url)
    store.write_jobs([job("old", NOW - timedelta(days=100)), job("new", NOW)])
    plans = []
    with store.engine.connect() as reader:
        reader.execute(sa.text("LOCK TABLE " + partitions.qualified(
            reader, "generation_performance") + " IN ACCESS SHARE MODE"))
        # writes of days without a partition cannot make one now: their rows land in DEFAULT
        later, long_ago = NOW + timedelta(days=20), NOW - timedelta(days=120)
        store.write_jobs([job("later", later), job("long-ago", long_ago)])
        assert placed(store)["later"] == ["generation_performance_default"]
        run = threading.Thread(target=lambda: plans.append(maintain(store, 90, now=NOW)))
        run.start()
        run.join(30)
        reader.rollback()
    run.join(30)
    assert plans and plans[0].retention.partitions_left == 3
    assert "left for the next run" in plans[0].describe()
    assert set(placed(store)) == {"old", "new", "later"}  # long-ago was past retention
    assert maintain(store, 90, now=NOW).retention.partitions_left == 0
    assert set(placed(store)) == {"new", "later"}
    assert placed(store)["later"] == [f"generation_performance_p{later:%Y%m%d}"]
    assert placed(store, "generation_phases")["later"] == [f"generation_phases_p{later:%Y%m%d}"]


def _rows_per_day(store: Store) -> dict[date, int]:
    with store.engine.connect() as conn:
        return {p.start.date(): conn.execute(sa.text(
            f"SELECT count(*) FROM {partitions.qualified(conn, p.name)}")).scalar_one()
            for p in partitions.list_partitions(conn, "generation_performance") if p.start}


@pytest.mark.postgres
def test_an_unpartitioned_database_keeps_working_and_is_told_of_the_migration(pg_url, capsys):
    store = old_schema_store(pg_url)
    assert not store.is_partitioned
    assert store.write_jobs([job("a", NOW), job("a", NOW)]) == 1
    assert "perflib migrate-partitions" in maintain(store, 90, dry_run=True, now=NOW).describe()
    assert cli_main(["--database-url", pg_url, "migrate-partitions"]) == 0
    assert "partitioned the job tables by day" in capsys.readouterr().out
    assert cli_main(["--database-url", pg_url, "migrate-partitions"]) == 0
    assert "already partitioned" in capsys.readouterr().out


@pytest.mark.postgres
def test_a_copy_that_meets_a_stored_job_is_written_again_without_it(pg_url):
    """Unpartitioned tables take the batch by COPY; a stored job makes the COPY fail, and the
    whole batch is written again through a staging table: the new job lands with its phase and
    sample, the stored one keeps its own, none twice."""
    store = old_schema_store(pg_url)
    assert store.write_jobs([job("a", NOW)]) == 1
    assert store.write_jobs([job("a", NOW, total_seconds=9.0), job("b", NOW)]) == 1
    assert sorted(store.jobs_frame().job_id) == ["a", "b"]
    assert store.jobs_frame().set_index("job_id").total_seconds["a"] == 3.0
    assert store.count(schema.generation_phases) == 2
    assert store.count(schema.resource_samples) == 2


def test_sqlite_has_nothing_to_migrate(sqlite_url, capsys):
    assert cli_main(["--database-url", sqlite_url, "migrate-partitions"]) == 0
    assert "nothing to migrate" in capsys.readouterr().out
    assert not Store(sqlite_url).is_partitioned


@pytest.mark.postgres
def test_migration_keeps_every_row_including_those_written_meanwhile(pg_url):
    store = old_schema_store(pg_url)
    history = [job(f"h{n}", NOW - timedelta(days=n % 20, minutes=n)) for n in range(300)]
    history.append(job("queued", None, status="queued"))
    store.write_jobs(history)
    # a row from before job_started_at existed: the migration fills it from its job
    with store.engine.begin() as conn:
        conn.execute(sa.update(schema.generation_phases).where(
            schema.generation_phases.c.job_id == "h7").values(job_started_at=None))

    written, stop = [], threading.Event()

    def keep_writing():
        n = 0
        while not stop.is_set() or n < 20:
            record = job(f"during{n}", NOW - timedelta(minutes=n))
            store.write_jobs([record])
            written.append(record["job_id"])
            n += 1

    writer = threading.Thread(target=keep_writing)
    writer.start()
    try:
        result = migrate(store.engine)
    finally:
        stop.set()
        writer.join(60)
    assert not result.already_partitioned
    assert result.rows["generation_performance"] >= 301
    assert store.is_partitioned
    where = placed(store)
    assert set(where) == {r["job_id"] for r in history} | set(written)
    assert all(len(found) == 1 for found in where.values())
    assert where["queued"] == ["generation_performance_default"]
    assert where["h7"] == [f"generation_performance_p{history[7]['started_at']:%Y%m%d}"]
    assert placed(store, "generation_phases")["h7"] == [
        f"generation_phases_p{history[7]['started_at']:%Y%m%d}"]
    assert store.count(schema.generation_phases) == len(where)
    with store.engine.connect() as conn:
        kept = conn.execute(sa.text("SELECT count(*) FROM " + partitions.qualified(
            conn, "generation_performance" + partitions.UNPARTITIONED_SUFFIX))).scalar_one()
    assert kept >= 301  # the old table stays until someone drops it

    assert migrate(store.engine).already_partitioned  # idempotent
    assert store.write_jobs([job("h3", history[3]["started_at"]), job("after", NOW)]) == 1
    assert Store(pg_url).init_db() and Store(pg_url).is_partitioned


@pytest.mark.postgres
def test_many_writers_lose_no_row(pg_url, tmp_path):
    result = many_writers(pg_url, processes=16, hosts=4, seconds=3, spool_dir=tmp_path)
    assert result["rows_expected"] > 16 * 10
    assert result["rows_found"] == result["rows_expected"]
    assert result["spooled"] == 0
    assert result["batches"] > 0 and result["batch_p99_ms"] >= result["batch_p50_ms"]
    hosts = Store(pg_url).frame(sa.select(schema.generation_performance.c.hostname).distinct())
    assert set(hosts.hostname) == {f"sim-host-{h:02d}" for h in range(4)}

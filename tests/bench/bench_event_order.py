"""The prototype behind issue 15's choice of event ordering: three ways to give event rows a
gap-free, commit-ordered `seq`, under the same load, interleaved round by round (not collected by
pytest; run `python tests/bench/bench_event_order.py [threads seconds think_ms rounds]`).

- `lock`: the old way: `pg_advisory_xact_lock` before the event insert, then the application's
  remaining work, then COMMIT (the lock spans the application's round trips and its CPU waits);
- `trigger`: the chosen way: a provisional negative seq, numbered during COMMIT by a deferred
  constraint trigger that takes the lock (as migration assignments/0008);
- `xid`: the high-water-mark sequencer of event stores and outbox relays: writers insert with
  `pg_current_xact_id()` and never wait; a sequencer numbers rows below `pg_snapshot_xmin` in
  (xid, id) order (its sequencing delay is not in the writers' figures).

Each writer thread: BEGIN; update a hot row; `think` ms of Python CPU; event insert; `think` ms of
Python CPU (the application's own work before COMMIT, GIL included); COMMIT. Uses a scratch database
`<DATABASE_URL's name>_eventorder`.
"""

import statistics
import sys
import threading
import time

import psycopg

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parents[2]))
from tests.bench._harness import scratch_database  # noqa: E402

KEY = 0x7E7E_0001
SETUP = f"""
CREATE TABLE hot (id int primary key, n bigint);
INSERT INTO hot SELECT g, 0 FROM generate_series(1, 64) g;
CREATE TABLE ev_lock (seq bigserial primary key, data jsonb);
CREATE SEQUENCE ev_trig_real; CREATE SEQUENCE ev_trig_tmp;
CREATE TABLE ev_trig (seq bigint primary key default -nextval('ev_trig_tmp'), data jsonb);
CREATE FUNCTION ev_trig_seq() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_advisory_xact_lock({KEY});
  UPDATE ev_trig SET seq = nextval('ev_trig_real') WHERE seq = NEW.seq;
  RETURN NULL;
END $$;
CREATE CONSTRAINT TRIGGER ev_trig_seq AFTER INSERT ON ev_trig DEFERRABLE INITIALLY DEFERRED
  FOR EACH ROW WHEN (NEW.seq < 0) EXECUTE FUNCTION ev_trig_seq();
CREATE TABLE ev_xid (id bigserial primary key, xid xid8 not null default pg_current_xact_id(),
                     seq bigint unique, data jsonb);
CREATE INDEX ON ev_xid (xid, id) WHERE seq IS NULL;
CREATE SEQUENCE ev_xid_seq;
"""
SEQUENCE_XID = """
UPDATE ev_xid e SET seq = s.n FROM (
  SELECT id, nextval('ev_xid_seq') n FROM (
    SELECT id FROM ev_xid WHERE seq IS NULL AND xid < pg_snapshot_xmin(pg_current_snapshot())
    ORDER BY xid, id) o) s
WHERE e.id = s.id
"""
INSERT = {
    "lock": ["SELECT pg_advisory_xact_lock(%s)" % KEY, "INSERT INTO ev_lock (data) VALUES ('{}')"],
    "trigger": ["INSERT INTO ev_trig (data) VALUES ('{}')"],
    "xid": ["INSERT INTO ev_xid (data) VALUES ('{}')"],
}


def cpu(ms):
    end = time.perf_counter() + ms / 1000
    while time.perf_counter() < end:
        pass


def writer(url, variant, stop, latencies, think):
    with psycopg.connect(url) as conn:
        i = 0
        while not stop.is_set():
            i += 1
            t0 = time.perf_counter()
            with conn.transaction():
                conn.execute("UPDATE hot SET n = n + 1 WHERE id = %s", [i % 64 + 1])
                cpu(think)
                for sql in INSERT[variant]:
                    conn.execute(sql)
                cpu(think)
            latencies.append(time.perf_counter() - t0)


def sequencer(url, stop):
    with psycopg.connect(url, autocommit=True) as conn:
        while not stop.is_set():
            conn.execute(SEQUENCE_XID)
            time.sleep(0.002)


def run(url, variant, threads, seconds, think):
    stop, latencies = threading.Event(), []
    workers = [threading.Thread(target=writer, args=(url, variant, stop, latencies, think)) for _ in range(threads)]
    if variant == "xid":
        workers.append(threading.Thread(target=sequencer, args=(url, stop)))
    for t in workers:
        t.start()
    time.sleep(seconds)
    stop.set()
    for t in workers:
        t.join()
    latencies.sort()
    return len(latencies) / seconds, latencies[len(latencies) // 2] * 1000, latencies[int(len(latencies) * 0.99)] * 1000


def main(threads=16, seconds=4.0, think=0.3, rounds=3):
    url = scratch_database(f"{__import__('os').environ.get('DATABASE_URL', 'x/tether').rsplit('/', 1)[1]}_eventorder")
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(SETUP)
    results = {}
    for _ in range(rounds):
        for variant in INSERT:
            results.setdefault(variant, []).append(run(url, variant, threads, seconds, think))
    print(f"{threads} writer threads, {think} ms of Python work before and after the insert, {rounds} rounds of {seconds}s")
    for variant, rs in results.items():
        print(f"{variant:8s} tx/s median {statistics.median(r[0] for r in rs):7.0f}   "
              f"p50 {statistics.median(r[1] for r in rs):6.1f} ms   p99 {statistics.median(r[2] for r in rs):6.1f} ms   "
              f"rounds {[round(r[0]) for r in rs]}")
    with psycopg.connect(url) as conn:
        n, low, high = conn.execute("SELECT count(*), min(seq), max(seq) FROM ev_trig").fetchone()
        assert (low, high) == (1, n), "the trigger left a hole or a provisional number"


if __name__ == "__main__":
    args = sys.argv[1:]
    main(*(int(args[0]), float(args[1]), float(args[2]), int(args[3])) if args else ())

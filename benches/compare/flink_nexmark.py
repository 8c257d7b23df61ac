#!/usr/bin/env python3
"""Runs the Nexmark queries in Sluice and in Apache Flink (SQL, local mini-cluster) over the
same events, alternating the engines, and prints a Markdown table of events per second.

Both engines read the same part files (written by `nexmark --write-events`, one per source
subtask; see core/src/connectors/nexmark/csv.rs for the columns) and parse the same text, so
the work is the same. Called by benches/compare/flink.sh, which sets everything up.

    flink_nexmark.py --sluice PATH_TO_NEXMARK_BIN --events-dirs P=DIR[,P=DIR] --events N
                     [--queries q0,...] [--parallelism 1,2] [--repeat 2] [--backends 1s]

With --backends, each engine runs with its in-memory and its disk-backed state backend
(Sluice heap and tiered, Flink hashmap and RocksDB), checkpointing, and the table shows each
engine's disk-backed throughput as a ratio to its in-memory one.
"""

import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile
import time

COLUMNS = """
  event_type INT, ts BIGINT,
  p_id BIGINT, p_name STRING, p_email STRING, p_card STRING, p_city STRING, p_state STRING, p_extra STRING,
  a_id BIGINT, a_item STRING, a_desc STRING, a_initial BIGINT, a_reserve BIGINT, a_expires BIGINT,
  a_seller BIGINT, a_category BIGINT, a_extra STRING,
  b_auction BIGINT, b_bidder BIGINT, b_price BIGINT, b_channel STRING, b_url STRING, b_extra STRING
"""

VIEWS = [
    """CREATE TEMPORARY VIEW person AS SELECT p_id AS id, p_name AS name, p_email AS emailAddress,
       p_card AS creditCard, p_city AS city, p_state AS state, date_time, p_extra AS extra
       FROM events WHERE event_type = 0""",
    """CREATE TEMPORARY VIEW auction AS SELECT a_id AS id, a_item AS itemName, a_desc AS description,
       a_initial AS initialBid, a_reserve AS reserve, date_time, CAST(TO_TIMESTAMP_LTZ(a_expires, 3) AS TIMESTAMP(3)) AS expires,
       a_seller AS seller, a_category AS category, a_extra AS extra
       FROM events WHERE event_type = 1""",
    """CREATE TEMPORARY VIEW bid AS SELECT b_auction AS auction, b_bidder AS bidder, b_price AS price,
       b_channel AS channel, b_url AS url, date_time, b_extra AS extra
       FROM events WHERE event_type = 2""",
]

# The queries as the Nexmark benchmark writes them for Flink SQL (github.com/nexmark/nexmark),
# with q1's rate and q2's modulus as Sluice has them (integer euro cents; every 123rd auction).
QUERIES = {
    "q0": ("auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
           "SELECT auction, bidder, price, date_time, extra FROM bid"),
    "q1": ("auction BIGINT, bidder BIGINT, price BIGINT, date_time TIMESTAMP(3), extra STRING",
           "SELECT auction, bidder, price * 908 / 1000 AS price, date_time, extra FROM bid"),
    "q2": ("auction BIGINT, price BIGINT",
           "SELECT auction, price FROM bid WHERE MOD(auction, 123) = 0"),
    "q3": ("name STRING, city STRING, state STRING, id BIGINT",
           """SELECT P.name, P.city, P.state, A.id FROM auction AS A INNER JOIN person AS P ON A.seller = P.id
              WHERE A.category = 10 AND (P.state = 'OR' OR P.state = 'ID' OR P.state = 'CA')"""),
    "q4": ("category BIGINT, avg_price BIGINT",
           """SELECT Q.category, AVG(Q.final) FROM (
                SELECT MAX(B.price) AS final, A.category FROM auction A, bid B
                WHERE A.id = B.auction AND B.date_time BETWEEN A.date_time AND A.expires
                GROUP BY A.id, A.category) Q
              GROUP BY Q.category"""),
    "q5": ("auction BIGINT, num BIGINT",
           """SELECT AuctionBids.auction, AuctionBids.num FROM (
                SELECT auction, count(*) AS num, window_start AS starttime, window_end AS endtime
                FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
                GROUP BY auction, window_start, window_end) AS AuctionBids
              JOIN (
                SELECT max(CountBids.num) AS maxn, CountBids.starttime, CountBids.endtime FROM (
                  SELECT count(*) AS num, window_start AS starttime, window_end AS endtime
                  FROM TABLE(HOP(TABLE bid, DESCRIPTOR(date_time), INTERVAL '2' SECOND, INTERVAL '10' SECOND))
                  GROUP BY auction, window_start, window_end) AS CountBids
                GROUP BY CountBids.starttime, CountBids.endtime) AS MaxBids
              ON AuctionBids.starttime = MaxBids.starttime AND AuctionBids.endtime = MaxBids.endtime
                 AND AuctionBids.num >= MaxBids.maxn"""),
    "q7": ("auction BIGINT, price BIGINT, bidder BIGINT, date_time TIMESTAMP(3), extra STRING",
           """SELECT B.auction, B.price, B.bidder, B.date_time, B.extra FROM bid B
              JOIN (SELECT MAX(price) AS maxprice, window_end AS date_time
                    FROM TABLE(TUMBLE(TABLE bid, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
                    GROUP BY window_start, window_end) B1
              ON B.price = B1.maxprice
              WHERE B.date_time BETWEEN B1.date_time - INTERVAL '10' SECOND AND B1.date_time"""),
    "q8": ("id BIGINT, name STRING, stime TIMESTAMP(3)",
           """SELECT P.id, P.name, P.starttime FROM (
                SELECT id, name, window_start AS starttime, window_end AS endtime
                FROM TABLE(TUMBLE(TABLE person, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
                GROUP BY id, name, window_start, window_end) P
              JOIN (
                SELECT seller, window_start AS starttime, window_end AS endtime
                FROM TABLE(TUMBLE(TABLE auction, DESCRIPTOR(date_time), INTERVAL '10' SECOND))
                GROUP BY seller, window_start, window_end) A
              ON P.id = A.seller AND P.starttime = A.starttime AND P.endtime = A.endtime"""),
}


class Flink:
    """One JVM (PyFlink's gateway) for every run, so later runs are JIT-warm; the best of the
    repeats is reported for both engines."""

    def __init__(self):
        from pyflink.table import EnvironmentSettings, TableEnvironment
        self.t = TableEnvironment.create(EnvironmentSettings.in_streaming_mode())
        c = self.t.get_config()
        # The Nexmark benchmark's Flink settings (nexmark-flink/conf/sql-client-defaults.yaml).
        c.set("pipeline.object-reuse", "true")
        c.set("table.exec.mini-batch.enabled", "true")
        c.set("table.exec.mini-batch.allow-latency", "2s")
        c.set("table.exec.mini-batch.size", "50000")
        c.set("table.optimizer.distinct-agg.split.enabled", "true")
        c.set("table.local-time-zone", "UTC")
        self.source = None
        self.n = 0

    def use_source(self, path):
        if self.source == path:
            return
        self.t.execute_sql("DROP TEMPORARY TABLE IF EXISTS events")
        self.t.execute_sql(f"""CREATE TEMPORARY TABLE events ({COLUMNS},
              date_time AS CAST(TO_TIMESTAMP_LTZ(ts, 3) AS TIMESTAMP(3)),
              WATERMARK FOR date_time AS date_time
            ) WITH ('connector' = 'filesystem', 'path' = 'file://{path}', 'format' = 'csv',
                    'csv.field-delimiter' = '|', 'csv.null-literal' = '',
                    'csv.disable-quote-character' = 'true')""")
        for v in VIEWS:
            name = v.split()[3]
            self.t.execute_sql(f"DROP TEMPORARY VIEW IF EXISTS {name}")
            self.t.execute_sql(v)
        self.source = path

    def net_rows(self, q, p, path):
        """Rows in the query's final result, counted by Flink itself (COUNT(*) over the
        query handles its retractions), for checking that both engines compute the same."""
        from pyflink.common import RowKind
        self.use_source(path)
        self.t.get_config().set("parallelism.default", str(p))
        n = 0
        with self.t.execute_sql(f"SELECT COUNT(*) FROM ({QUERIES[q][1]})").collect() as rows:
            for r in rows:
                if r.get_row_kind() in (RowKind.INSERT, RowKind.UPDATE_AFTER):
                    n = r[0]
        return n

    def use_backend(self, backend, interval, directory):
        """Keyed state in `backend` (hashmap or rocksdb, incremental checkpoints) with
        checkpoints every `interval` into `directory`; `None`: no checkpoints, the default
        backend."""
        c = self.t.get_config()
        if backend is None:
            c.set("execution.checkpointing.interval", "0 ms")
            return
        c.set("state.backend.type", backend)
        c.set("execution.checkpointing.incremental", "true" if backend == "rocksdb" else "false")
        c.set("execution.checkpointing.interval", interval)
        c.set("execution.checkpointing.dir", f"file://{directory}")

    def run(self, q, p, path):
        """Seconds the job ran (Flink's net runtime: from start to end of the job)."""
        self.use_source(path)
        self.t.get_config().set("parallelism.default", str(p))
        self.n += 1
        sink = f"sink_{q}_{self.n}"
        schema, query = QUERIES[q]
        self.t.execute_sql(f"CREATE TEMPORARY TABLE {sink} ({schema}) WITH ('connector' = 'blackhole')")
        result = self.t.execute_sql(f"INSERT INTO {sink} {query}")
        job = result.get_job_client()
        net_ms = job.get_job_execution_result().result().get_net_runtime()
        self.t.execute_sql(f"DROP TEMPORARY TABLE {sink}")
        return net_ms / 1000.0


def sluice_run(binary, q, p, path, backend=None, interval=None):
    """(seconds, results, checksum, peak RSS MiB) of one Sluice run in its own process (with
    `backend`: keyed state there, checkpoints every `interval`)."""
    cmd = [binary, "--one", f"nexmark-{q}", "--parallelism", str(p), "--events-dir", path]
    if backend is not None:
        cmd += ["--one-backend", backend, "--one-checkpoint", interval]
    if q not in ("q0", "q1", "q2", "q4"):
        cmd.append("--one-checksum")
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    line = next((l for l in out.stdout.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        sys.exit(f"sluice {q} p{p} failed:\n{out.stderr}")
    f = line.split()
    return float(f[5]), f[4], f[9], int(f[7]) / 1024.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--sluice", required=True)
    ap.add_argument("--events-dirs", required=True, help="P=DIR[,P=DIR]")
    ap.add_argument("--events", type=int, required=True)
    ap.add_argument("--queries", default="q0,q1,q2,q3,q4,q5,q7,q8")
    ap.add_argument("--parallelism", default="1,2")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--check-dirs", help="P=DIR[,P=DIR]: first compare result counts on these (small) inputs")
    ap.add_argument("--backends", metavar="INTERVAL",
                    help="instead: each engine with its in-memory and its disk-backed state backend, "
                         "checkpoints every INTERVAL (e.g. 1s)")
    a = ap.parse_args()
    dirs = dict(kv.split("=", 1) for kv in a.events_dirs.split(","))
    flink = Flink()
    if a.check_dirs:
        check = dict(kv.split("=", 1) for kv in a.check_dirs.split(","))
        print("Same input, same answers (result rows; q4 differs by definition: Sluice emits a running")
        print("average per closed auction, Flink's SQL keeps one updating row per category):\n")
        print("| query | parallelism | Sluice results | Flink result rows | equal |")
        print("|---|---|---|---|---|")
        bad = 0
        for q in a.queries.split(","):
            if q == "q4":
                continue
            for p in a.parallelism.split(","):
                _, results, _, _ = sluice_run(a.sluice, q, p, check[p])
                rows = flink.net_rows(q, int(p), check[p])
                same = int(results) == rows
                bad += 0 if same else 1
                print(f"| {q} | {p} | {results} | {rows} | {'yes' if same else 'NO'} |")
                sys.stdout.flush()
        print()
        if bad:
            sys.exit(f"{bad} queries give different answers in the two engines: the comparison would not be fair")
    if a.backends:
        backends(a, dirs, flink)
        return
    print("| query | parallelism | events | Sluice events/s | Flink events/s | Sluice / Flink | Sluice results | checksum | Sluice peak RSS MiB |")
    print("|---|---|---|---|---|---|---|---|---|")
    sys.stdout.flush()
    for q in a.queries.split(","):
        for p in a.parallelism.split(","):
            path = dirs[p]
            s_best, f_best, extra = None, None, None
            for _ in range(a.repeat):
                # Alternate the engines, so a disturbance of the machine hits both alike.
                secs, results, checksum, rss = sluice_run(a.sluice, q, p, path)
                if s_best is None or secs < s_best:
                    s_best, extra = secs, (results, checksum, rss)
                fsecs = flink.run(q, int(p), path)
                if f_best is None or fsecs < f_best:
                    f_best = fsecs
            s_eps, f_eps = a.events / s_best, a.events / f_best
            print(f"| {q} | {p} | {a.events} | {s_eps:.0f} | {f_eps:.0f} | {s_eps / f_eps:.2f} | {extra[0]} | {extra[1]} | {extra[2]:.0f} |")
            sys.stdout.flush()


def best_of(repeat, runs):
    """The shortest time of each of `runs` (functions returning seconds) over `repeat`
    rounds, the runs alternated within each round so a disturbance hits all alike."""
    best = [None] * len(runs)
    for _ in range(repeat):
        for i, run in enumerate(runs):
            secs = run()
            best[i] = secs if best[i] is None else min(best[i], secs)
    return best


def backends(a, dirs, flink):
    """Sluice heap and tiered against Flink hashmap and RocksDB (incremental), all with
    checkpoints every `a.backends`: the cost of each engine's disk-backed state as a ratio
    to its in-memory state, measured in one run."""
    ck = tempfile.mkdtemp(prefix="flink-ck-")

    import pyflink
    logs = os.path.join(os.path.dirname(pyflink.__file__), "log")
    loaded = {"hashmap": "as HashMapStateBackend", "rocksdb": "as EmbeddedRocksDBStateBackend"}

    def log_bytes():
        return {f: os.path.getsize(f) for f in glob.glob(os.path.join(logs, "*.log"))}

    def flink_with(backend, q, p, path):
        def run():
            flink.use_backend(backend, a.backends, ck)
            before = log_bytes()
            secs = flink.run(q, p, path)
            # The job's log says which backend it loaded: the figure is of that backend.
            new = ""
            for f, size in log_bytes().items():
                with open(f, errors="replace") as fh:
                    fh.seek(before.get(f, 0))
                    new += fh.read()
            if loaded[backend] not in new:
                sys.exit(f"Flink's log does not say it loaded {backend} state for {q}: not measured")
            return secs
        return run

    def sluice_with(backend, q, p, path):
        return lambda: sluice_run(a.sluice, q, p, path, backend, a.backends)[0]

    print(f"Checkpoints every {a.backends}; events/s, best of {a.repeat}; each ratio is the disk-backed "
          "backend's throughput over the same engine's in-memory one.\n")
    print("| query | parallelism | Sluice heap | Sluice tiered | tiered / heap | Flink hashmap | Flink RocksDB | RocksDB / hashmap |")
    print("|---|---|---|---|---|---|---|---|")
    sys.stdout.flush()
    for q in a.queries.split(","):
        for p in a.parallelism.split(","):
            path, n = dirs[p], int(p)
            secs = best_of(a.repeat, [sluice_with("heap", q, p, path), sluice_with("tiered", q, p, path),
                                      flink_with("hashmap", q, n, path), flink_with("rocksdb", q, n, path)])
            sh, st, fh, fr = (a.events / s for s in secs)
            print(f"| {q} | {p} | {sh:.0f} | {st:.0f} | {st / sh:.2f} | {fh:.0f} | {fr:.0f} | {fr / fh:.2f} |")
            sys.stdout.flush()
    flink.use_backend(None, None, None)
    shutil.rmtree(ck, ignore_errors=True)


if __name__ == "__main__":
    started = time.time()
    main()
    print(f"\n(both engines, same run: {time.time() - started:.0f} s)")

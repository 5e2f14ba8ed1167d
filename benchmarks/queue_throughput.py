"""Throughput of 1, 2 and 4 queue workers on one small study (runs per minute).

Starts a throwaway PostgreSQL and ``mlflow server`` on loopback (tests/servers.py), enqueues the
same small synthetic study once per worker count (a fresh queue database and experiment each time,
so nothing is cached), starts N ``dlf-ablate worker`` processes and times them until the queue is
drained. Each worker gets ``max(1, cores // N)`` torch threads; with more workers than cores (4 on a
2-core machine) the workers oversubscribe the CPU and the table says so.

    .venv/bin/python benchmarks/queue_throughput.py [--workers 1,2,4] [--seeds 1,2] [--epochs 1]

Wall time includes each worker's start-up (imports, first connection), as on a real cluster; the
"per run" column is the mean time a worker spent on one claimed run (queue ``seconds``).
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.servers import MlflowServer, PostgresServer, pg_missing_reason  # noqa: E402

VARIANTS = ["full", "wo_lr", "wo_ls", "only_l"]


def write_study(folder: Path, name: str, seeds: list[int], scale: float, epochs: int) -> Path:
    body = {"name": name, "datasets": ["synthetic-mosi"], "variants": VARIANTS, "seeds": seeds,
            "set": {"data.scale": scale, "train.max_epochs": epochs, "train.batch_size": 16,
                    "train.accumulation": 1}}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(body))
    return path


def run_workers(url: str, n: int, threads: int, home: Path) -> float:
    cmd = [sys.executable, "-c", "from dlf.cli import main; main()", "worker", "--queue", url,
           "--threads", str(threads), "--poll", "0.5", "--stale", "30"]
    start = time.monotonic()
    procs = [subprocess.Popen(cmd, env={**os.environ, "DLF_HOME": str(home / f"w{i}"), "OMP_NUM_THREADS": str(threads)},
                              stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) for i in range(n)]
    for proc in procs:
        _, err = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"worker failed ({proc.returncode}): {err[-2000:]}")
    return time.monotonic() - start


def measure(n: int, pg: PostgresServer, uri: str, args, folder: Path, cores: int) -> dict:
    from dlf.cluster.launch import enqueue_study, queue_rows

    url = pg.create_db(f"bench_{n}")
    study = write_study(folder, f"bench-w{n}-{int(time.time())}", args.seeds, args.scale, args.epochs)
    summary = enqueue_study(str(study), url, tracking_uri=uri)
    threads = max(1, cores // n)
    wall = run_workers(url, n, threads, folder / f"home{n}")
    rows = queue_rows(url)
    if not all(r.state == "done" for r in rows):
        raise SystemExit(f"{n} workers: not every run finished: {[(r.name, r.state, r.error) for r in rows]}")
    per_run = sum(r.seconds or 0 for r in rows) / len(rows)
    return {"workers": n, "threads": threads, "runs": summary.added, "wall": wall,
            "per_min": 60 * summary.added / wall, "per_run": per_run, "over": n * threads > cores}


def queue_only(pg: PostgresServer, clients: int = 4, rows: int = 400) -> float:
    """Claims + finishes per second of the bare queue (no training): its ceiling, for scale."""
    import threading

    from dlf.cluster.queue import Queue

    url = pg.create_db(f"bare_{clients}")
    with Queue(url) as q:
        q.ensure_schema()
        q.enqueue([(f"k{i}", "bare", f"run{i}", {"i": i}) for i in range(rows)], None)
    ready = threading.Barrier(clients + 1)

    def drain(name: str) -> None:
        with Queue(url) as q:
            ready.wait()
            while (c := q.claim(name, 60)) is not None:
                q.finish(c, name, None, 0.0)

    threads = [threading.Thread(target=drain, args=(f"bench:{i}",)) for i in range(clients)]
    for t in threads:
        t.start()
    ready.wait()
    start = time.monotonic()
    for t in threads:
        t.join()
    return rows / (time.monotonic() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", default="1,2,4", help="worker counts to measure")
    parser.add_argument("--seeds", default="1,2", help="seeds of the study (runs = 4 variants x seeds)")
    parser.add_argument("--scale", type=float, default=0.03, help="synthetic data scale")
    parser.add_argument("--epochs", type=int, default=1, help="train.max_epochs")
    args = parser.parse_args()
    args.seeds = [int(s) for s in args.seeds.split(",")]
    if pg_missing_reason():
        raise SystemExit(f"cannot run: {pg_missing_reason()}")
    from dlf.run.local import cpu_cores

    cores = cpu_cores()
    os.environ.setdefault("DLF_CODE_VERSION", "queue-benchmark")  # one key space for all workers
    with tempfile.TemporaryDirectory(prefix="dlf-qbench-") as tmp:
        folder = Path(tmp)
        os.environ["DLF_CACHE"] = str(folder / "cache")
        pg, ml = PostgresServer().start(), MlflowServer().start()
        try:
            results = [measure(int(n), pg, ml.url, args, folder, cores) for n in args.workers.split(",")]
            bare = queue_only(pg)
        finally:
            ml.stop()
            pg.stop()
    base = results[0]["per_min"]
    print(f"\nqueue throughput: {len(VARIANTS)} variants x {len(args.seeds)} seeds on synthetic-mosi "
          f"(scale {args.scale}, {args.epochs} epoch), {cores} CPU cores, PostgreSQL queue + mlflow server on loopback")
    print(f"{'workers':>7} {'threads/worker':>14} {'runs':>5} {'wall s':>8} {'runs/min':>9} {'speed-up':>8} "
          f"{'per run s':>9}  note")
    for r in results:
        note = f"oversubscribed: {r['workers']} x {r['threads']} threads > {cores} cores" if r["over"] else ""
        print(f"{r['workers']:>7} {r['threads']:>14} {r['runs']:>5} {r['wall']:>8.1f} {r['per_min']:>9.1f} "
              f"{r['per_min'] / base:>7.2f}x {r['per_run']:>9.1f}  {note}")
    print(f"the queue alone (claim + finish, no training, 4 clients): {bare:.0f} runs/s, "
          f"i.e. {60 * bare:.0f} runs/min: the workers, not the queue, set the pace")


if __name__ == "__main__":
    main()

"""Where compaction's memory goes: RSS and Arrow's allocated bytes, sampled every 5 ms, by phase.

Run (after ``bench/offline.py`` has generated the size's store)::

    .venv/bin/python bench/compaction_memory.py            # the 5M-row store: 5 commits of 1M
    .venv/bin/python bench/compaction_memory.py --size 1M

Copies ``bench/.data/offline/SIZE/store`` to a temporary folder, compacts its view in this
(fresh) process and prints, per phase of ``offline/compaction.py`` (reading the keys,
scattering the rows to spill files, sorting and writing each output file), the peak RSS
and the peak of ``pyarrow.total_allocated_bytes()`` (Arrow's memory pool), beside the RSS
before the compaction and the process's ``ru_maxrss``. RSS counts the pages of the
memory-mapped spill files a phase touches; Arrow's figure does not.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def rss() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", default="5M", help="a size bench/offline.py generated")
    args = ap.parse_args()
    src = HERE / ".data" / "offline" / args.size / "store"
    if not src.exists():
        ap.error(f"{src} does not exist; run: .venv/bin/python bench/offline.py --sizes "
                 f"{args.size} --runs 1")
    import pyarrow as pa

    import featureledger.offline.compaction as compaction
    from featureledger import FeatureStore
    from featureledger.offline.storage import ParquetOfflineStore

    phase = ["setup"]
    peaks: dict[str, list[int]] = {}

    def sample() -> None:
        while True:
            p = peaks.setdefault(phase[0], [0, 0])
            p[0], p[1] = max(p[0], rss()), max(p[1], pa.total_allocated_bytes())
            time.sleep(0.005)

    def labelled(owner: object, name: str) -> None:
        real = getattr(owner, name)

        def run(*a: object, **k: object) -> object:
            before, phase[0] = phase[0], name
            try:
                return real(*a, **k)
            finally:
                phase[0] = before

        setattr(owner, name, run)

    for name in ("_key_buckets", "_scatter", "clustered_order"):
        labelled(compaction, name)
    labelled(ParquetOfflineStore, "write_commit")
    with tempfile.TemporaryDirectory(prefix="fl-compaction-memory-") as tmp:
        root = Path(tmp) / "store"
        shutil.copytree(src, root)
        threading.Thread(target=sample, daemon=True).start()
        store = FeatureStore(root)
        start_rss = rss()
        phase[0] = "compact (other)"
        t0 = time.perf_counter()
        results = store.compact("bench", min_commits=1)
        seconds = time.perf_counter() - t0
        phase[0] = "after"
        time.sleep(0.05)
        store.close()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    rows = sum(r.rows for r in results)
    print(f"{args.size}: {rows:,} rows compacted in {seconds:.1f} s into "
          f"{sum(r.files_after for r in results)} file(s); RSS before {start_rss / 2**20:.0f} "
          f"MiB, peak (ru_maxrss) {peak / 2**20:.0f} MiB; Arrow pool "
          f"{pa.default_memory_pool().backend_name}")
    for name, (r, a) in peaks.items():
        print(f"  {name:18s} peak RSS {r / 2**20:7.0f} MiB   Arrow allocated {a / 2**20:7.0f} MiB")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

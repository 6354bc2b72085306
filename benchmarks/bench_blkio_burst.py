"""How fast a cold read runs under a cgroup-v1 blkio read cap, by size: does the throttle let a burst through?

    sudo PYTHONPATH=src python benchmarks/bench_blkio_burst.py [--rate-mb 60] [--sizes-mb 2,6,22,75]

A cgroup ``coldpipe-burst`` with ``blkio.throttle.read_bps_device`` = ``--rate-mb`` MB/s on the disk of a
scratch file; a child process in it reads the file's first N MB cold (page cache dropped, no readahead,
4 MiB reads: as the agents' loader) after an idle second, 3 times per size. Printed: the median time,
the time the cap alone gives (N / rate), and the bytes that went through "for free"
(rate x (N/rate - measured)). The testbed's agents see this term at the start of every stage's loading.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

CHUNK = 4 * 2**20
READER = r"""
import os, sys, time
path, n = sys.argv[1], int(sys.argv[2])
fd = os.open(path, os.O_RDONLY)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_RANDOM)
time.sleep(1.0)  # idle, as a stage's loader before t0
t = time.perf_counter()
got = 0
while got < n:
    b = os.pread(fd, min(4 * 2**20, n - got), got)
    if not b:
        break
    got += len(b)
print(time.perf_counter() - t)
"""


def main() -> None:
    from coldpipe.testbed.bed import _block_device

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rate-mb", type=float, default=60.0)
    ap.add_argument("--sizes-mb", default="2,6,22,75")
    ap.add_argument("--reps", type=int, default=3)
    args = ap.parse_args()
    if os.geteuid() != 0:
        sys.exit("needs root (a blkio cgroup)")
    sizes = [int(float(x) * 1e6) for x in args.sizes_mb.split(",")]
    tmp = Path(tempfile.mkdtemp(prefix="blkio-burst-", dir="/var/tmp"))
    cg = Path("/sys/fs/cgroup/blkio/coldpipe-burst")
    try:
        f = tmp / "data"
        with open(f, "wb") as out:
            left = max(sizes)
            while left > 0:
                out.write(os.urandom(min(CHUNK, left)))
                left -= CHUNK
            out.flush()
            os.fsync(out.fileno())
        reader = tmp / "reader.py"
        reader.write_text(READER)
        cg.mkdir(exist_ok=True)
        rate = args.rate_mb * 1e6
        (cg / "blkio.throttle.read_bps_device").write_text(f"{_block_device(f)} {int(rate)}")
        print(f"cap {args.rate_mb:g} MB/s; load average {os.getloadavg()[0]:.1f}")
        print("| read | measured (median) | cap alone | through for free |")
        print("|---|---|---|---|")
        for n in sizes:
            times = []
            for _ in range(args.reps):
                cmd = f"echo $$ > {cg}/cgroup.procs; exec {sys.executable} {reader} {f} {n}"
                p = subprocess.run(["sh", "-c", cmd], capture_output=True, text=True, check=False)
                if p.returncode != 0:
                    sys.exit(f"the reader failed: {p.stderr.strip()[-300:]}")
                times.append(float(p.stdout))
            t = statistics.median(times)
            print(f"| {n / 1e6:.0f} MB | {t:.3f} s | {n / rate:.3f} s | {max(0.0, n / rate - t) * rate / 1e6:.1f} MB |")
    finally:
        if cg.exists():
            for _ in range(50):
                try:
                    cg.rmdir()
                    break
                except OSError:
                    time.sleep(0.1)
        for p in tmp.iterdir():
            p.unlink()
        tmp.rmdir()


if __name__ == "__main__":
    main()

"""What any pace can get through a bucket of burst 1, given the jitter on the way to it.

Requests spaced evenly at r each reach the demo's limiter (`ntx.demo.limits.BucketLimit`)
late by `tests.limited.transit_delay` (fitted to ntx and the demo on this machine, on a
noisy day); prints, for each r, the share refused and the rate let through (each request
once, no retries).
No controller can beat the best of these: it is the ceiling of the burst-1 rows.

    .venv/bin/python bench/ceiling.py --limit 60 --requests 50000
"""

from __future__ import annotations

import argparse
import random
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from ntx.demo.limits import BucketLimit
from tests.limited import transit_delay


def let_through(rate: float, limit: float, requests: int, seed: int) -> tuple[float, float]:
    """(share refused, requests/s let through) for `requests` spaced 1 / `rate` apart."""
    rng = random.Random(seed)
    bucket = BucketLimit(limit, 1)
    arrivals = sorted(i / rate + transit_delay(rng) for i in range(requests))
    refused = sum(bucket.check(t) is not None for t in arrivals) / requests
    return refused, rate * (1 - refused)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=float, default=60.0)
    parser.add_argument("--requests", type=int, default=50_000)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    for share in (0.85, 0.87, 0.88, 0.9, 0.92, 0.93, 0.95):
        rate = share * args.limit
        runs = [let_through(rate, args.limit, args.requests, seed) for seed in range(args.seeds)]
        refused = sum(r for r, _ in runs) / len(runs)
        through = sum(t for _, t in runs) / len(runs)
        print(
            f"spaced at {rate:5.1f}/s ({share:.2f} R): "
            f"refused {refused:5.2%}, through {through:5.1f}/s"
        )


if __name__ == "__main__":
    main()

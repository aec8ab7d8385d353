"""How big the world is and how long it takes to generate.

    python benchmarks/world.py [--preset cpu] [--repeats 3]

Last line: one JSON object with the preset world's page count, megabytes of HTML, seconds to
generate (median of repeats; goal: under 30 s at the cpu preset) and the share of each page
kind. The peer is the WARC writing that follows generation, timed in the same run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from llmlab.config import get_preset  # noqa: E402
from llmlab.world import build_world, summary, write_warc  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--preset", default="cpu")
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()
    cfg = get_preset(args.preset).world
    gen, warc = [], []
    for r in range(args.repeats):
        t0 = time.perf_counter()
        world = build_world(cfg)
        gen.append(time.perf_counter() - t0)
        with tempfile.TemporaryDirectory() as tmp:
            t0 = time.perf_counter()
            write_warc(world, Path(tmp) / "crawl.warc.gz")
            warc.append(time.perf_counter() - t0)
            warc_mb = (Path(tmp) / "crawl.warc.gz").stat().st_size / 1e6
        print(f"repeat {r + 1}: generate {gen[-1]:.2f} s, write WARC {warc[-1]:.2f} s", flush=True)
    s = summary(world)
    out = {
        "benchmark": "world", "preset": args.preset,
        "pages": s["pages"], "html_mb": s["html_mb"], "text_mb": s["text_mb"],
        "warc_gz_mb": round(warc_mb, 3),
        "generate_seconds_median": round(statistics.median(gen), 3),
        "write_warc_seconds_median": round(statistics.median(warc), 3),
        "goal_generate_seconds_max": 30,
        "kind_shares": s["kind_shares"],
        "facts": s["facts"], "heldout_facts": s["heldout_facts"],
        "facts_seen_5plus": s["facts_seen_5plus"], "unknown_entities": s["unknown_entities"],
        "entropy_bits_per_byte": s["entropy_bits_per_byte"],
    }
    print(json.dumps(out))


if __name__ == "__main__":
    main()

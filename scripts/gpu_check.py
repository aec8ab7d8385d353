"""The gpu preset, measured: the book at the gpu preset and the benchmarks' GPU parts.

    bash scripts/gpu_check.sh                       # everything (a CUDA machine; tens of minutes)
    bash scripts/gpu_check.sh --notebooks 00 02     # some notebooks only
    bash scripts/gpu_check.sh --skip-book           # the benchmarks only
    bash scripts/gpu_check.sh --dry-run             # the plan: device, precision, commands

1. Refuses, with one line and exit status 3, where CUDA is not available: the gpu preset's
   figures from a CPU would be meaningless.
2. Says which precision the series' rule picks on this card (``llmlab.device.choose_precision``:
   bf16 autocast from compute capability 8.0, fp16 with a GradScaler below, e.g. a T4) and the
   data-sheet peak MFU is measured against (``llmlab.device.gpu_peak``).
3. Runs the book at the gpu preset (``python -m llmlab.book --preset gpu``, into ``--out``, not
   the committed notebooks) and reads its minutes per notebook.
4. Runs the benchmarks whose figures depend on the device: ``pretrain.py`` (its GPU part:
   bf16 + ``torch.compile`` MFU), ``sft.py``, ``reward.py``, ``ppo.py`` and ``dpo.py`` at the
   gpu preset; each one's last stdout line is its JSON.

The last line of stdout is one JSON object: device, precision, minutes per notebook, each
benchmark's figures (or its error). The exit status is 0 only if everything ran. The README's
gpu column is filled by hand from this line (``"notebook_minutes"``).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

# (name, arguments after the script) of the benchmarks with a device-dependent part
BENCHMARKS = [
    ("pretrain", ["benchmarks/pretrain.py", "--preset", "gpu"]),
    ("sft", ["benchmarks/sft.py", "--preset", "gpu"]),
    ("reward", ["benchmarks/reward.py", "--preset", "gpu"]),
    ("ppo", ["benchmarks/ppo.py", "--preset", "gpu"]),
    ("dpo", ["benchmarks/dpo.py", "--preset", "gpu"]),
]
NO_CUDA = 3   # exit status of a refusal


def describe_gpu(name: str, capability: tuple[int, int]) -> dict:
    """What the series' rules pick on a card: precision, scaler, the peak MFU is measured against.

    >>> describe_gpu("Tesla T4", (7, 5))["precision"]
    'fp16'
    >>> describe_gpu("NVIDIA H100 80GB HBM3", (9, 0))["peak_tflops"]
    989.0
    """
    import torch

    from llmlab.device import choose_precision, gpu_peak

    prec = choose_precision(torch.device("cuda"), capability=capability)
    return {"gpu": name, "capability": f"{capability[0]}.{capability[1]}",
            "precision": prec.name, "grad_scaler": prec.use_scaler,
            "peak_tflops": gpu_peak(name, prec.name) / 1e12}


def plan(py: str, out: str, notebooks: list[str], skip_book: bool, skip_benchmarks: bool) -> list:
    """The commands, in order: ``[(label, argv)]``."""
    steps = []
    if not skip_book:
        steps.append(("book", [py, "-m", "llmlab.book", "--preset", "gpu", "--out", out, *notebooks]))
    if not skip_benchmarks:
        steps += [(name, [py, *args]) for name, args in BENCHMARKS]
    return steps


def last_json(text: str):
    """The last line of ``text`` that parses as a JSON object (None if none)."""
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--notebooks", nargs="*", default=[], help="notebook numbers (default: all)")
    ap.add_argument("--out", default=str(ROOT / "book-gpu"), help="the executed notebooks' folder")
    ap.add_argument("--skip-book", action="store_true")
    ap.add_argument("--skip-benchmarks", action="store_true")
    ap.add_argument("--dry-run", action="store_true", help="print the plan; run nothing")
    ap.add_argument("--assume", default=None, metavar="NAME:MAJOR.MINOR",
                    help="with --dry-run: plan for this card instead of the one present "
                         "(checks the precision rule on a machine without one)")
    args = ap.parse_args(argv)

    import torch

    if args.assume:
        if not args.dry_run:
            ap.error("--assume only plans (--dry-run): measuring needs the card itself")
        name, _, cap = args.assume.rpartition(":")
        try:
            major, minor = (int(x) for x in cap.split("."))
        except ValueError:
            ap.error(f"--assume wants NAME:MAJOR.MINOR, e.g. 'Tesla T4:7.5', got {args.assume!r}")
        gpu = describe_gpu(name, (major, minor))
    elif not torch.cuda.is_available():
        print("gpu_check: no CUDA device here (torch.cuda.is_available() is False, torch "
              f"{torch.__version__}): the gpu preset is measured on a GPU machine; nothing was run",
              file=sys.stderr)
        return NO_CUDA
    else:
        dev = torch.device("cuda")
        gpu = describe_gpu(torch.cuda.get_device_name(dev), torch.cuda.get_device_capability(dev))
    steps = plan(sys.executable, args.out, args.notebooks, args.skip_book, args.skip_benchmarks)
    print(f"gpu_check: {gpu['gpu']} (capability {gpu['capability']}): {gpu['precision']} autocast"
          f"{' with a GradScaler' if gpu['grad_scaler'] else ''}, peak {gpu['peak_tflops']:g} TFLOP/s",
          flush=True)
    result = {"check": "gpu", "torch": torch.__version__, **gpu}
    if args.dry_run:
        result["plan"] = [" ".join(a) for _, a in steps]
        print(json.dumps(result))
        return 0

    env = dict(os.environ, LLMLAB_PRESET="gpu",
               PYTHONPATH=os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    ok, result["benchmarks"] = True, {}
    t_all = time.monotonic()
    for label, cmd in steps:
        print(f"gpu_check: {label}: {' '.join(cmd[1:])}", flush=True)
        t0 = time.monotonic()
        proc = subprocess.run(cmd, cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                              text=True)
        sys.stdout.write(proc.stdout[-4000:])
        seconds = round(time.monotonic() - t0, 1)
        if label == "book":
            timings = Path(args.out) / "timings.json"
            minutes = json.loads(timings.read_text()).get("gpu", {}) if timings.exists() else {}
            result["notebook_minutes"] = minutes
            result["book_minutes"] = round(seconds / 60, 2)
            if proc.returncode:
                result["book_error"] = proc.stdout.strip().splitlines()[-1:] or ["(no output)"]
        else:
            figures = last_json(proc.stdout)
            result["benchmarks"][label] = ({"seconds": seconds, **figures} if proc.returncode == 0
                                           and figures else
                                           {"seconds": seconds, "error": f"exit {proc.returncode}: "
                                            + (proc.stdout.strip().splitlines() or ["(no output)"])[-1]})
        ok &= proc.returncode == 0
    result["total_minutes"] = round((time.monotonic() - t_all) / 60, 2)
    print(json.dumps(result))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

"""Surrogates of PDE solvers as operators (fields in, fields out), run as a user runs them.

    python bench/operators.py                              # both cases, in a temporary directory
    python bench/operators.py --out DIR --only burgers     # keep the runs in DIR (a rerun reuses them)
    python bench/operators.py --quick --out /tmp/ops       # smoke test: tiny sizes, a few minutes
    python bench/operators.py --only darcy -- --student.width 16
    python bench/operators.py --costs                      # ms per sample of a step of 2-D students

Cases (solvers in teachers/simulators/, configs in pipeline/configs/):
  burgers   1-D viscous Burgers, nu = 0.1, from a random periodic initial field to u(., T = 1) on 256
            points (burgers-operator.yaml)
  darcy     2-D Darcy flow on 64 x 64, from a log-permeability field to the pressure (darcy.yaml)

Each case is `python -m pipeline run --config <its config>` and nothing else: the student (a Fourier
neural operator on periodic fields, a U-Net otherwise) and its training are the pipeline's choices. Its wall clock is timed (kept beside
the run, so a rerun that finds the run finished reports the first run's time) and DIR/<case>/
report.json read: held-out relative L2 per sample (median, p95), VRMSE per output channel, the solver
calls, the speed-up at batch 256 (student over the solver's labeling rate, all cores each, CPU).

Bars: burgers median <= 5e-3, p95 <= 1.5e-2, <= 8,192 solver calls, wall <= 30 min; darcy median
<= 2e-2, <= 8,192 solver calls, wall <= 45 min (2 cores).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))
sys.path.insert(0, ROOT)

from bench.timed_run import timed_pipeline_run  # noqa: E402  (after the path is set)

CASES = {
    "burgers": {"config": "pipeline/configs/burgers-operator.yaml",
                "bars": {"median": ("<=", 5e-3), "p95": ("<=", 1.5e-2), "solver calls": ("<=", 8192),
                         "wall min": ("<=", 30)}},
    "darcy": {"config": "pipeline/configs/darcy.yaml",
              "bars": {"median": ("<=", 2e-2), "solver calls": ("<=", 8192), "wall min": ("<=", 45)}},
}
QUICK = ["--data.shards", "2", "--data.samples_per_shard", "128", "--data.heldout_shards", "1",
         "--data.row_group_size", "64", "--train.max_epochs", "2", "--eval.latency_seconds", "0.1"]


def run_case(name: str, out: str, quick: bool, extra: list[str]) -> tuple[dict, float]:
    """`python -m pipeline run` into `out` (reused when finished): its report and wall seconds."""
    print(f"[{name}] python -m pipeline run --config {CASES[name]['config']} --out {out}", flush=True)
    return timed_pipeline_run(name, ["--config", CASES[name]["config"], *(QUICK if quick else []), *extra], out)


COST_STUDENTS = (("fno", {"width": 32, "depth": 4}), ("fno", {"width": 16, "depth": 4}),
                 ("unet", {"width": 16, "depth": 3}), ("unet", {"width": 8, "depth": 3}))


def step_costs(rounds: int = 3, batch: int = 32) -> None:
    """Milliseconds per sample of one optimizer step (forward, backward, Adam) of each candidate 2-D
    student on 64 x 64 fields, all cores; the students take turns each round, medians printed."""
    import statistics
    import time

    import torch

    from students import STUDENTS

    x, y = torch.randn(batch, 1, 64, 64), torch.randn(batch, 64 * 64)
    steps, times = {}, {}
    for name, kwargs in COST_STUDENTS:
        torch.manual_seed(0)
        model = STUDENTS.build(name, input_shape=(1, 64, 64), num_outputs=64 * 64, output_shape=[1, 64, 64], **kwargs)
        optimizer = torch.optim.Adam(model.parameters())

        def step(model=model, optimizer=optimizer):
            loss = (model(x) - y).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()

        step()  # warm-up
        key = f"{name} " + " ".join(f"{k} {v}" for k, v in kwargs.items())
        steps[key], times[key] = step, []
    for _ in range(rounds):
        for key, step in steps.items():
            began = time.perf_counter()
            for _ in range(3):
                step()
            times[key].append((time.perf_counter() - began) / 3 / batch * 1e3)
    base = statistics.median(times[next(iter(times))])
    for key, values in times.items():
        ms = statistics.median(values)
        print(f"{key:24s} {ms:7.2f} ms/sample/step  ({ms / base:.2f} of the first; batch {batch}, "
              f"{torch.get_num_threads()} threads)")


def check(value, bar) -> bool:
    op, limit = bar
    return value is not None and (value <= limit if op == "<=" else value >= limit)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="Directory for the runs (kept; finished runs are reused). Default: a temporary one.")
    parser.add_argument("--only", help="Comma-separated cases: burgers, darcy. Default: both.")
    parser.add_argument("--quick", action="store_true", help="Smoke test: 2 x 128 labels, 2 epochs.")
    parser.add_argument("--costs", action="store_true",
                        help="Only time one optimizer step of candidate 2-D students (64 x 64), and stop.")
    parser.add_argument("extra", nargs="*", help="More options for every pipeline run, after --.")
    args = parser.parse_args()
    if args.costs:
        return step_costs()
    names = [n.strip() for n in args.only.split(",")] if args.only else list(CASES)
    unknown = [n for n in names if n not in CASES]
    if unknown:
        parser.error(f"--only names {', '.join(unknown)}; the cases are {', '.join(CASES)}.")
    root = os.path.abspath(args.out or tempfile.mkdtemp(prefix="operators-"))
    os.makedirs(root, exist_ok=True)

    rows = []
    for name in names:
        report, wall = run_case(name, os.path.join(root, name), args.quick, args.extra)
        r = report["regression"]
        held, train = r["heldout"], r["train"]
        speed = report.get("speed") or {}
        row = {"case": name, "median": held["rel_l2"]["median"], "p95": held["rel_l2"]["p95"],
               "p99": held["rel_l2"]["p99"], "train median": train["rel_l2"]["median"],
               "vrmse": held["vrmse"][0]["median"], "solver calls": train["samples"] + held["samples"],
               "labels": train["samples"], "wall min": wall / 60,
               "speed-up 256": (report.get("speedup") or {}).get("batch256"),
               "solver rate": (speed.get("teacher") or {}).get("samples_per_s"),
               "student rate 256": (speed.get("student") or {}).get("samples_per_s_batch256"),
               "params": report.get("params", {}).get("student"), "arch": report.get("student", {}).get("arch"),
               "epochs": report.get("student", {}).get("epochs"), "bars": CASES[name]["bars"]}
        rows.append(row)
        print(f"[{name}] held-out rel L2 median {row['median']:.3e}, p95 {row['p95']:.3e}, p99 {row['p99']:.3e} "
              f"(train median {row['train median']:.3e}); VRMSE median {row['vrmse']:.3e}; {row['solver calls']:,} "
              f"solver calls ({row['labels']:,} training labels); student {row['arch']} {row['params']:,} params, "
              f"{row['epochs']} epochs; wall {wall / 60:.1f} min", flush=True)
        print(f"[{name}] speed (CPU, all cores): solver {row['solver rate'] or 0:,.0f} samples/s while labeling, "
              f"student {row['student rate 256'] or 0:,.0f} samples/s at batch 256: {row['speed-up 256'] or 0:,.1f}x",
              flush=True)

    print()
    print(f"{'case':8s} {'median':>9s} {'p95':>9s} {'p99':>9s} {'VRMSE':>9s} {'calls':>6s} {'speed-up':>9s} {'wall':>6s}")
    for row in rows:
        print(f"{row['case']:8s} {row['median']:9.2e} {row['p95']:9.2e} {row['p99']:9.2e} {row['vrmse']:9.2e} "
              f"{row['solver calls']:6,d} {row['speed-up 256'] or 0:8,.1f}x {row['wall min']:5.1f}m")
    print()
    missed = 0
    for row in rows:
        verdicts = []
        for figure, bar in row["bars"].items():
            ok = check(row[figure], bar)
            missed += not ok
            verdicts.append(f"{figure} {row[figure]:.3g} {bar[0]} {bar[1]:g}: {'ok' if ok else 'MISSED'}")
        print(f"bars {row['case']:8s} " + "; ".join(verdicts))
    print(f"bars missed: {missed}" + (" (--quick: tiny sizes, the bars are not meant to hold)" if args.quick else ""))


if __name__ == "__main__":
    main()

"""`python -m pipeline run` as a user runs it, timed: shared by the benches that run whole pipelines."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

ROOT = os.path.abspath(os.path.join(os.path.dirname(__file__), ".."))


def timed_pipeline_run(name: str, args: list[str], out: str) -> tuple[dict, float]:
    """Run `python -m pipeline run --out OUT ARGS` from the repository root, echoing its lines; its
    report and wall seconds. A finished run is reused ("nothing to do"): its wall seconds are then the
    first run's, kept in OUT.wall.json beside (not in) the run directory."""
    began = time.perf_counter()
    proc = subprocess.Popen([sys.executable, "-m", "pipeline", "run", "--out", out, *args], cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    reused = False
    for line in proc.stdout:
        print(f"  | {line.rstrip()}", flush=True)
        reused |= line.startswith("nothing to do")
    if proc.wait() != 0:
        raise SystemExit(f"[{name}] the pipeline run failed with exit code {proc.returncode}")
    seconds = time.perf_counter() - began
    wall_file = out.rstrip("/") + ".wall.json"
    if reused and os.path.exists(wall_file):
        with open(wall_file) as f:
            seconds = json.load(f)["seconds"]
    elif not reused:
        with open(wall_file, "w") as f:
            json.dump({"seconds": seconds}, f)
    with open(os.path.join(out, "report.json")) as f:
        return json.load(f), seconds

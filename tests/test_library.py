"""The stages as a library: the README's "Using the stages from Python" program, run as written.

The program is taken from README.md, so the README cannot drift from what works. It runs in a fresh
process (its own `ray.init`, as a user's program has), with `ray.init` counted: the stages must use
the caller's Ray, never start one of their own.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
SECTION = "## Using the stages from Python"

# Counts the program's calls of ray.init, then runs the program text unchanged.
HARNESS = """
import ray
calls = []
_init = ray.init
def counted(*args, **kwargs):
    calls.append(kwargs)
    return _init(*args, **kwargs)
ray.init = counted
exec(compile(open({path!r}).read(), "README.md", "exec"), {{"__name__": "__main__"}})
print("ray.init calls:", len(calls))
"""


def readme_program() -> str:
    with open(os.path.join(ROOT, "README.md")) as f:
        text = f.read()
    section = text.split(SECTION, 1)[1].split("\n## ", 1)[0]
    return re.search(r"```python\n(.*?)```", section, re.DOTALL).group(1)


def test_the_readme_program_composes_the_stages_inside_the_callers_ray(tmp_path):
    program = tmp_path / "program.py"
    program.write_text(readme_program())
    # A Ray directory of its own: the program's ray.init must not find another Ray on this machine.
    with tempfile.TemporaryDirectory(prefix="dlib", dir="/tmp") as ray_tmp:
        env = {**os.environ, "RAY_ADDRESS": "", "RAY_TMPDIR": ray_tmp,
               "PYTHONPATH": os.pathsep.join([ROOT, os.environ.get("PYTHONPATH", "")])}
        proc = subprocess.run([sys.executable, "-c", HARNESS.format(path=str(program))], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=400, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = proc.stdout.strip().splitlines()
    assert lines[-1] == "ray.init calls: 1"  # the caller's only: no stage started a Ray of its own
    assert re.match(r"teacher trained, \d+ rows labeled, student trained: held-out agreement 0\.\d{3}$", lines[-3])
    assert lines[-2].startswith("promoted v0001: ")
    registry = tmp_path / "registry"
    assert (registry / "current").read_text() == "v0001\n"
    assert json.loads((registry / "history.json").read_text())[0]["run"] == str(tmp_path / "runs" / "from-python")

"""Config files, read before the parser sees them: a user's `--config FILE.yaml`, and the config.yaml
that a run records in its directory.

The parser's own messages for a file that is empty, not YAML or not a mapping name neither the file
nor what was expected ("Unexpected config:"), so each file is checked here first: one sentence
naming it. A broken `--config` is a bad command line (exit 2); a broken recorded config.yaml is a
damaged run directory (exit 1).
"""

from __future__ import annotations

import yaml

from pipeline.errors import ConfigError, UserError
from pipeline.run import storage

EXPECTED = "expected a YAML mapping of config sections, e.g. 'train: {max_epochs: 5}'"


def read_mapping(path: str, error: type[UserError] = UserError) -> dict:
    """The YAML mapping in `path`; `error` (one sentence naming the file) when it is anything else."""
    fs, p = storage.resolve(path)
    kind = fs.get_file_info(p).type.name
    if kind == "NotFound":
        raise error(f"config file {path} does not exist; {EXPECTED}.")
    if kind != "File":
        raise error(f"config file {path} is a {kind.lower()}, not a file; {EXPECTED}.")
    try:
        data = yaml.safe_load(storage.read_bytes(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark is not None else ""
        raise error(f"config file {path} is not valid YAML ({getattr(exc, 'problem', None) or exc}{where}); "
                    f"{EXPECTED}.") from exc
    if data is None:
        raise error(f"config file {path} is empty; {EXPECTED}.")
    if not isinstance(data, dict):
        raise error(f"config file {path} holds a YAML {type(data).__name__}; {EXPECTED}.")
    return data


def check_config_options(argv: list[str]) -> None:
    """Check every file given with `--config FILE` or `--config=FILE` on a command line (exit 2)."""
    for i, arg in enumerate(argv):
        if arg == "--config" and i + 1 < len(argv):
            read_mapping(argv[i + 1], ConfigError)
        elif arg.startswith("--config="):
            read_mapping(arg.split("=", 1)[1], ConfigError)

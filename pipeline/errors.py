"""Errors a user can cause, and the exit codes the CLI maps them to.

A `UserError` carries one sentence that names the thing (file, key, directory) and what was
expected; the CLI prints it without a traceback. Anything else is a bug and keeps its traceback.
"""

# Exit codes are part of the CLI contract: scheduled jobs branch on them.
EXIT_OK = 0
EXIT_USER_ERROR = 1  # missing/corrupt file, mismatched teacher, occupied output directory, ...
EXIT_CONFIG_ERROR = 2  # unknown key, wrong type, out-of-range value (argparse also uses 2)
EXIT_GATE_FAILED = 3  # the eval promotion gate: held-out agreement below --min-agreement


class UserError(Exception):
    """A mistake in the user's input; the message is shown as is."""

    exit_code = EXIT_USER_ERROR


class ConfigError(UserError):
    """A config value that is out of range or inconsistent with another."""

    exit_code = EXIT_CONFIG_ERROR


class RetriesExhausted(UserError):
    """Workers or nodes were lost more often than the retries allow. Not the user's input, but
    handled the same way: one line, exit 1; completed work is kept and a rerun finishes the rest."""

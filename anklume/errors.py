"""Error types shared by every part of anklume.

Inside the code, errors are typed; only the CLI edge turns them into a message and an exit code.
"""

from anklume import exitcodes


class AnklumeError(Exception):
    """An error that explains itself to the user: no traceback needed."""

    exit_code = exitcodes.FAILED

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.hint = hint

    def __str__(self) -> str:
        msg = super().__str__()
        return f"{msg}\n  hint: {self.hint}" if self.hint else msg


class TemporaryError(AnklumeError):
    """A failure that may go away on retry (daemon busy, lock held)."""


class PermanentError(AnklumeError):
    """A failure that retrying will not fix (bad input, refused by the system)."""


class CommandError(PermanentError):
    """An external command failed; carries what ran and what it said."""

    def __init__(self, argv: list[str], returncode: int, stderr: str) -> None:
        self.argv = argv
        self.returncode = returncode
        self.stderr = stderr
        tail = stderr.strip().splitlines()[-5:]
        detail = "\n    ".join(tail) if tail else "(no output)"
        super().__init__(f"`{' '.join(argv)}` exited with status {returncode}:\n    {detail}")

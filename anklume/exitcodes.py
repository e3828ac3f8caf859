"""The exit statuses of every `anklume` command, named once.

The units read them (`SuccessExitStatus=` in image/extra/usr/lib/systemd/system/), so do the
boot tests and scripts: a value never changes meaning.
"""

OK = 0
FAILED = 1  # something failed or was refused; the message says what (AnklumeError's default)
INVALID = 2  # the input (infra.yml, the answers, a plan) is invalid: nothing was changed
NOTHING = 3  # nothing recorded or nothing to do: no result yet, setup declined or never run
NO_ANSWERS = 4  # the first-boot setup has no answers and no terminal to ask on
TEMPFAIL = 75  # EX_TEMPFAIL (sysexits.h): busy or unreachable, try again later

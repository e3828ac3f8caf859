"""The setup offered on the boot consoles: who takes it, live mode, the countdown."""

from __future__ import annotations

import io
import threading
import time
from pathlib import Path

from anklume.firstboot import flow, offer


class Con:
    def __init__(self) -> None:
        self.said: list[str] = []

    def say(self, text: str) -> None:
        self.said.append(text)

    def ask(self, prompt: str) -> str:  # pragma: no cover - the offer never asks
        raise AssertionError(prompt)

    def secret(self, prompt: str) -> str:  # pragma: no cover
        raise AssertionError(prompt)


class Clock:
    """Time moves only when the offer waits for a line (no real sleeping)."""

    def __init__(self) -> None:
        self.t = 0.0

    def __call__(self) -> float:
        return self.t

    def ready(self, lines: list[str]):
        def line_ready(stream, timeout: float) -> bool:
            if lines:
                return True
            self.t += timeout
            return False
        return line_ready


def run(tmp_path: Path, typed: list[str], rc: int = flow.DONE, tty: str = "ttyS0",
        countdown: float = 60) -> tuple[str, Con, list[int]]:
    con, clock, ran = Con(), Clock(), []
    stdin = io.StringIO("".join(typed))

    def wizard() -> int:
        ran.append(1)
        return rc

    out = offer.offer(con, tty, wizard, paths=offer.Paths(tmp_path), stdin=stdin,
                      countdown=countdown, clock=clock, line_ready=clock.ready(typed))
    return out, con, ran


def test_enter_takes_the_wizard_on_this_console(tmp_path: Path) -> None:
    out, con, ran = run(tmp_path, ["\n"])
    assert out == "done" and ran == [1]
    assert (tmp_path / offer.CLAIM).read_text() == "ttyS0\n"
    assert (tmp_path / offer.FINISHED).read_text() == "done\n"
    assert "Press Enter to set it up now" in con.said[0]


def test_live_typed_or_no_answer_starts_live_mode(tmp_path: Path) -> None:
    out, _, ran = run(tmp_path / "a", ["live\n"])
    assert (out, ran) == ("live", [])
    assert (tmp_path / "a" / offer.FINISHED).read_text() == "live\n"
    out, con, ran = run(tmp_path / "b", [], countdown=60)
    assert (out, ran) == ("live", [])
    assert (tmp_path / "b" / offer.FINISHED).read_text() == "live\n"
    assert any("live mode in 40 s" in s for s in con.said), con.said
    assert "No answer" in con.said[-1]


def test_a_declined_or_failed_wizard_is_recorded_and_the_boot_goes_on(tmp_path: Path) -> None:
    out, con, _ = run(tmp_path / "a", ["\n"], rc=flow.DECLINED)
    assert out == "declined" and "offered again at the next boot" in con.said[-1]
    out, con, _ = run(tmp_path / "b", ["\n"], rc=flow.FAILED)
    assert out == "failed" and "Fix the cause and reboot" in con.said[-1]
    assert (tmp_path / "b" / offer.FINISHED).read_text() == "failed\n"


def test_the_other_console_waits_for_the_one_that_took_it(tmp_path: Path) -> None:
    (tmp_path / offer.CLAIM).write_text("ttyS0\n")

    def finish_later() -> None:
        time.sleep(1.5)
        offer.finish(offer.Paths(tmp_path), "done")

    t = threading.Thread(target=finish_later)
    t.start()
    out, con, ran = run(tmp_path, [], tty="tty1")
    t.join()
    assert out == "elsewhere:done" and ran == []
    assert any("The setup runs on ttyS0" in s for s in con.said), con.said


def test_a_late_enter_after_another_console_claimed_runs_nothing(tmp_path: Path) -> None:
    offer.claim(offer.Paths(tmp_path), "tty1")
    offer.finish(offer.Paths(tmp_path), "live")
    out, _, ran = run(tmp_path, ["\n"], tty="ttyS0")
    assert out == "elsewhere:live" and ran == []

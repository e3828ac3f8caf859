"""`anklume plan|apply --host`: what travels (agent/remote.py), what the appliance accepts and
where it lands, and the laptop's side refusing an invalid infra before any connection. The
whole path against a booted appliance: tests/vm/test_vm_cli.py."""

from __future__ import annotations

import io
import subprocess
import tarfile
from pathlib import Path

import pytest
from typer.testing import CliRunner

from anklume.agent import remote

INFRA = (Path(__file__).resolve().parents[2] / "anklume/defaults/infra.yml").read_text()


def tar_of(*members: tuple[str, bytes | None, str]) -> bytes:
    """(name, data or None for a directory, kind: file|dir|symlink)."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w") as tar:
        for name, data, kind in members:
            info = tarfile.TarInfo(name)
            if kind == "dir":
                info.type = tarfile.DIRTYPE
                tar.addfile(info)
            elif kind == "symlink":
                info.type, info.linkname = tarfile.SYMTYPE, "/etc/shadow"
                tar.addfile(info)
            else:
                info.size = len(data or b"")
                tar.addfile(info, io.BytesIO(data or b""))
    return buf.getvalue()


def test_a_file_travels_as_infra_yml(tmp_path: Path) -> None:
    src = tmp_path / "mine.yml"
    src.write_text(INFRA)
    got = remote.unpack(remote.pack(src), tmp_path / "out")
    assert got == tmp_path / "out/infra.yml" and got.read_text() == INFRA


def test_a_directory_travels_without_its_links(tmp_path: Path) -> None:
    src = tmp_path / "infra"
    (src / "domains").mkdir(parents=True)
    (src / "base.yml").write_text("schema_version: 1\n")
    (src / "domains/work.yml").write_text("work: {}\n")
    (src / "domains/evil.yml").symlink_to("/etc/shadow")
    got = remote.unpack(remote.pack(src), tmp_path / "out")
    assert sorted(str(p.relative_to(got)) for p in got.rglob("*")) == [
        "base.yml", "domains", "domains/work.yml"]


@pytest.mark.parametrize(("members", "why"), [
    ((("etc/cron.d/x", b"* * * * * root sh", "file"),), "infra.yml or infra/ only"),
    ((("infra.yml", b"a", "file"), ("other", b"b", "file")), "infra.yml or infra/ only"),
    ((("infra", None, "dir"), ("infra/x.yml", None, "symlink")), "only plain files"),
    ((("infra", None, "dir"), ("infra/../../x", b"a", "file")), "refused"),  # data filter
])
def test_anything_else_is_refused_before_a_byte_is_written(
        tmp_path: Path, members: tuple[tuple[str, bytes | None, str], ...], why: str) -> None:
    dest = tmp_path / "out"
    dest.mkdir()
    with pytest.raises(remote.RemoteError) as e:
        remote.unpack(tar_of(*members), dest)
    assert why in str(e.value)
    assert not (tmp_path / "x").exists() and list(dest.iterdir()) in ([], [dest / "infra"])


def test_not_a_tar_and_too_big(tmp_path: Path) -> None:
    with pytest.raises(remote.RemoteError, match="not a tar stream"):
        remote.unpack(b"hello", tmp_path)
    with pytest.raises(remote.RemoteError, match="over"):
        remote.unpack(b"\0" * (remote.MAX_BYTES + 1), tmp_path)


def test_install_replaces_the_previous_infra_whatever_its_form(tmp_path: Path) -> None:
    state, got = tmp_path / "state", tmp_path / "got"
    (state / "infra").mkdir(parents=True)
    (state / "infra/old.yml").write_text("old\n")
    got.mkdir()
    (got / "infra.yml").write_text(INFRA)
    assert remote.install(got / "infra.yml", state) == state / "infra.yml"
    assert not (state / "infra").exists() and (state / "infra.yml").read_text() == INFRA
    (got / "infra").mkdir()
    (got / "infra/a.yml").write_text("a\n")
    assert remote.install(got / "infra", state) == state / "infra"
    assert not (state / "infra.yml").exists()
    assert sorted(p.name for p in state.iterdir()) == ["infra"]


def test_ssh_argv_passes_the_remote_command_as_one_quoted_word() -> None:
    argv = remote.ssh_argv("root@192.0.2.7", ["anklume", "agent", "receive", "--default-image",
                                              "a b"], port=2222, identity=Path("/k"),
                           options=["StrictHostKeyChecking=yes"])
    assert argv == ["ssh", "-p", "2222", "-i", "/k", "-o", "StrictHostKeyChecking=yes", "--",
                    "root@192.0.2.7", "anklume agent receive --default-image 'a b'"]


def test_an_invalid_infra_never_leaves_the_laptop(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    from anklume.cli import app

    bad = tmp_path / "infra.yml"
    bad.write_text("schema_version: 1\nproject_name: x\ndomains:\n  work:\n    machnes: {}\n")

    def no_ssh(*a: object, **kw: object) -> object:
        raise AssertionError(f"ssh ran: {a}")

    monkeypatch.setattr(subprocess, "run", no_ssh)
    r = CliRunner().invoke(app, ["apply", "--host", "root@192.0.2.7", "--yes", str(bad)])
    assert r.exit_code == 2 and "machnes" in r.output, r.output


def test_apply_asks_before_it_applies(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The plan is shown (first ssh), then nothing is applied without a yes."""
    from anklume.cli import app

    good = tmp_path / "infra.yml"
    good.write_text(INFRA)
    calls: list[list[str]] = []

    def fake_ssh(argv: list[str], **kw: object) -> subprocess.CompletedProcess[bytes]:
        calls.append(argv)
        return subprocess.CompletedProcess(argv, 0)

    monkeypatch.setattr(subprocess, "run", fake_ssh)
    r = CliRunner().invoke(app, ["apply", "--host", "root@192.0.2.7", str(good)], input="n\n")
    assert [c[-1] for c in calls] == ["anklume agent receive"], calls
    assert r.exit_code != 0, r.output
    calls.clear()
    r = CliRunner().invoke(app, ["apply", "--host", "root@192.0.2.7", "--yes", "--prune",
                                 str(good)])
    assert [c[-1] for c in calls] == ["anklume agent receive --prune",
                                      "anklume agent receive --apply --prune"], calls
    assert r.exit_code == 0, r.output


def test_no_such_host_is_sshs_own_error(tmp_path: Path) -> None:
    """A closed loopback port: ssh's message and its status 255, nothing applied."""
    import os
    import socket
    import sys

    good = tmp_path / "infra.yml"
    good.write_text(INFRA)
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # bound, never listening: connections are refused
        r = subprocess.run([sys.executable, "-c", "from anklume.cli import run; run()", "plan",
                            "--host", "root@127.0.0.1", "--port", str(port),
                            "-o", "BatchMode=yes", "-o", f"UserKnownHostsFile={os.devnull}",
                            str(good)], capture_output=True, text=True, timeout=60)
    assert r.returncode == 255 and "Connection refused" in r.stderr, (r.returncode, r.stderr)

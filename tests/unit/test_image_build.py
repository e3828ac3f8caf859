import json
from pathlib import Path

import pytest

from anklume.image import build
from anklume.signing.keys import KeySet

REPO = Path(__file__).resolve().parents[2]


def test_version_comes_from_the_version_file():
    from anklume import __version__

    assert build.read_version(REPO) == __version__


def make_repo(tmp_path, version):
    (tmp_path / "anklume").mkdir()
    (tmp_path / "anklume" / "VERSION").write_text(version + "\n")
    (tmp_path / "mkosi.conf").write_text("[Output]\nImageId=anklume\n")
    (tmp_path / "mkosi.conf.d").mkdir()
    return tmp_path


@pytest.mark.parametrize("bad", ["", "v1", "1 2", "1/2", "1." + "9" * 40])
def test_bad_versions_are_refused(tmp_path, bad):
    with pytest.raises(build.BuildError):
        build.read_version(make_repo(tmp_path, bad))


def test_version_fits_partition_labels(tmp_path):
    # anklume_<v>_verity_sig must fit the 36 characters of a GPT partition label.
    assert build.read_version(make_repo(tmp_path, "2025.12.31-rc1")) == "2025.12.31-rc1"


def test_find_repo_walks_up(tmp_path):
    repo = make_repo(tmp_path, "1.0")
    (repo / "a" / "b").mkdir(parents=True)
    assert build.find_repo(repo / "a" / "b") == repo


def test_mkosi_args_pass_version_keys_and_outside_caches(tmp_path):
    paths = build.Paths(repo=tmp_path, build_dir=tmp_path / "build", cache=Path("/var/cache/x"))
    ks = KeySet(Path("/keys"))
    args = build.mkosi_args(paths, "1.2.3", ks)
    opt = dict(zip(args[:-1:2], args[1:-1:2], strict=True))
    assert args[-1] == "build"
    assert opt["--image-version"] == "1.2.3"
    assert opt["--secure-boot-key"] == "/keys/db.key"
    assert opt["--verity-certificate"] == "/keys/verity.crt"
    assert not opt["--cache-directory"].startswith(str(tmp_path))
    assert not opt["--output-directory"].startswith(str(tmp_path))
    assert opt["--build-sources"] == "/var/cache/x/inputs:inputs,/keys:keys"


def test_clean_outputs_removes_only_our_files(tmp_path):
    for name in ("anklume_0.1.usr-x86-64.aaa.raw", "anklume_0.1.efi", "build.json", "anklume",
                 "test-logs", "mkosi.log", "other.raw"):
        (tmp_path / name).write_text("")
    removed = build.clean_outputs(tmp_path)
    assert sorted(p.name for p in removed) == [
        "anklume", "anklume_0.1.efi", "anklume_0.1.usr-x86-64.aaa.raw", "build.json"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mkosi.log", "other.raw", "test-logs"]


def test_prepare_caches_drops_image_cache_when_key_changes(tmp_path):
    (tmp_path / "repo").mkdir()
    repo = make_repo(tmp_path / "repo", "1.0")
    kd = tmp_path / "keys"
    kd.mkdir()
    (kd / "db.crt").write_text("cert1")
    ks = KeySet(kd)
    paths = build.Paths(repo=repo, build_dir=tmp_path / "b", cache=tmp_path / "cache")
    cache = paths.mkosi_cache
    cache.mkdir(parents=True)
    img = cache / "debian~trixie~x86-64.cache"
    initrd = cache / "debian~trixie~x86-64~initrd.cache"  # mkosi.images/initrd
    old_initrd = cache / "debian~trixie~x86-64~default-initrd.cache"  # mkosi's, older builds
    tools = cache / "tools.cache"
    for d in (img, initrd, old_initrd, tools):
        d.mkdir()
    # No record yet (first build with this code): nothing is dropped, the inputs are recorded.
    assert build.prepare_caches(paths, ks) == []
    assert img.exists() and initrd.exists()
    assert build.prepare_caches(paths, ks) == []
    assert img.exists() and initrd.exists()
    (kd / "db.crt").write_text("cert2")
    dropped = build.prepare_caches(paths, ks)
    assert len(dropped) == 1 and "key" in dropped[0]
    assert not img.exists() and initrd.exists() and tools.exists()
    (repo / "mkosi.conf.d" / "10-x.conf").write_text("[Content]\nPackages=x\n")
    dropped = build.prepare_caches(paths, ks)
    assert len(dropped) == 1 and "configuration" in dropped[0]
    assert not initrd.exists() and not old_initrd.exists() and tools.exists()
    # The initrd's own config is part of the configuration.
    initrd.mkdir()
    (repo / "mkosi.images" / "initrd").mkdir(parents=True)
    (repo / "mkosi.images" / "initrd" / "mkosi.conf").write_text("[Content]\nRemoveFiles=/x\n")
    dropped = build.prepare_caches(paths, ks)
    assert len(dropped) == 1 and "configuration" in dropped[0]
    assert not initrd.exists() and tools.exists()
    assert json.loads((cache / "anklume-stamps.json").read_text())["db_cert"]

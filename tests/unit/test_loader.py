"""Reading infra.yml and infra/ directories; strict YAML; the `anklume validate` command."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from anklume.agent.validate import ValidationError, load, load_with_warnings

BASE = {"schema_version": 1, "project_name": "t",
        "global": {"addressing": {"zone_base": 100}, "gpu_policy": "shared"},
        "shared_volumes": {"docs": {"consumers": {"pro": "ro", "lab-vm": "rw"}}}}
DOMAINS = {
    # deliberately not in alphabetical order: the directory form sorts its files
    "pro": {"trust_level": "trusted", "machines": {"pro-dev": {"gpu": True}, "pro-web": {}}},
    "lab": {"trust_level": "disposable", "ephemeral": True,
            "profiles": {"big": {"config": {"limits.cpu": 4}}},
            "machines": {"lab-vm": {"type": "vm", "profiles": ["default", "big"],
                                    "ip": "10.150.0.42"}}},
    "admin": {"trust_level": "admin", "machines": {"ctl": {"gpu": True}}},
}
POLICIES = [{"from": "pro-dev", "to": "lab", "ports": [22, 8080]},
            {"from": "host", "to": "ctl", "ports": "all", "bidirectional": True}]


def dump(path: Path, data: object) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(data if isinstance(data, str) else yaml.safe_dump(data, sort_keys=False))
    return path


def make_dir(root: Path, policies: bool = True) -> Path:
    dump(root / "base.yml", BASE)
    for name, conf in DOMAINS.items():
        dump(root / "domains" / f"{name}.yml", {name: conf})
    if policies:
        dump(root / "policies.yml", {"network_policies": POLICIES})
    return root


def test_file_and_directory_forms_are_identical(tmp_path):
    single = dump(tmp_path / "infra.yml",
                  {**BASE, "domains": DOMAINS, "network_policies": POLICIES})
    root = make_dir(tmp_path / "infra")
    from_file, w1 = load_with_warnings(single)
    from_dir, w2 = load_with_warnings(root)
    assert from_file == from_dir
    assert [p.what for p in w1] == [p.what for p in w2]
    assert [d.name for d in from_dir.domains] == ["admin", "lab", "pro"]
    assert len(from_dir.policies) == 2
    # a directory holding infra/ or infra.yml is accepted too
    assert load(tmp_path) == from_file


def test_directory_without_policies(tmp_path):
    infra = load(make_dir(tmp_path, policies=False))
    assert infra.policies == ()


def test_domain_defined_twice_names_both_files(tmp_path):
    root = make_dir(tmp_path)
    dump(root / "domains" / "zz.yml", {"pro": {}})
    with pytest.raises(ValidationError) as e:
        load(root)
    (p,) = e.value.problems
    assert p.where == "domains.pro"
    assert str(root / "domains" / "pro.yml") in p.what
    assert str(root / "domains" / "zz.yml") in p.what


def test_domain_in_base_and_in_a_file(tmp_path):
    root = make_dir(tmp_path)
    dump(root / "base.yml", {**BASE, "domains": {"pro": {}}})
    with pytest.raises(ValidationError) as e:
        load(root)
    assert str(root / "base.yml") in e.value.problems[0].what


def test_errors_in_domain_files_point_at_that_file(tmp_path):
    root = make_dir(tmp_path)
    dump(root / "domains" / "pro.yml", "pro:\n  trust_level: trusted\n  machines:\n"
         "    pro-dev:\n      ip: 10.110.0.300\n")
    with pytest.raises(ValidationError) as e:
        load(root)
    (p,) = e.value.problems
    assert (p.file, p.line, p.where) == (str(root / "domains" / "pro.yml"), 5,
                                         "domains.pro.machines.pro-dev.ip")


def test_policy_errors_point_at_policies_file(tmp_path):
    root = make_dir(tmp_path)
    dump(root / "policies.yml", {"network_policies": [{"from": "x", "to": "pro"}]})
    with pytest.raises(ValidationError) as e:
        load(root)
    (p,) = e.value.problems
    assert (p.file, p.where) == (str(root / "policies.yml"), "network_policies[0].from")


def test_policies_file_checks(tmp_path):
    root = make_dir(tmp_path)
    dump(root / "policies.yml", {"network_policy": []})
    with pytest.raises(ValidationError) as e:
        load(root)
    assert "network_policies" in str(e.value)
    dump(root / "policies.yml", {"network_policies": []})
    dump(root / "base.yml", {**BASE, "network_policies": []})
    with pytest.raises(ValidationError) as e:
        load(root)
    assert "defined twice" in str(e.value)


def test_all_files_reported_at_once(tmp_path):
    root = make_dir(tmp_path)
    dump(root / "domains" / "a.yml", "a: [")
    dump(root / "domains" / "b.yml", "- b")
    with pytest.raises(ValidationError) as e:
        load(root)
    assert [Path(p.file).name for p in e.value.problems] == ["a.yml", "b.yml"]


def test_empty_domain_file_is_ignored(tmp_path):
    root = make_dir(tmp_path)
    dump(root / "domains" / "empty.yml", "# nothing yet\n")
    assert len(load(root).domains) == 3


@pytest.mark.parametrize("text, line", [
    ("project_name: t\nglobal: {}\ndomains:\n  a: {\n", 5),
    ("project_name: t\n\tglobal: {}\n", 2),
    ("project_name: t\nproject_name: u\n", 2),
    ("domains:\n  a: {}\n  b: {}\n  a: {}\n", 4),
    ("a: !!python/object/apply:os.system [ls]\n", 1),
])
def test_bad_yaml_names_file_and_line(tmp_path, text, line):
    path = dump(tmp_path / "infra.yml", text)
    with pytest.raises(ValidationError) as e:
        load(path)
    (p,) = e.value.problems
    assert (p.file, p.line) == (str(path), line)


def test_merge_keys_may_override(tmp_path):
    text = ("project_name: t\nglobal: {}\nx-common: &c {type: vm, gpu: false}\n"
            "domains:\n  a:\n    machines:\n      m: {<<: *c, gpu: true}\n")
    with pytest.raises(ValidationError) as e:  # x-common is an unknown key, nothing else
        load(dump(tmp_path / "infra.yml", text))
    assert [p.where for p in e.value.problems] == ["x-common"]


@pytest.mark.parametrize("content", [b"\xff\xfe garbage", b"a: 2020-02-30\n", b"\x00",
                                     b"[" * 5000, b"a: &a [*a]\n"])
def test_unreadable_content(tmp_path, content):
    path = tmp_path / "infra.yml"
    path.write_bytes(content)
    with pytest.raises(ValidationError):
        load(path)


def test_missing_path_and_empty_directory(tmp_path):
    with pytest.raises(ValidationError, match="no such file"):
        load(tmp_path / "nope.yml")
    with pytest.raises(ValidationError, match=r"base\.yml"):
        load(tmp_path)


# -- the command ------------------------------------------------------------------------------

def _cli():
    from anklume.cli import app
    return app


def test_cli_validate_default():
    result = CliRunner().invoke(_cli(), ["validate"])
    assert result.exit_code == 0, result.output
    assert "valid: 3 domains, 4 machines" in result.output


def test_cli_validate_problems_exit_2(tmp_path):
    path = dump(tmp_path / "infra.yml", {"project_name": "t", "global": {"gpu_polcy": 1},
                                         "domains": {"Bad": {}}})
    result = CliRunner().invoke(_cli(), ["validate", str(path)])
    assert result.exit_code == 2
    assert "global.gpu_polcy" in result.output and "domains.Bad" in result.output


def test_cli_validate_prints_warnings(tmp_path):
    path = dump(tmp_path / "infra.yml", {"project_name": "t", "global": {"default_user": "x"},
                                         "domains": {"a": {"machines": {"m": {}}}}})
    result = CliRunner().invoke(_cli(), ["validate", str(path)])
    assert result.exit_code == 0
    assert "valid: 1 domains, 1 machines" in result.output
    assert "warning:" in result.output and "global.default_user" in result.output


def test_documented_example_validates(tmp_path):
    text = (Path(__file__).parents[2] / "docs" / "infra-yml.md").read_text()
    example = text.split("```yaml\n", 1)[1].split("```", 1)[0]
    infra, warnings = load_with_warnings(dump(tmp_path / "infra.yml", example))
    assert warnings == []
    ips = {m.name: str(m.ip) for d in infra.domains for m in d.machines}
    assert ips == {"admin-ctl": "10.100.0.10", "work-dev": "10.110.0.1",
                   "work-web": "10.110.0.2", "lab-vm": "10.150.0.1"}
    (mount,) = next(m for m in infra.domain("work").machines if m.name == "work-dev") \
        .shared_volumes
    assert not mount.readonly

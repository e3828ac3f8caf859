"""Read infra.yml, or an infra/ directory, into one merged document (no validation yet).

Directory form: `base.yml` (project_name, global, ...) + `domains/*.yml` (each a mapping of
one or more `{domain: config}`, merged in sorted file order) + optional `policies.yml`
(`network_policies:`). It merges into exactly what the single-file form holds, so both give
the same Infra.
"""

from __future__ import annotations

from dataclasses import dataclass
from importlib import resources
from pathlib import Path

from anklume.agent.schema import suggest
from anklume.problems import KeyPath, Locator, Problem, Report, ValidationError, describe
from anklume.yamlfile import parse

DEFAULT_LABEL = "anklume/defaults/infra.yml (embedded)"


@dataclass
class Source:
    data: object  # the merged document, as YAML gave it
    locator: Locator  # where each key path came from
    label: str  # what was read, for messages


def read(path: Path | None) -> Source:
    """Read PATH (a file, an infra/ directory, or a directory holding either); None reads
    the embedded default. Raises ValidationError for anything unreadable."""
    if path is None:
        text = resources.files("anklume").joinpath("defaults/infra.yml").read_text()
        return _from_text(text, DEFAULT_LABEL)
    path = Path(path)
    if path.is_dir():
        if (path / "base.yml").is_file():
            return _read_dir(path)
        if (path / "infra.yml").is_file():
            return _read_file(path / "infra.yml")
        if (path / "infra" / "base.yml").is_file():
            return _read_dir(path / "infra")
        raise _fail(str(path), "is a directory without base.yml (nor infra.yml, nor infra/)",
                    "an infra/ directory holds base.yml, domains/*.yml and policies.yml")
    return _read_file(path)


def _fail(file: str, what: str, hint: str | None = None) -> ValidationError:
    return ValidationError([Problem("", what, hint, file)])


def _read_text(path: Path) -> str:
    try:
        return path.read_bytes().decode("utf-8")
    except FileNotFoundError:
        raise _fail(str(path), "no such file") from None
    except UnicodeDecodeError as e:
        raise _fail(str(path), f"not UTF-8 text (byte {e.start})") from None
    except OSError as e:
        raise _fail(str(path), f"cannot read: {e.strerror or e}") from None


def _from_text(text: str, label: str) -> Source:
    data, lines = parse(text, label)
    locator = Locator({(): (label, None)})
    locator.lines.update({p: (label, n) for p, n in lines.items()})
    return Source(data, locator, label)


def _read_file(path: Path) -> Source:
    return _from_text(_read_text(path), str(path))


def _parse_file(path: Path, problems: list[Problem]) -> tuple[object, dict[KeyPath, int]] | None:
    try:
        return parse(_read_text(path), str(path))
    except ValidationError as e:
        problems.extend(e.problems)
        return None


def _read_dir(root: Path) -> Source:
    problems: list[Problem] = []
    locator = Locator({(): (str(root / "base.yml"), None)})
    report = Report(locator)
    merged: dict[object, object] = {}

    base_path = root / "base.yml"
    parsed = _parse_file(base_path, problems)
    if parsed is not None:
        data, lines = parsed
        if isinstance(data, dict):
            merged.update(data)
            locator.lines.update({p: (str(base_path), n) for p, n in lines.items()})
        elif data is not None:
            problems.append(Problem("", f"must be a mapping, not {describe(data)}", None,
                                    str(base_path)))

    domains = merged.get("domains")
    origin: dict[object, str] = {}
    if isinstance(domains, dict):
        domains = dict(domains)
        origin = dict.fromkeys(domains, str(base_path))
    elif domains is None:
        domains = {}
    else:
        domains = None  # not a mapping: validation reports it at `domains`
    files = sorted([*root.glob("domains/*.yml"), *root.glob("domains/*.yaml")],
                   key=lambda p: p.name)
    for f in files:
        parsed = _parse_file(f, problems)
        if parsed is None:
            continue
        data, lines = parsed
        if data is None:
            continue  # an empty file defines nothing
        if not isinstance(data, dict):
            problems.append(Problem("", f"must be a mapping of domain names to domains, not "
                                    f"{describe(data)}", "e.g. `pro: {trust_level: trusted}`",
                                    str(f)))
            continue
        locator.lines.setdefault(("domains",), (str(f), None))
        for name, conf in data.items():
            if name in origin:
                report.error(("domains", name) if isinstance(name, str) else ("domains",),
                             f'domain "{name}" is defined twice: in {origin[name]} and in {f}',
                             "keep one of them")
                continue
            origin[name] = str(f)
            if domains is not None:
                domains[name] = conf
        locator.lines.update({("domains", *p): (str(f), n) for p, n in lines.items()
                              if p and p[0] in data and origin.get(p[0]) == str(f)})
    if domains is not None and (files or "domains" in merged):
        merged["domains"] = domains

    pol_path = root / "policies.yml"
    if pol_path.exists():
        parsed = _parse_file(pol_path, problems)
        if parsed is not None:
            data, lines = parsed
            if isinstance(data, dict):
                for key in data:
                    if key != "network_policies":
                        report.error((str(key),), f'unknown key "{key}" in {pol_path}',
                                     suggest(str(key), ["network_policies"])
                                     or "policies.yml holds only network_policies")
                if "network_policies" in data:
                    if "network_policies" in merged:
                        report.error(("network_policies",), "network_policies is defined twice: "
                                     f"in {base_path} and in {pol_path}", "keep one of them")
                    else:
                        merged["network_policies"] = data["network_policies"]
                        locator.lines.update({p: (str(pol_path), n) for p, n in lines.items()
                                              if p and p[0] == "network_policies"})
            elif data is not None:
                problems.append(Problem("", f"must be a mapping, not {describe(data)}",
                                        "e.g. `network_policies: []`", str(pol_path)))
    problems.extend(report.errors)
    if problems:
        raise ValidationError(problems)
    return Source(merged, locator, str(root))

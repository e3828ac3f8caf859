"""Property tests: generated valid configs validate with sound addressing; single mutations are
rejected at the right key path; arbitrary input never raises anything but ValidationError.

Examples per test are set so the default run checks well over 1000 generated inputs.
"""

from __future__ import annotations

import copy
import ipaddress
from collections import Counter

import yaml
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from anklume.agent import schema, values
from anklume.agent.model import TrustLevel
from anklume.agent.validate import ValidationError, load_with_warnings, validate
from anklume.yamlfile import parse

FAST = settings(deadline=None, suppress_health_check=[HealthCheck.too_slow])

TRUST = [t.value for t in TrustLevel]
_NAME_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-"


def _names(max_size: int) -> st.SearchStrategy[str]:
    # st.text + a filter is much cheaper to generate than st.from_regex.
    return st.text(_NAME_CHARS, min_size=1, max_size=max_size).filter(
        lambda n: n[0] != "-" and n[-1] != "-" and n not in values.RESERVED)


domain_names = _names(11)
machine_names = _names(16)
ports = st.lists(st.integers(1, 65535), min_size=1, max_size=4) | st.just("all")


@st.composite
def configs(draw, min_domains: int = 1, min_machines: int = 0):
    """A valid infra.yml document, with what the generator intended recorded beside it."""
    legacy = draw(st.integers(0, 4)) == 0  # the legacy base_subnet form, 1 in 5
    zone_base = draw(st.sampled_from([0, 100, 205]) | st.integers(0, 205))
    names = draw(st.lists(domain_names, min_size=min_domains, max_size=6, unique=True))
    mnames = draw(st.lists(machine_names.filter(lambda n: n not in names),
                           min_size=min_machines, max_size=14, unique=True))
    doc: dict = {"project_name": draw(st.sampled_from(["anklume", "lab", "x y"])),
                 "global": {}, "domains": {}}
    if legacy:
        doc["global"]["base_subnet"] = f"10.{draw(st.integers(0, 255))}"
        ids = draw(st.lists(st.integers(0, 254), min_size=len(names), max_size=len(names),
                            unique=True))
    else:
        doc["global"]["addressing"] = {"zone_base": zone_base}
    taken: dict[str, set[int]] = {}
    explicit: dict[str, str] = {}
    gpu_given = False
    machine_iter = iter(mnames)
    for i, name in enumerate(names):
        trust = draw(st.sampled_from(TRUST))
        dom: dict = {"trust_level": trust}
        if draw(st.booleans()):
            dom["enabled"] = draw(st.booleans())
        if draw(st.booleans()):
            dom["ephemeral"] = draw(st.booleans())
        sid = None
        if legacy:
            sid = ids[i]
        elif draw(st.booleans()):
            free = sorted(set(range(255)) - taken.setdefault(trust, set()))
            sid = draw(st.sampled_from(free))
        if sid is not None:
            dom["subnet_id"] = sid
            taken.setdefault(trust, set()).add(sid)
        if legacy:
            net = f"{doc['global']['base_subnet']}.{sid}"
        elif sid is not None:
            net = f"10.{zone_base + TrustLevel(trust).zone_offset}.{sid}"
        else:
            net = None  # seq assigned by the validator: no explicit IPs here
        machines: dict = {}
        used_hosts: set[int] = set()
        # the last domain takes the machines left, so min_machines holds
        count = 99 if i == len(names) - 1 else draw(st.integers(0, 4))
        for _ in range(count):
            m = next(machine_iter, None)
            if m is None:
                break
            conf: dict = {}
            host = draw(st.integers(1, 99))
            if net and host not in used_hosts and draw(st.booleans()):
                used_hosts.add(host)
                conf["ip"] = explicit[m] = f"{net}.{host}"
            if draw(st.booleans()):
                conf["type"] = draw(st.sampled_from(["lxc", "vm"]))
            if not gpu_given and draw(st.integers(0, 5)) == 0:
                conf["gpu"] = gpu_given = True
            if draw(st.integers(0, 3)) == 0:
                conf["persistent_data"] = {"home": {"path": f"/data/{m}"}}
            machines[m] = conf
        if machines or draw(st.booleans()):
            dom["machines"] = machines
        doc["domains"][name] = dom
    all_machines = [m for d in doc["domains"].values() for m in d.get("machines", {})]
    endpoints = ["host", *names, *all_machines]
    policies = []
    for _ in range(draw(st.integers(0, 4))):
        p = {"from": draw(st.sampled_from(endpoints)), "to": draw(st.sampled_from(endpoints))}
        if draw(st.booleans()):
            p["ports"] = draw(ports)
        if draw(st.booleans()):
            p["protocol"] = draw(st.sampled_from(["tcp", "udp"]))
        if draw(st.booleans()):
            p["bidirectional"] = draw(st.booleans())
        policies.append(p)
    if policies or draw(st.booleans()):
        doc["network_policies"] = policies
    if draw(st.integers(0, 2)) == 0:
        consumers = draw(st.lists(st.sampled_from(names + all_machines), max_size=3,
                                  unique=True))
        doc["shared_volumes"] = {"sv": {"consumers": {c: draw(st.sampled_from(["ro", "rw"]))
                                                      for c in consumers}}}
    return doc, explicit


def check_sound(doc: dict, explicit: dict[str, str]) -> None:
    infra, _ = validate(doc)
    assert [d.name for d in infra.domains] == sorted(doc["domains"])
    subnets = [d.subnet for d in infra.domains]
    assert len(set(subnets)) == len(subnets)
    ips = [m.ip for d in infra.domains for m in d.machines]
    assert len(set(ips)) == len(ips)
    for d in infra.domains:
        raw = doc["domains"][d.name]
        if "subnet_id" in raw:
            assert d.seq == raw["subnet_id"]
        if "addressing" in doc["global"]:
            zone = doc["global"]["addressing"]["zone_base"] + d.trust_level.zone_offset
            assert d.subnet.network_address.packed[1] == zone
        assert d.subnet.prefixlen == 24 and d.gateway == d.subnet.network_address + 254
        auto = []
        for m in d.machines:
            assert m.ip in d.subnet
            host = int(m.ip) - int(d.subnet.network_address)
            assert 1 <= host <= 99
            if m.name in explicit:
                assert m.ip == ipaddress.IPv4Address(explicit[m.name])
            else:
                auto.append(host)
        # auto addresses: the lowest free ones, handed out in declaration order
        used = {int(m.ip) - int(d.subnet.network_address) for m in d.machines
                if m.name in explicit}
        assert auto == [h for h in range(1, 100) if h not in used][:len(auto)]
    # the YAML round trip gives the same result
    assert validate(parse(yaml.safe_dump(doc, sort_keys=False), "x.yml")[0])[0] == infra


@settings(FAST, max_examples=300)
@given(configs())
def test_valid_configs_validate_soundly(case):
    check_sound(*case)


# -- single mutations -------------------------------------------------------------------------

def _machines(doc: dict) -> list[tuple[str, str]]:
    return [(d, m) for d, conf in doc["domains"].items() for m in conf.get("machines", {})]


def mutate(draw, doc: dict) -> tuple[dict, set[str]]:
    """Apply one mutation that makes the document invalid; return it and where the error
    must be reported (any of the paths). An unknown key is the fallback when the drawn
    mutation does not apply (no machines to duplicate...)."""
    doc = copy.deepcopy(doc)
    kind = draw(st.sampled_from(["dup_machine", "dup_ip", "ip_outside", "bad_port",
                                 "unknown_ref", "unknown_key"]))
    machines = _machines(doc)
    if kind == "dup_machine" and machines:
        d, m = draw(st.sampled_from(machines))
        other = draw(st.sampled_from([n for n in doc["domains"] if n != d]))
        doc["domains"][other].setdefault("machines", {})[m] = {}
        event(kind)
        return doc, {f"domains.{d}.machines.{m}", f"domains.{other}.machines.{m}"}
    if kind in ("dup_ip", "ip_outside") and machines:
        infra, _ = validate(doc)
        dom = draw(st.sampled_from([d for d in infra.domains if d.machines]))
        ms = doc["domains"][dom.name]["machines"]
        if kind == "dup_ip" and len(dom.machines) >= 2:
            i, j = sorted(draw(st.lists(st.integers(0, len(dom.machines) - 1), min_size=2,
                                        max_size=2, unique=True)))
            first, second = dom.machines[i], dom.machines[j]
            ms[first.name]["ip"] = ms[second.name]["ip"] = str(first.ip)
            event(kind)
            return doc, {f"domains.{dom.name}.machines.{second.name}.ip"}
        if kind == "ip_outside":
            m = draw(st.sampled_from(dom.machines))
            base = dom.subnet.network_address
            bad = draw(st.sampled_from([base + 100, base + 254, base + 0, base + 256 + 7,
                                        base - 256 + 7 if int(base) >= 256 else base + 150]))
            ms[m.name]["ip"] = str(bad)
            event(kind)
            return doc, {f"domains.{dom.name}.machines.{m.name}.ip"}
    if kind == "bad_port":
        doc.setdefault("network_policies", [])
        i = len(doc["network_policies"])
        bad = draw(st.sampled_from([0, -1, 65536, 10**6, True, "80", None, 1.5]))
        good = draw(st.lists(st.integers(1, 65535), max_size=3))
        j = draw(st.integers(0, len(good)))
        doc["network_policies"].append({"from": "host", "to": next(iter(doc["domains"])),
                                        "ports": [*good[:j], bad, *good[j:]]})
        event(kind)
        return doc, {f"network_policies[{i}].ports[{j}]"}
    if kind == "unknown_ref":
        names = {*doc["domains"], *(m for _, m in machines), "host"}
        ghost = draw(domain_names.filter(lambda n: n not in names))
        doc.setdefault("network_policies", [])
        i = len(doc["network_policies"])
        side = draw(st.sampled_from(["from", "to"]))
        pol = {"from": "host", "to": "host", side: ghost}
        doc["network_policies"].append(pol)
        event(kind)
        return doc, {f"network_policies[{i}].{side}"}
    event("unknown_key")
    levels = [("top", doc, "")]
    levels.append(("global", doc["global"], "global."))
    for d, conf in doc["domains"].items():
        levels.append(("domain", conf, f"domains.{d}."))
        for m, mconf in conf.get("machines", {}).items():
            levels.append(("machine", mconf, f"domains.{d}.machines.{m}."))
    for i, pol in enumerate(doc.get("network_policies", [])):
        levels.append(("policy", pol, f"network_policies[{i}]."))
    level, node, prefix = draw(st.sampled_from(levels))
    key = draw(st.text("abcdefghijklmnopqrstuvwxyz_", min_size=1, max_size=15)
               .filter(lambda k: k not in schema.known(level)))
    node[key] = draw(st.sampled_from([1, "x", True, None, {}]))
    return doc, {prefix + key}


@settings(FAST, max_examples=400)
@given(st.data())
def test_single_mutations_are_rejected_at_their_path(data):
    doc, _ = data.draw(configs(min_domains=2, min_machines=4))
    doc, paths = mutate(data.draw, doc)
    try:
        validate(doc)
    except ValidationError as e:
        got = {p.where for p in e.problems}
        assert got & paths, (paths, [str(p) for p in e.problems])
    else:
        raise AssertionError(f"accepted a config that should fail at {paths}")


# -- arbitrary input --------------------------------------------------------------------------

scalars = st.none() | st.booleans() | st.integers(-(2**40), 2**40) | st.floats() | \
    st.text(max_size=12) | st.sampled_from(["all", "host", "lxc", "vm", "tcp", "ro", "rw",
                                            "10.120.0.1", "/x", "default", "trusted"])
keys = st.text(max_size=10) | st.sampled_from(
    [k.name for k in schema.KEYS] + ["pro", "m", "host"]) | st.integers(-3, 3)
nested = st.recursive(scalars, lambda kids: st.lists(kids, max_size=4)
                      | st.dictionaries(keys, kids, max_size=5), max_leaves=25)


def never_crashes(run) -> None:
    try:
        run()
    except ValidationError as e:
        assert e.problems and all(isinstance(p.what, str) for p in e.problems)
        str(e)


@settings(FAST, max_examples=150)
@given(st.text(max_size=300) | st.binary(max_size=200).map(lambda b: b.decode("latin-1")))
def test_arbitrary_text_only_raises_validation_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "arbitrary.yml"
    path.write_text(text, encoding="utf-8", errors="surrogateescape")
    never_crashes(lambda: load_with_warnings(path))


yaml_like = st.lists(st.sampled_from(
    ["project_name: t", "global:", "domains:", "  pro:", "    machines:", "      a:",
     "        ip: 10.120.0.1", "- x", "  - 1", "a: &x [1]", "b: *x", "<<: *x", "  <<: {}",
     "  ports: [1, 2", "{", "}", "? [a]", ": b", "'q", "x: !!binary aGk=", "t: 2001-02-30",
     "  config: {a: {b: c}}", "network_policies:", "  - {from: host, to: pro}", "\t", "---"]),
    max_size=12).map("\n".join)


@settings(FAST, max_examples=150)
@given(yaml_like)
def test_yaml_like_text_only_raises_validation_error(tmp_path_factory, text):
    path = tmp_path_factory.getbasetemp() / "yaml-like.yml"
    path.write_text(text)
    never_crashes(lambda: load_with_warnings(path))


@settings(FAST, max_examples=150)
@given(nested)
def test_arbitrary_data_only_raises_validation_error(data):
    never_crashes(lambda: validate(data))


@st.composite
def damaged(draw):
    """A valid config with one subtree replaced by arbitrary data: reaches deep checks."""
    doc, _ = draw(configs())
    spots = []

    def walk(node, depth=0):
        if isinstance(node, dict):
            for k in node:
                spots.append((node, k))
                if depth < 6:
                    walk(node[k], depth + 1)
        elif isinstance(node, list):
            for i in range(len(node)):
                spots.append((node, i))
                walk(node[i], depth + 1)

    walk(doc)
    for _ in range(draw(st.integers(1, 3))):
        parent, key = draw(st.sampled_from(spots))
        parent[key] = draw(nested)
    return doc


@settings(FAST, max_examples=200)
@given(damaged())
def test_damaged_configs_only_raise_validation_error(doc):
    never_crashes(lambda: validate(doc))


@settings(FAST, max_examples=40)
@given(configs())
def test_file_and_directory_forms_agree(tmp_path_factory, case):
    doc, _ = case
    root = tmp_path_factory.mktemp("infra")
    (root / "domains").mkdir()
    single = root / "single.yml"
    single.write_text(yaml.safe_dump(doc))
    base = {k: v for k, v in doc.items() if k not in ("domains", "network_policies")}
    (root / "base.yml").write_text(yaml.safe_dump(base))
    for name, conf in doc["domains"].items():
        (root / "domains" / f"{name}.yml").write_text(yaml.safe_dump({name: conf}))
    if "network_policies" in doc:
        (root / "policies.yml").write_text(
            yaml.safe_dump({"network_policies": doc["network_policies"]}))
    a, wa = load_with_warnings(single)
    b, wb = load_with_warnings(root)
    assert a == b
    assert Counter(w.what for w in wa) == Counter(w.what for w in wb)

"""The addressing convention on its own: subnets per trust zone, static host numbers."""

from __future__ import annotations

import ipaddress

import pytest

from anklume.agent.addressing import (
    DomainRequest,
    MachineRequest,
    assign_ips,
    assign_subnets,
    parse_legacy_base,
)
from anklume.agent.model import TrustLevel
from anklume.problems import Report

T = TrustLevel


def subnets(reqs, zone_base=100, legacy=None):
    r = Report()
    got = assign_subnets(reqs, zone_base, 10, legacy, report=r)
    return {n: (seq, str(net)) for n, (seq, net) in got.items()}, [p.where for p in r.errors]


def test_each_trust_level_has_its_zone():
    got, errs = subnets([DomainRequest(t.value[:5], t, None) for t in T])
    assert errs == []
    assert {n: net for n, (_, net) in got.items()} == {
        "admin": "10.100.0.0/24", "trust": "10.110.0.0/24", "semi-": "10.120.0.0/24",
        "untru": "10.140.0.0/24", "dispo": "10.150.0.0/24"}


def test_seq_fills_gaps_left_by_explicit_ids_in_name_order():
    got, _ = subnets([DomainRequest("c", T.TRUSTED, None), DomainRequest("a", T.TRUSTED, 0),
                      DomainRequest("b", T.TRUSTED, None), DomainRequest("d", T.TRUSTED, 2)])
    assert {n: s for n, (s, _) in got.items()} == {"a": 0, "b": 1, "c": 3, "d": 2}


def test_a_full_zone_is_an_error():
    reqs = [DomainRequest(f"d{i:03}", T.UNTRUSTED, None) for i in range(256)]
    got, errs = subnets(reqs)
    assert len(got) == 255 and errs == ["domains.d255"]


def test_legacy_subnets():
    got, errs = subnets([DomainRequest("a", T.ADMIN, 3), DomainRequest("b", T.DISPOSABLE, 4)],
                        legacy="192.168")
    assert errs == [] and got == {"a": (3, "192.168.3.0/24"), "b": (4, "192.168.4.0/24")}


@pytest.mark.parametrize("base, ok", [("10.100", (10, 100)), ("10", None), ("10.256", None),
                                      ("10.1.2", None), ("a.b", None),
                                      ("\u0661\u0660.1", None)])  # non-ASCII digits
def test_parse_legacy_base(base, ok):
    assert parse_legacy_base(base) == ok


def test_ips_static_range_and_order():
    net = ipaddress.IPv4Network("10.120.3.0/24")
    r = Report()
    got = assign_ips("d", net, [MachineRequest("x", None), MachineRequest("y", "10.120.3.1"),
                                MachineRequest("z", None)], report=r)
    assert r.errors == []
    assert {k: str(v) for k, v in got.items()} == {"y": "10.120.3.1", "x": "10.120.3.2",
                                                  "z": "10.120.3.3"}


@pytest.mark.parametrize("ip", ["10.120.3.99", "10.120.3.1"])
def test_ips_bounds_are_inclusive(ip):
    r = Report()
    assign_ips("d", ipaddress.IPv4Network("10.120.3.0/24"), [MachineRequest("x", ip)], report=r)
    assert r.errors == []

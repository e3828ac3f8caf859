"""The `inet anklume` table as a plain value: what desired and observed firewall state are made of.

Desired (rendered from the model by nft_rules) and observed (read with `nft -j list table`) use
the same type, so the planner compares like with like, as it does for Incus resources. Rules are
compared by their JSON statements in a normalised form (no handles, no counter values, one
spelling per match), never by nft's text listing: nft versions print the text differently
(1.0.6 on a Debian 12 host, 1.1.x on the appliance), while the JSON stays the same.

Pure: parsing, normalising, printing and diffing only; kernel I/O lives in nft_live.
"""

from __future__ import annotations

import difflib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

FAMILY = "inet"
TABLE = "anklume"

Stmt = Mapping[str, Any]  # one statement of a rule, as nft's JSON writes it


@dataclass(frozen=True)
class Chain:
    name: str
    hook: str
    prio: int
    type: str = "filter"
    policy: str = "accept"

    @property
    def header(self) -> str:
        """The chain's declaration in nft syntax (a number for the priority: every nft reads it)."""
        return f"type {self.type} hook {self.hook} priority {self.prio}; policy {self.policy};"


@dataclass(frozen=True)
class FwRule:
    chain: str
    expr: str  # canonical JSON of the normalised statements: what is compared
    text: str  # the rule in nft syntax with its comment: what is loaded and shown

    @classmethod
    def of(cls, chain: str, stmts: Sequence[Stmt], comment: str | None) -> FwRule:
        norm = [normalise(s) for s in stmts]
        text = " ".join(stmt_text(s) for s in norm)
        if comment:
            text += f' comment "{comment}"'
        key = json.dumps({"expr": norm, "comment": comment or None}, sort_keys=True)
        return cls(chain, key, text)


@dataclass(frozen=True)
class Firewall:
    """The whole table; `present=False` is "no table" (nothing declared, or none loaded)."""
    present: bool = False
    chains: tuple[Chain, ...] = ()
    rules: tuple[FwRule, ...] = ()  # grouped by chain, in evaluation order
    other: tuple[str, ...] = ()  # observed objects we never create (sets, maps...), as JSON

    def lines(self) -> list[tuple[str, str]]:
        """(what is compared, what is shown), in table order: chain headers, then their rules."""
        if not self.present:
            return []
        out = [("table", f"table {FAMILY} {TABLE}")]
        for c in self.chains:
            out.append((f"chain {c!r}", f"{c.name}: chain {c.header}"))
            out += [(f"{r.chain} {r.expr}", f"{r.chain}: {r.text}")
                    for r in self.rules if r.chain == c.name]
        known = {c.name for c in self.chains}
        # Rules in chains we did not list (cannot come from nft, kept for safety) and objects
        # we never make: shown, so that the replacement visibly removes them.
        out += [(f"{r.chain} {r.expr}", f"{r.chain}: {r.text}")
                for r in self.rules if r.chain not in known]
        out += [(o, f"-: {o}") for o in self.other]
        return out


def diff(have: Firewall, want: Firewall) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(added, removed) display lines, order-sensitive: rules evaluate top-down, so a moved rule
    is a change."""
    old, new = have.lines(), want.lines()
    added: list[str] = []
    removed: list[str] = []
    sm = difflib.SequenceMatcher(None, [k for k, _ in old], [k for k, _ in new], autojunk=False)
    for op, i1, i2, j1, j2 in sm.get_opcodes():
        if op in ("replace", "delete"):
            removed += [t for _, t in old[i1:i2]]
        if op in ("replace", "insert"):
            added += [t for _, t in new[j1:j2]]
    return tuple(added), tuple(removed)


# --- normalising nft's JSON ---------------------------------------------------------------------

def _value(v: Any) -> Any:
    if isinstance(v, Mapping) and set(v) == {"set"} and isinstance(v["set"], list):
        items = [_value(x) for x in v["set"]]
        # A set of one is the value itself.
        return items[0] if len(items) == 1 else {"set": sorted(items, key=_order)}
    if isinstance(v, list):
        items = [_value(x) for x in v]
        return items[0] if len(items) == 1 else sorted(items, key=_order)
    return v


def _order(x: Any) -> tuple[int, float, str]:
    # Numbers in numeric order (as nft lists a port set), anything else by its JSON.
    if isinstance(x, (int, float)) and not isinstance(x, bool):
        return (0, x, "")
    return (1, 0, json.dumps(x, sort_keys=True))


def normalise(stmt: Stmt) -> dict[str, Any]:
    """One statement in the single form we compare: counter values dropped (they move without
    any change of policy); `in` and `==` on a flag or a set are one match (nft writes
    `ct state invalid` with either, depending on the version); one-element sets are values."""
    if "counter" in stmt:
        return {"counter": None}
    if "match" in stmt:
        m = stmt["match"]
        op = "==" if m.get("op") in ("in", "==") else m.get("op")
        return {"match": {"op": op, "left": m.get("left"), "right": _value(m.get("right"))}}
    return dict(stmt)


def parse(doc: Mapping[str, Any] | None) -> Firewall:
    """The table from `nft -j list table inet anklume` (None: there is no table)."""
    if doc is None:
        return Firewall()
    chains: list[Chain] = []
    rules: list[FwRule] = []
    other: list[str] = []
    present = False
    for obj in doc.get("nftables", []):
        kind, body = next(iter(obj.items()))
        if kind == "metainfo":
            continue
        if kind == "table":
            present = True
        elif kind == "chain":
            chains.append(Chain(name=body["name"], hook=body.get("hook", ""),
                                prio=body.get("prio", 0), type=body.get("type", ""),
                                policy=body.get("policy", "")))
        elif kind == "rule":
            rules.append(FwRule.of(body["chain"], body.get("expr", []), body.get("comment")))
        else:
            other.append(json.dumps({kind: {k: v for k, v in body.items() if k != "handle"}},
                                    sort_keys=True))
    order = {c.name: i for i, c in enumerate(chains)}
    rules.sort(key=lambda r: order.get(r.chain, len(order)))  # stable: keeps rule order
    return Firewall(present, tuple(chains), tuple(rules), tuple(other))


# --- printing statements in nft syntax ------------------------------------------------------------

_QUOTED = ("iifname", "oifname", "iif", "oif")


def _left(e: Any) -> str:
    if isinstance(e, Mapping):
        if "meta" in e:
            return str(e["meta"]["key"])
        if "payload" in e:
            return f'{e["payload"]["protocol"]} {e["payload"]["field"]}'
        if "ct" in e:
            return f'ct {e["ct"]["key"]}'
    return json.dumps(e, sort_keys=True)


def _right(v: Any, quoted: bool) -> str:
    if isinstance(v, Mapping) and "set" in v:
        return "{ " + ", ".join(_right(x, quoted) for x in v["set"]) + " }"
    if isinstance(v, list):
        return ",".join(_right(x, quoted) for x in v)
    if isinstance(v, str):
        return f'"{v}"' if quoted else v
    if isinstance(v, Mapping):
        return json.dumps(v, sort_keys=True)
    return str(v)


def stmt_text(stmt: Stmt) -> str:
    """A statement in nft syntax: every form our rules use reads back into the same JSON;
    anything else (a foreign rule) prints as its JSON, so the plan still names it."""
    if "match" in stmt:
        m = stmt["match"]
        left = m.get("left")
        quoted = isinstance(left, Mapping) and "meta" in left and left["meta"]["key"] in _QUOTED
        op = "" if m.get("op") in ("==", "in") else f' {m.get("op")}'
        return f"{_left(left)}{op} {_right(m.get('right'), quoted)}"
    if "counter" in stmt:
        return "counter"
    if len(stmt) == 1:
        (k, v), = stmt.items()
        if v is None:  # accept, drop, return, continue...
            return k
    return json.dumps(dict(stmt), sort_keys=True)

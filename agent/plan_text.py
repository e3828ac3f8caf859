"""A plan and an apply's result as text: the diff `anklume plan` and `anklume apply` print."""

from __future__ import annotations

from anklume.agent.apply import Result
from anklume.agent.plan import Action, Op, Plan
from anklume.agent.resources import Kind

_SIGN = {Op.CREATE: "+", Op.UPDATE: "~", Op.DELETE: "-", Op.START: ">"}
_FW_SHOWN = 8  # firewall rule lines shown before "... and N more"


def _show(v: str | None) -> str:
    return "(none)" if v is None else v


def format_action(a: Action) -> list[str]:
    head = f"{_SIGN[a.op]} {a.label}" if a.op is not Op.START else f"> start {a.label}"
    if a.needs_restart:
        head += "  (restart needed)"
    if a.op is Op.START and a.reason and a.reason != "new":
        head += f"  ({a.reason})"
    if a.op is Op.DELETE:
        head += f"  ({a.reason})" if a.reason else ""
    lines = [head]
    if a.kind is Kind.FIREWALL:
        rules = [("+ " + c.new) if c.new else ("- " + _show(c.old)) for c in a.changes]
        lines += [f"    {r}" for r in rules[:_FW_SHOWN]]
        if len(rules) > _FW_SHOWN:
            lines.append(f"    ... and {len(rules) - _FW_SHOWN} more rule changes")
    elif a.op is Op.CREATE:
        lines += [f"    {c.key} = {_show(c.new)}" for c in a.changes]
    elif a.op is Op.UPDATE:
        lines += [f"    {c.key}: {_show(c.old)} -> {_show(c.new)}" for c in a.changes]
    return lines


def format_plan(p: Plan) -> str:
    out: list[str] = []
    for level in p.levels():
        for a in level:
            out += format_action(a)
    for n in p.kept:
        out.append(f"= kept {n.label}: {n.reason}")
    for n in p.conflicts:
        out.append(f"! {n.label}: {n.reason}")
    if not p.actions:
        out.append(p.why_empty())
    else:
        counts = {op: sum(1 for a in p if a.op is op) for op in Op}
        out.append("Plan: " + ", ".join(f"{n} to {op.value}" for op, n in counts.items() if n))
    return "\n".join(out)


def format_result(r: Result) -> str:
    out = [f"error: {o.action.op.value} {o.action.label}: {o.error}" for o in r.failed]
    out += [f"skipped: {o.action.op.value} {o.action.label}: {o.skipped}" for o in r.skipped]
    out.append(f"Applied {len(r.done)} changes in {r.seconds:.1f} s"
               + (f", {len(r.failed)} failed" if r.failed else "")
               + (f", {len(r.skipped)} skipped" if r.skipped else ""))
    return "\n".join(out)

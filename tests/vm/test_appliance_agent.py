"""The agent on the booted appliance (the VM's only NIC is QEMU's isolated user network).

First boot (`main_boot`, shared with test_boot.py): the embedded default infra is deployed from
the container image shipped inside the OS, isolation holds by real traffic between the
containers, the isolation table was loaded before Incus could start anything, the health gate
lets `boot-complete.target` through, and the last result says success. Then the check writes a
broken infra.yml onto the persistent partition: the path unit applies it at once.

Second boot of the same disk (`second_boot`): the last applied table is loaded early from the
persistent partition, the broken infra.yml is reported as invalid, and the OS still reaches
`boot-complete.target` (a user's mistake never fails the boot).
"""

from __future__ import annotations

import base64
import json

import pytest

from anklume.vm.boot import Boot

pytestmark = pytest.mark.vm


def _b64(r, key: str) -> str:
    return base64.b64decode(r.get(key, "")).decode(errors="replace")


def _logs(boot: Boot) -> str:
    r = boot.report
    return (f"\n--- agent ---\n{_b64(r, 'agent_log_b64')}"
            f"\n--- health ---\n{_b64(r, 'health_log_b64')}"
            f"\n--- instances ---\n{r.get('instances')}")


def _result(boot: Boot, key: str = "last_result_b64") -> dict:
    text = _b64(boot.report, key)
    assert text, f"no last result file in the guest{_logs(boot)}"
    return json.loads(text)


def _default_machines() -> dict[str, tuple[str, str]]:
    """name -> (domain, static IP) of the embedded default infra, as the agent computes it."""
    from anklume.agent.validate import load

    infra = load(None)
    return {m.name: (d.name, str(m.ip)) for d in infra.enabled_domains for m in d.machines}


def _instances(boot: Boot) -> dict[str, tuple[str, str, str]]:
    """name -> (project, state, first IPv4) from `incus list --all-projects` in the guest."""
    out: dict[str, tuple[str, str, str]] = {}
    for row in boot.report["instances"].split(";"):
        cols = row.split(",")
        if len(cols) < 4:
            continue
        project, name, state, ipv4 = cols[:4]
        out[name] = (project, state, ipv4.split(" ")[0] if ipv4 else "")
    return out


# --- first boot --------------------------------------------------------------------------------


def test_first_boot_deploys_the_default_infra_offline(main_boot: Boot) -> None:
    """Every machine of the embedded default infra runs with its static IP, made from the
    shipped image (the VM has no network: nothing could be pulled)."""
    want = _default_machines()
    have = _instances(main_boot)
    assert set(have) == set(want), f"instances {sorted(have)} != {sorted(want)}{_logs(main_boot)}"
    for name, (domain, ip) in want.items():
        project, state, got_ip = have[name]
        assert project == domain, (name, project)
        assert state == "RUNNING", f"{name} is {state}{_logs(main_boot)}"
        assert got_ip == ip, f"{name} has {got_ip!r}, infra.yml says {ip}"
    # Its static address and no other (a DHCP client that declines its lease collects more).
    assert main_boot.report["addresses"] == str(len(want)), main_boot.report["addresses"]


def test_first_boot_last_result_is_success(main_boot: Boot) -> None:
    r = main_boot.report
    assert r["agent_exit"] == "0", f"agent exit {r['agent_exit']}{_logs(main_boot)}"
    res = _result(main_boot)
    assert res["outcome"] == "success", res
    assert res["trigger"] == "boot", res
    assert res["counts"]["failed"] == 0, res
    assert res["image_version"] == r["os_image_version"], res
    assert r["firewall_file"] == "present", "the applied table was not persisted"
    status = _b64(r, "status_b64")
    assert "success" in status, status


def test_the_shipped_image_import_is_planned_and_then_in_sync(main_boot: Boot) -> None:
    """#19: the first deploy imported the shipped image as an action of its one plan; after
    it, `anklume plan` finds nothing to do, the image included."""
    r = main_boot.report
    assert "Importing shipped image" in _b64(r, "agent_log_b64"), _logs(main_boot)
    plan = _b64(r, "plan_b64")
    assert plan.startswith("No changes: ") and " 1 image already match" in plan, plan


def test_isolation_holds_between_deployed_domains(main_boot: Boot) -> None:
    """Real traffic between the containers inside the guest: same domain and own gateway
    reachable, other domains not."""
    r = main_boot.report
    probes = r.prefixed("probe.")
    assert probes, f"the guest ran no traffic probe{_logs(main_boot)}"
    # The controls first: if these fail, "blocked" below would prove nothing.
    assert probes["work_dev_to_gateway"] == "ok", probes
    assert probes["work_dev_to_work_web"] == "ok", probes
    assert probes["work_dev_to_perso_box"] == "blocked", probes
    assert probes["perso_box_to_admin_ctl"] == "blocked", probes
    table = _b64(r, "nft_table_b64")
    assert "table inet anklume" in table and "net-perso" in table, table
    # Nothing new enters a domain from outside (#20), and every port filters its addresses:
    # the containers got their addresses and reached their peers above with it on.
    assert "nothing enters a domain from outside unless declared" in table, table
    assert r["nic_filter.work_dev"] == "true:true", r["nic_filter.work_dev"]


def test_isolation_is_loaded_before_incus_starts(main_boot: Boot) -> None:
    """No instance can run unfiltered: only incusd starts instances (its own autostart
    included), and the table was in place before incusd was started."""
    r = main_boot.report
    assert r["unit.anklume-firewall.service"] == "active", r.get("firewall_log")
    fw_done, incus_start = int(r["t.firewall_done"]), int(r["t.incus_start"])
    assert fw_done > 0 and incus_start > 0, (fw_done, incus_start)
    assert fw_done < incus_start, f"firewall done at {fw_done} us, incusd started {incus_start}"
    # Nothing applied yet on this machine: the default table it ships.
    assert "the default table" in r["firewall_log"], r["firewall_log"]


def test_busy_containers_cannot_starve_the_appliances_own_services(main_boot: Boot) -> None:
    """The appliance's services (system.slice: agent, health gate, Incus, sshd) weigh ten
    containers each: with two containers and one of its services all burning CPU, the service
    gets most of it. At equal weights it would get a third, and a starved health gate fails a
    healthy boot, which rolls it back (image/extra/usr/lib/systemd/system/system.slice.d)."""
    r = main_boot.report
    assert r["cpu.weight.system"] == "1000", r["cpu.weight.system"]
    assert r["cpu.weight.containers"] == "100", r["cpu.weight.containers"]
    service, *containers = (int(v) for v in r["cpu.spin_usec"].split(","))
    # Each container really burnt CPU in the window, or the share below would prove nothing.
    assert all(c > 0 for c in containers), r["cpu.spin_usec"]
    share = service / (service + sum(containers))
    # 1000 / (1000 + 100 + 100) = 0.83 by weight; equal weights give 0.33.
    assert share > 0.6, f"the service got {share:.0%} of the CPU: {r['cpu.spin_usec']}"


def test_health_gate_passes_and_boot_completes(main_boot: Boot) -> None:
    r = main_boot.report
    assert r["unit.anklume-health.service"] == "active", _logs(main_boot)
    assert r["unit.boot-complete.target"] == "active", _logs(main_boot)
    # The gate judged after the agent finished, not before.
    assert int(r["t.agent_done"]) <= int(r["t.health_done"]), (r["t.agent_done"],
                                                              r["t.health_done"])


def test_editing_infra_yml_applies_it_again(main_boot: Boot) -> None:
    """The path unit runs the agent when infra.yml changes; a mistake is reported with where
    it is, and nothing deployed is touched (the firewall file stays the applied one)."""
    res = _result(main_boot, "path_result_b64")
    assert res["trigger"] == "path", res
    assert res["outcome"] == "invalid", res
    assert any("machnes" in e for e in res["errors"]), res["errors"]


# --- second boot of the same disk --------------------------------------------------------------


def test_second_boot_loads_the_last_applied_table_early(second_boot: Boot) -> None:
    r = second_boot.report
    assert "the last applied table" in r["firewall_log"], r["firewall_log"]
    assert int(r["t.firewall_done"]) < int(r["t.incus_start"])
    table = _b64(r, "nft_table_b64")
    # The domains of the default infra, known from the first boot's apply.
    for bridge in ("net-admin", "net-work", "net-perso"):
        assert bridge in table, table


def test_broken_infra_yml_never_fails_the_boot(second_boot: Boot) -> None:
    r = second_boot.report
    res = _result(second_boot)
    assert res["trigger"] == "boot" and res["outcome"] == "invalid", res
    assert any("machnes" in e for e in res["errors"]), res["errors"]
    assert r["agent_exit"] == "2", r["agent_exit"]
    assert r["unit.anklume-health.service"] == "active", _logs(second_boot)
    assert r["unit.boot-complete.target"] == "active", _logs(second_boot)
    assert r["failed_units"] == "", r["failed_units"]
    assert r["kernel_verity_errors"] == "0", r["kernel_verity_errors"]

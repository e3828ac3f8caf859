"""Booting the appliance image in a QEMU virtual machine the way real hardware boots it: one
library for the boot tests (tests/vm), the benchmarks (bench/) and, planned, `anklume vm`.

One concern a module:
- qemu: the machine (QEMU, its QMP monitor, the serial console and test channel, a TPM).
- firmware: OVMF with Secure Boot, and firmware variables with our keys already enrolled.
- disk: private copies of an image to boot, reading its partition table, tampering with it.
- guest: the checks run inside the guest (a unit and script passed as credentials) and their
  report.
- boot: one boot with those checks, from QEMU's start to the report; a stick written by
  `anklume flash`.
- pool: the first-boot wizard's answers and the unlock's passphrase, from outside.
- builds: `anklume build` of this tree and of later versions, shared by parallel processes.
- media: update media (published later versions, on the disks that carry them).
"""

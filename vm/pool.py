"""Driving a VM's data pool from outside: the first-boot wizard's answers file (a credential)
and the passphrase typed at the unlock's prompt on the serial console.
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Callable, Sequence

from anklume.vm import qemu
from anklume.vm.boot import DATA_DISK_SERIAL, wait_on_serial

PASSPHRASE = "anklume test pool passphrase"
ROOT_PASSWORD = "anklume-test-root-password"
PROMPT = "Passphrase for the anklume data pool"
OFFER = "press Enter to continue without the pool"


def password_hash(password: str) -> str:
    """A SHA-512 crypt hash with a fixed salt: the same password gives the same shadow entry."""
    r = subprocess.run(["openssl", "passwd", "-6", "-salt", "anklumetest", "-stdin"],
                       input=password, capture_output=True, text=True, check=True, timeout=30)
    return r.stdout.strip()


def answers(backend: str, root_hash: str, action: str = "create", tpm2: str = "no",
            passphrase: str = PASSPHRASE, ssh_keys: Sequence[str] = ()) -> str:
    """The wizard's answers file (the anklume.firstboot.answers credential) for the data
    disk that every check boot carries."""
    keys = ("  ssh_authorized_keys:\n" + "".join(f'    - "{k.strip()}"\n' for k in ssh_keys)
            if ssh_keys else "")
    return (f"version: 1\naction: {action}\nbackend: {backend}\ndisk: {DATA_DISK_SERIAL}\n"
            f'passphrase: "{passphrase}"\npassphrase_confirm: "{passphrase}"\ntpm2: "{tpm2}"\n'
            f'admin:\n  root_password_hash: "{root_hash}"\n' + keys)


def type_passphrases(*secrets: str, timeout: float = 900) -> Callable[[qemu.VM], None]:
    """Answer the n-th prompt of the unlock on the serial console (a passphrase, or after 3
    wrong ones the retry/continue offer) with the n-th text."""
    def prompts(text: str) -> int:
        return text.count(PROMPT) + text.count(OFFER)

    def console(vm: qemu.VM) -> None:
        for n, secret in enumerate(secrets, 1):
            def nth(text: str, n: int = n) -> bool:
                return prompts(text) >= n

            wait_on_serial(vm, nth, f"passphrase prompt #{n}", timeout)
            time.sleep(1)  # the agent has switched the console to no-echo by now
            vm.type_serial(secret + "\n")
    return console

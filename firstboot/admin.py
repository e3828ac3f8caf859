"""The administrator's credentials: root's password hash and SSH keys (validation + steps).

The hash goes through `chpasswd -e` on stdin, never argv (argv is world-readable in /proc).
Authorized keys live on the persistent partition; the image links root's ~/.ssh to it.
"""

from __future__ import annotations

import base64
import binascii
import ctypes
import ctypes.util
import re
import struct
from collections.abc import Sequence

LOCK_ROOT = ("passwd", "--lock", "root")

# yescrypt ($y$, Debian's default) and SHA-512 crypt ($6$, optionally with rounds=).
_HASH = re.compile(r"^(\$y\$[./A-Za-z0-9]+\$[./A-Za-z0-9]{1,86}\$[./A-Za-z0-9]{43}"
                   r"|\$6\$(rounds=\d+\$)?[./A-Za-z0-9]{1,16}\$[./A-Za-z0-9]{86})$")
KEY_TYPES = frozenset({
    "ssh-ed25519", "ssh-rsa", "ecdsa-sha2-nistp256", "ecdsa-sha2-nistp384",
    "ecdsa-sha2-nistp521", "sk-ssh-ed25519@openssh.com", "sk-ecdsa-sha2-nistp256@openssh.com",
})


def hash_problem(value: str) -> str | None:
    if _HASH.match(value):
        return None
    if value.startswith(("$1$", "$5$", "$2")):
        return "weak or unsupported hash type: use yescrypt ($y$, `mkpasswd -m yescrypt`) or " \
               "SHA-512 ($6$)"
    return "not a crypt(3) hash: give the output of `mkpasswd -m yescrypt` ($y$...) or " \
           "`openssl passwd -6` ($6$...), never the password itself"


def key_problem(line: str) -> str | None:
    """Why `line` is not one OpenSSH public key ("type base64 [comment]"); None if it is.
    Options before the type (from=, command=) are refused: they belong to a policy we own."""
    parts = line.strip().split(None, 2)
    if len(parts) < 2:
        return "expected '<type> <base64> [comment]'"
    kind, blob = parts[0], parts[1]
    if kind not in KEY_TYPES:
        return f"unknown key type {kind!r} (expected one of {', '.join(sorted(KEY_TYPES))})"
    try:
        raw = base64.b64decode(blob, validate=True)
        (n,) = struct.unpack(">I", raw[:4])
        inner = raw[4:4 + n].decode()
    except (binascii.Error, struct.error, UnicodeDecodeError):
        return "the key data is not valid base64 of an SSH key"
    if inner != kind:
        return f"the key data says {inner!r}, the line says {kind!r}"
    return None


def yescrypt(password: str) -> str:
    """`password` hashed with yescrypt and a random salt, by libxcrypt (the library passwd and
    PAM use): Python 3.13 has no crypt module and `openssl passwd` knows no yescrypt. In
    process, so the password never reaches a command's argv or stdin."""
    lib = ctypes.CDLL(ctypes.util.find_library("crypt") or "libcrypt.so.1")
    lib.crypt_gensalt.restype = ctypes.c_char_p
    lib.crypt_gensalt.argtypes = [ctypes.c_char_p, ctypes.c_ulong, ctypes.c_char_p, ctypes.c_int]
    lib.crypt.restype = ctypes.c_char_p
    lib.crypt.argtypes = [ctypes.c_char_p, ctypes.c_char_p]
    # No random bytes given: libxcrypt draws the salt from the kernel itself.
    setting = lib.crypt_gensalt(b"$y$", 0, None, 0)
    hashed = lib.crypt(password.encode(), setting) if setting else None
    if not hashed or hash_problem(hashed.decode()) is not None:
        raise OSError("libxcrypt could not hash the password with yescrypt")
    return str(hashed.decode())


def chpasswd_stdin(root_hash: str) -> str:
    return f"root:{root_hash}\n"


CHPASSWD = ("chpasswd", "-e")


def authorized_keys_text(keys: Sequence[str]) -> str:
    return "".join(k.strip() + "\n" for k in keys)

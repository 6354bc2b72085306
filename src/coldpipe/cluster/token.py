"""The join token: one secret file shared by the coordinator and every agent (docs/cluster.md#security)."""

from __future__ import annotations

from pathlib import Path

from coldpipe.errors import InputError

__all__ = ["read_token"]


def read_token(path: str | Path, flag: str = "--token-file") -> bytes:
    """The join token in ``path`` (whitespace stripped); at least 16 bytes, the file not readable by others."""
    p = Path(path)
    try:
        st = p.stat()
        token = p.read_bytes().strip()
    except OSError as exc:
        raise InputError(
            flag, f"cannot read {str(p)!r}: {exc.strerror}", "create one: head -c 32 /dev/urandom | base64 > F"
        ) from None
    if len(token) < 16:
        raise InputError(flag, f"{str(p)!r} holds a token of {len(token)} bytes", "use at least 16 random bytes")
    if st.st_mode & 0o077:
        raise InputError(flag, f"{str(p)!r} is readable by group or others", f"chmod 600 {p}")
    return token

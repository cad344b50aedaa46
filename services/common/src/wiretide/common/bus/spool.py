"""The on-disk spool: encoded messages a publisher could not send while NATS was away, kept in order in
one append-only file per subject and sent before anything newer once NATS is back.

Rule: bounded. Every spool of a process draws on one `SpoolBudget` of bytes; a message that does not
fit is refused (the publisher counts its items as dropped), never written in part. A record is
`[u32 payload length][u16 id length][id][payload]`; the read position is kept beside the file, so a
spool left by a process that stopped (or was killed) is delivered by the next one from where it was.
Writes go to the page cache, a message at a time (no fsync: it outlives the process, not the machine).
"""

from __future__ import annotations

import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Final

HEADER: Final = struct.Struct("<IH")
OFFSET: Final = struct.Struct("<Q")
SUFFIX: Final = ".spool"
COPY_CHUNK: Final = 1 << 20  # bytes copied at a time when older messages are put first


@dataclass(slots=True)
class SpoolBudget:
    """Bytes every spool of one process may hold together (the stated bound)."""

    max_bytes: int
    used: int = 0


class Spool:
    """Messages waiting on disk for one subject, oldest first."""

    def __init__(self, directory: Path, name: str, budget: SpoolBudget) -> None:
        directory.mkdir(parents=True, exist_ok=True)
        self.path = directory / f"{name}{SUFFIX}"
        self._offset_path = directory / f"{name}.offset"
        self.budget = budget
        self._data = open(self.path, "a+b")  # noqa: SIM115 - held for the spool's life
        self._offset_file = open(self._offset_path, "a+b")  # noqa: SIM115
        self._offset_file.seek(0)
        saved = self._offset_file.read(OFFSET.size)
        self._read_at = OFFSET.unpack(saved)[0] if len(saved) == OFFSET.size else 0
        self._end = self._data.seek(0, os.SEEK_END)
        if self._read_at > self._end:  # a torn offset: deliver again rather than lose (ids de-duplicate)
            self._read_at = 0
        self.messages = self._count()
        budget.used += self.pending_bytes

    @property
    def pending_bytes(self) -> int:
        return self._end - self._read_at

    def _count(self) -> int:
        n, at = 0, self._read_at
        while at + HEADER.size <= self._end:
            self._data.seek(at)
            size, id_len = HEADER.unpack(self._data.read(HEADER.size))
            at += HEADER.size + id_len + size
            n += 1
        if at != self._end:  # a record cut short by a crash mid-write: drop the tail
            self._data.truncate(at)
            self._end = at
        return n

    def append(self, msg_id: str, payload: bytes) -> bool:
        """Keep a message; False (nothing written) when the budget cannot hold it."""
        ident = msg_id.encode()
        record = HEADER.pack(len(payload), len(ident)) + ident + payload
        if self.budget.used + len(record) > self.budget.max_bytes:
            return False
        self._data.seek(0, os.SEEK_END)
        self._data.write(record)
        self._data.flush()
        self._end += len(record)
        self.budget.used += len(record)
        self.messages += 1
        return True

    def prepend(self, messages: list[tuple[str, bytes]]) -> int:
        """Put messages older than every spooled one first (the file is rewritten: at shutdown only).
        Returns how many fitted the budget (the first ones)."""
        records = []
        for msg_id, payload in messages:
            ident = msg_id.encode()
            record = HEADER.pack(len(payload), len(ident)) + ident + payload
            if self.budget.used + len(record) > self.budget.max_bytes:
                break
            self.budget.used += len(record)
            records.append(record)
        if not records:
            return 0
        staging = self.path.with_suffix(".staging")
        with open(staging, "wb") as out:
            out.writelines(records)
            self._data.seek(self._read_at)
            while chunk := self._data.read(COPY_CHUNK):
                out.write(chunk)
        self._data.close()
        os.replace(staging, self.path)
        self._data = open(self.path, "a+b")  # noqa: SIM115
        self._end = self._data.seek(0, os.SEEK_END)
        self._read_at = 0
        self._save_offset()
        self.messages += len(records)
        return len(records)

    def peek(self) -> tuple[str, bytes] | None:
        """The oldest message (id, payload), left in place until `pop`."""
        if not self.messages:
            return None
        self._data.seek(self._read_at)
        size, id_len = HEADER.unpack(self._data.read(HEADER.size))
        ident = self._data.read(id_len).decode()
        return ident, self._data.read(size)

    def pop(self) -> None:
        """The oldest message was delivered: move past it (the file is emptied once all are)."""
        self._data.seek(self._read_at)
        size, id_len = HEADER.unpack(self._data.read(HEADER.size))
        length = HEADER.size + id_len + size
        self._read_at += length
        self.budget.used -= length
        self.messages -= 1
        if not self.messages:
            self._data.truncate(0)
            self._read_at = self._end = 0
        self._save_offset()

    def _save_offset(self) -> None:
        self._offset_file.truncate(0)
        self._offset_file.write(OFFSET.pack(self._read_at))
        self._offset_file.flush()

    def close(self) -> None:
        self._data.close()
        self._offset_file.close()


def leftover(directory: Path) -> list[str]:
    """Names of the spools in `directory` that still hold messages (left by an earlier process)."""
    if not directory.is_dir():
        return []
    return sorted(p.name[: -len(SUFFIX)] for p in directory.glob(f"*{SUFFIX}") if p.stat().st_size > 0)

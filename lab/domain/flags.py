"""What a server advertises to an NBD client (read through libnbd in lab.nbd.handle)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


@dataclass
class ServerFlags:
    size: int
    can_zero: bool
    can_fast_zero: bool
    can_trim: bool
    can_flush: bool
    can_fua: bool
    can_multi_conn: bool
    can_block_status: bool
    is_read_only: bool
    block_size_max: int

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)

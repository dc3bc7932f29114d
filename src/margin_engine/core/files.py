"""Files written whole or not at all."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def write_whole(target: Path, write: Callable[[Path], object]) -> None:
    """``write`` to a hidden temporary file beside ``target`` (``.NAME.PID.tmp``), then rename
    it over ``target`` (atomic within a folder): ``target`` is the old file or the whole new
    one, never a part of it, whenever the process stops."""
    temporary = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    target.parent.mkdir(parents=True, exist_ok=True)
    try:
        write(temporary)
        os.replace(temporary, target)
    finally:
        temporary.unlink(missing_ok=True)

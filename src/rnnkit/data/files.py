"""Reading and writing data files safely: `DataError`, checked UTF-8 reading, atomic writes.

Every reader in `rnnkit.data` opens its files through `read_text_file`, so a missing file, an
empty file or a file that is not UTF-8 fails the same way everywhere: with a `DataError` whose
message names the file, the line and the problem (`path:line: problem`). Every file rnnkit
writes (vocabularies, tokenizers, scalers, and the run directory of `rnnkit.train.checkpoint`)
goes through `atomic_write` (a temporary file, fsync, then a rename), so a run killed while
saving never leaves half a file behind. Parsing lives in the readers.
"""

from __future__ import annotations

import json
import os
import stat
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any


class DataError(ValueError):
    """Bad input data: names the file, the line (1-based; None when it does not apply) and the
    problem, and reads `path:line: problem` when printed."""

    def __init__(self, path: str | os.PathLike | None, line: int | None, problem: str):
        self.path = None if path is None else str(path)
        self.line = line
        self.problem = problem
        where = self.path if self.path is not None else "<data>"
        if line is not None:
            where = f"{where}:{line}"
        super().__init__(f"{where}: {problem}")


def read_text_file(path: str | os.PathLike, allow_empty: bool = False) -> str:
    """The whole text of a UTF-8 file, with a `DataError` naming the file and the line for a
    missing file, an empty one (unless `allow_empty`) or bytes that are not UTF-8.

    A UTF-8 byte-order mark is dropped and Windows line ends become `\\n`.
    """
    path = Path(path)
    if not path.is_file():
        problem = "is a directory, not a file" if path.is_dir() else "no such file"
        raise DataError(path, None, f"{problem}; check the path")
    raw = path.read_bytes()
    if not raw.strip() and not allow_empty:
        raise DataError(path, 1, "the file is empty; give a file with data in it")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as error:
        line = raw.count(b"\n", 0, error.start) + 1
        column = error.start - (raw.rfind(b"\n", 0, error.start) + 1) + 1
        raise DataError(
            path,
            line,
            f"not UTF-8 (byte 0x{raw[error.start]:02x} at column {column}); "
            "re-save the file as UTF-8, e.g. `iconv -f latin1 -t utf-8`",
        ) from None
    return text.removeprefix("\ufeff").replace("\r\n", "\n")


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> None:
    """Call `write(tmp_path)`, then move tmp_path onto `path` in one `os.replace`: readers see
    the old file or the new one, never a part. The file is on disk (fsync) before the rename and
    has the mode open() would give it: created here with 0o666, which the process's umask
    trims at that moment (mkstemp would make it 0600), and set again after `write`, which may
    make the file afresh (safetensors does, 0600)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporary = path.parent / f".{path.name}.{uuid.uuid4().hex}.tmp"
    os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
    try:
        mode = stat.S_IMODE(temporary.stat().st_mode)  # 0o666 less the umask
        write(str(temporary))
        with open(temporary, "rb+") as file:
            os.fsync(file.fileno())
        os.chmod(temporary, mode)
        os.replace(temporary, path)
    except BaseException:
        temporary.unlink(missing_ok=True)
        raise


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write `text` to `path` as UTF-8 (`\\n` line ends), atomically (`atomic_write`)."""
    atomic_write(path, lambda tmp: Path(tmp).write_text(text, encoding="utf-8", newline="\n"))


def write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write `obj` as indented JSON, atomically."""
    write_text_atomic(path, json.dumps(obj, indent=1, ensure_ascii=False) + "\n")


def read_json(path: str | os.PathLike, kind: str) -> dict:
    """Read a JSON object written by `write_json`; `kind` names what the file should hold (for
    the error message)."""
    text = read_text_file(path)
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as error:
        raise DataError(
            path, error.lineno, f"not valid JSON ({error.msg}); expected a {kind}"
        ) from None
    if not isinstance(obj, dict):
        raise DataError(path, 1, f"expected a JSON object holding a {kind}")
    return obj

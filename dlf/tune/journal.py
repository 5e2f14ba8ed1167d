"""Check an Optuna journal file before Optuna replays (and appends to) it. The file is only read.

Optuna's ``JournalFileBackend`` fails on a damaged line with a bare ``JSONDecodeError`` (or
``KeyError``/``UnicodeDecodeError`` for a file that is no journal at all), and it silently skips
an incomplete last line, which a process killed mid-write leaves behind. Skipping it is not
safe: Optuna's next append lands on the same line (nothing ends the fragment), and from the
append after that on the whole journal no longer loads. So both are refused here, with the
line number, and nothing is "repaired" behind the user's back.
"""
from __future__ import annotations

import json
from pathlib import Path

_SQLITE_MAGIC = b"SQLite format 3\x00"


def check_journal(path: Path) -> None:
    """Raise a one-line DLFError when ``path`` exists and is not a sound Optuna journal."""
    if not path.is_file() or path.stat().st_size == 0:
        return
    problem = _scan(path)
    if problem is not None and problem[1]:
        # The last line may be another worker's append in progress: look again under the lock
        # Optuna's writers hold while they append.
        from optuna.storages.journal import JournalFileSymlinkLock

        lock = JournalFileSymlinkLock(str(path))
        lock.acquire()
        try:
            problem = _scan(path)
        finally:
            lock.release()
    if problem is not None:
        from dlf.errors import DLFError

        raise DLFError(_message(path, *problem))


def _scan(path: Path) -> tuple[int, bool, str] | None:
    """(1-based line number, whether it is the last line, what is wrong) of the first bad line."""
    with open(path, "rb") as fh:
        lines = fh.readlines()
    for number, line in enumerate(lines, start=1):
        last = number == len(lines)
        if not line.endswith(b"\n") and line.startswith(b"{"):  # every journal record is one JSON object
            return number, last, "incomplete"
        try:
            record = json.loads(line)
        except ValueError:  # JSONDecodeError and UnicodeDecodeError
            return number, last, "not a JSON record"
        if not isinstance(record, dict) or "op_code" not in record:
            return number, last, "not an Optuna journal record"
    return None


def _message(path: Path, number: int, last: bool, what: str) -> str:
    fresh = "or point --storage at a fresh file"
    if number == 1 and not (last and what == "incomplete"):
        with open(path, "rb") as fh:
            if fh.read(len(_SQLITE_MAGIC)) == _SQLITE_MAGIC:
                return (f"tune journal {path}: a SQLite database, not an Optuna journal; it was left untouched: "
                        f"if it is an Optuna RDB storage pass --storage sqlite:///{path.resolve()}, {fresh}")
        return (f"tune journal {path}: not an Optuna journal (line 1 is {what}); it was left untouched: "
                f"point --storage at a journal file or at a new path")
    if last and what == "incomplete":
        return (f"tune journal {path}: its last line ({number}) is incomplete, a write cut short (e.g. by a "
                f"crash); it was left untouched: restore the journal from a backup, or delete that last line "
                f"(a change that never completed), {fresh}")
    return (f"tune journal {path}: line {number} is damaged ({what}); it was left untouched: restore the "
            f"journal from a backup, {fresh}")

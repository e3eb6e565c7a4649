"""Which existing data directories are made private: only those that hold nothing but
Hypemeter's files, another process's data directory included."""

from __future__ import annotations

import stat
from pathlib import Path

from hypemeter.datadir import private_data_dir


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def made(path: Path, *files: str) -> Path:
    path.mkdir(parents=True)
    path.chmod(0o755)
    for name in files:
        (path / name).write_text("x")
    return path


def test_a_directory_holding_another_processes_data_directory_is_made_private(
    tmp_path: Path,
) -> None:
    data = made(tmp_path / "data", "secret.key", "hypemeter.duckdb")
    made(data / "twin", "jwt.secret")
    private_data_dir(data)
    assert mode(data) == 0o700


def test_a_directory_holding_someone_elses_files_keeps_its_mode(tmp_path: Path) -> None:
    data = made(tmp_path / "project", "secret.key")
    made(data / "src", "main.py")
    private_data_dir(data)
    assert mode(data) == 0o755

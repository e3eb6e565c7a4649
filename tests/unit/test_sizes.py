"""The size rule of ``make lint`` reports what passes it, and only that."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest


def load() -> ModuleType:
    path = Path(__file__).resolve().parents[2] / "tools" / "sizes.py"
    spec = importlib.util.spec_from_file_location("sizes_rule", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def rule() -> ModuleType:
    return load()


def test_long_modules_and_classes_are_reported(
    rule: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = Path("src")
    root.mkdir()
    (root / "short.py").write_text("x = 1\n" * 400)
    (root / "long.py").write_text("x = 1\n" * 401)
    fits = "".join(f"    a{i} = {i}\n" for i in range(249))
    big = "".join(f"    b{i} = {i}\n" for i in range(250))
    (root / "fits.py").write_text("class Fits:\n" + fits)
    (root / "big.py").write_text("class Big:\n" + big)
    assert rule.problems(root) == [
        "src/big.py: class Big is 251 lines (limit 250)",
        "src/long.py: 401 lines (limit 400)",
    ]


def test_a_listed_module_may_shrink_but_not_grow(
    rule: ModuleType, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    root = Path("src")
    root.mkdir()
    monkeypatch.setattr(rule, "OVER", {"src/old.py": 450})
    (root / "old.py").write_text("x = 1\n" * 450)
    assert rule.problems(root) == []
    (root / "old.py").write_text("x = 1\n" * 451)
    assert rule.problems(root) == ["src/old.py: 451 lines (limit 450)"]

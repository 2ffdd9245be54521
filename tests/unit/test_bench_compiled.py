"""The benchmark measures the services as installed: a run whose segmenter would run its rules interpreted
(a build not of the current sources, shared/compiled.py) says so, and records it either way."""

from __future__ import annotations

import pytest

import bench.__main__ as bench_cli

PACKAGE = "services.segmenter.domain"


def test_a_run_whose_rules_would_run_interpreted_says_so(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_cli, "compiled_now", lambda: {PACKAGE: False})
    assert bench_cli.compiled_or_warn() == {PACKAGE: False}
    said = capsys.readouterr().out
    assert f"warning: {PACKAGE} runs interpreted" in said
    assert "make compiled" in said


def test_a_run_whose_rules_run_compiled_says_nothing(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(bench_cli, "compiled_now", lambda: {PACKAGE: True})
    assert bench_cli.compiled_or_warn() == {PACKAGE: True}
    assert capsys.readouterr().out == ""

"""Where a stack keeps things: PostgreSQL's data reachable by its account, layouts that round-trip."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from deploy.devstack.kafka import replication_for
from deploy.devstack.postgres import _private_home, choose_server_home, home_for
from deploy.devstack.process import StackError
from deploy.devstack.stack import Stack, StackLayout


def test_the_server_keeps_its_data_in_the_checkout_when_its_account_can_reach_it(tmp_path: Path) -> None:
    run_dir = tmp_path / "postgres"
    run_dir.mkdir()
    home = choose_server_home(run_dir, "loyaltyfunnel", lambda path, user: True, base=tmp_path / "outside")
    assert home == run_dir


def test_a_checkout_closed_to_the_servers_account_gets_a_home_outside(tmp_path: Path) -> None:
    run_dir = tmp_path / "private" / "postgres"
    run_dir.mkdir(parents=True)
    base = tmp_path / "var-tmp"
    home = choose_server_home(run_dir, "loyaltyfunnel", lambda path, user: False, base=base)
    assert home.parent == base
    assert home == home_for(run_dir, base)
    # One per run directory: another checkout (or the chaos stack) gets another.
    assert home_for(tmp_path / "elsewhere" / "postgres", base) != home


def test_the_choice_is_kept_even_when_permissions_change_later(tmp_path: Path) -> None:
    run_dir = tmp_path / "postgres"
    run_dir.mkdir()
    base = tmp_path / "var-tmp"
    first = choose_server_home(run_dir, "loyaltyfunnel", lambda path, user: False, base=base)
    again = choose_server_home(run_dir, "loyaltyfunnel", lambda path, user: True, base=base)
    assert again == first


def test_running_as_the_servers_own_account_needs_no_move(tmp_path: Path) -> None:
    run_dir = tmp_path / "postgres"
    run_dir.mkdir()
    assert choose_server_home(run_dir, None, lambda path, user: False, base=tmp_path / "x") == run_dir


def test_a_home_someone_else_made_is_refused(tmp_path: Path) -> None:
    planted = tmp_path / "planted"
    planted.symlink_to(tmp_path)
    me = __import__("pwd").getpwuid(os.getuid()).pw_name
    with pytest.raises(StackError, match="not a directory owned by"):
        _private_home(planted, me)
    own = _private_home(tmp_path / "mine", me)
    assert own.stat().st_mode & 0o777 == 0o700


def test_a_layout_round_trips_through_its_file(tmp_path: Path) -> None:
    layout = StackLayout(
        root=tmp_path,
        kafka=((41001, 41002), (41003, 41004), (41005, 41006)),
        postgres_port=41007,
        smtp_port=41008,
        smtp_ui_port=41009,
        service_ports=(41010, 41011, 41012),
        honour_env=False,
        service_env={"INGEST_RATE_LIMIT_PER_SECOND": "100000"},
    )
    layout.save()
    assert StackLayout.load(tmp_path) == layout
    assert StackLayout.load(tmp_path / "nothing-saved").kafka == ((9092, 9093),)


def test_a_three_broker_stack_tells_the_services_to_replicate(tmp_path: Path) -> None:
    layout = StackLayout(
        root=tmp_path, kafka=((41001, 41002), (41003, 41004), (41005, 41006)), honour_env=False
    )
    env = Stack(layout).stack_env()
    assert env["KAFKA_BOOTSTRAP_SERVERS"] == "127.0.0.1:41001,127.0.0.1:41003,127.0.0.1:41005"
    assert (env["KAFKA_REPLICATION_FACTOR"], env["KAFKA_MIN_INSYNC_REPLICAS"]) == ("3", "2")
    assert [p.name for p in Stack(layout).kafka_processes()] == ["kafka-1", "kafka-2", "kafka-3"]
    assert replication_for(1) == (1, 1)


def test_the_services_of_a_stack_call_each_other_on_its_own_ports(tmp_path: Path) -> None:
    env = Stack(StackLayout(root=tmp_path, service_ports=(41010, 41011, 41012), honour_env=False)).stack_env()
    assert env["SEGMENTER_URL"] == "http://127.0.0.1:41011"
    assert env["NOTIFIER_PUBLIC_URL"] == "http://127.0.0.1:41012"
    assert (env["INGEST_PORT"], env["SEGMENTER_PORT"], env["NOTIFIER_PORT"]) == ("41010", "41011", "41012")


def test_the_chaos_layout_ignores_the_callers_overrides(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("DATABASE_URL", "postgresql+asyncpg://someone:else@db.example:5432/x")
    mine = Stack(StackLayout(root=tmp_path, postgres_port=41007, honour_env=False))
    assert mine.stack_env()["DATABASE_URL"].endswith("@127.0.0.1:41007/loyalty")
    assert "postgres" in mine.local()
    up = Stack(StackLayout(root=tmp_path))
    assert up.stack_env()["DATABASE_URL"].startswith("postgresql+asyncpg://someone:else@")
    assert "postgres" not in up.local()

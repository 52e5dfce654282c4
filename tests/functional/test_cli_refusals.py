"""Setups that cannot work are refused before anything starts (issue 18,
item 3): one clear line on stderr, exit status 2, nothing left running (no
embedded Postgres under the data directory)."""

from __future__ import annotations

from pathlib import Path

from tests.server_process import run_py

BASE = {"PATH": "/usr/bin:/bin", "ENF_LOG_FORMAT": "console"}


def refused(args: tuple[str, ...], env: dict[str, str]) -> str:
    proc = run_py(*args, env=env, timeout=60)
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.startswith("cannot start:")]
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "listening" not in proc.stdout
    return lines[0]


def test_cluster_mode_without_a_shared_database_is_refused(tmp_path: Path) -> None:
    env = {**BASE, "ENF_CLUSTER": "ray", "ENF_DATA_DIR": str(tmp_path / "data")}
    line = refused((), env)
    assert "ENF_DATABASE_URL" in line
    assert not (tmp_path / "data" / "pgdata").exists()


def test_cluster_commands_without_the_clusters_settings_are_refused(tmp_path: Path) -> None:
    env = {**BASE, "ENF_DATA_DIR": str(tmp_path / "data")}
    line = refused(("cluster", "status"), env)
    assert "ENF_CLUSTER=ray" in line
    assert not (tmp_path / "data").exists()


def test_settings_come_from_an_env_file(tmp_path: Path) -> None:
    settings = tmp_path / "cluster.env"
    settings.write_text("ENF_CLUSTER=ray\nENF_DATABASE_URL=postgresql://127.0.0.1:1/none\n")
    env = {**BASE, "ENF_DATA_DIR": str(tmp_path / "data")}
    # The file was read: what is missing now is the Ray head's address.
    line = refused(("--env-file", str(settings), "cluster", "status"), env)
    assert "ENF_RAY_ADDRESS" in line

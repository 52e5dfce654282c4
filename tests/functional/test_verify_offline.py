"""Issue 14: the legal record verifiable without the database. A whole
notarization, its journal and envelope exported over HTTP, then
`run.py verify-journal --file … --envelope …` as a user runs it, with no
database and no server in reach: valid as exported, and any byte changed in
any row, or a journal cut short, is named."""

from __future__ import annotations

import asyncio
import copy
import json
import os
from pathlib import Path
from typing import Any

import pytest

from persistence.events import chain_hash
from tests.conftest import Harness
from tests.flows import (
    assigned_session,
    distribute_to_completion,
    get_json,
    run_to_notarized,
)
from tests.server_process import run_py

pytestmark = pytest.mark.slow


def _offline_env(data_dir: Path) -> dict[str, str]:
    """No ENF_* setting at all (no database URL, no key files): an empty data
    directory, where an embedded Postgres would show if one were started."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("ENF_")}
    return {**env, "ENF_DATA_DIR": str(data_dir)}


async def _verify(tmp: Path, journal: Any, signed: Any, *extra: str) -> tuple[int, str]:
    """`run.py verify-journal --file --envelope` on these objects: exit status, output."""
    (jpath, epath) = (tmp / "journal.json", tmp / "envelope.json")
    await asyncio.to_thread(jpath.write_text, json.dumps(journal))
    await asyncio.to_thread(epath.write_text, json.dumps(signed))
    env = _offline_env(tmp / "data")
    out = await asyncio.to_thread(
        run_py, "verify-journal", "--file", str(jpath), "--envelope", str(epath), *extra, env=env
    )
    return out.returncode, out.stdout + out.stderr


def _one_byte_changed(text: str) -> str:
    """`text` with one ASCII character changed (so one byte of the file)."""
    i = len(text) // 2
    return text[:i] + ("a" if text[i] != "a" else "b") + text[i + 1 :]


def _alter_data(event: dict[str, Any]) -> None:
    """Change one byte of the first non-empty string in the row's data."""

    def alter(value: Any) -> bool:
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for k, v in sorted(items, key=lambda kv: str(kv[0])):
            if isinstance(v, str) and v:
                value[k] = _one_byte_changed(v)
                return True
            if isinstance(v, dict | list) and alter(v):
                return True
        return False

    assert alter(event["data"]), event


async def _exported(server: Harness) -> tuple[str, dict[str, Any], dict[str, Any], Any]:
    """A session notarized and completed: its id, journal, envelope and the keys."""
    customer, notary, sid = await assigned_session(server)
    await run_to_notarized(customer, notary, sid)
    await distribute_to_completion(customer, notary, sid)
    admin = server.token("root", "admin")
    status, journal = await get_json(server, f"/v1/sessions/{sid}/journal", admin)
    assert status == 200, journal
    status, signed = await get_json(server, f"/v1/envelopes/ENF-{sid}", admin)
    assert status == 200, signed
    status, keys = await get_json(server, "/v1/keys")
    assert status == 200, keys
    return sid, journal, signed, keys


async def test_an_exported_journal_verifies_offline_and_a_changed_byte_is_named(
    server: Harness, tmp_path: Path
) -> None:
    _, journal, signed, _ = await _exported(server)
    anchor = signed["envelope"]["journal"]["seq"]
    events = journal["events"]
    # The envelope attests a head before NOTARIZED; rows follow it (to COMPLETED).
    assert 1 < anchor < len(events), (anchor, len(events))

    code, out = await _verify(tmp_path, journal, signed)
    assert code == 0, out
    assert "journal verifies" in out and f"envelope's seq {anchor} matches" in out
    # Nothing was started: no embedded database, no data directory even.
    assert not await asyncio.to_thread((tmp_path / "data" / "pg").exists)

    # One byte of one row's data, before, at and after the attested head.
    for seq in (1, anchor - 1, anchor, len(events)):
        altered = copy.deepcopy(journal)
        _alter_data(altered["events"][seq - 1])
        code, out = await _verify(tmp_path, altered, signed)
        assert code == 1 and f"BROKEN at seq {seq}:" in out, (seq, out)
        assert "does not match its hash" in out, out

    # The time of a row, its name, a hash, a link.
    for field in ("at", "name", "hash", "prev_hash"):
        altered = copy.deepcopy(journal)
        row = altered["events"][2]
        row[field] = _one_byte_changed(row[field])
        code, out = await _verify(tmp_path, altered, signed)
        assert code == 1 and "BROKEN at seq 3:" in out, (field, out)


async def test_a_journal_cut_short_or_of_another_session_fails(
    server: Harness, tmp_path: Path
) -> None:
    sid, journal, signed, keys = await _exported(server)
    anchor = signed["envelope"]["journal"]["seq"]

    # Cut before the attested head: a valid chain by itself, not the one attested.
    short = {**journal, "events": journal["events"][: anchor - 1]}
    code, out = await _verify(tmp_path, short, signed)
    assert code == 1 and f"BROKEN at seq {anchor}:" in out and "missing" in out, out
    # A row removed in the middle.
    holed = {**journal, "events": [e for e in journal["events"] if e["seq"] != 2]}
    code, out = await _verify(tmp_path, holed, signed)
    assert code == 1 and "BROKEN at seq 2:" in out and "missing" in out, out
    # Rewritten from row 2 on with fresh hashes: a valid chain, but not the
    # head the envelope attests.
    rewritten = copy.deepcopy(journal)
    prev = rewritten["events"][0]["hash"]
    for e in rewritten["events"][1:]:
        if e["seq"] == 2:
            _alter_data(e)
        e["prev_hash"] = prev
        e["hash"] = prev = chain_hash(
            prev, f"session:{sid}", e["seq"], e["name"], e["data"], e["at"]
        )
    code, out = await _verify(tmp_path, rewritten, signed)
    assert code == 1 and f"BROKEN at seq {anchor}:" in out and "head hash" in out, out
    # The journal of another session under this envelope.
    other = {**journal, "session_id": "00000000-0000-0000-0000-000000000000"}
    code, out = await _verify(tmp_path, other, signed)
    assert code == 1 and "the envelope is of session" in out, out

    # With the public key, the envelope's signature is checked too.
    keys_file = tmp_path / "keys.json"
    await asyncio.to_thread(keys_file.write_text, json.dumps(keys))
    code, out = await _verify(tmp_path, journal, signed, "--public-key", str(keys_file))
    assert code == 0 and "not checked" not in out, out
    forged = copy.deepcopy(signed)
    forged["envelope"]["journal"]["head_hash"] = journal["events"][anchor - 2]["hash"]
    code, out = await _verify(tmp_path, journal, forged, "--public-key", str(keys_file))
    assert code == 1 and "signature does not verify" in out, out
    # Without it, the forged head is still caught by the chain.
    code, out = await _verify(tmp_path, journal, forged)
    assert code == 1 and f"BROKEN at seq {anchor}:" in out, out


async def test_unreadable_files_are_one_clear_line(tmp_path: Path) -> None:
    env = _offline_env(tmp_path / "data")
    good = tmp_path / "ok.json"
    await asyncio.to_thread(good.write_text, json.dumps({"session_id": "s", "events": []}))
    garbled = tmp_path / "garbled.json"
    await asyncio.to_thread(garbled.write_text, '{"session_id": "s", "ev')
    not_a_journal = tmp_path / "list.json"
    await asyncio.to_thread(not_a_journal.write_text, "[1, 2]")
    for journal, envelope, says in (
        (tmp_path / "nowhere.json", good, "cannot read"),
        (garbled, good, "cannot read"),
        (not_a_journal, good, "not a journal export"),
        (good, good, "not a signed envelope"),
    ):
        out = await asyncio.to_thread(
            run_py, "verify-journal", "--file", str(journal), "--envelope", str(envelope), env=env
        )
        lines = (out.stdout + out.stderr).strip().splitlines()
        assert out.returncode == 2 and len(lines) == 1 and says in lines[0], (says, lines)
    # --file needs --envelope (a journal alone cannot show it was cut short).
    out = await asyncio.to_thread(run_py, "verify-journal", "--file", str(good), env=env)
    assert out.returncode == 2 and "--envelope" in out.stderr, out.stderr

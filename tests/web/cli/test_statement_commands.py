"""`gpupool statement` and `gpupool verify` against `gpupool up` (real processes): the saved
statement verifies with the server's key and ledger (sent as its exact bytes), a forged
duplicate key or a pretty-printed copy does not, a forged statement's fields are printed
escaped, and a malformed --period (a trailing newline, non-ASCII digits) is refused before
asking the server, naming the option."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.web.cli.test_client_commands import Pool, running_up, token_for
from web.services.metering import period_of

RAW = ("\x1b", "\x07", "\x9b")


@pytest.fixture(scope="module")
def pool(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Pool]:
    yield from running_up(tmp_path_factory.mktemp("statements"), "none")


@pytest.fixture(scope="module")
def saved(pool: Pool, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """kaist-llm's statement of this month (its grant), saved as the server sent it."""
    path = tmp_path_factory.mktemp("saved") / "kaist-llm.json"
    jiwoo = token_for(pool, "jiwoo")
    period = period_of(time.time())
    pool.ok("statement", "-p", "kaist-llm", "--period", period, "-o", str(path), token=jiwoo)
    return path


def test_a_saved_statement_verifies_with_the_servers_key_and_ledger(
    pool: Pool, saved: Path
) -> None:
    done = pool.run("verify", str(saved))  # no token needed
    assert done.code == 0, done.err
    assert "VALID (with the key of" in done.out and "statement of kaist-llm" in done.out


def test_forgeries_are_not_valid_with_the_rule_and_nothing_raw(
    pool: Pool, saved: Path, tmp_path: Path
) -> None:
    genuine = saved.read_bytes()
    forged = tmp_path / "forged.json"
    forged.write_bytes(b'{"credits":{"granted":999999.0},' + genuine[1:])
    done = pool.run("verify", str(forged))
    assert done.code == 1 and "NOT VALID" in done.err
    assert "duplicate key 'credits' at $" in done.err

    forged.write_text(json.dumps(json.loads(genuine), indent=2, sort_keys=True))
    done = pool.run("verify", str(forged))
    assert done.code == 1 and "not in canonical form: whitespace" in done.err

    # Fields that would act on a terminal, as \u escapes in the JSON (canonical: the
    # document reads, then fails on its signature and figures).
    hostile = genuine.replace(b'"project":"kaist-llm"', b'"project":"\\u001b]0;pwned\\u0007"', 1)
    hostile = hostile.replace(b'"credits":{', b'"credits":{"\\u009b2J":1,"\\u009b2J":2,', 1)
    for document in (
        hostile,
        genuine.replace(b'"project":"kaist-llm"', b'"project":"x\\u001b[2J"'),
    ):
        forged.write_bytes(document)
        done = pool.run("verify", str(forged))
        assert done.code == 1 and "NOT VALID" in done.err
        assert not any(char in done.err + done.out for char in RAW), done.err


@pytest.mark.parametrize("period", ["2026-03\n", "\uff12\uff10\uff12\uff16-03", "2026-Q1 "])
@pytest.mark.parametrize(
    "command",
    [
        ["statement", "-p", "kaist-llm"],
        ["usage"],
        ["credits", "history", "-p", "kaist-llm"],
    ],
)
def test_a_malformed_period_is_refused_naming_the_option(
    pool: Pool, command: list[str], period: str
) -> None:
    done = pool.run(*command, "--period", period, token=pool.admin)
    assert done.code == 2, done.err
    assert "--period:" in done.err and "is not a period" in done.err
    assert "Traceback" not in done.err

"""The reporter against a real HTTP server on loopback standing in for the control plane
(tests/agents/stub_server.py). Backoff is checked on an injected clock, never by waiting."""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

import pytest

from agents.reporter import Reporter
from agents.schema import GpuSample, NodeReport
from tests.agents.stub_server import StubServer, free_port, wait_until

BOOT = "0123456789abcdef"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def report(seq: int, boot: str = BOOT) -> NodeReport:
    gpu = GpuSample(index=0, uuid="GPU-a", util_gpu_pct=50.0)
    return NodeReport(boot=boot, seq=seq, at=1_700_000_000.0 + seq, gpus=[gpu])


def make_reporter(url: str, clock: Clock | None = None, **options: object) -> Reporter:
    settings: dict[str, object] = {"jitter": lambda: 1.0, "timeout_s": 5.0}
    settings.update(options)
    return Reporter(url, "node-token", "gpu-01", clock=clock or Clock(), **settings)  # type: ignore[arg-type]


@pytest.fixture
def down() -> Iterator[StubServer]:
    """A stub on a port where nothing listens until `.listen()`."""
    reserved = free_port()
    stub = StubServer(reserved.getsockname()[1])
    yield stub
    reserved.close()
    stub.close()


def test_batches_go_oldest_first_with_the_node_token(stub_server: StubServer) -> None:
    reporter = make_reporter(stub_server.url, batch_size=3)
    for seq in range(1, 8):
        reporter.add(report(seq))
    assert reporter.send_pending()
    assert [len(post.body["reports"]) for post in stub_server.posts] == [3, 3, 1]
    assert stub_server.seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert {post.authorization for post in stub_server.posts} == {"Bearer node-token"}
    assert {post.body["node"] for post in stub_server.posts} == {"gpu-01"}
    assert reporter.pending() == 0 and reporter.stats.delivered == 7


def test_a_full_buffer_drops_the_oldest(
    stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = make_reporter(stub_server.url, buffer_size=3)
    with caplog.at_level(logging.WARNING):
        for seq in range(1, 6):
            reporter.add(report(seq))
    assert reporter.pending() == 3 and reporter.stats.dropped_full == 2
    assert "report buffer full (3): dropped the oldest" in caplog.text
    assert reporter.send_pending()
    assert stub_server.seqs() == [3, 4, 5]


def test_backoff_while_the_server_is_away_then_everything_in_order(
    down: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    reporter = make_reporter(down.url, clock, retry_min_s=1.0, retry_max_s=8.0, batch_size=2)
    reporter.add(report(1))
    waits = []
    with caplog.at_level(logging.WARNING):
        for seq in range(2, 8):
            assert not reporter.send_pending()  # connection refused
            waits.append(reporter.seconds_until_retry())
            clock.now += waits[-1]
            reporter.add(report(seq))
    assert waits == [1.0, 2.0, 4.0, 8.0, 8.0, 8.0]  # doubling, capped
    assert "cannot reach http://127.0.0.1" in caplog.text
    assert reporter.pending() == 7 and reporter.stats.failed_posts == 6
    down.listen()
    assert reporter.send_pending()
    assert down.seqs() == [1, 2, 3, 4, 5, 6, 7]
    assert reporter.seconds_until_retry() == 0


def test_backoff_has_jitter(down: StubServer) -> None:
    clock = Clock()
    reporter = make_reporter(down.url, clock, retry_min_s=2.0, jitter=lambda: 0.0)
    reporter.add(report(1))
    reporter.send_pending()
    assert reporter.seconds_until_retry() == 1.0  # half of 2 s at the lowest draw


def test_server_errors_and_busy_answers_are_retried(stub_server: StubServer) -> None:
    clock = Clock()
    reporter = make_reporter(stub_server.url, clock, retry_min_s=1.0, retry_max_s=30.0)
    stub_server.answers.extend([503, 429])
    stub_server.retry_after = "7"
    reporter.add(report(1))
    assert not reporter.send_pending()
    assert reporter.seconds_until_retry() == 7.0  # Retry-After
    stub_server.retry_after = None
    assert not reporter.send_pending()
    assert reporter.seconds_until_retry() == 2.0
    assert reporter.send_pending()
    assert stub_server.seqs() == [1]
    assert [post.status for post in stub_server.posts] == [503, 429, 200]


def test_a_resend_is_not_counted_twice(stub_server: StubServer) -> None:
    reporter = make_reporter(stub_server.url)
    stub_server.lose_acks = 1  # taken, but the agent never hears so
    reporter.add(report(1))
    reporter.add(report(2))
    assert not reporter.send_pending()
    reporter.add(report(3))
    assert reporter.send_pending()
    resent = stub_server.posts[-1].body["reports"]
    assert [(r["boot"], r["seq"]) for r in resent] == [(BOOT, 1), (BOOT, 2), (BOOT, 3)]
    assert stub_server.seqs() == [1, 2, 3]
    assert (reporter.stats.delivered, reporter.stats.duplicates) == (3, 2)


@pytest.mark.parametrize("status", [422, 409])  # 409: reports of an earlier run of the agent
def test_a_batch_the_server_can_never_take_is_dropped(
    stub_server: StubServer, caplog: pytest.LogCaptureFixture, status: int
) -> None:
    reporter = make_reporter(stub_server.url, batch_size=2)
    stub_server.answers.append(status)
    for seq in range(1, 6):
        reporter.add(report(seq))
    with caplog.at_level(logging.ERROR):
        assert reporter.send_pending()
    assert stub_server.seqs() == [3, 4, 5]
    assert reporter.stats.rejected == 2
    assert (
        f"rejected 2 report(s) (seq 1..2) and will never take them: scripted {status}"
        in caplog.text
    )


def test_a_refused_token_is_logged_and_retried_slowly(
    stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    clock = Clock()
    reporter = make_reporter(stub_server.url, clock, refused_retry_s=60.0)
    stub_server.answers.extend([401, 403])
    reporter.add(report(1))
    with caplog.at_level(logging.ERROR):
        assert not reporter.send_pending()
        assert reporter.seconds_until_retry() == 60.0
        assert not reporter.send_pending()
    assert caplog.text.count("the server refused this node's token") == 2
    assert "that it is node 'gpu-01''s" in caplog.text
    assert reporter.pending() == 1  # kept
    assert reporter.send_pending()
    assert stub_server.seqs() == [1]


def test_a_wrong_address_says_to_check_the_server(
    stub_server: StubServer, caplog: pytest.LogCaptureFixture
) -> None:
    reporter = make_reporter(stub_server.url + "/not-here")
    reporter.add(report(1))
    with caplog.at_level(logging.ERROR):
        assert not reporter.send_pending()
    assert "no report endpoint at" in caplog.text and "check --server" in caplog.text


def test_too_big_batches_are_halved(stub_server: StubServer) -> None:
    reporter = make_reporter(stub_server.url, batch_size=8)
    stub_server.answers.append(413)
    for seq in range(1, 9):
        reporter.add(report(seq))
    assert reporter.send_pending()
    assert [len(post.body["reports"]) for post in stub_server.posts] == [8, 4, 4]
    assert stub_server.seqs() == list(range(1, 9))
    stub_server.answers.append(413)
    reporter2 = make_reporter(stub_server.url, batch_size=1)
    reporter2.add(report(1, boot="fedcba9876543210"))
    assert reporter2.send_pending()
    assert reporter2.stats.rejected == 1


def test_the_servers_interval_is_taken(stub_server: StubServer) -> None:
    reporter = make_reporter(stub_server.url)
    assert reporter.server_interval_s is None
    stub_server.interval_s = 2.0
    reporter.add(report(1))
    reporter.send_pending()
    assert reporter.server_interval_s == 2.0
    stub_server.interval_s = 0.0  # nonsense: bounded
    reporter.add(report(2))
    reporter.send_pending()
    assert reporter.server_interval_s == 0.1


def test_the_sender_thread_delivers_once_the_server_is_back(down: StubServer) -> None:
    reporter = Reporter(down.url, "t", "gpu-01", retry_min_s=0.01, retry_max_s=0.05)
    sender = threading.Thread(target=reporter.run)
    sender.start()
    try:
        for seq in range(1, 4):
            reporter.add(report(seq))
        wait_until(lambda: reporter.stats.failed_posts >= 3)
        down.listen()
        reporter.add(report(4))
        wait_until(lambda: down.seqs() == [1, 2, 3, 4])
    finally:
        reporter.stop()
        sender.join(timeout=30)
    assert not sender.is_alive()


def test_stop_makes_one_last_attempt(stub_server: StubServer) -> None:
    reporter = Reporter(stub_server.url, "t", "gpu-01", retry_min_s=3600, retry_max_s=3600)
    stub_server.fixed_status = 503
    sender = threading.Thread(target=reporter.run)
    sender.start()
    reporter.add(report(1))
    wait_until(lambda: len(stub_server.posts) == 1)
    reporter.add(report(2))  # held by the backoff
    stub_server.fixed_status = None
    reporter.stop()
    sender.join(timeout=30)
    assert not sender.is_alive()
    assert stub_server.seqs() == [1, 2]


def test_stop_gives_up_within_its_time(down: StubServer, caplog: pytest.LogCaptureFixture) -> None:
    reporter = make_reporter(down.url)
    reporter.add(report(1))
    with caplog.at_level(logging.ERROR):
        assert not reporter.flush(timeout_s=1.0)
    assert "1 report(s) could not be delivered before stopping" in caplog.text

"""Failover on record: two nodes on one libpq URL naming a primary and its streaming standby.

docs/several-nodes.md, "A standby, and failover": the nodes name both database hosts in
one URL with ``target_session_attrs=read-write``, so libpq connects only to
the host that takes writes.  Here the primary is a real PostgreSQL, the
standby a real ``pg_basebackup -R`` copy streaming from it on 127.0.0.2, and
the nodes two real gunicorn servers.  The primary is SIGKILLed (a crash),
and the standby promoted a moment later.  What is checked:

- in the gap, every answer from either node (the Thunderbird document, an
  admin write, Dovecot's policy question, ``/healthz``) is the right answer
  or 503, never a protocol that is switched off and never another status;
- no write is acknowledged before the promotion (there is nowhere to write);
- after the promotion both nodes write again, without a restart, within a
  generous bound; how long it took is printed (``-s`` or ``-rP`` shows it) and
  recorded (``record_testsuite_property``, in ``--junitxml``), not asserted
  as a fast path;
- what was written before the crash, and had reached the standby, is there.

Replication is asynchronous: the test waits for the standby to replay the
primary's writes before the crash, as "replicated" means.  A write in the
last moments before a real crash may not have reached the standby;
docs/several-nodes.md says so.
"""

from __future__ import annotations

import copy
import json
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import pytest
import tomli_w

from tests.support.admin import LiveAdmin
from tests.support.config import BASE_CONFIG, POLICY_HEADER
from tests.support.gunicorn import GunicornServer, http
from tests.support.postgres import SUPERUSER, PostgresCluster, PostgresStandby

POLICY_SECRET = "failover-policy-secret-0123456789"
DATABASE = "failover"
STORE_TIMEOUT = 1  # [store] timeout: the longest a request waits for the database
CONNECT_TIMEOUT = 2  # in the URL; the service sets its own on every connection (max(2, [store] timeout)), the same here
# Seconds from the crash to the promotion: long enough for every worker to meet the outage,
# whose first request in it waits [store] timeout before its 503.
GAP = 2.5
WRITE_AGAIN_BOUND = 30.0  # generous: measured well under a second (printed)
IN_A_ROW = 5  # good writes in a row before a node counts as writing again (each worker serves some)

ALICE = "alice@example.net"  # IMAP on, POP off; rewritten (same values) throughout the gap
BOB = "bob@example.org"  # POP on, IMAP off; written only before the crash


def failover_url(primary: PostgresCluster, standby: PostgresStandby) -> str:
    """The URL docs/several-nodes.md gives: both hosts, the writable one chosen by libpq."""
    hosts = f"{primary.address}:{primary.port},{standby.address}:{standby.port}"
    return (
        f"postgresql://{SUPERUSER}@{hosts}/{DATABASE}?target_session_attrs=read-write&connect_timeout={CONNECT_TIMEOUT}"
    )


@dataclass
class Replicated:
    primary: PostgresCluster
    standby: PostgresStandby
    a: GunicornServer
    b: GunicornServer

    @property
    def nodes(self) -> tuple[tuple[str, GunicornServer], ...]:
        return ("A", self.a), ("B", self.b)


@pytest.fixture
def replicated(tmp_path: Path) -> Iterator[Replicated]:
    """Primary, standby and two nodes; every one stopped by its own PID at the end, however the test ends.

    Each ``stop`` is registered before its ``start``, so a start that fails
    halfway (a standby whose copy failed, a node that never answered) still
    leaves nothing running; ``stop`` of a server that is not running (the
    crashed primary) only deletes its files.
    """
    with ExitStack() as stack:
        primary = PostgresCluster(tmp_path / "primary")
        stack.callback(primary.stop)
        primary.start()
        primary.create_database(DATABASE)
        standby = PostgresStandby(tmp_path / "standby", primary)
        stack.callback(standby.stop)
        standby.start()

        config = copy.deepcopy(BASE_CONFIG)
        config["store"] = {"url": "sqlite:///not-used-the-environment-wins", "timeout": STORE_TIMEOUT}
        config["limits"] = {"client_rate": 0, "admin_rate": 0}  # every test client shares 127.0.0.1
        config["dovecot"] = {"api_header": f"{POLICY_HEADER}: {POLICY_SECRET}"}
        path = tmp_path / "autoconfig.toml"
        path.write_bytes(tomli_w.dumps(config).encode())
        env = {"AUTOCONFIG_DATABASE_URL": failover_url(primary, standby)}
        nodes = []
        for name in ("a", "b"):
            node = GunicornServer(path, tmp_path / f"node-{name}.log", env=env)
            stack.callback(node.stop)
            nodes.append(node.start())
        yield Replicated(primary, standby, *nodes)


# -- speaking to a node ------------------------------------------------------------


def document(node: GunicornServer, address: str) -> tuple[int, dict[str, str], bytes]:
    return http("GET", f"{node.url}/mail/config-v1.1.xml?emailaddress={address}")


def policy(node: GunicornServer, address: str, protocol: str) -> tuple[int, dict[str, str], bytes]:
    """Dovecot's question after a correct password, as the shipped snippets send it."""
    body = {"login": address, "protocol": protocol, "remote": "192.0.2.7", "session_id": "failover", "tls": True}
    return http("POST", f"{node.url}/dovecot/auth-policy?command=allow", body, {POLICY_HEADER: POLICY_SECRET})


def offered(body: bytes) -> tuple[bool, bool]:
    return b'type="imap"' in body, b'type="pop3"' in body


# -- what each answer may be ----------------------------------------------------------


@dataclass
class Answer:
    node: str
    what: str
    started: float
    ended: float
    status: int


def unavailable(status: int, headers: dict[str, str], body: bytes) -> None:
    """A 503 says when to retry and shows no switch (never a guess from earlier answers)."""
    assert headers.get("Retry-After", "").isdigit(), headers
    assert b"incomingServer" not in body and b'"imap": true' not in body and b'"status": 0' not in body, body


def check_document(address: str, switches: tuple[bool, bool]) -> Callable[[int, dict[str, str], bytes], None]:
    def check(status: int, headers: dict[str, str], body: bytes) -> None:
        assert status in (200, 503), (status, body)
        if status == 503:
            unavailable(status, headers, body)
        else:
            assert offered(body) == switches, (address, body)

    return check


def check_write(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status in (200, 503), (status, body)
    if status == 503:
        unavailable(status, headers, body)
    else:
        written = json.loads(body)
        assert (written["imap"], written["pop"]) == (True, False), written


def check_policy(allowed: bool) -> Callable[[int, dict[str, str], bytes], None]:
    def check(status: int, headers: dict[str, str], body: bytes) -> None:
        assert status in (200, 503), (status, body)
        if status == 503:
            unavailable(status, headers, body)
        else:
            assert (json.loads(body)["status"] == 0) is allowed, body

    return check


def check_health(status: int, headers: dict[str, str], body: bytes) -> None:
    assert status in (200, 503), (status, body)
    assert json.loads(body)["checks"]["store"] == ("ok" if status == 200 else "down"), body


def probe(name: str, node: GunicornServer) -> list[Answer]:
    """One round of every request the gap must not break, each checked as it comes."""
    requests: list[tuple[str, Callable[[], tuple[int, dict[str, str], bytes]], Callable[..., None]]] = [
        ("document alice", lambda: document(node, ALICE), check_document(ALICE, (True, False))),
        ("document bob", lambda: document(node, BOB), check_document(BOB, (False, True))),
        ("write", lambda: LiveAdmin(node).call("PATCH", ALICE, {"imap": True, "pop": False}), check_write),
        ("policy imap", lambda: policy(node, ALICE, "imap"), check_policy(allowed=True)),
        ("policy pop3", lambda: policy(node, ALICE, "pop3"), check_policy(allowed=False)),
        ("healthz", lambda: http("GET", f"{node.url}/healthz"), check_health),
    ]
    answers = []
    for what, send, check in requests:
        started = time.monotonic()
        status, headers, body = send()
        answers.append(Answer(name, what, started, time.monotonic(), status))
        check(status, headers, body)
    return answers


# -- the test -------------------------------------------------------------------------


def test_the_primary_crashes_and_the_promoted_standby_takes_the_writes(
    replicated: Replicated, record_testsuite_property: Callable[[str, object], None]
) -> None:
    a, b = replicated.a, replicated.b
    pids = (a.pid, b.pid)

    # Before: written through A, seen through B at once (and the other way round).
    LiveAdmin(a).set(ALICE, imap=True, pop=False)
    LiveAdmin(b).set(BOB, imap=False, pop=True)
    for _, node in replicated.nodes:
        for answer in probe("before", node):
            assert answer.status == 200, answer
    bob_before = LiveAdmin(a).get(BOB)
    assert LiveAdmin(b).get(BOB) == bob_before
    replicated.standby.wait_for_replay()

    # The crash; each node asked without a pause by a thread of its own; the promotion GAP seconds later.
    answers: list[Answer] = []
    writing_again: dict[str, float] = {}
    failures: list[BaseException] = []
    stop = threading.Event()

    def ask(name: str, node: GunicornServer) -> None:
        good_writes = 0
        try:
            while not stop.is_set():
                round_ = probe(name, node)
                answers.extend(round_)
                (written,) = (answer for answer in round_ if answer.what == "write")
                good_writes = good_writes + 1 if written.status == 200 else 0
                if good_writes == IN_A_ROW:
                    writing_again[name] = time.monotonic()
                    return
        except BaseException as exc:
            failures.append(exc)

    replicated.primary.crash()
    crashed = time.monotonic()
    askers = [threading.Thread(target=ask, args=node, name=f"node {node[0]}") for node in replicated.nodes]
    for asker in askers:
        asker.start()
    try:
        time.sleep(GAP)
        promotion = {"started": time.monotonic()}
        replicated.standby.promote()
        promotion["done"] = time.monotonic()
        for asker in askers:
            asker.join(timeout=max(0.0, promotion["done"] + WRITE_AGAIN_BOUND - time.monotonic()))
    finally:
        stop.set()
        for asker in askers:
            asker.join()
    assert not failures, failures
    assert len(writing_again) == len(replicated.nodes), (
        f"not writing again {WRITE_AGAIN_BOUND:g} s after the promotion: only {sorted(writing_again)};\n"
        + "\n".join(f"node {name}:\n{node.log_text()[-2000:]}" for name, node in replicated.nodes)
    )
    assert not replicated.standby.is_in_recovery()

    # Nothing was acknowledged while there was no primary, and the gap was seen (or this proves nothing).
    before_promotion = [answer for answer in answers if answer.ended < promotion["started"]]
    assert before_promotion and all(answer.status == 503 for answer in before_promotion if answer.what == "write")
    for name, _ in replicated.nodes:
        assert any(answer.node == name and answer.status == 503 for answer in before_promotion), name

    first_write = {
        name: min(
            answer.ended
            for answer in answers
            if answer.node == name and answer.what == "write" and answer.status == 200
        )
        for name, _ in replicated.nodes
    }
    statuses = Counter((answer.node, answer.status) for answer in answers)
    promoted = promotion["done"]
    figures = {
        "promotion_s": promoted - promotion["started"],
        **{f"node_{name}_first_write_after_crash_s": first_write[name] - crashed for name in first_write},
        **{f"node_{name}_first_write_after_promotion_s": first_write[name] - promoted for name in first_write},
        **{f"node_{name}_writing_again_after_promotion_s": writing_again[name] - promoted for name in writing_again},
    }
    for key, value in figures.items():
        record_testsuite_property(f"failover_{key}", round(value, 3))
    record_testsuite_property("failover_answers", " ".join(f"{n}:{s}x{c}" for (n, s), c in sorted(statuses.items())))
    print(
        f"\nfailover: crash -> promotion {GAP:g} s, promotion took {figures['promotion_s']:.3f} s; "
        + "; ".join(
            f"node {name}: first write {first_write[name] - promoted:+.3f} s from the end of the promotion"
            f" ({first_write[name] - crashed:.3f} s after the crash), {IN_A_ROW} in a row at"
            f" {writing_again[name] - promoted:+.3f} s"
            for name in sorted(first_write)
        )
        + f"; answers {dict(statuses)}"
    )

    # After: the same processes, the data from before the crash, and new writes seen across nodes.
    assert (a.pid, b.pid) == pids
    for _, node in replicated.nodes:
        assert LiveAdmin(node).get(BOB) == bob_before
        for answer in probe("after", node):
            assert answer.status == 200, answer
    for writer, reader, address in ((a, b, "carol@example.net"), (b, a, "dave@example.org")):
        LiveAdmin(writer).set(address, imap=False, pop=True)
        status, _, body = document(reader, address)
        assert status == 200 and offered(body) == (False, True), body

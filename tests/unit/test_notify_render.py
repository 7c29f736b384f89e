"""Pure notification code: header sanitising, address validation, message building, webhook
signatures and the outbound address policy (properties with hypothesis)."""

from __future__ import annotations

import base64
import hashlib
import hmac
import ipaddress
from datetime import UTC, datetime, timedelta
from email import message_from_bytes
from email.policy import default as default_policy

import pytest
from hypothesis import given
from hypothesis import strategies as st

from taskd.config.settings import NotifyRule
from taskd.errors import InvalidAddress
from taskd.notify import render, signing
from taskd.notify.webhook import DestinationPolicy, check_url, is_public
from taskd.services.runner import log_tail
from taskd.store.notifications import defaults_from_rules, like_pattern

HEADERS = ["From", "To", "Subject", "Date", "Message-ID", "Auto-Submitted"]
BREAKS = "\r\n\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029\x00"
NOW = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)

text = st.text(alphabet=st.characters(codec="utf-8"), max_size=300)
nasty = st.lists(st.sampled_from([*BREAKS, "Bcc: x@y.io", ":", " ", "a", "é", "\t"]), max_size=40)


def parsed(msg_bytes: bytes) -> list[str]:
    """The header names of a message as a receiver parses them."""
    return list(message_from_bytes(msg_bytes, policy=default_policy).keys())


@given(text)
def test_header_text_never_keeps_a_control_or_line_break_character(value: str) -> None:
    out = render.header_text(value)
    assert not any(ch in out for ch in BREAKS)
    assert all(ch == " " or ch.isprintable() for ch in out)
    assert len(out) <= render.SUBJECT_MAX and out == out.strip()


@given(st.text(max_size=50).map(render.header_text))
def test_header_text_is_idempotent(value: str) -> None:
    assert render.header_text(value) == value


@given(type_=text, status=text, task_id=text, body=text)
def test_no_task_field_adds_a_header_to_the_email(
    type_: str, status: str, task_id: str, body: str
) -> None:
    subject = render.subject(type_, status, task_id)
    msg = render.build_email(
        sender="taskd@example.com",
        to=["ops@example.com"],
        subject_line=subject,
        body=body,
        message_id=task_id,
        date=NOW,
    )
    data = msg.as_bytes()
    names = parsed(data)
    assert [
        n for n in names if n not in ("MIME-Version", "Content-Type", "Content-Transfer-Encoding")
    ] == HEADERS
    received = message_from_bytes(data, policy=default_policy)
    assert received["To"] == "ops@example.com"
    # what was rendered, on one line (RFC 2047 drops the space between two encoded words)
    assert received["Subject"].split() == subject.split() or (
        "".join(received["Subject"].split()) == "".join(subject.split())
    )


@given(
    st.lists(
        st.sampled_from([*BREAKS, "Bcc: e@v.il", "a@b.io", ",", "<", ">", " "]), min_size=1
    ).map("".join)
)
def test_addresses_with_header_breaking_characters_are_refused(junk: str) -> None:
    for addr in (f"a@example.com{junk}", f"{junk}a@example.com"):
        if addr == "a@example.com" or not any(c in junk for c in BREAKS + ",<> "):
            continue
        with pytest.raises(InvalidAddress):
            render.validate_address(addr)


_atom = st.text(
    alphabet="abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-", min_size=1, max_size=10
)


@given(
    st.lists(_atom, min_size=1, max_size=3),
    st.lists(
        st.from_regex(r"[a-z0-9]([a-z0-9-]{0,8}[a-z0-9])?", fullmatch=True), min_size=1, max_size=3
    ),
    st.from_regex(r"[a-z]{2,6}", fullmatch=True),
)
def test_plain_addresses_are_accepted(local: list[str], labels: list[str], tld: str) -> None:
    addr = ".".join(local) + "@" + ".".join([*labels, tld])
    if len(".".join(local)) <= 64:
        assert render.validate_address(addr) == addr


@pytest.mark.parametrize(
    "addr",
    [
        "a",
        "@example.com",
        "a@",
        "a@b",
        "a..b@example.com",
        ".a@example.com",
        "a@-x.com",
        '"a b"@example.com',
        "A <a@example.com>",
        "a@example.com (c)",
        "a@exa mple.com",
        "a@ex_ample.com",
        "é@example.com",
        "a@[127.0.0.1]",
        "a" * 65 + "@example.com",
    ],
)
def test_unusual_addresses_are_refused(addr: str) -> None:
    with pytest.raises(InvalidAddress):
        render.validate_address(addr)


def test_the_subject_is_the_documented_one() -> None:
    assert render.subject("email.send", "FAILED", "0191") == "[taskd] email.send FAILED (0191)"


def test_the_body_lists_the_task_s_facts_error_and_last_log_lines() -> None:
    facts = render.TaskFacts(
        id="t1",
        type="x.y",
        queue="default",
        status="FAILED",
        attempts=3,
        created_at=NOW,
        started_at=NOW + timedelta(seconds=1),
        finished_at=NOW + timedelta(seconds=3, milliseconds=500),
        error_type="RuntimeError",
        error_message="boom\r\nsecond line",
        labels={"team": "data"},
        log_lines=[f"line {i}" for i in range(30)],
    )
    body = render.email_body(facts, log_lines=5)
    assert "Task t1 (x.y) ended FAILED." in body
    assert "  duration:  2.500 s\n" in body and "  attempts:  3\n" in body
    assert "  RuntimeError: boom\nsecond line\n" in body and "\r" not in body
    assert "Last 5 log lines:\n  line 25\n" in body and "line 24" not in body
    assert "  labels:    team=data\n" in body


@given(
    st.binary(max_size=200),
    st.text(max_size=40),
    st.integers(0, 2**40),
    st.binary(min_size=1, max_size=64),
)
def test_signatures_verify_and_match_an_independent_hmac(
    body: bytes, msg_id: str, ts: int, key: bytes
) -> None:
    sig = signing.sign(key, msg_id, ts, body)
    expected = hmac.new(key, f"{msg_id}.{ts}.".encode() + body, hashlib.sha256).digest()
    assert sig == "v1," + base64.b64encode(expected).decode()
    assert signing.verify(key, msg_id, ts, body, f"v1,bm9wZQ== {sig}")
    assert not signing.verify(key, msg_id, ts + 1, body, sig)
    assert not signing.verify(key, msg_id, ts, body + b"x", sig)


def test_the_standard_webhooks_test_vector() -> None:
    key = signing.secret_key("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw")
    sig = signing.sign(key, "msg_p5jXN8AQM9LWM0D4loKWxJek", 1614265330, b'{"test": 2432232314}')
    assert sig == "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE="
    assert signing.secret_key("plain text") == b"plain text"


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "100.64.0.1",
        "100.100.100.200",
        "0.0.0.0",
        "224.0.0.1",
        "255.255.255.255",
        "::1",
        "::",
        "fe80::1",
        "fc00::1",
        "fd00:ec2::254",
        "::ffff:127.0.0.1",
        "::ffff:169.254.169.254",
        "64:ff9b::a9fe:a9fe",
        "2002:7f00:1::1",
        "not-an-ip",
    ],
)
def test_non_public_addresses_are_refused_by_default(address: str) -> None:
    assert not DestinationPolicy().permits(address)


@pytest.mark.parametrize("address", ["93.184.215.14", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_permitted(address: str) -> None:
    assert DestinationPolicy().permits(address)


@given(st.ip_addresses())
def test_the_allow_list_permits_exactly_its_networks_beyond_the_public_ones(
    ip: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    policy = DestinationPolicy(["127.0.0.0/8", "fd00::/8"])
    allowed = any(ip.version == n.version and ip in n for n in policy.allow)
    assert policy.permits(str(ip)) == (allowed or is_public(ip))
    if ip.is_loopback or ip.is_private or ip.is_link_local:
        assert policy.permits(str(ip)) == allowed


@pytest.mark.parametrize(
    "url",
    [
        "ftp://example.com/x",
        "http:///x",
        "http://127.0.0.1/x",
        "http://[::1]:80/x",
        "http://169.254.169.254/latest",
        "notaurl",
    ],
)
def test_urls_with_refused_schemes_or_literal_hosts_are_refused_before_any_connection(
    url: str,
) -> None:
    from taskd.errors import DestinationRefused

    with pytest.raises(DestinationRefused):
        check_url(url, DestinationPolicy())


@given(st.text(alphabet="ab_%*\\x.", max_size=12), st.text(alphabet="ab_%\\x.", max_size=12))
def test_type_globs_match_like_fnmatch_with_only_star_special(glob: str, name: str) -> None:
    import re

    pattern = like_pattern(glob)
    # Evaluate the LIKE pattern the way PostgreSQL does (backslash escapes, % and _ wildcards).
    regex, i = "", 0
    while i < len(pattern):
        ch = pattern[i]
        if ch == "\\" and i + 1 < len(pattern):
            regex += re.escape(pattern[i + 1])
            i += 2
            continue
        regex += ".*" if ch == "%" else "." if ch == "_" else re.escape(ch)
        i += 1
    expected = re.fullmatch(".*".join(re.escape(p) for p in glob.split("*")), name, re.S)
    assert bool(re.fullmatch(regex, name, re.S)) == bool(expected)


def test_rules_flatten_into_one_entry_per_status_type_queue_and_target() -> None:
    d = defaults_from_rules(
        [
            NotifyRule(
                statuses=("SUCCESS", "FAILED"),
                types=("a.*",),
                queues=("q1", "q2"),
                email=("x@e.io",),
                webhook="https://h.io",
            )
        ]
    )
    assert len(d.statuses) == 2 * 1 * 2 * 2
    assert set(zip(d.channels, d.targets, strict=True)) == {
        ("email", "x@e.io"),
        ("webhook", "https://h.io"),
    }
    assert set(d.queues) == {"q1", "q2"} and set(d.type_patterns) == {"a.%"}
    assert defaults_from_rules([NotifyRule(email=("x@e.io",))]).queues == [None]


@given(st.lists(st.text(max_size=30), max_size=80), st.integers(1, 60))
def test_the_log_tail_keeps_the_last_lines_in_order(entries: list[str], keep: int) -> None:
    lines = [line for e in entries for line in (e.splitlines() or [""])]
    assert list(log_tail(entries, keep)) == [line[:1000] for line in lines[-keep:]]

"""The Python binding against a real `tally serve`: exact counts after an
offline start, consent, health, a process killed mid-burst, and the event
version each message names."""

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest

from conftest import free_port

EVENTS = 50


def test_tracked_offline_then_synced_when_the_collector_comes_up(tally, config, serve):
    port = free_port()
    tracker = tally.TallyTracker(config(f"http://127.0.0.1:{port}"))
    for i in range(EVENTS):
        props = {"i": tally.PropValue.INT(value=i), "screen": tally.PropValue.TEXT(value="cart")}
        assert tracker.track("Item Added", props) == i + 1
    tracker.flush()
    before = tracker.health()
    assert (before.pending, before.accepted, before.tracked) == (EVENTS, 0, EVENTS)

    server = serve(port)
    assert tracker.wait_until_synced(60_000), tracker.health()
    stats = server.stats()
    assert (stats["events"], stats["accepted"], stats["duplicate"]) == (EVENTS, EVENTS, 0)
    assert server.install_seqs(tracker.install_id()) == list(range(1, EVENTS + 1))
    tracker.shutdown(5_000)


def test_health_numbers_are_exact(tally, config, serve):
    server = serve()
    tracker = tally.TallyTracker(config(server.base))
    tracker.track_json("Order Completed", json.dumps({"total": 42.5, "items": [1, 2]}),
                       tally.TrackOptions(priority=tally.Priority.CRITICAL, dedup_key="order-1"))
    tracker.track_json("Order Completed", json.dumps({"total": 42.5}),
                       tally.TrackOptions(dedup_key="order-1"))
    tracker.identify("user-7", {"plan": tally.PropValue.TEXT(value="pro")})
    with pytest.raises(tally.TallyError.Invalid) as refused:
        tracker.track("x" * 300)
    assert refused.value.reason == "event_name_too_long"
    with pytest.raises(tally.TallyError.InvalidProperties):
        tracker.track_json("Bad", "[1, 2]")
    assert tracker.wait_until_synced(60_000)
    h = tracker.health()
    assert (h.tracked, h.pending, h.accepted, h.duplicate) == (3, 0, 2, 1)
    assert h.refused == {"event_name_too_long": 1}
    assert h.rejected == {} and h.dropped == {}
    assert h.consent == tally.Consent.GRANTED and not h.auth_failed
    assert h.last_success_ms is not None
    # The same dedup key across two messages is stored once.
    assert server.stats()["events"] == 2
    tracker.shutdown(5_000)


def test_consent_denied_stores_nothing(tally, config, serve, tmp_path):
    server = serve()
    tracker = tally.TallyTracker(config(server.base, consent=tally.Consent.PENDING))
    for _ in range(5):
        tracker.track("Before Consent")
    tracker.flush()
    assert tracker.health().pending == 5
    tracker.set_consent(tally.Consent.DENIED)
    with pytest.raises(tally.TallyError.ConsentDenied):
        tracker.track("After Denial")
    h = tracker.health()
    assert (h.pending, h.pending_bytes) == (0, 0)
    assert h.dropped == {"consent_denied": 5}
    assert h.refused == {"consent_denied": 1}
    tracker.sync_now()
    assert not tracker.wait_until_synced(1_000), "nothing may be sent while denied"
    assert server.stats()["events"] == 0
    tracker.shutdown(5_000)
    with pytest.raises(tally.TallyError.ShutDown):
        tracker.track("After Shutdown")


CHILD = textwrap.dedent("""
    import sys
    sys.path.insert(0, sys.argv[1])
    import tally
    tracker = tally.TallyTracker(tally.TallyConfig(
        write_key="test-write-key", endpoint=sys.argv[2], data_dir=sys.argv[3],
        consent=tally.Consent.GRANTED))
    i = 0
    while True:
        i += 1
        seq = tracker.track("Burst", {"i": tally.PropValue.INT(value=i)})
        if i % 100 == 0:
            tracker.flush()
            print(seq, flush=True)
""")


def test_a_process_killed_mid_burst_resumes_with_every_flushed_event_once(
        tally, module_dir, config, serve, tmp_path):
    server = serve()
    device = tmp_path / "device"
    child = subprocess.Popen(
        [sys.executable, "-c", CHILD, str(module_dir), server.base, str(device)],
        stdout=subprocess.PIPE, text=True)
    flushed = 0
    for line in child.stdout:
        flushed = int(line)
        if flushed >= 3_000:
            break
    os.kill(child.pid, signal.SIGKILL)
    child.wait()
    assert child.returncode == -signal.SIGKILL

    tracker = tally.TallyTracker(config(server.base))
    assert tracker.wait_until_synced(120_000), tracker.health()
    seqs = server.install_seqs(tracker.install_id())
    # Every flushed event is there once; events accepted after the last
    # flush may have been lost with the process (their seqs are reused),
    # never counted twice.
    assert seqs == list(range(1, len(seqs) + 1))
    assert len(seqs) >= flushed
    stats = server.stats()
    assert stats["events"] == len(seqs)
    install = server.admin_get(f"/v1/installs/{tracker.install_id()}")
    assert install["missing"] == []
    tracker.shutdown(5_000)


def test_the_network_and_a_background_sync_as_an_app_wires_them(tally, config, serve):
    server = serve()
    tracker = tally.TallyTracker(config(server.base, auto_upload=False))
    tracker.set_network(False, False)
    for i in range(EVENTS):
        tracker.track("Queued", {"i": tally.PropValue.INT(value=i)})
    offline = tracker.run_background_sync(10_000)
    assert (offline.sent, offline.remaining, offline.outcome) == (
        0, EVENTS, tally.BackgroundOutcome.OFFLINE)
    assert server.stats()["events"] == 0

    tracker.set_network(True, False)
    online = tracker.run_background_sync(60_000)
    assert (online.sent, online.remaining, online.outcome) == (
        EVENTS, 0, tally.BackgroundOutcome.DONE)
    assert server.stats()["events"] == EVENTS
    tracker.shutdown(5_000)


def test_the_event_version_reaches_the_collector_exactly(tally, config, serve):
    server = serve()
    tracker = tally.TallyTracker(config(server.base))
    order = json.dumps({"total": 42.5})
    seqs = [
        tracker.track("Item Added", {"sku": tally.PropValue.TEXT(value="a")},
                      tally.TrackOptions(event_version=2)),
        tracker.track_json("Order Completed", order,
                           tally.TrackOptions(priority=tally.Priority.CRITICAL,
                                              dedup_key="order-1", event_version=7)),
        tracker.track("No Version", None, tally.TrackOptions(dedup_key="nv-1")),
        # 0 is sent as it is, as by the Rust SDK: the collector counts a
        # version its plan lacks as `unknown_version`.
        tracker.track("Zero", None, tally.TrackOptions(event_version=0)),
    ]
    assert seqs == [1, 2, 3, 4]
    # What a u32 cannot hold is refused by the binding before the call:
    # a typed Python error, nothing tracked, no seq taken.
    for bad, error in [(-1, ValueError), (2**32, ValueError), ("2", TypeError)]:
        with pytest.raises(error):
            tracker.track("Out Of Range", None, tally.TrackOptions(event_version=bad))
    assert tracker.track("After", None, tally.TrackOptions(event_version=1)) == 5
    assert tracker.wait_until_synced(60_000), tracker.health()

    stored = sorted(
        (m["context"]["tally"]["seq"], m["event"], m["context"]["tally"].get("event_version"),
         m["context"]["tally"].get("priority"), m["context"]["tally"].get("dedup_key"))
        for m in server.exported())
    assert stored == [
        (1, "Item Added", 2, None, None),
        (2, "Order Completed", 7, "critical", "order-1"),
        (3, "No Version", None, None, "nv-1"),
        (4, "Zero", 0, None, None),
        (5, "After", 1, None, None),
    ]
    h = tracker.health()
    assert (h.tracked, h.accepted, h.refused) == (5, 5, {})
    tracker.shutdown(5_000)

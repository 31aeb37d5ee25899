"""track() latency through the Python binding: the workload of the Rust
SDK's `track_latency` example (EVENTS events from one thread, 3 properties
varying per event, built before the timer starts). Prints one JSON line.
Run by sdks/bench-track.sh; the module and the library must be importable
(the script's first argument is their directory)."""

import json
import math
import shutil
import sys
import tempfile
import time

sys.path.insert(0, sys.argv[1])
import tally  # noqa: E402

SCREENS = ["home", "search", "cart", "checkout"]
BUTTONS = ["buy", "back", "share"]


def main():
    events = int(sys.argv[2]) if len(sys.argv) > 2 else 100_000
    data = tempfile.mkdtemp(prefix="tally-latency-")
    # Nothing listens on port 9: capture and persistence alone.
    tracker = tally.TallyTracker(tally.TallyConfig(
        write_key="bench", endpoint="http://127.0.0.1:9", data_dir=data,
        consent=tally.Consent.GRANTED))
    ns = []
    refused = 0
    for i in range(events):
        props = {"screen": tally.PropValue.TEXT(value=SCREENS[i % 4]),
                 "button": tally.PropValue.TEXT(value=BUTTONS[i % 3]),
                 "variant": tally.PropValue.INT(value=i % 7)}
        t = time.perf_counter_ns()
        try:
            tracker.track("bench.track", props)
        except tally.TallyError:
            refused += 1
        ns.append(time.perf_counter_ns() - t)
    tracker.shutdown(30_000)
    shutil.rmtree(data, ignore_errors=True)
    ns.sort()

    def pct(q):
        return ns[min(max(math.ceil(events * q), 1), events) - 1] / 1000

    print(json.dumps({"binding": "python", "events": events, "refused": refused,
                      "track_p50_us": pct(0.50), "track_p99_us": pct(0.99),
                      "track_p999_us": pct(0.999)}))


main()

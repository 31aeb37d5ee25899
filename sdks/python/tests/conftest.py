"""Fixtures for the Python binding's tests: the generated module loaded
beside the built library, and a real `tally serve` on 127.0.0.1.

Environment (set by sdks/python/run-tests.sh):
  TALLY_BIN      the `tally` binary built from the workspace
  TALLY_FFI_LIB  the built libtally_ffi
"""

import json
import os
import shutil
import socket
import subprocess
import sys
import threading
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[3]
WRITE_KEY = "test-write-key"
ADMIN_TOKEN = "test-admin-token"
# How long a starting server may take to print its address (a cold debug
# build on a busy 2-core machine takes seconds).
START_TIMEOUT_S = 30


def _required_env(name):
    value = os.environ.get(name)
    if not value or not Path(value).is_file():
        pytest.exit(f"{name} must name a built file (see sdks/python/run-tests.sh)", 2)
    return value


@pytest.fixture(scope="session")
def module_dir(tmp_path_factory):
    """A directory holding tally.py and libtally_ffi side by side, as an
    app ships them."""
    lib = _required_env("TALLY_FFI_LIB")
    where = tmp_path_factory.mktemp("tally-module")
    shutil.copy(ROOT / "sdks" / "python" / "tally.py", where / "tally.py")
    shutil.copy(lib, where / Path(lib).name)
    return where


@pytest.fixture(scope="session")
def tally(module_dir):
    sys.path.insert(0, str(module_dir))
    import tally as module

    return module


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """`tally serve` in a child process, stopped when the test ends."""

    def __init__(self, data_dir, port=0):
        binary = _required_env("TALLY_BIN")
        env = {k: v for k, v in os.environ.items() if not k.startswith("TALLY_")}
        self.proc = subprocess.Popen(
            [binary, "serve", "--listen", f"127.0.0.1:{port}", "--data-dir", str(data_dir),
             "--write-key", WRITE_KEY, "--admin-token", ADMIN_TOKEN],
            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
            env=env, text=True)
        found = threading.Event()
        self.base = None

        def read():
            for line in self.proc.stderr:
                if "listening on " in line and self.base is None:
                    self.base = line.split("listening on ", 1)[1].split()[0]
                    found.set()

        threading.Thread(target=read, daemon=True).start()
        if not found.wait(START_TIMEOUT_S):
            self.stop()
            raise RuntimeError("tally serve did not start")

    def admin_get(self, path):
        request = urllib.request.Request(
            self.base + path, headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return json.loads(response.read())

    def stats(self):
        return self.admin_get("/v1/stats")

    def install_seqs(self, install_id):
        """Every stored seq of one install, in order (one page holds them
        all in these tests)."""
        page = self.admin_get(f"/v1/installs/{install_id}/events?limit=10000")
        return [e["seq"] for e in page]

    def exported(self):
        """Every stored message, as `GET /v1/export` gives it back (the
        message as received, one JSON object a line)."""
        request = urllib.request.Request(
            self.base + "/v1/export", headers={"authorization": f"Bearer {ADMIN_TOKEN}"})
        with urllib.request.urlopen(request, timeout=30) as response:
            return [json.loads(line) for line in response.read().splitlines() if line.strip()]

    def stop(self):
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@pytest.fixture
def serve(tmp_path):
    started = []

    def start(port=0):
        server = Server(tmp_path / f"server-{len(started)}", port)
        started.append(server)
        return server

    yield start
    for server in started:
        server.stop()


@pytest.fixture
def config(tally, tmp_path):
    def make(endpoint, **overrides):
        members = dict(write_key=WRITE_KEY, endpoint=endpoint,
                       data_dir=str(tmp_path / "device"), consent=tally.Consent.GRANTED)
        members.update(overrides)
        return tally.TallyConfig(**members)

    return make

"""`hypergen app` as a user runs it: a real server on a free port (tiny zoo and model, fake encoder) that
stops when its own process gets SIGTERM or SIGINT, leaving nothing that serves the port."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from hypergen.testing import app_healthy

pytestmark = pytest.mark.slow
HYPERGEN = Path(sys.executable).parent / "hypergen"  # the console script installed beside this Python


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def _group(pgid: int) -> list[int]:
    """Live processes in process group `pgid` (zombies excluded: they serve nothing)."""
    pids = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces, so split after its closing parenthesis
            state, _ppid, pgrp = stat.read_text().rsplit(")", 1)[1].split()[:3]
        except (OSError, IndexError):
            continue  # gone while we looked
        if int(pgrp) == pgid and state != "Z":
            pids.append(int(stat.parent.name))
    return pids


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "SIGINT"])
def test_signal_to_the_app_command_stops_its_server(sig, tiny_zoo, tiny_path, tmp_path):
    port = _free_port()
    cmd = [str(HYPERGEN), "app", "--port", str(port), "--zoo", str(tiny_zoo.root), "--base", str(tiny_path), "--encoder", "fake", "--generator", "mix", "--device", "cpu"]
    with open(tmp_path / "server.log", "w+") as log:
        # its own process group: whatever the command starts can be found (and cleaned up) by group id
        proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            if not app_healthy(f"http://127.0.0.1:{port}", proc, timeout=120):
                log.seek(0)
                pytest.fail(f"the app did not start (exit {proc.poll()}):\n{log.read()[-3000:]}")
            os.kill(proc.pid, sig)  # the command's own process only, as `kill PID` or a supervisor does
            deadline = time.monotonic() + 5
            while _port_open(port) and time.monotonic() < deadline:
                time.sleep(0.1)
            left = _group(proc.pid)
            log.seek(0)
            out = log.read()
            assert not _port_open(port), f"port {port} still served 5 s after {sig.name}; processes left: {left}\n{out[-2000:]}"
            proc.wait(timeout=5)
            assert not _group(proc.pid), f"processes left after {sig.name}: {_group(proc.pid)}"
            assert f"hypergen app: http://127.0.0.1:{port}" in out  # the address is still printed first
        finally:
            if _group(proc.pid):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=10)

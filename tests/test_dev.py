"""`ordertrack dev` starts the whole system, serves a working tracking page, and Ctrl-C leaves
nothing running."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time

import httpx
import psutil

from tests.support import REPO, free_port, wait_for


def test_dev_runs_everything_and_ctrl_c_stops_every_process(tmp_path):
    ports = {name: free_port() for name in
             ("PORT", "API_PORT", "SANDBOX_PORT", "METRICS_PORT", "GATEWAY_METRICS_PORT")}
    env = {**os.environ, **{k: str(v) for k, v in ports.items()},
           "DEV_DIR": str(tmp_path / "dev"), "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "ordertrack", "dev"], cwd=tmp_path, env=env,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    output = []
    try:
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            line = proc.stdout.readline()
            if not line:
                break
            output.append(line)
            if "Ctrl-C stops everything" in line:
                break
        text = "".join(output)
        urls = re.findall(r"(http://\S+/orders/(\S+?)#token=(\S+))", text)
        assert len(urls) >= 3, text
        children = psutil.Process(proc.pid).children(recursive=True)
        assert len(children) >= 5  # redis, sandbox, gateway, pod, api

        page_url, order_id, token = urls[0]
        page = httpx.get(page_url.split("#")[0], timeout=5)
        assert page.status_code == 200 and "<html" in page.text.lower()
        api = f"http://127.0.0.1:{ports['API_PORT']}/api/v2/orders/{order_id}/tracking"

        def has_history():
            answer = httpx.get(api, headers={"Authorization": f"Bearer {token}"}, timeout=5)
            return answer.status_code == 200 and answer.json()["history"]

        # the gateway polls the sandbox and the order's history fills in
        wait_for(has_history, 30, what="demo order history")
        assert httpx.get(f"http://127.0.0.1:{ports['PORT']}/readyz", timeout=5).status_code == 200
    finally:
        proc.send_signal(signal.SIGINT)
        proc.wait(30)
    assert proc.returncode == 0
    for child in children:
        assert not child.is_running() or child.status() == psutil.STATUS_ZOMBIE, child


def test_dev_refuses_a_busy_port_with_one_clear_line(tmp_path):
    import socket

    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = subprocess.run([sys.executable, "-m", "ordertrack", "dev", "--port", str(port)],
                                cwd=tmp_path, capture_output=True, text=True, timeout=30,
                                env={**os.environ, "PYTHONPATH": str(REPO / "src")})
    assert result.returncode == 2
    assert "already in use" in result.stderr and len(result.stderr.strip().splitlines()) == 1

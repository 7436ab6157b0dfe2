"""The nginx recipe of docs/server-modes.md, for real: one public address, worker i at /w/i/ (prefix stripped,
``X-Forwarded-Prefix`` set), the voice webhook balanced over all workers.

Dialled and webhook-answered calls go fake Twilio -> nginx -> the owning worker, signatures checked on the
public URL; a stream sent to the wrong worker's prefix is refused with 421. Plain HTTP on loopback (the recipe's
TLS lines are the only thing left out). Skips with one line where nginx is not installed.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import pytest

from tests.output_lines import OutputLines
from tests.server.test_workers import start_fleet, stop, wait_fleet_serving
from voice_runtime.testing import SimulatedPhone
from voice_runtime.testing.fake_twilio import FakeTwilio
from voice_runtime.testing.phone import PhoneRejected
from voice_runtime.testing.ports import free_port_run, free_ports

WORKERS = 2

COMMON = """
        proxy_http_version 1.1;
        proxy_set_header Upgrade $http_upgrade;
        proxy_set_header Connection $connection_upgrade;
        proxy_set_header Host $host;
        proxy_set_header X-Forwarded-Proto $scheme;
        proxy_set_header X-Forwarded-Host $http_host;
        proxy_read_timeout 3600s;
        proxy_buffering off;
"""


def nginx_conf(listen: int, ports: list[int], prefix: Path) -> str:
    upstream = " ".join(f"server 127.0.0.1:{p};" for p in ports)
    workers = "\n".join(
        f"    location /w/{i}/ {{ {COMMON} proxy_set_header X-Forwarded-Prefix /w/{i}; proxy_pass http://127.0.0.1:{p}/; }}"
        for i, p in enumerate(ports)
    )
    return f"""
worker_processes 1;
daemon off;
pid {prefix}/nginx.pid;
error_log stderr notice;  # the test waits for "start worker processes"
events {{ worker_connections 1024; }}
http {{
    access_log off;
    client_body_temp_path {prefix}/body; proxy_temp_path {prefix}/proxy;
    fastcgi_temp_path {prefix}/fcgi; uwsgi_temp_path {prefix}/uwsgi; scgi_temp_path {prefix}/scgi;
    map $http_upgrade $connection_upgrade {{ default upgrade; '' close; }}
    upstream voice_any {{ {upstream} }}
    server {{
        listen 127.0.0.1:{listen};
        location = /twilio/voice {{ {COMMON} proxy_pass http://voice_any; }}
{workers}
    }}
}}
"""


@pytest.fixture
def proxied_fleet(tmp_path: Path) -> Iterator[tuple[FakeTwilio, int, list[int]]]:
    nginx = shutil.which("nginx") or ("/usr/sbin/nginx" if os.path.exists("/usr/sbin/nginx") else None)
    if nginx is None:
        pytest.skip("nginx not installed: apt-get install nginx-light (scripts/test.sh does it as root)")
    with FakeTwilio() as fake:
        listen, webhook_port = free_ports(2)
        ports = free_port_run(WORKERS)  # worker i listens on base + i
        conf = tmp_path / "nginx.conf"
        conf.write_text(nginx_conf(listen, ports, tmp_path))
        os.chmod(tmp_path, 0o777)  # nginx workers run as nobody when started by root
        fleet, output = start_fleet(fake, ports, webhook_port, FLEET_PUBLIC_URL=f"http://127.0.0.1:{listen}/w/{{index}}")
        proxy = subprocess.Popen([nginx, "-p", str(tmp_path), "-c", str(conf)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        assert proxy.stderr is not None
        proxy_output = OutputLines(proxy, stderr=proxy.stderr)
        try:
            wait_fleet_serving(output, ports)
            # nginx opens its listening sockets before it starts its workers, and says so at notice level.
            proxy_output.wait_for(r"\[notice\].*: start worker processes", 30)
            yield fake, listen, ports
        finally:
            for proc in (proxy, fleet):
                stop(proc)
            output.join()
            proxy_output.join()


def test_calls_through_nginx_reach_their_owners(proxied_fleet: tuple[FakeTwilio, int, list[int]]) -> None:
    fake, listen, ports = proxied_fleet
    public = f"http://127.0.0.1:{listen}"
    owner: dict[str, int] = {}
    for index, port in enumerate(ports):
        sids = httpx.post(f"http://127.0.0.1:{port}/_test/dial", json={"count": 10}, timeout=30).json()["call_sids"]
        owner.update({sid: index for sid in sids})

    def answer(sid: str) -> bool:
        call = fake.calls[sid]
        url, _, _ = call.stream()
        assert url.startswith(f"ws://127.0.0.1:{listen}/w/{owner[sid]}/stream/w{owner[sid]}.")
        assert call.status_callback == f"{public}/w/{owner[sid]}/twilio/status"
        return fake.answer(sid).wait_closed(30)

    with ThreadPoolExecutor(8) as pool:
        assert all(pool.map(answer, owner))

    def inbound(_: int) -> tuple[int, bool]:
        call, response, phone = fake.inbound_call(f"{public}/twilio/voice")
        assert response.status_code == 200, response.text
        assert phone is not None
        url, _, _ = call.stream()
        worker = int(url.split("/w/", 1)[1].split("/", 1)[0])
        return worker, phone.wait_closed(30)

    with ThreadPoolExecutor(8) as pool:
        answered = list(pool.map(inbound, range(20)))
    assert all(ok for _, ok in answered)
    reports = [httpx.get(f"http://127.0.0.1:{p}/_test/report", timeout=10).json() for p in ports]
    for index, report in enumerate(reports):
        assert set(report["dialled"].values()) == {"spoke"}
        assert len(report["dialled"]) == 10
        assert len(report["answered"]) == sum(1 for w, _ in answered if w == index)
        assert report["misdirected"] == 0
    assert {w for w, _ in answered} == {0, 1}  # nginx balanced the webhook over both workers

    # a stream for worker 0 sent to worker 1's prefix (a routing mistake) is refused, naming the owner
    sid = httpx.post(f"http://127.0.0.1:{ports[0]}/_test/dial", json={"count": 1}, timeout=30).json()["call_sids"][0]
    url, _, _ = fake.calls[sid].stream()
    wrong = url.replace("/w/0/", "/w/1/")
    with pytest.raises(PhoneRejected) as refused:
        SimulatedPhone(wrong, headers={"X-Twilio-Signature": fake.sign(wrong)}).connect()
    assert refused.value.status == 421 and "owned by worker w0, not w1" in str(refused.value)
    assert fake.answer(sid).wait_closed(30)

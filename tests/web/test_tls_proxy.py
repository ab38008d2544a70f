"""HTTPS served directly from a configured certificate, and the documented nginx site
(``config/nginx-callpipe-asr.conf``, a real nginx from the Debian package) in front of a real
server: an upload through it, the client's address believed from a trusted proxy only."""

from __future__ import annotations

import http.client
import json
import os
import shutil
import ssl
import subprocess
import time
import urllib.error
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import pytest

from asr_testkit import Prompt, word_error_rate
from ops_testkit import ServerProcess, client_context, free_port, multipart, self_signed_certificate, start_server

pytestmark = pytest.mark.e2e

SITE = Path(__file__).resolve().parents[2] / "config" / "nginx-callpipe-asr.conf"
KEY = "proxy-test-key-0123456789"
PROXY_ADDRESS = "127.0.0.2"
"""nginx connects to the server from here (``proxy_bind``), so the server can tell it from a
client on 127.0.0.1 (Linux answers for all of 127.0.0.0/8)."""


@pytest.fixture(scope="module")
def certificate(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    return self_signed_certificate(tmp_path_factory.mktemp("tls"))


def test_server_answers_https_with_the_configured_certificate(
    tmp_path: Path, certificate: tuple[Path, Path], prompt: Prompt
) -> None:
    cert, key = certificate
    server = start_server(
        tmp_path, {"server": {"tls_certificate": str(cert), "tls_key": str(key)}}, ssl_context=client_context(cert)
    )
    try:
        status, _, body = server.open("/healthz")
        assert status == 200 and json.loads(body)["status"] == "ok"
        data, content_type = multipart({"wait": "120"}, "a.wav", prompt.audio)
        status, _, body = server.open("/api/v1/jobs", method="POST", data=data, headers={"Content-Type": content_type}, timeout=150)
        assert status == 200
        assert word_error_rate(prompt.text, json.loads(body)["transcript"]["text"]) <= 0.35
        with pytest.raises((urllib.error.URLError, ConnectionError)):  # plain HTTP is not spoken on that port
            urllib.request.urlopen(server.url.replace("https:", "http:") + "/healthz", timeout=5).read()
        with pytest.raises(urllib.error.URLError, match="CERTIFICATE_VERIFY_FAILED"):  # and it is that certificate
            urllib.request.urlopen(server.url + "/healthz", timeout=5, context=ssl.create_default_context())
        assert "listening on https://" in server.log()
    finally:
        assert server.terminate() == 0


@dataclass
class Nginx:
    port: int
    process: subprocess.Popen[bytes]
    context: ssl.SSLContext

    def open(self, path: str, *, method: str = "GET", data: bytes | None = None,
             headers: dict[str, str] | None = None, source: str = "127.0.0.1") -> tuple[int, bytes]:
        """One HTTPS request to nginx from the loopback address ``source`` (another client)."""
        connection = http.client.HTTPSConnection("127.0.0.1", self.port, timeout=150, context=self.context,
                                                 source_address=(source, 0))
        try:
            connection.request(method, path, body=data, headers=headers or {})
            response = connection.getresponse()
            return response.status, response.read()
        finally:
            connection.close()


def site_for_test(upstream_port: int, https_port: int, http_port: int, cert: Path, key: Path) -> str:
    """The documented site with this test's ports and certificate, and nginx bound to
    PROXY_ADDRESS toward the server; every substitution must find its text, so the document and
    this test cannot drift apart."""
    text = SITE.read_text()
    substitutions = [
        ("server 127.0.0.1:8000;", f"server 127.0.0.1:{upstream_port};"),
        ("    listen 80;\n", f"    listen 127.0.0.1:{http_port};\n"),
        ("    listen [::]:80;\n", ""),
        ("    listen 443 ssl;\n", f"    listen 127.0.0.1:{https_port} ssl;\n"),
        ("    listen [::]:443 ssl;\n", ""),
        ("/etc/letsencrypt/live/asr.example.com/fullchain.pem", str(cert)),
        ("/etc/letsencrypt/live/asr.example.com/privkey.pem", str(key)),
        ("        proxy_pass http://callpipe_asr;\n", f"        proxy_pass http://callpipe_asr;\n        proxy_bind {PROXY_ADDRESS};\n"),
    ]
    for old, new in substitutions:
        assert text.count(old) == 1, f"the nginx site no longer has {old!r}"
        text = text.replace(old, new)
    return text


@pytest.fixture
def nginx_in_front(tmp_path: Path, certificate: tuple[Path, Path]) -> Iterator[tuple[Nginx, ServerProcess]]:
    nginx_binary = shutil.which("nginx") or "/usr/sbin/nginx"
    if not Path(nginx_binary).exists():
        pytest.fail("Debian package nginx is missing: run ./scripts/setup --test")
    cert, key = certificate
    server = start_server(
        tmp_path / "server",
        {"auth": {"keys": {"pbx": {"key": KEY}}, "max_failed_attempts_per_minute": 2},
         "server": {"trusted_proxies": [f"{PROXY_ADDRESS}/32"]}},
        flags=["--log-format", "json"],
    )
    prefix = tmp_path / "nginx"
    prefix.mkdir()
    https_port = free_port()
    user = "user root;\n" if os.geteuid() == 0 else ""
    (prefix / "nginx.conf").write_text(
        f"{user}daemon off;\nmaster_process off;\npid {prefix}/nginx.pid;\nerror_log {prefix}/error.log info;\n"
        "events { worker_connections 64; }\n"
        f"http {{\n  access_log off;\n  client_body_temp_path {prefix}/body;\n  proxy_temp_path {prefix}/proxy;\n"
        f"  fastcgi_temp_path {prefix}/fastcgi;\n  uwsgi_temp_path {prefix}/uwsgi;\n  scgi_temp_path {prefix}/scgi;\n"
        + site_for_test(int(server.url.rsplit(":", 1)[1]), https_port, free_port(), cert, key) + "\n}\n"
    )
    command = [nginx_binary, "-p", str(prefix), "-c", str(prefix / "nginx.conf"), "-e", str(prefix / "error.log")]
    checked = subprocess.run([*command, "-t"], capture_output=True, text=True)
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    nginx = Nginx(https_port, process, client_context(cert))
    try:
        deadline = time.monotonic() + 20
        while True:
            assert process.poll() is None, (prefix / "error.log").read_text()
            try:
                if nginx.open("/healthz")[0] == 200:
                    break
            except OSError:
                assert time.monotonic() < deadline, (prefix / "error.log").read_text()
                time.sleep(0.1)
        yield nginx, server
    finally:
        process.terminate()
        process.wait(timeout=10)
        server.terminate()


def _access_lines(server: ServerProcess, message: str) -> list[dict[str, object]]:
    return [line for line in server.json_log() if line["logger"] == "callpipe_asr.web.access" and line["message"] == message]


def test_nginx_site_proxies_a_fusionpbx_upload_with_the_client_address(
    nginx_in_front: tuple[Nginx, ServerProcess], prompt: Prompt
) -> None:
    nginx, server = nginx_in_front
    data, content_type = multipart({"model": "whisper-1"}, "voicemail.wav", prompt.audio)
    headers = {"Content-Type": content_type, "Authorization": f"Bearer {KEY}", "X-Forwarded-For": "203.0.113.7"}
    status, body = nginx.open("/transcribe", method="POST", data=data, headers=headers)
    assert status == 200
    assert word_error_rate(prompt.text, body.decode()) <= 0.35
    # The client told nginx it forwards for 203.0.113.7; nginx (trusted) adds the peer it saw.
    [line] = _access_lines(server, "POST /transcribe")
    assert line["client"] == "127.0.0.1" and line["key"] == "pbx" and line["status"] == 200
    # From anyone but the proxy the header is not believed.
    status, _, _ = server.open("/healthz", headers={"X-Forwarded-For": "198.51.100.1"})
    assert status == 200
    assert "198.51.100.1" not in server.log()
    assert nginx.open("/metrics")[0] == 403  # the site keeps the metrics off the internet


def test_per_client_limits_use_the_address_the_proxy_names(nginx_in_front: tuple[Nginx, ServerProcess]) -> None:
    nginx, server = nginx_in_front

    def models(key: str, source: str) -> int:
        return nginx.open("/v1/models", headers={"Authorization": f"Bearer {key}"}, source=source)[0]

    # Two clients behind one proxy are apart: a guessing one is stopped, an honest one is not.
    assert [models("wrong-key", "127.0.0.1"), models("wrong-key", "127.0.0.1")] == [401, 401]
    assert models(KEY, "127.0.0.1") == 429
    assert models(KEY, "127.0.0.3") == 200
    clients = [(line["client"], line["status"]) for line in _access_lines(server, "GET /v1/models")]
    assert clients == [("127.0.0.1", 401), ("127.0.0.1", 401), ("127.0.0.1", 429), ("127.0.0.3", 200)]
    assert '"denied": "too_many_failures"' in server.log()

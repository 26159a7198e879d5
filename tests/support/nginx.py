"""Run the real nginx (Debian's package) on deploy/nginx/extauthz.conf for end-to-end tests.

Only the three addresses in the file are rewritten: the listener, extauthz-server's HTTP
authorization listener and the app. The file is included from a small main configuration that
keeps the pid, logs and temporary files in the test's own directory.
"""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.support.proxy_process import LOOPBACK, ProxyProcess, rewrite_addresses, start_proxy

NGINX_CONF = Path(__file__).resolve().parents[2] / "deploy" / "nginx" / "extauthz.conf"
_MAIN_CONF = """\
# One process as the user who runs the tests; everything under this directory.
daemon off;
master_process off;
pid {workdir}/nginx.pid;
error_log {workdir}/error.log warn;
events {{ worker_connections 256; }}
http {{
    access_log {workdir}/access.log;
    client_body_temp_path {workdir}/client_body;
    proxy_temp_path {workdir}/proxy;
    fastcgi_temp_path {workdir}/fastcgi;
    uwsgi_temp_path {workdir}/uwsgi;
    scgi_temp_path {workdir}/scgi;
    include {workdir}/extauthz.conf;
}}
"""


class NginxNotFound(Exception):
    pass


def find_nginx() -> Path:
    # Debian installs it in /usr/sbin, which is not on an ordinary user's PATH.
    for candidate in (shutil.which("nginx"), "/usr/sbin/nginx"):
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise NginxNotFound("no nginx on PATH or at /usr/sbin/nginx (apt-get install nginx)")


def render(*, listen_port: int, extauthz_port: int, upstream_port: int) -> str:
    return rewrite_addresses(
        NGINX_CONF,
        (
            ("listen 127.0.0.1:8080;", f"listen {LOOPBACK}:{listen_port};"),
            ("server 127.0.0.1:9192;", f"server {LOOPBACK}:{extauthz_port};"),
            ("server 127.0.0.1:8000;", f"server {LOOPBACK}:{upstream_port};"),
        ),
    )


def start_nginx(*, extauthz_port: int, upstream_port: int, workdir: Path) -> ProxyProcess:
    """Start nginx on a free loopback port and wait until it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)

    def launch(listen_port: int) -> subprocess.Popen[bytes]:
        (workdir / "extauthz.conf").write_text(
            render(
                listen_port=listen_port, extauthz_port=extauthz_port, upstream_port=upstream_port
            ),
            encoding="utf-8",
        )
        (workdir / "nginx.conf").write_text(_MAIN_CONF.format(workdir=workdir), encoding="utf-8")
        argv = [
            str(find_nginx()),
            "-p",
            str(workdir),
            "-c",
            str(workdir / "nginx.conf"),
            "-e",
            str(workdir / "error.log"),
        ]
        with (workdir / "output.log").open("wb") as output:
            return subprocess.Popen(argv, stdout=output, stderr=subprocess.STDOUT)

    return start_proxy("nginx", launch, workdir, ("error.log", "output.log"))

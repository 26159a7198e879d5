"""Run the real Caddy (Debian's package) on deploy/caddy/Caddyfile for end-to-end tests.

Only the three addresses in the file are rewritten: the site, extauthz-server's HTTP
authorization listener and the app. The file is imported from a small main Caddyfile that
turns off the admin endpoint and automatic HTTPS and binds to loopback; Caddy's storage
lives in the test's own directory.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

from tests.support.proxy_process import LOOPBACK, ProxyProcess, rewrite_addresses, start_proxy

CADDYFILE = Path(__file__).resolve().parents[2] / "deploy" / "caddy" / "Caddyfile"
_MAIN = """\
{
\tadmin off
\tauto_https off
\tdefault_bind 127.0.0.1
}
import site.caddy
"""


class CaddyNotFound(Exception):
    pass


def find_caddy() -> Path:
    found = shutil.which("caddy")
    if found is None:
        raise CaddyNotFound("no caddy on PATH (apt-get install caddy)")
    return Path(found)


def render(*, listen_port: int, extauthz_port: int, upstream_port: int) -> str:
    return rewrite_addresses(
        CADDYFILE,
        (
            (":8080 {", f"http://:{listen_port} {{"),
            ("forward_auth 127.0.0.1:9192 {", f"forward_auth {LOOPBACK}:{extauthz_port} {{"),
            ("reverse_proxy 127.0.0.1:8000", f"reverse_proxy {LOOPBACK}:{upstream_port}"),
        ),
    )


def start_caddy(*, extauthz_port: int, upstream_port: int, workdir: Path) -> ProxyProcess:
    """Start Caddy on a free loopback port and wait until it accepts connections."""
    workdir.mkdir(parents=True, exist_ok=True)
    environ = {
        **os.environ,
        "HOME": str(workdir),
        "XDG_CONFIG_HOME": str(workdir / "config"),
        "XDG_DATA_HOME": str(workdir / "data"),
    }

    def launch(listen_port: int) -> subprocess.Popen[bytes]:
        (workdir / "site.caddy").write_text(
            render(
                listen_port=listen_port, extauthz_port=extauthz_port, upstream_port=upstream_port
            ),
            encoding="utf-8",
        )
        (workdir / "Caddyfile").write_text(_MAIN, encoding="utf-8")
        argv = [str(find_caddy()), "run", "--config", "Caddyfile", "--adapter", "caddyfile"]
        with (workdir / "caddy.log").open("wb") as log:
            return subprocess.Popen(
                argv, cwd=workdir, env=environ, stdout=log, stderr=subprocess.STDOUT
            )

    return start_proxy("caddy", launch, workdir, ("caddy.log",))

"""The Traefik binary the end-to-end tests run: one tagged version, built from its Go module
once into a cache outside the repository. Standard library only, so that
`python3 -m tests.support.traefik_binary` can build it before the test environment exists
(.ci/run does).

The build is a throw-away module that requires the tag and builds `cmd/traefik`. `go install
pkg@version` refuses a module whose go.mod has `replace` directives, and Traefik's has
(forks of two libraries), so the throw-away module takes over Traefik's own `replace` and
`exclude` lines, read from the go.mod the module proxy serves.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

MODULE = "github.com/traefik/traefik/v3"
MAIN_PACKAGE = f"{MODULE}/cmd/traefik"
# The newest version that builds here. v3.7.x (v3.7.11 to v3.7.13 are served) replace
# github.com/traefik/traefik/dynamic/ext with a directory of their own repository that is a
# module of its own, so their module zips leave it out, and the module proxy serves no
# version of that module: they cannot be built from the proxy.
VERSION = "v3.6.12"
CACHE_ROOT = Path.home() / ".cache" / "extauthz-tests" / "traefik"
BINARY_NAME = "traefik"
GO_FALLBACK = Path("/usr/local/go/bin/go")
# A bound, not an expectation: from empty Go caches the whole build takes about 9 minutes on
# 2 cores (most of it compiling), about 20 s with warm ones.
BUILD_TIMEOUT_S = 2400


class TraefikBuildFailed(RuntimeError):
    """Go is there, but Traefik could not be fetched or built; the message names the step."""


def binary_path(cache_root: Path = CACHE_ROOT, version: str = VERSION) -> Path:
    return cache_root / version / BINARY_NAME


def cached_binary(cache_root: Path = CACHE_ROOT) -> Path | None:
    path = binary_path(cache_root)
    return path if path.is_file() and os.access(path, os.X_OK) else None


def go_tool() -> str | None:
    found = shutil.which("go")
    if found is not None:
        return found
    return str(GO_FALLBACK) if GO_FALLBACK.is_file() else None


def build(go: str, cache_root: Path = CACHE_ROOT, version: str = VERSION) -> Path:
    """Build Traefik `version` into the cache and return its path; go's output goes to
    build.log beside it. Uses the ordinary Go module and build caches."""
    deadline = time.monotonic() + BUILD_TIMEOUT_S
    workdir = cache_root / version
    module_dir = workdir / "module"
    if module_dir.exists():
        shutil.rmtree(module_dir)  # an earlier, interrupted build starts over
    module_dir.mkdir(parents=True)
    (workdir / "build.log").write_bytes(b"")
    (module_dir / "go.mod").write_text("module extauthz-tests/traefik-build\n\ngo 1.25\n")
    downloaded = json.loads(
        _go(go, ["mod", "download", "-json", f"{MODULE}@{version}"], workdir, deadline)
    )
    _take_over_replacements(go, Path(downloaded["GoMod"]), workdir, version, deadline)
    _go(go, ["get", f"{MAIN_PACKAGE}@{version}"], workdir, deadline)
    partial = workdir / f"{BINARY_NAME}.partial"
    # As Traefik's own release builds: no cgo, no symbol tables, the version stamped in.
    ldflags = f"-s -w -X {MODULE}/pkg/version.Version={version}"
    _go(go, ["build", "-ldflags", ldflags, "-o", str(partial), MAIN_PACKAGE], workdir, deadline)
    partial.replace(workdir / BINARY_NAME)  # a half-written binary is never taken as built
    return workdir / BINARY_NAME


def _take_over_replacements(
    go: str, traefik_go_mod: Path, workdir: Path, version: str, deadline: float
) -> None:
    parsed = json.loads(_go(go, ["mod", "edit", "-json", str(traefik_go_mod)], workdir, deadline))
    edits: list[str] = []
    for replace in parsed.get("Replace") or ():
        old, new = replace["Old"], replace["New"]
        if not new.get("Version"):
            raise TraefikBuildFailed(
                f"{MODULE}@{version} replaces {old['Path']} with its own directory "
                f"{new['Path']}, which is not in its module zip"
            )
        old_spec = f"{old['Path']}@{old['Version']}" if old.get("Version") else old["Path"]
        edits.append(f"-replace={old_spec}={new['Path']}@{new['Version']}")
    edits.extend(f"-exclude={e['Path']}@{e['Version']}" for e in parsed.get("Exclude") or ())
    if edits:
        _go(go, ["mod", "edit", *edits], workdir, deadline)


def _go(go: str, argv: Sequence[str], workdir: Path, deadline: float) -> str:
    """Run `go argv` in the throw-away module; its stdout, with stderr appended to build.log."""
    env = {**os.environ, "CGO_ENABLED": "0", "GOFLAGS": "-mod=mod -buildvcs=false"}
    with (workdir / "build.log").open("ab") as log:
        log.write(f"$ go {' '.join(argv)}\n".encode())
        log.flush()
        try:
            completed = subprocess.run(
                [go, *argv],
                cwd=workdir / "module",
                env=env,
                stdout=subprocess.PIPE,
                stderr=log,
                timeout=max(deadline - time.monotonic(), 1.0),
                check=False,
            )
        except subprocess.TimeoutExpired:
            raise TraefikBuildFailed(
                f"the build took over {BUILD_TIMEOUT_S} s, stopped in go {argv[0]} "
                f"(see {workdir}/build.log)"
            ) from None
    if completed.returncode != 0:
        lines = (workdir / "build.log").read_text(errors="replace").strip().splitlines()
        raise TraefikBuildFailed(
            f"go {' '.join(argv[:2])} failed (see {workdir}/build.log):\n" + "\n".join(lines[-15:])
        )
    return completed.stdout.decode()


def main() -> int:
    """Find or build the binary; print its path. Exit 1 when Go is missing or the build
    fails, saying which."""
    found = cached_binary()
    if found is not None:
        print(found)
        return 0
    go = go_tool()
    if go is None:
        print(f"no Go toolchain (go on PATH or {GO_FALLBACK}) to build Traefik", file=sys.stderr)
        return 1
    print(f"building Traefik {VERSION} from its Go module into {CACHE_ROOT}", file=sys.stderr)
    started = time.monotonic()
    try:
        path = build(go)
    except TraefikBuildFailed as exc:
        print(f"Traefik {VERSION} could not be built: {exc}", file=sys.stderr)
        return 1
    print(f"built in {time.monotonic() - started:.0f} s", file=sys.stderr)
    print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())

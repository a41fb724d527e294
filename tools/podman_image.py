"""Building and running the project's image with podman, on a machine with no Docker engine and
no route to public registries. Everything we had to find out by trying lives here:

- The tools are Debian's `podman`, `runc` and `debootstrap` (`install` below, as root).
- podman's default ulimits (1048576 open files) are above the hard limits of the sandbox we
  test in (20000), and every container then fails to start ("error setting rlimit type 7:
  operation not permitted"). A containers.conf of our own sets limits the sandbox allows and
  pins runc, the runtime we tested; every podman call finds it through CONTAINERS_CONF, so
  the machine's own configuration is left alone.
- Registries cannot be reached, so the base image is built locally: a minimal Debian bookworm
  root filesystem from debootstrap, with Python, imported with `podman import`. The
  Dockerfile's default base (the slim Python image) is what users get.
- pip inside the build may sit behind a proxy that re-signs TLS: the host's CA bundle is
  bind-mounted into the build, and the build uses the host's network.

    python -m tools.podman_image install   # apt-get the tools when missing (root)
    python -m tools.podman_image build     # base image (once) and the project's image
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
WORK = ROOT / ".run" / "podman"
PACKAGES = ("podman", "runc", "debootstrap")
BASE_IMAGE = "localhost/debian-bookworm-python:local"
IMAGE = "localhost/pg-eventstore:test"
CA_BUNDLE = "/etc/ssl/certs/ca-certificates.crt"

CONTAINERS_CONF = """\
# Written by tools/podman_image.py; podman reads it through CONTAINERS_CONF.
[containers]
# podman's defaults are above the sandbox's hard limits, which runc then fails to set.
default_ulimits = ["nofile=20000:20000", "nproc=32768:32768"]

[engine]
# The runtime tested here (Debian's podman installs it; crun is untested).
runtime = "runc"
"""

# What the base image must hold for the Dockerfile: python3 and venv for the builder stage,
# pip for the project's install, the CA bundle for TLS to the package index.
DEBOOTSTRAP_PACKAGES = "python3,python3-venv,python3-pip,ca-certificates"
DEBIAN_MIRROR = "http://deb.debian.org/debian"


def environment() -> dict[str, str]:
    """The environment every podman call runs with."""
    WORK.mkdir(parents=True, exist_ok=True)
    conf = WORK / "containers.conf"
    if not conf.exists() or conf.read_text() != CONTAINERS_CONF:
        conf.write_text(CONTAINERS_CONF)
    return {**os.environ, "CONTAINERS_CONF": str(conf)}


def podman(*args: str, check: bool = True, timeout: float | None = None) -> str:
    """Run podman with our configuration; its standard output."""
    done = subprocess.run(
        ["podman", *args],
        env=environment(),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    if check and done.returncode != 0:
        raise RuntimeError(f"podman {' '.join(args)} failed ({done.returncode}):\n{done.stderr}")
    return done.stdout


def missing_tools() -> list[str]:
    return [p for p in PACKAGES if shutil.which(p) is None]


def install() -> None:
    """apt-get the tools that are missing (needs root and Debian's package index)."""
    missing = missing_tools()
    if not missing:
        return
    subprocess.run(["apt-get", "update", "-q"], check=True)
    subprocess.run(["apt-get", "install", "-y", "-q", *PACKAGES], check=True)


def image_exists(name: str) -> bool:
    return (
        subprocess.run(
            ["podman", "image", "exists", name], env=environment(), check=False
        ).returncode
        == 0
    )


def build_base(name: str = BASE_IMAGE) -> str:
    """The local base image (debootstrap + podman import), built once per machine."""
    if image_exists(name):
        return name
    rootfs = Path(tempfile.mkdtemp(prefix="rootfs-", dir=WORK))
    try:
        subprocess.run(
            [
                "debootstrap",
                "--variant=minbase",
                f"--include={DEBOOTSTRAP_PACKAGES}",
                "bookworm",
                str(rootfs),
                DEBIAN_MIRROR,
            ],
            check=True,
            stdout=subprocess.DEVNULL,
        )
        # The package cache is half the size and no use in an image.
        for cache in [rootfs / "var/cache/apt/archives", rootfs / "var/lib/apt/lists"]:
            for item in cache.glob("*"):
                if item.is_file():
                    item.unlink()
        tar = subprocess.Popen(["tar", "-C", str(rootfs), "-c", "."], stdout=subprocess.PIPE)
        subprocess.run(
            [
                "podman",
                "import",
                # An imported filesystem has no configuration: PATH must be set here.
                "--change",
                "ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
                "-",
                name,
            ],
            stdin=tar.stdout,
            env=environment(),
            check=True,
            stdout=subprocess.DEVNULL,
        )
        tar.wait()
    finally:
        shutil.rmtree(rootfs, ignore_errors=True)
    return name


def build_image(tag: str = IMAGE, base: str = BASE_IMAGE) -> str:
    """The project's image from the Dockerfile, on the given base."""
    args = ["build", "--network", "host", "--build-arg", f"BASE_IMAGE={base}", "-t", tag]
    if Path(CA_BUNDLE).exists():
        args += ["-v", f"{CA_BUNDLE}:{CA_BUNDLE}:ro"]
    podman(*args, str(ROOT))
    return tag


def image_size(tag: str = IMAGE) -> int:
    """Bytes, as podman reports them."""
    return int(podman("image", "inspect", "--format", "{{.Size}}", tag).strip())


def run(name: str, image: str, argv: list[str], env: dict[str, str]) -> None:
    """Start a detached container as the Kubernetes manifests run it (read-only root with a
    writable /tmp, no capabilities, no privilege escalation), on the host's network so that
    its addresses are the host's."""
    remove(name)
    args = ["run", "--detach", "--name", name, "--network", "host"]
    args += ["--read-only", "--tmpfs", "/tmp", "--cap-drop", "ALL"]
    args += ["--security-opt", "no-new-privileges"]
    for key, value in env.items():
        args += ["--env", f"{key}={value}"]
    podman(*args, image, *argv)


def remove(name: str) -> None:
    podman("rm", "--force", "--ignore", name)


def logs(name: str) -> str:
    done = subprocess.run(
        ["podman", "logs", name], env=environment(), capture_output=True, text=True, check=False
    )
    return done.stdout + done.stderr


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("command", choices=["install", "build"])
    args = parser.parse_args()
    if args.command == "install":
        install()
        return
    if missing := missing_tools():
        sys.exit(f"missing: {' '.join(missing)} (python -m tools.podman_image install, as root)")
    print(build_image(base=build_base()), f"{image_size() / 1e6:.0f} MB")


if __name__ == "__main__":
    main()

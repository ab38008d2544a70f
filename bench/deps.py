"""The Debian packages the benchmark reads or runs, installed with apt when missing."""

from __future__ import annotations

import os
import subprocess

DEBIAN_PACKAGES = (
    "asterisk-core-sounds-en-wav",  # real 8 kHz human recordings: the speech
    "asterisk-core-sounds-en",  # their reference texts (core-sounds-en.txt.gz)
    "asterisk-moh-opsound-wav",  # music on hold
    "sox",  # μ-law, A-law, GSM and 48 kHz variants
)


def missing_packages(packages: tuple[str, ...] = DEBIAN_PACKAGES) -> list[str]:
    """The packages dpkg does not report as installed."""
    missing = []
    for package in packages:
        result = subprocess.run(["dpkg-query", "-W", "-f=${Status}", package], capture_output=True, text=True, check=False)
        if "install ok installed" not in result.stdout:
            missing.append(package)
    return missing


def ensure_packages(packages: tuple[str, ...] = DEBIAN_PACKAGES) -> list[str]:
    """Install what is missing (as root, or through sudo); return what was installed."""
    missing = missing_packages(packages)
    if not missing:
        return []
    as_root = [] if os.geteuid() == 0 else ["sudo"]
    print(f"bench: installing Debian packages: {' '.join(missing)}", flush=True)
    subprocess.run([*as_root, "apt-get", "update", "-qq"], check=True)
    subprocess.run(
        [*as_root, "apt-get", "install", "-y", "-qq", "--no-install-recommends", *missing],
        check=True,
        env={**os.environ, "DEBIAN_FRONTEND": "noninteractive"},
        stdout=subprocess.DEVNULL,
    )
    return missing

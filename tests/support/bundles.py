"""Update bundles for tests: small but real wheels of a `postern` distribution, signed.

The wheel's `postern-relay` and `postern-appliance` scripts run this tree's relay and system layer,
so a relay started through a release's directory is the real daemon; or they do what a test needs
(a relay that is deliberately broken, a recorder).
"""

from __future__ import annotations

import base64
import hashlib
import sys
import zipfile
from pathlib import Path

from appliance import bundle as bundles
from appliance import migrations
from relay import VERSION

GOOD_RELAY = f'#!/bin/sh\nexec {sys.executable} -m relay.daemon "$@"\n'
APPLIANCE = f'#!/bin/sh\nexec {sys.executable} -m appliance.cli.main "$@"\n'
# Passes the configuration check, then fails to start: only the health check after the switch sees it.
BROKEN_RELAY = ('#!/bin/sh\ncase "$*" in *--check*) exit 0 ;; esac\n'
                'echo "deliberately broken for the update test" >&2\nexit 1\n')


def make_wheel(directory: Path, mark: str, relay: str = GOOD_RELAY, appliance: str = APPLIANCE,
               version: str = VERSION) -> Path:
    """A real wheel of a `postern` distribution with the two scripts, told apart by `mark`."""
    files = {
        f"postern_release_mark.py": f"MARK = {mark!r}\n",
        f"postern-{version}.data/scripts/postern-relay": relay,
        f"postern-{version}.data/scripts/postern-appliance": appliance,
        f"postern-{version}.dist-info/METADATA": f"Metadata-Version: 2.1\nName: postern\nVersion: {version}\n",
        f"postern-{version}.dist-info/WHEEL": "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\n"
                                              "Tag: py3-none-any\n",
    }
    record = [f"{name},sha256={base64.urlsafe_b64encode(hashlib.sha256(text.encode()).digest()).rstrip(b'=').decode()},"
              f"{len(text.encode())}" for name, text in files.items()]
    files[f"postern-{version}.dist-info/RECORD"] = "\n".join(record + [f"postern-{version}.dist-info/RECORD,,"]) + "\n"
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"postern-{version}-py3-none-any.whl"
    with zipfile.ZipFile(path, "w") as wheel:
        for name, text in files.items():
            info = zipfile.ZipInfo(name)
            info.external_attr = (0o100755 if "/scripts/" in name else 0o100644) << 16
            wheel.writestr(info, text)
    return path


def make_bundle(tmp: Path, name: str, key, schema: int = migrations.SCHEMA, **wheel) -> Path:
    make_wheel(tmp / f"wheels-{name}", name, **wheel)
    output = tmp / f"{name}.update"
    bundles.write_bundle(tmp / f"wheels-{name}", output, key, VERSION, schema)
    return output


def trust(root: Path, key) -> None:
    directory = root / bundles.KEYS_DIR
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "postern.pem").write_bytes(bundles.public_pem(key))

"""Update bundles: Postern and its dependencies as wheels for the image's Python, signed.

A bundle (`postern-VERSION.update`, written by `make image`) is an uncompressed tar file:

    postern-update/manifest.json   what is in it: format, version, Python tag, schema, every wheel's size and sha256
    postern-update/manifest.sig    the Ed25519 signature of manifest.json's bytes, base64
    postern-update/wheels/*.whl    the wheels

The two manifest files come first, so `verify` checks the signature before it reads a byte of the
wheels; then each wheel is copied out while its sha256 is computed, and must match the manifest to
the byte. Anything else in the file (another name, a link, a directory, a wheel the manifest does not
list or lists twice, a member after the wheels) refuses the whole bundle. Reading is linear in the
bundle's size and holds one 1 MiB block at a time.

The trusted public keys are PEM files in `/usr/lib/postern/update-keys/` on the appliance (the image
build puts its key there). `make image` signs with the key it is given, or a throwaway one it makes
for tests (see docs/image.md).
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
import re
import sys
import tarfile
import time
from dataclasses import dataclass
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

FORMAT = 1
TOP = "postern-update"
MANIFEST = f"{TOP}/manifest.json"
SIGNATURE = f"{TOP}/manifest.sig"
WHEELS = f"{TOP}/wheels/"
KEYS_DIR = "usr/lib/postern/update-keys"  # under the root
MAX_MANIFEST = 1 << 20
BLOCK = 1 << 20
WHEEL_NAME = re.compile(r"[A-Za-z0-9_.+!-]+\.whl")
VERSION = re.compile(r"[0-9A-Za-z.+!_-]{1,64}")


class BundleError(Exception):
    """The bundle is refused; the text says why and what to do."""


@dataclass(frozen=True)
class Manifest:
    version: str
    python: str  # "cp313": the interpreter the wheels are for
    schema: int  # the configuration schema of this version (appliance.migrations.SCHEMA)
    built: str
    wheels: dict[str, dict]  # file name: {"size", "sha256"}
    digest: str  # sha256 of manifest.json's bytes: names this exact bundle

    @property
    def release(self) -> str:
        """The release's name on the appliance: the version and the bundle it came from."""
        return f"{self.version}-{self.digest[:12]}"


def python_tag() -> str:
    return f"cp{sys.version_info.major}{sys.version_info.minor}"


# --- writing (the image build, the tests) ---------------------------------------------------------


def write_bundle(wheels_dir: Path, output: Path, key: Ed25519PrivateKey, version: str, schema: int,
                 python: str | None = None) -> Manifest:
    """Sign and write a bundle of every wheel in wheels_dir."""
    wheels = {}
    for wheel in sorted(wheels_dir.glob("*.whl")):
        digest = hashlib.sha256()
        with wheel.open("rb") as source:
            while block := source.read(BLOCK):
                digest.update(block)
        wheels[wheel.name] = {"size": wheel.stat().st_size, "sha256": digest.hexdigest()}
    if not wheels:
        raise BundleError(f"{wheels_dir}: no wheels to bundle")
    document = {"format": FORMAT, "version": version, "python": python or python_tag(), "schema": schema,
                "built": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "wheels": wheels}
    text = json.dumps(document, indent=1, sort_keys=True).encode()
    signature = base64.b64encode(key.sign(text)) + b"\n"
    temporary = output.with_name(output.name + ".partial")
    with tarfile.open(temporary, "w", format=tarfile.PAX_FORMAT) as tar:
        for name, data in ((MANIFEST, text), (SIGNATURE, signature)):
            info = tarfile.TarInfo(name)
            info.size, info.mtime, info.mode = len(data), int(time.time()), 0o644
            tar.addfile(info, io.BytesIO(data))
        for name in wheels:
            info = tar.gettarinfo(str(wheels_dir / name), arcname=WHEELS + name)
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            with (wheels_dir / name).open("rb") as source:
                tar.addfile(info, source)
    temporary.replace(output)
    return _manifest(document, hashlib.sha256(text).hexdigest())


def new_key() -> Ed25519PrivateKey:
    return Ed25519PrivateKey.generate()


def private_pem(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def public_pem(key: Ed25519PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def load_private_key(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise BundleError(f"{path}: not an Ed25519 private key")
    return key


# --- reading (the appliance) ----------------------------------------------------------------------


def trusted_keys(root: Path) -> list[tuple[str, Ed25519PublicKey]]:
    """The public keys bundles may be signed with: (file name, key)."""
    keys = []
    directory = root / KEYS_DIR
    for path in sorted(directory.glob("*.pem")) if directory.is_dir() else ():
        try:
            key = serialization.load_pem_public_key(path.read_bytes())
        except (ValueError, OSError):
            continue
        if isinstance(key, Ed25519PublicKey):
            keys.append((path.name, key))
    return keys


def verify(bundle: Path, root: Path, wheels_out: Path | None = None) -> Manifest:
    """Check the bundle: its signature against the trusted keys, then every wheel against the
    manifest. With wheels_out, the wheels are copied there as they are checked. BundleError on anything wrong."""
    keys = trusted_keys(root)
    if not keys:
        raise BundleError(f"no update keys in {root / KEYS_DIR}: this appliance cannot check a bundle")
    try:
        tar = tarfile.open(bundle, "r|")
    except FileNotFoundError:
        raise BundleError(f"{bundle}: no such file") from None
    except (tarfile.TarError, OSError) as error:
        raise BundleError(f"{bundle}: not an update bundle ({error})") from None
    with tar:
        try:
            return _read(tar, bundle, keys, wheels_out)
        except (tarfile.TarError, EOFError, OSError) as error:
            raise BundleError(f"{bundle}: damaged or cut short ({error}); copy it again") from None


def _read(tar: tarfile.TarFile, bundle: Path, keys, wheels_out: Path | None) -> Manifest:
    text = _small_member(tar, MANIFEST, bundle)
    signature = _small_member(tar, SIGNATURE, bundle)
    try:
        raw = base64.b64decode(signature.strip(), validate=True)
    except ValueError:
        raise BundleError(f"{bundle}: its signature is not base64") from None
    for _, key in keys:
        try:
            key.verify(raw, text)
            break
        except InvalidSignature:
            continue
    else:
        raise BundleError(f"{bundle}: the signature does not verify with this appliance's update keys "
                          f"({', '.join(name for name, _ in keys)}); it was not made for this appliance or was altered")
    manifest = _parse(text, bundle)
    seen = set()
    while (member := tar.next()) is not None:
        name = member.name[len(WHEELS):] if member.name.startswith(WHEELS) else ""
        if not member.isreg() or not name or name not in manifest.wheels or name in seen:
            raise BundleError(f"{bundle}: {member.name!r} is not one of the manifest's wheels")
        expected = manifest.wheels[name]
        if member.size != expected["size"]:
            raise BundleError(f"{bundle}: {name} has {member.size} bytes, the manifest says {expected['size']}")
        seen.add(name)
        digest = hashlib.sha256()
        source = tar.extractfile(member)
        target = (wheels_out / name).open("wb") if wheels_out else None
        try:
            while block := source.read(BLOCK):
                digest.update(block)
                if target:
                    target.write(block)
        finally:
            if target:
                target.close()
        if digest.hexdigest() != expected["sha256"]:
            raise BundleError(f"{bundle}: {name} does not match its sha256 in the manifest; copy the bundle again")
    missing = sorted(set(manifest.wheels) - seen)
    if missing:
        raise BundleError(f"{bundle}: cut short, {len(missing)} wheel(s) missing such as {missing[0]}; copy it again")
    return manifest


def _small_member(tar: tarfile.TarFile, name: str, bundle: Path) -> bytes:
    member = tar.next()
    if member is None or member.name != name or not member.isreg() or member.size > MAX_MANIFEST:
        raise BundleError(f"{bundle}: not an update bundle ({name} is not where it belongs)")
    return tar.extractfile(member).read()


def _parse(text: bytes, bundle: Path) -> Manifest:
    try:
        document = json.loads(text)
        if document["format"] != FORMAT:
            raise BundleError(f"{bundle}: bundle format {document['format']}; this appliance reads format "
                              f"{FORMAT}: update in steps, or deploy a new image")
        wheels = document["wheels"]
        if not isinstance(wheels, dict) or not wheels:
            raise ValueError("no wheels")
        for name, entry in wheels.items():
            if not WHEEL_NAME.fullmatch(name) or not isinstance(entry["size"], int) \
                    or not re.fullmatch(r"[0-9a-f]{64}", entry["sha256"]):
                raise ValueError(f"wheel entry {name!r}")
        version, python, schema = document["version"], document["python"], document["schema"]
        if not VERSION.fullmatch(version) or not re.fullmatch(r"cp3[0-9]{1,2}", python) or type(schema) is not int:
            raise ValueError("version, python or schema")
    except BundleError:
        raise
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise BundleError(f"{bundle}: its manifest is not one this version reads ({error})") from None
    return _manifest(document, hashlib.sha256(text).hexdigest())


def _manifest(document: dict, digest: str) -> Manifest:
    return Manifest(document["version"], document["python"], document["schema"], str(document.get("built", "")),
                    document["wheels"], digest)


"""TLS for the API: the configured certificate, or one generated on first start."""

from __future__ import annotations

import datetime as dt
import ipaddress
import os
import ssl
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from aftd.errors import AftdError

__all__ = ["ensure_self_signed", "generated_cert_paths", "loopback_cert", "server_context"]


def generated_cert_paths(state_dir: Path) -> tuple[Path, Path]:
    return state_dir / "tls" / "cert.pem", state_dir / "tls" / "key.pem"


def ensure_self_signed(state_dir: Path) -> tuple[Path, Path]:
    """Create the self-signed certificate once; reuse it on later starts."""
    cert_path, key_path = generated_cert_paths(state_dir)
    if cert_path.is_file() and key_path.is_file():
        _publish(cert_path)
        return cert_path, key_path
    # The certificate is public: local `aft` users read it to trust the daemon. The key is not.
    cert_path.parent.mkdir(parents=True, exist_ok=True, mode=0o755)
    cert_pem, key_pem = loopback_cert("aftd on localhost", days=3650)
    _write_private(key_path, key_pem)
    cert_path.write_bytes(cert_pem)
    _publish(cert_path)
    return cert_path, key_path


def loopback_cert(common_name: str, *, days: int) -> tuple[bytes, bytes]:
    """A new self-signed certificate for ``localhost``, ``127.0.0.1`` and ``::1`` (P-256,
    valid from five minutes ago for ``days``), and its key: (certificate PEM, PKCS#8 key PEM).
    The certificate is its own CA, so clients can use the file itself as their trust anchor
    (aft does)."""
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName([
        x509.DNSName("localhost"),
        x509.IPAddress(ipaddress.ip_address("127.0.0.1")),
        x509.IPAddress(ipaddress.ip_address("::1")),
    ])
    cert = (
        x509.CertificateBuilder().subject_name(name).issuer_name(name)
        .public_key(key.public_key()).serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=days))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .sign(key, hashes.SHA256())
    )
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return cert.public_bytes(serialization.Encoding.PEM), key_pem


def _publish(cert_path: Path) -> None:
    """Make the certificate and its directory readable by the group and others.

    Explicit because the service runs with ``UMask=0077``, which turns the modes asked for at
    creation into 0700/0600; earlier versions left such a directory behind, so this also runs
    when the files already exist. Who may reach it is decided by the state dir's own mode
    (``StateDirectoryMode=0750``: the ``aftd`` group)."""
    try:
        os.chmod(cert_path.parent, 0o755)  # noqa: S103 - public by design
        os.chmod(cert_path, 0o644)
    except PermissionError:  # not ours (an operator's layout): leave it as they set it
        pass


def _write_private(path: Path, data: bytes) -> None:
    tmp = path.with_suffix(".tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as fh:
        fh.write(data)
    os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """The API's TLS context; :class:`AftdError` naming the files when they are unusable."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        ctx.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:
        raise AftdError(f"cannot use TLS certificate {cert} with key {key}: "
                        f"{exc.reason or exc}") from None
    except OSError as exc:
        raise AftdError(f"cannot read TLS certificate {cert} or key {key}: "
                        f"{exc.strerror or exc}") from None
    return ctx

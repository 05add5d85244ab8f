"""Throwaway key material made offline for the security tests: a TLS CA with server and client certificates,
NKey pairs, and an operator/account/user JWT chain with its ``.creds`` file.

nats-py can sign with NKeys but has no JWT encoder; a NATS JWT (nats-io/jwt v2) is three base64url parts
(header, claims, Ed25519 signature by the issuer's NKey), which is the few lines of :func:`encode_jwt`.
"""

from __future__ import annotations

import base64
import datetime as dt
import hashlib
import ipaddress
import json
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import nkeys  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

__all__ = ["JwtChain", "NKey", "Pki", "encode_jwt", "make_jwt_chain", "make_pki", "new_nkey"]


# --- NKeys ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class NKey:
    """An NKey pair: ``seed`` (secret, starts with ``S``) and ``public`` (starts with ``U``, ``A`` or ``O``)."""

    seed: str
    public: str

    def sign(self, data: bytes) -> bytes:
        kp = nkeys.from_seed(bytearray(self.seed.encode()))
        try:
            signed: bytes = kp.sign(data)
            return signed
        finally:
            kp.wipe()


def new_nkey(prefix: int = nkeys.PREFIX_BYTE_USER) -> NKey:
    seed = nkeys.encode_seed(os.urandom(32), prefix)
    kp = nkeys.from_seed(bytearray(seed))
    public = kp.public_key.decode()
    kp.wipe()
    return NKey(seed.decode(), public)


# --- JWT and credentials files -------------------------------------------------------------------------


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def encode_jwt(issuer: NKey, subject: str, name: str, nats: dict[str, Any]) -> str:
    """A signed NATS JWT (v2): ``jti`` is the base32 SHA-512/256 of the claims, as nats-io/jwt computes it."""
    claims: dict[str, Any] = {"jti": "", "iat": int(time.time()), "iss": issuer.public, "name": name, "sub": subject}
    claims["nats"] = {**nats, "version": 2}
    digest = hashlib.new("sha512_256", json.dumps(claims, separators=(",", ":")).encode()).digest()
    claims["jti"] = base64.b32encode(digest).rstrip(b"=").decode()
    header = _b64(json.dumps({"typ": "JWT", "alg": "ed25519-nkey"}).encode())
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return f"{header}.{body}.{_b64(issuer.sign(f'{header}.{body}'.encode()))}"


@dataclass(frozen=True)
class JwtChain:
    """Operator -> account -> user: the server trusts ``operator_jwt`` and preloads ``account_jwt``."""

    operator_jwt: Path
    account_public: str
    account_jwt: str
    user: NKey
    creds: Path


_UNLIMITED = {"subs": -1, "data": -1, "payload": -1}


def make_jwt_chain(directory: Path) -> JwtChain:
    operator, account, user = new_nkey(nkeys.PREFIX_BYTE_OPERATOR), new_nkey(nkeys.PREFIX_BYTE_ACCOUNT), new_nkey()
    op_jwt = encode_jwt(operator, operator.public, "spark-ml-test-operator", {"type": "operator"})
    limits = {**_UNLIMITED, "imports": -1, "exports": -1, "wildcards": True, "conn": -1, "leaf": -1}
    acc_jwt = encode_jwt(
        operator,
        account.public,
        "spark-ml-test-account",
        {"type": "account", "limits": limits, "default_permissions": {"pub": {}, "sub": {}}},
    )
    user_jwt = encode_jwt(
        account, user.public, "spark-ml-test-user", {"type": "user", "pub": {}, "sub": {}, **_UNLIMITED}
    )
    directory.mkdir(parents=True, exist_ok=True)
    op_path = directory / "operator.jwt"
    op_path.write_text(op_jwt)
    creds = directory / "user.creds"
    creds.write_text(
        "-----BEGIN NATS USER JWT-----\n"
        f"{user_jwt}\n"
        "------END NATS USER JWT------\n\n"
        "************************* IMPORTANT *************************\n"
        "NKEY Seed printed below can be used to sign and prove identity.\n\n"
        "-----BEGIN USER NKEY SEED-----\n"
        f"{user.seed}\n"
        "------END USER NKEY SEED------\n"
    )
    creds.chmod(0o600)
    return JwtChain(op_path, account.public, acc_jwt, user, creds)


# --- TLS -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Pki:
    """PEM files: a CA, a server certificate for 127.0.0.1/localhost, and a client certificate (mutual TLS)."""

    ca: Path
    server_cert: Path
    server_key: Path
    client_cert: Path
    client_key: Path


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _write_key(key: ec.EllipticCurvePrivateKey, path: Path) -> None:
    path.write_bytes(
        key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    )
    path.chmod(0o600)


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Name | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
    usage: x509.ObjectIdentifier | None = None,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer or name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if ca:
        usage_ext = x509.KeyUsage(False, False, False, False, False, True, True, False, False)
        builder = builder.add_extension(usage_ext, critical=True)
        builder = builder.add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
    else:
        sans = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
        builder = builder.add_extension(x509.SubjectAlternativeName(sans), critical=False)
        builder = builder.add_extension(x509.ExtendedKeyUsage([usage] if usage else []), critical=False)
        builder = builder.add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer_key.public_key()), critical=False
        )
    return builder.sign(issuer_key, hashes.SHA256())


def make_pki(directory: Path) -> Pki:
    directory.mkdir(parents=True, exist_ok=True)
    ca_key = _key()
    ca_cert = _cert("spark-ml test CA", ca_key, None, ca_key, ca=True)
    paths = Pki(*(directory / n for n in ("ca.pem", "server.pem", "server-key.pem", "client.pem", "client-key.pem")))
    paths.ca.write_bytes(ca_cert.public_bytes(serialization.Encoding.PEM))
    for cert_path, key_path, cn, usage in (
        (paths.server_cert, paths.server_key, "localhost", ExtendedKeyUsageOID.SERVER_AUTH),
        (paths.client_cert, paths.client_key, "spark-ml-worker", ExtendedKeyUsageOID.CLIENT_AUTH),
    ):
        key = _key()
        cert = _cert(cn, key, ca_cert.subject, ca_key, usage=usage)
        cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        _write_key(key, key_path)
    return paths

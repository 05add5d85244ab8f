"""nats-server processes that require one authentication method each, and how to reach them.

Each :class:`Method` pairs a running server with the ``SPARK_ML_*`` variables that let a worker in, the
nats-py options that let the test's own client in, and the strings that must never show up in any output.
The servers run the binary :class:`spark_ml.worker.natsserver.NatsServer` finds, with a config file (``-c``) for the
``authorization``, ``operator`` or ``tls`` blocks that have no command-line flags.
"""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from spark_ml.worker.natsserver import NatsServer
from tests.support.credentials import make_jwt_chain, make_pki, new_nkey

__all__ = ["METHODS", "Method", "start_methods"]

METHODS = ("userpass", "token", "nkey", "creds", "tls", "mtls")


@dataclass
class Method:
    """One authentication method, served by its own nats-server.

    Args:
        name: method name (test ids).
        server: the running server.
        env: ``SPARK_ML_*`` variables that grant access (the URL included).
        client: ``nats.connect`` keyword arguments that grant access, for the test's own client.
        denied_env: the same worker settings without the credential (or the CA, or the client certificate).
        refusal: substrings of which at least one must appear in a refused worker's output (a clear reason).
        secrets: strings that must never appear in any output.
    """

    name: str
    server: NatsServer
    env: dict[str, str]
    client: dict[str, Any]
    denied_env: dict[str, str]
    refusal: tuple[str, ...]
    secrets: tuple[str, ...] = field(default=())

    @property
    def url(self) -> str:
        return self.server.url


def _server(directory: Path, conf: str) -> NatsServer:
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / "server.conf"
    path.write_text(conf)
    return NatsServer(jetstream=False, store_dir=directory, extra_args=["-c", str(path)]).start()


def _q(text: str | Path) -> str:
    """A quoted string in the nats-server config syntax (JSON strings are valid there)."""
    return json.dumps(str(text))


_AUTH_REFUSED = ("Authorization Violation",)


def _userpass(d: Path) -> Method:
    user, password = "spark-worker", "pw-" + secrets.token_hex(16)
    server = _server(d, f"authorization {{ user: {_q(user)}, password: {_q(password)} }}\n")
    env = {"SPARK_ML_NATS_USER": user, "SPARK_ML_NATS_PASSWORD": password}
    return Method("userpass", server, env, {"user": user, "password": password}, {}, _AUTH_REFUSED, (password,))


def _token(d: Path) -> Method:
    token = "tok-" + secrets.token_hex(16)
    server = _server(d, f"authorization {{ token: {_q(token)} }}\n")
    return Method("token", server, {"SPARK_ML_NATS_TOKEN": token}, {"token": token}, {}, _AUTH_REFUSED, (token,))


def _nkey(d: Path) -> Method:
    key = new_nkey()
    seed_file = d / "worker.nk"
    server = _server(d, f"authorization {{ users: [ {{ nkey: {_q(key.public)} }} ] }}\n")
    seed_file.write_text(key.seed + "\n")
    seed_file.chmod(0o600)
    env = {"SPARK_ML_NATS_NKEY_SEED": str(seed_file)}
    return Method("nkey", server, env, {"nkeys_seed": str(seed_file)}, {}, _AUTH_REFUSED, (key.seed,))


def _creds(d: Path) -> Method:
    chain = make_jwt_chain(d / "jwt")
    conf = (
        f"operator: {_q(chain.operator_jwt)}\n"
        "resolver: MEMORY\n"
        f"resolver_preload: {{ {chain.account_public}: {_q(chain.account_jwt)} }}\n"
    )
    server = _server(d, conf)
    env = {"SPARK_ML_NATS_CREDS": str(chain.creds)}
    return Method("creds", server, env, {"user_credentials": str(chain.creds)}, {}, _AUTH_REFUSED, (chain.user.seed,))


def _tls_method(d: Path, *, mutual: bool) -> Method:
    pki = make_pki(d / "pki")
    verify = "verify: true\n" if mutual else ""
    conf = (
        f"tls {{\n cert_file: {_q(pki.server_cert)}\n key_file: {_q(pki.server_key)}\n ca_file: {_q(pki.ca)}\n"
        f" timeout: 2\n {verify}}}\n"
    )
    server = _server(d, conf)
    ctx = ssl.create_default_context(cafile=str(pki.ca))
    env = {"SPARK_ML_NATS_TLS_CA": str(pki.ca)}
    key_pem = pki.client_key.read_text().strip().splitlines()[1]  # a line of the private key itself
    if mutual:
        ctx.load_cert_chain(str(pki.client_cert), str(pki.client_key))
        env.update(SPARK_ML_NATS_TLS_CERT=str(pki.client_cert), SPARK_ML_NATS_TLS_KEY=str(pki.client_key))
        denied = {"SPARK_ML_NATS_TLS_CA": str(pki.ca)}
        refusal = ("CERTIFICATE_REQUIRED", "certificate required")
        return Method("mtls", server, env, {"tls": ctx}, denied, refusal, (key_pem,))
    refusal = ("CERTIFICATE_VERIFY_FAILED", "certificate verify failed")
    return Method("tls", server, env, {"tls": ctx}, {}, refusal)


_BUILDERS: dict[str, Callable[[Path], Method]] = {
    "userpass": _userpass,
    "token": _token,
    "nkey": _nkey,
    "creds": _creds,
    "tls": lambda d: _tls_method(d, mutual=False),
    "mtls": lambda d: _tls_method(d, mutual=True),
}


def start_methods(directory: Path) -> dict[str, Method]:
    """Start one server per method (stop them with ``server.cleanup()``); each fills in its own URL."""
    started: dict[str, Method] = {}
    try:
        for name in METHODS:
            method = _BUILDERS[name](directory / name)
            url = method.server.url
            method.env["SPARK_ML_NATS_URL"] = url
            method.denied_env["SPARK_ML_NATS_URL"] = url
            # These servers have no JetStream (no partition leases): one core worker runs only as the solo one.
            method.env["SPARK_ML_SOLO"] = method.denied_env["SPARK_ML_SOLO"] = "true"
            started[name] = method
    except BaseException:
        for method in started.values():
            method.server.cleanup()
        raise
    return started

"""Channel credentials for a server that speaks TLS (and asks for client certificates)."""

from __future__ import annotations

import grpc


def _read(path: str | None) -> bytes | None:
    if path is None:
        return None
    with open(path, "rb") as f:
        return f.read()


def tls_credentials(
    ca_file: str | None = None, cert_file: str | None = None, key_file: str | None = None
) -> grpc.ChannelCredentials:
    """TLS credentials for ``Client(..., credentials=...)``.

    ``ca_file`` is the CA that signed the server's certificate (the system's roots
    when None); ``cert_file`` and ``key_file`` are this client's certificate and key
    for a server that requires them (mutual TLS).
    """
    if (cert_file is None) != (key_file is None):
        raise ValueError("cert_file and key_file go together")
    return grpc.ssl_channel_credentials(
        root_certificates=_read(ca_file), private_key=_read(key_file), certificate_chain=_read(cert_file)
    )

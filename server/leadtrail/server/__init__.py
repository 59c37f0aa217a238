"""LeadTrail."""

import os

# gRPC core logs through its own C logger, on stderr, from the moment grpc is imported:
# a refused TLS handshake (plaintext to a TLS port, a missing client certificate) wrote
# raw ``ssl_transport_security.cc ... WRONG_VERSION_NUMBER`` lines into the server's log
# that say nothing an operator can act on. Its level is read once, when grpc starts, so it
# is set here, before any module of the server or the CLI imports grpc; an operator's own
# GRPC_VERBOSITY wins.
os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

"""Python client of the ENF session server's WebSocket contract (PROTOCOL.md).

- `EnfClient`: one connection, as it is (every frame kept; nothing retried).
- `ResilientClient`: reconnects, refreshes its token, resumes what it
  followed with `since_seq`, drops duplicate events, retries by id.
"""

from enf_client.connection import EnfClient, RequestFailed
from enf_client.resilient import ResilientClient
from enf_client.tokens import token_expiry

__all__ = ["EnfClient", "RequestFailed", "ResilientClient", "token_expiry"]

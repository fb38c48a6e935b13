"""embedding_server: a Python client for embedding-server.

    from embedding_server import Client, RemoteEmbedding, RemoteOptimizer

Client needs only the standard library and numpy; RemoteEmbedding and
RemoteOptimizer (torch.nn.Module and an optimizer-like object) need torch and
are imported on first use.
"""

from .client import ApiError, Client, PendingResult
from ._http import ConnectionClosed

__all__ = ["ApiError", "Client", "ConnectionClosed", "PendingResult", "RemoteEmbedding",
           "RemoteOptimizer"]
__version__ = "0.1.0"


def __getattr__(name):
    if name in ("RemoteEmbedding", "RemoteOptimizer"):
        from . import module
        return getattr(module, name)
    raise AttributeError(f"module 'embedding_server' has no attribute {name!r}")

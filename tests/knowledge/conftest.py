from chroma_server import chroma_server

__all__ = ["chroma_server"]

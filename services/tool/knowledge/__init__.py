"""Knowledge bases: chunking documents, a vector index behind one interface, retrieval."""

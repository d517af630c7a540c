"""The catalogue and search domain: objects and their vector parts, personalized copies, the embedder,
nearest-neighbour search and its API."""

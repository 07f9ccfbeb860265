"""Images: typed documents, descriptors, media types, compression names, platforms, resolution."""

"""Images: references, OCI layouts, media types, platforms and resolution."""

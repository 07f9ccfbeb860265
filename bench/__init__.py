"""The repository's own benchmark (image generator, timing runner, report): `python -m bench`."""

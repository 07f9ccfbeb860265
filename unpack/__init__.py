"""oci-unpack: turn an OCI image into a runtime bundle (config.json + rootfs/)."""

__version__ = "0.1.0"

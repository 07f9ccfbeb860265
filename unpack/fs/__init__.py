"""Filesystem side effects: the confined rootfs and the bundle directory."""

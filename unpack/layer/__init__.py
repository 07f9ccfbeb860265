"""Layers: decompression, tar entries, and applying them onto a rootfs."""

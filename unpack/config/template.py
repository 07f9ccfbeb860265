"""The default Linux runtime-spec config that image configs are converted onto.

It follows what ``runc spec`` writes (runc 1.1/1.2, ``libcontainer/specconv/example.go``)
with these differences, each made so the bundle runs unattended as produced:

* ``process.terminal`` is false (the caller sets it from ``--tty``);
* ``root.readonly`` is false (image processes expect a writable root, as with docker);
* the capability sets are bounding/effective/permitted only: current runc dropped
  ``ambient`` from its example, since ambient capabilities cannot be raised without
  an inheritable set, which runc also dropped (CVE-2022-29162);
* the cgroup namespace is always requested (runc only adds it on cgroup v2 hosts;
  a pure template cannot probe the host, and runc and crun support it on v1 too);
* the hostname is :data:`DEFAULT_HOSTNAME` rather than ``runc``.
"""

from typing import Any

OCI_VERSION = "1.0.2"
"""The runtime-spec version written; runc 1.1 (``spec: 1.0.2-dev``) and crun accept it."""

DEFAULT_HOSTNAME = "oci-unpack"
"""The container hostname unless the caller chooses one."""

DEFAULT_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
"""The ``PATH`` entry added when the image Env has none (the value runc and docker use)."""

DEFAULT_ARGS = ("/bin/sh",)
"""The command when neither the image nor the caller gives one (runc's ``sh``, made absolute)."""

_CAPABILITIES = ("CAP_AUDIT_WRITE", "CAP_KILL", "CAP_NET_BIND_SERVICE")

_MASKED_PATHS = (
    "/proc/acpi",
    "/proc/asound",
    "/proc/kcore",
    "/proc/keys",
    "/proc/latency_stats",
    "/proc/timer_list",
    "/proc/timer_stats",
    "/proc/sched_debug",
    "/sys/firmware",
    "/proc/scsi",
    "/sys/devices/virtual/tpm",
)

_READONLY_PATHS = (
    "/proc/bus",
    "/proc/fs",
    "/proc/irq",
    "/proc/sys",
    "/proc/sysrq-trigger",
)


def _mount(destination: str, kind: str, source: str, *options: str) -> dict[str, Any]:
    """One ``mounts`` entry; ``options`` is omitted when empty, as runc does."""
    mount: dict[str, Any] = {"destination": destination, "type": kind, "source": source}
    if options:
        mount["options"] = list(options)
    return mount


def default_mounts() -> list[dict[str, Any]]:
    """The runtime's own mounts (/proc, /dev, /dev/pts, /dev/shm, /dev/mqueue, /sys, cgroup)."""
    return [
        _mount("/proc", "proc", "proc"),
        _mount("/dev", "tmpfs", "tmpfs", "nosuid", "strictatime", "mode=755", "size=65536k"),
        _mount(
            "/dev/pts",
            "devpts",
            "devpts",
            "nosuid",
            "noexec",
            "newinstance",
            "ptmxmode=0666",
            "mode=0620",
            "gid=5",
        ),
        _mount("/dev/shm", "tmpfs", "shm", "nosuid", "noexec", "nodev", "mode=1777", "size=65536k"),
        _mount("/dev/mqueue", "mqueue", "mqueue", "nosuid", "noexec", "nodev"),
        _mount("/sys", "sysfs", "sysfs", "nosuid", "noexec", "nodev", "ro"),
        _mount("/sys/fs/cgroup", "cgroup", "cgroup", "nosuid", "noexec", "nodev", "relatime", "ro"),
    ]


def default_config() -> dict[str, Any]:
    """Return a fresh (unshared, freely mutable) default Linux runtime config."""
    return {
        "ociVersion": OCI_VERSION,
        "process": {
            "terminal": False,
            "user": {"uid": 0, "gid": 0},
            "args": list(DEFAULT_ARGS),
            "env": [DEFAULT_PATH],
            "cwd": "/",
            "capabilities": {
                "bounding": list(_CAPABILITIES),
                "effective": list(_CAPABILITIES),
                "permitted": list(_CAPABILITIES),
            },
            "rlimits": [{"type": "RLIMIT_NOFILE", "hard": 1024, "soft": 1024}],
            "noNewPrivileges": True,
        },
        "root": {"path": "rootfs", "readonly": False},
        "hostname": DEFAULT_HOSTNAME,
        "mounts": default_mounts(),
        "linux": {
            "resources": {"devices": [{"allow": False, "access": "rwm"}]},
            "namespaces": [
                {"type": kind} for kind in ("pid", "network", "ipc", "uts", "mount", "cgroup")
            ],
            "maskedPaths": list(_MASKED_PATHS),
            "readonlyPaths": list(_READONLY_PATHS),
        },
    }

"""The example inventory `edgecell fleet init` writes: a plain Ansible inventory (YAML), groups by
device kind, `edgecell_profile` and `edgecell_prefix` per group or per host."""

from __future__ import annotations

from pathlib import Path

EXAMPLE_INVENTORY = """\
# edgecell fleet inventory: a plain Ansible inventory (YAML; INI works too).
# Devices are reached with SSH keys only, and their host keys must already be in known_hosts
# (check each fingerprint once: ssh-keyscan -t ed25519 HOST, compare with the device's
# `ssh-keygen -lf /etc/ssh/ssh_host_ed25519_key.pub`, then add it; or give --known-hosts FILE).
#
# Per group or per host:
#   edgecell_profile   raspberry-pi | jetson | x86-legacy | x86-vnni (the bundle profile the device
#                      takes: `edgecell info` on it says which; x86 without VNNI is x86-legacy)
#   edgecell_prefix    install root on the device (default /opt/edgecell)
#   edgecell_command   the device's edgecell before the first bundle install (optional)
#   edgecell_service   false: never restart the systemd service on this device
#   edgecell_results   the service's results folder (default /var/lib/edgecell/results)
all:
  vars:
    ansible_user: edgecell          # an account with sudo for /opt/edgecell and systemd
    ansible_become: true
    ansible_ssh_private_key_file: ~/.ssh/edgecell_fleet
  children:
    microscopes:
      vars:
        edgecell_profile: raspberry-pi
        edgecell_prefix: /opt/edgecell
      hosts:
        lab-pi-01.local:
        lab-pi-02.local:
    carts:
      vars:
        edgecell_profile: x86-legacy
        edgecell_prefix: /opt/edgecell
      hosts:
        xray-cart-a:
          ansible_host: 10.0.20.11
    shelves:
      vars:
        edgecell_profile: jetson
        edgecell_prefix: /opt/edgecell
      hosts:
        shop-jetson-[01:12].example.net:
"""


def write_example_inventory(path: Path, *, force: bool = False) -> Path:
    """Write EXAMPLE_INVENTORY to `path` (never over an existing file unless `force`)."""
    from edgecell.fleet.ansible import FleetError

    path = Path(path)
    if path.exists() and not force:
        raise FleetError(f"{path} already exists; give another path or --force")
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(EXAMPLE_INVENTORY)
    return path

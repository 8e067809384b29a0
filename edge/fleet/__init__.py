"""Fleets: deploy bundles to, and look at, many devices at once, on Ansible.

The engine IT departments already run does the SSH work (connections, parallel forks, copying,
host-key checks); edgecell ships the playbooks (`playbooks/*.yml`, package data) and drives
`ansible-playbook` with its JSON callback, so every device's every step comes back as data. The
controller (a workstation or laptop: `pip install 'edgecell[fleet]'`) picks the batches of a
rolling deploy and stops it past `--max-fail`; the devices need only SSH, Python and their edgecell.

Where things are: `ansible` (running a playbook safely, reading its JSON), `deploy` (rolling
deploy and its results), `status` (a read-only look at each device), `inventory` (the example
inventory `edgecell fleet init` writes)."""

from __future__ import annotations

from edgecell.fleet.ansible import FleetError, PlaybookRun, SshSettings, run_playbook  # noqa: F401
from edgecell.fleet.deploy import DeviceDeploy, deploy_bundle  # noqa: F401
from edgecell.fleet.inventory import EXAMPLE_INVENTORY, write_example_inventory  # noqa: F401
from edgecell.fleet.status import DeviceStatus, fleet_status  # noqa: F401

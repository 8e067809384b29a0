"""`edgecell fleet init`: the example inventory is a plain Ansible inventory that Ansible reads,
every device with its profile and prefix."""

from __future__ import annotations

import subprocess
import sys

from edgecell.bundle import PROFILES


def test_init_writes_an_inventory_ansible_reads_with_profile_and_prefix(tmp_path):
    from ansible.inventory.manager import InventoryManager
    from ansible.parsing.dataloader import DataLoader
    from ansible.vars.manager import VariableManager

    path = tmp_path / "inventory.yml"
    proc = subprocess.run([sys.executable, "-m", "edgecell", "fleet", "init", str(path)], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    loader = DataLoader()
    inventory = InventoryManager(loader=loader, sources=[str(path)])
    variables = VariableManager(loader=loader, inventory=inventory)
    found = [variables.get_vars(host=h) for h in inventory.get_hosts()]
    assert len(found) > 3
    assert all(v["edgecell_profile"] in PROFILES and v["edgecell_prefix"].startswith("/") for v in found)


def test_init_never_overwrites_an_inventory(tmp_path):
    path = tmp_path / "inventory.yml"
    path.write_text("mine\n")
    proc = subprocess.run([sys.executable, "-m", "edgecell", "fleet", "init", str(path)], capture_output=True, text=True)
    assert proc.returncode == 2 and proc.stderr.startswith("edgecell: error:")
    assert path.read_text() == "mine\n"

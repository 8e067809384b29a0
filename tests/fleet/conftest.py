"""Real devices over real SSH (edgecell.benchmarks.local_fleet): three sshd processes on 127.0.0.1
high ports, each a device with its own prefix, plus a fourth inventory entry nothing answers (the
unreachable device, first in the inventory: a rolling deploy meets it first). Every sshd is
stopped at teardown."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytest.importorskip("ansible", reason="fleet tests need ansible-core (pip install 'edgecell[fleet]')")
from edgecell.benchmarks.local_fleet import LocalFleet, find_sshd  # noqa: E402

if find_sshd() is None:
    pytest.skip("fleet tests need openssh-server and ssh (apt-get install openssh-server)", allow_module_level=True)

DEVICES = ("dev1", "dev2", "dev3")
UNREACHABLE = "dev0"


@pytest.fixture(scope="session")
def fleet(tmp_path_factory):
    with LocalFleet(tmp_path_factory.mktemp("fleet"), DEVICES, unreachable=UNREACHABLE,
                    edgecell=Path(sys.executable).parent / "edgecell") as devices:
        yield devices

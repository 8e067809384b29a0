"""Ansible stdout callback used by `edgecell fleet`: the whole run as one JSON document on stdout
(plays -> tasks -> per-host results, then per-host stats), read by edgecell.fleet.ansible.

ansible-core no longer ships a JSON callback (it moved to the ansible.posix collection); this one
is small, ships with edgecell and keeps the fleet commands to ansible-core alone. Module
arguments (`invocation`) are dropped, so nothing passed to a device is echoed back."""

from __future__ import annotations

import json
import sys
import time

from ansible.plugins.callback import CallbackBase

DOCUMENTATION = """
    name: edgecell_json
    type: stdout
    short_description: one JSON document for edgecell fleet
    description: plays, tasks, per-host results and stats as one JSON document on stdout.
"""


class CallbackModule(CallbackBase):
    CALLBACK_VERSION = 2.0
    CALLBACK_TYPE = "stdout"
    CALLBACK_NAME = "edgecell_json"

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.plays: list[dict] = []

    def v2_playbook_on_play_start(self, play):
        self.plays.append({"play": {"name": play.get_name()}, "tasks": []})

    def v2_playbook_on_task_start(self, task, is_conditional):
        self.plays[-1]["tasks"].append({"task": {"name": task.get_name()}, "hosts": {}, "started": time.monotonic()})

    def v2_playbook_on_handler_task_start(self, task):
        self.v2_playbook_on_task_start(task, False)

    def _record(self, result, **flags):
        data = {k: v for k, v in dict(result._result).items() if k != "invocation"}
        data.update(flags)
        if self.plays and self.plays[-1]["tasks"]:
            task = self.plays[-1]["tasks"][-1]
            data["seconds"] = round(time.monotonic() - task["started"], 2)  # since the task started
            task["hosts"][result._host.get_name()] = data

    def v2_runner_on_ok(self, result, **kwargs):
        self._record(result)

    def v2_runner_on_failed(self, result, ignore_errors=False, **kwargs):
        self._record(result, failed=True, ignore_errors=bool(ignore_errors))

    def v2_runner_on_unreachable(self, result, **kwargs):
        self._record(result, unreachable=True)

    def v2_runner_on_skipped(self, result, **kwargs):
        self._record(result, skipped=True)

    def v2_playbook_on_stats(self, stats):
        summary = {h: stats.summarize(h) for h in sorted(stats.processed.keys())}
        sys.stdout.write(json.dumps({"plays": self.plays, "stats": summary}, default=str) + "\n")
        sys.stdout.flush()

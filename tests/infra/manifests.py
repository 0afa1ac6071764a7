"""What the deployment files (docker-compose.yml, infra/compose, infra/k8s) are checked
against without a Docker engine or a cluster: the code a command names, and the settings."""

from __future__ import annotations

import importlib
import shlex
from typing import Any

from shared.settings import Settings

SETTING_NAMES = {f"CERTFLEET_{name.upper()}" for name in Settings.__dataclass_fields__}
QUEUE_OF_MODULE = {
    "services.issuer.tasks": ("issue", "certfleet.issuer.issue_batch"),
    "services.distributor.tasks": ("distribute", "certfleet.distributor.deliver"),
    "services.expiry_watcher.tasks": ("expiry", "certfleet.expiry.sweep"),
}


def argv_of(command: list[str]) -> list[str]:
    """The program's arguments, through a `sh -c "exec ..."` wrapper if there is one."""
    if command[:2] == ["sh", "-c"]:
        return shlex.split(command[2].removeprefix("exec "))
    return command


def component(command: list[str]) -> str:
    """Which certfleet process a command starts, after checking it names real code:
    api, init, beat, or the queue a worker consumes."""
    argv = argv_of(command)
    if argv[0] == "gunicorn":
        module, _, factory = argv[-1].partition(":")
        assert callable(getattr(importlib.import_module(module), factory.removesuffix("()")))
        return "api"
    if argv[:2] == ["certfleet", "init"]:
        return "init"
    assert argv[0] == "celery", argv
    module = argv[argv.index("-A") + 1]
    tasks: Any = importlib.import_module(module)
    queue, task = QUEUE_OF_MODULE[module]
    assert task in tasks.app.tasks, (module, task)
    if argv[argv.index("-A") + 2] == "beat":
        assert tasks.app.conf.beat_scheduler.endswith(":LockedScheduler")
        return "beat"
    assert argv[argv.index("--queues") + 1] == queue, argv
    return queue

"""An agent's configuration: where its controller is, what it may read, how it runs jobs."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from containers.runspec import Limits


@dataclass
class AgentConfig:
    controller_url: str
    token: str
    data_roots: list[Path]
    work_root: Path
    image: str
    limits: Limits = field(default_factory=Limits)
    poll_wait_s: float = 5.0
    http_timeout_s: float = 30.0
    slots: int = 1
    # Per-provider data roots. An agent serving several providers must list each one's
    # roots here, so one provider cannot name another's files as its dataset location;
    # ``data_roots`` then serves no one. With a single provider, ``data_roots`` suffice.
    provider_roots: dict[str, list[Path]] = field(default_factory=dict)
    # Signs joint-statistics submissions; its public half is registered with the agent.
    signing_key: Ed25519PrivateKey | None = None
    # Keep each slot's next container started ahead (containers.warm): a job then skips
    # the ~0.26 s the engine takes to start a hardened container.
    warm_start: bool = True
    # How long one call to the controller is retried before the agent gives up on it for
    # now (a finished run's report then waits in the outbox and is sent again later).
    controller_retry_s: float = 300.0
    # How often a slot looks for reports left in the outbox.
    outbox_interval_s: float = 30.0
    # A run's end is made known only at a whole multiple of this since its container
    # started: how long a script ran is a channel it controls (docs/threat-model.md).
    timing_grain_s: float = 5.0
    # How often a running job's lease is checked: a job stopped by its provider or the
    # operator, or whose permit was revoked, is killed within about this long.
    watch_interval_s: float = 2.0
    # The provider's release audit store (containers.audit_store): the populations of
    # cells already released, for the differencing audit. Every agent serving the same
    # provider's data must be given the same file; by default it sits beside the work
    # root (not in it: the work root holds job directories only).
    audit_path: Path | None = None

    # Run each new script on mock data first (containers.mockrun): a script error then
    # costs no run of the permit, and the requester gets its whole console output.
    mock_first: bool = True

    @property
    def audit_file(self) -> Path:
        return self.audit_path or self.work_root.parent / f"{self.work_root.name}.audit.sqlite"


def banner(config: AgentConfig, name: str, providers: tuple[str, ...], runtime: str
           ) -> tuple[list[str], list[str]]:
    """What an agent says at start (lines to log), and what looks wrong (warnings): roots
    that do not exist, providers served without roots, roots of providers not served."""
    lines = [f"agent {name} serving provider(s): {', '.join(providers) or 'none'}",
             f"controller {config.controller_url}; work root {config.work_root}",
             f"jobs run under the {runtime} runtime, {config.slots} slot(s), image "
             f"{config.image}"]
    warnings = []
    roots = ({p: list(r) for p, r in config.provider_roots.items()} if config.provider_roots
             else {p: list(config.data_roots) for p in providers})
    for provider, paths in sorted(roots.items()):
        lines.append(f"data roots of {provider}: {', '.join(map(str, paths)) or 'none'}")
        warnings += [f"data root {path} of {provider} does not exist: its datasets will "
                     "fail their schema checks and runs" for path in paths if not path.is_dir()]
    for provider in providers:
        if not roots.get(provider):
            warnings.append(f"no data root for {provider}: give one with --data-root "
                            f"{provider}=PATH")
    warnings += [f"--data-root given for {p}, which this agent does not serve"
                 for p in sorted(set(roots) - set(providers))]
    return lines, warnings

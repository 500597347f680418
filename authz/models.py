"""Parties, catalog, access requests, permits and jobs.

The controller's whole state lives here (plus the ledger's tables in ``ledger``). No raw
data is ever stored: a dataset row holds metadata and a location that only the owning
provider's agent resolves.

The tables are defined by domain (who acts: :mod:`authz.models_parties`; what may be used:
:mod:`authz.models_access`; what ran: :mod:`authz.models_jobs`; the usage rollup:
:mod:`authz.models_usage`; their base types: :mod:`authz.models_base`); this module is the
one to import them from. Importing it defines every table, registers the usage rollup's
flush hook and installs sealing at rest on all of them (:mod:`authz.sealed`).
"""

from __future__ import annotations

from authz.models_access import AccessRequest, Dataset, Permit, RequestItem, ScriptApproval
from authz.models_base import AuthzBase, StateText, UTCDateTime, new_id, utcnow
from authz.models_jobs import Job, JobOutput, JointJob, OutputReview, PsiChunk
from authz.models_parties import (
    Accreditation,
    Agent,
    AgentProvider,
    AgentRetiredKey,
    OidcIdentity,
    OidcLogin,
    Party,
    Person,
)
from authz.models_usage import UsageDay, UsageVersion, bump_usage_versions, utc_day
from authz.sealed import install

__all__ = [
    "AccessRequest", "Accreditation", "Agent", "AgentProvider", "AgentRetiredKey",
    "AuthzBase", "Dataset", "Job", "JobOutput", "JointJob", "OidcIdentity", "OidcLogin",
    "OutputReview", "Party", "Permit", "Person", "PsiChunk", "RequestItem",
    "ScriptApproval", "StateText", "UTCDateTime", "UsageDay", "UsageVersion",
    "bump_usage_versions", "new_id", "utc_day", "utcnow",
]

# After every model is defined (the hooks are inherited from the base by each table).
install(AuthzBase)

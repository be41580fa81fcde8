"""Protocols: how a study lays out its trials, one module each behind one contract
(``base.Protocol``); ``PROTOCOLS`` is the registry, one line per protocol."""

from __future__ import annotations

from typing import TYPE_CHECKING

from lbt_study.errors import unknown_name
from lbt_study.study.protocols.adaptive import Adaptive, StopWhen
from lbt_study.study.protocols.base import Cell, Protocol
from lbt_study.study.protocols.branched import Branched, BranchedProtocol
from lbt_study.study.protocols.joint import Joint
from lbt_study.study.protocols.per_batch_size import PerBatchSize
from lbt_study.study.protocols.per_norm import PerNorm

if TYPE_CHECKING:
    from lbt_study.study.spec import Study

PROTOCOLS: dict[str, Protocol] = {
    "joint": Joint(),
    "per_batch_size": PerBatchSize(),
    "branched": BranchedProtocol(),
    "adaptive": Adaptive(),
    "per_norm": PerNorm(),
}


def protocol_of(study: Study) -> Protocol:
    """The protocol a study runs (an unknown name lists the known ones)."""
    if study.protocol not in PROTOCOLS:
        raise unknown_name("protocol", study.protocol, list(PROTOCOLS))
    return PROTOCOLS[study.protocol]


__all__ = ["PROTOCOLS", "Branched", "Cell", "Protocol", "StopWhen", "protocol_of"]

"""The QOS-compatible simulator: a deterministic market, the server, fault injection,
and a stand-in for QuestDB's ILP/HTTP endpoint."""

from .faults import Faults
from .market import DEFAULT_CODES, Market
from .server import Connection, SimConfig, Simulator

__all__ = ["DEFAULT_CODES", "Connection", "Faults", "Market", "SimConfig", "Simulator"]

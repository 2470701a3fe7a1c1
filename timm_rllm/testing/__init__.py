"""Stand-ins for the outside world, shared by the tests and the benchmarks: a local Hugging Face Hub."""

from .hub_server import FAULT_KINDS, FakeHub, Fault

__all__ = ["FAULT_KINDS", "FakeHub", "Fault"]

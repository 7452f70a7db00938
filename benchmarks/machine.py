"""What every benchmark records about the machine it ran on (the edge's own CPU probe, edge/cpu.py)."""

from __future__ import annotations

from edge.cpu import cpu_isa, cpu_name

__all__ = ["cpu_isa", "cpu_name"]

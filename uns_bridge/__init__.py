"""uns-bridge: a Sparkplug B host application feeding an ISA-95 Unified Namespace and PostgreSQL."""

__version__ = "0.1.0"

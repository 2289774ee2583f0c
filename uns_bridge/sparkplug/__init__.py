"""The Sparkplug B codec: topics and payloads as typed, immutable values (pure, no I/O)."""

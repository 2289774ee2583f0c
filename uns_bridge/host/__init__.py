"""The Sparkplug host application core: messages and ticks in, effects out (pure, no I/O)."""

"""The Unified Namespace side: the topic/payload contract (:mod:`.contract`) and publishing."""

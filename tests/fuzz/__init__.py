"""Fuzzing: protobuf wire generators shared by the hypothesis tests and the atheris harnesses here."""

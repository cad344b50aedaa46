"""Fuzzing: atheris harnesses for every dissector and the KFL parser (`make fuzz`)."""

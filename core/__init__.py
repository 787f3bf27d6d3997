"""The bottom layer: named errors, the config's types and loader, and shared names.

Every other package may import from here; ``core`` imports none of them (see
docs/architecture.md).
"""

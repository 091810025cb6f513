"""Judges: typed verdicts on instructions and responses, from an LLM through the gateway or from offline rules/models.

Import from the submodules (``judging.base``, ``judging.factory``, ...): this file stays empty so a stage depends
only on the judge modules it actually uses.
"""

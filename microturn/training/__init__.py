"""microturn.training (see docs/design.md §2): the synthetic interaction corpus the interaction model learns from.

:mod:`.dialogs` generates randomized dialogs as scenarios; :mod:`.corpus` runs them with the scripted policy
as the oracle and writes what the model sees and what the oracle answered, tick by tick, as checked shards;
:mod:`.cli` adds ``microturn corpus``.
"""

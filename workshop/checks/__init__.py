"""The workshop's checkers: ``invoke check N`` (``python -m workshop.checks N``).

One module per step (``step1`` ... ``step8``), each a list of
:class:`~workshop.checks.check.Check` with the hints next to it, and one per chapter's
exercises (``step1_exercises`` ... ``step9_exercises``: step 9 has no program of its own,
its checks are its exercises'); ``sandbox`` runs the learner's program where it can do no harm,
``tries`` remembers how often each check failed, ``__main__`` prints the verdicts.
"""

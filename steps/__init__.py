"""The lab: eight steps, each a short program adding one concept to the last.

Run any of them as root from the repository's top directory::

    sudo .venv/bin/python -m steps.step1_uts --hostname box -- hostname

Each step reuses the previous one's namespaces and setup and adds its own, calling the
``runtime`` package (step 8 enters a running container of step 7's, from outside);
:mod:`steps.common` holds what all of them share (options, running).
"""

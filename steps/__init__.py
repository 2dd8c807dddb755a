"""The lab: six steps (and a seventh), each a short program adding one concept to the last.

Run any of them as root from the repository's top directory::

    sudo python3 -m steps.step1_uts --hostname box -- hostname

Each step reuses the previous one's namespaces and setup and adds its own, calling the
``runtime`` package; :mod:`steps.common` holds what all of them share (options, running).
"""

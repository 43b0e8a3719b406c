"""archscreen: screen neural-network architectures with one Alrao run each.

The import name ``archscreen`` maps the repository's top-level folders:
``archscreen.core`` is ``core/`` (pure ML), ``archscreen.api`` is ``api/`` and
``archscreen.worker`` is ``worker/`` (see ``docs/architecture.md``).
"""

__version__ = "0.1.0"

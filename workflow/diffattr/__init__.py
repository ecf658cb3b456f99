"""diffattr: step-by-step data attribution for diffusion models.

Modules, bottom to top (no module imports one above it; none imports snakemake):
``seeding``, ``storage`` → ``data``, ``models``, ``projection``, ``methods`` → ``outputs``,
``diffusion``, ``scoring``, ``figures`` → ``features``, ``evaluation`` → ``cli``.
"""

__version__ = "0.1.0"

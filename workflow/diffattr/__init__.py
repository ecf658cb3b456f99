"""diffattr: step-by-step data attribution for diffusion models.

Modules, bottom to top (no module imports one above it; none imports snakemake):
``seeding``, ``storage``, ``errors`` → ``data``, ``models``, ``projection``, ``methods`` →
``outputs``, ``diffusion``, ``scoring``, ``figures``, ``classifier`` → ``features``,
``evaluation``, ``counterfactual`` → ``cli``.
"""

__version__ = "0.1.0"

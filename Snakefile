# diffattr: step-by-step data attribution for diffusion models (Journey-TRAK and successors).
# Run: snakemake --cores all   (config/config.yaml; override with --configfile config/test.yaml)
from snakemake.utils import min_version

from diffattr.preflight import checked

min_version("9.0")


configfile: checked("config/config.yaml")  # a YAML error: one line naming the file and line


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"
include: "workflow/rules/models.smk"
include: "workflow/rules/attribution.smk"
include: "workflow/rules/lds.smk"
include: "workflow/rules/patches.smk"
include: "workflow/rules/counterfactual.smk"
include: "workflow/rules/extra.smk"
include: "workflow/rules/kit.smk"


onstart:
    if workflow.local_exec and not workflow.remote_exec:  # jobs on this machine: warm starts
        warm.start(Path(P.log("warm_server")))


onsuccess:
    from diffattr.results import Run

    warm.stop()
    if Path(P.run).is_dir():
        print(Run(P.run).summary())


onerror:
    warm.stop()


rule all:
    default_target: True
    input:
        final_outputs(),


rule attribution:
    input:
        attribution_outputs(),


rule lds:
    input:
        lds_outputs(),


rule kit:
    input:
        P.kit,


rule patches:
    input:
        patch_outputs(),


rule counterfactual:
    input:
        counterfactual_outputs(),


rule group_removal:
    input:
        group_outputs(),


rule extra:
    input:
        extra_outputs(),


rule figures:
    input:
        figure_outputs(),

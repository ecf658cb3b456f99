# Counterfactual retraining: classifier, feature emergence, removal plan, one model per case
# (plus the seed floor), paired resampling from x_t, the report.

# The plan waits for the emergence curves (≈ 200 s of one core in the default run); scheduled
# first, they run beside the LDS instead of alone at the end (162 s of the default run's 822 s).
EARLY = 10


rule train_classifier:
    input:
        P.data,
    output:
        directory(P.classifier),
    params:
        cfg=cfg_slice("train_classifier"),
    log:
        P.log("train_classifier"),
    benchmark:
        P.benchmark("train_classifier")
    priority: EARLY
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "diffattr train-classifier --cfg {params.cfg:q} --data {input} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule emergence:
    input:
        model=P.model(0),
        targets=P.targets,
        classifier=P.classifier,
    output:
        h5=P.emergence,
        csv=report(
            P.report("emergence.csv"),
            caption="../report/emergence.rst",
            category="Evaluation",
            subcategory="Feature emergence",
            labels={"result": "feature emergence", "format": "CSV"},
        ),
    params:
        cfg=cfg_slice("emergence"),
    log:
        P.log("emergence"),
    benchmark:
        P.benchmark("emergence")
    priority: EARLY
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr emergence --cfg {params.cfg:q} --model {input.model} --targets {input.targets}"
        " --classifier {input.classifier} --out {output.h5} --out-csv {output.csv}"
        " --threads {threads} > {log} 2>&1"


rule emergence_figure:
    input:
        P.emergence,
    output:
        report(
            DRAWN.figure("emergence.png"),
            caption="../report/emergence.rst",
            category="Evaluation",
            subcategory="Feature emergence",
            labels={"result": "feature emergence", "format": "figure"},
        ),
    params:
        cfg=cfg_slice("report_figures"),
    log:
        DRAWN.log("emergence_figure"),
    benchmark:
        DRAWN.benchmark("emergence_figure")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "diffattr emergence-figure --cfg {params.cfg:q} --emergence {input}"
        " --out-figure {output} > {log} 2>&1"


rule cf_plan:
    input:
        data=P.data,
        emergence=P.emergence,
        scores=[downstream_scores(m) for m in CF.scored_methods],
    output:
        P.plan,
    params:
        cfg=cfg_slice("cf_plan"),
    log:
        P.log("cf_plan"),
    benchmark:
        P.benchmark("cf_plan")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr cf-plan --cfg {params.cfg:q} --data {input.data} --emergence {input.emergence}"
        " --scores {input.scores} --out {output} > {log} 2>&1"


rule train_cf_model:
    input:
        data=P.data,
        plan=P.plan,
    output:
        directory(P.cf_model("c{case}")),
    params:
        cfg=cfg_slice("train"),
    log:
        P.log("train_cf_model", "c{case}"),
    benchmark:
        P.benchmark("train_cf_model", "c{case}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train-counterfactual --cfg {params.cfg:q} --data {input.data} --out {output}"
        " --plan {input.plan} --case {wildcards.case} --threads {threads} --no-progress"
        " > {log} 2>&1"


rule train_cf_floor:
    input:
        P.data,
    output:
        directory(P.cf_model(FLOOR)),
    params:
        cfg=cfg_slice("train"),
    log:
        P.log("train_cf_floor"),
    benchmark:
        P.benchmark("train_cf_floor")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train-floor --cfg {params.cfg:q} --data {input} --out {output}"
        " --threads {threads} --no-progress > {log} 2>&1"


rule cf_resample:
    input:
        plan=P.plan,
        original=P.model(0),
        model=P.cf_model("{name}"),
        targets=P.targets,
    output:
        P.cf_samples("{name}"),
    wildcard_constraints:
        name=rf"c\d+|{FLOOR}",
    params:
        cfg=cfg_slice("cf_resample"),
    log:
        P.log("cf_resample", "{name}"),
    benchmark:
        P.benchmark("cf_resample", "{name}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr cf-resample --cfg {params.cfg:q} --plan {input.plan}"
        " --case {wildcards.name} --original {input.original}"
        " --model {input.model} --targets {input.targets} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule cf_report:
    input:
        plan=P.plan,
        samples=[P.cf_samples(c) for c in CF_CASES],
        floor=P.cf_samples(FLOOR),
        classifier=P.classifier,
        emergence=P.emergence,
    output:
        csv=report(
            P.report("counterfactual.csv"),
            caption="../report/counterfactual.rst",
            category="Evaluation",
            subcategory="Counterfactual",
            labels={"result": "counterfactual effects", "format": "CSV"},
        ),
        cases=P.report("counterfactual_cases.csv"),
    params:
        cfg=cfg_slice("cf_report"),
    log:
        P.log("cf_report"),
    benchmark:
        P.benchmark("cf_report")
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "diffattr cf-report --cfg {params.cfg:q} --plan {input.plan} --samples {input.samples}"
        " --floor {input.floor} --classifier {input.classifier}"
        " --emergence {input.emergence} --out-csv {output.csv} --out-cases {output.cases}"
        " > {log} 2>&1"


# Drawn from the stored report and samples only (nothing depends on it).
rule cf_figures:
    input:
        table=P.report("counterfactual.csv"),
        cases=P.report("counterfactual_cases.csv"),
        plan=P.plan,
        samples=[P.cf_samples(c) for c in CF_CASES],
        scores=[downstream_scores(m) for m in CF.scored_methods],
    output:
        html=report(
            DRAWN.report("counterfactual.html"),
            caption="../report/counterfactual.rst",
            category="Evaluation",
            subcategory="Counterfactual",
            labels={"result": "counterfactual effects", "format": "table"},
        ),
        metrics=report(
            DRAWN.figure("counterfactual_metrics.png"),
            caption="../report/counterfactual.rst",
            category="Evaluation",
            subcategory="Counterfactual",
            labels={"result": "counterfactual effects", "format": "figure"},
        ),
        samples=report(
            DRAWN.figure("counterfactual_samples.png"),
            caption="../report/counterfactual.rst",
            category="Evaluation",
            subcategory="Counterfactual",
            labels={"result": "paired samples", "format": "figure"},
        ),
    params:
        cfg=cfg_slice("report_figures"),
    log:
        DRAWN.log("cf_figures"),
    benchmark:
        DRAWN.benchmark("cf_figures")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "diffattr cf-figures --cfg {params.cfg:q} --table {input.table} --cases {input.cases}"
        " --plan {input.plan} --samples {input.samples} --scores {input.scores}"
        " --out-figure-metrics {output.metrics} --out-figure-samples {output.samples}"
        " --out-html {output.html} > {log} 2>&1"


# The group-removal protocol (counterfactual.group, diffattr.group_removal): one model per
# method (the union of the group's top-k) and per random draw of each union's size; every model
# and the original regenerate the group from its targets' noise; one report and its figure.
rule group_plan:
    input:
        data=P.data,
        emergence=P.emergence,
        scores=[downstream_scores(m) for m in CF.group_methods],
    output:
        P.group_plan,
    params:
        cfg=cfg_slice("group_plan"),
    log:
        P.log("group_plan"),
    benchmark:
        P.benchmark("group_plan")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr group-plan --cfg {params.cfg:q} --data {input.data}"
        " --emergence {input.emergence} --scores {input.scores} --out {output} > {log} 2>&1"


rule train_group_model:
    input:
        data=P.data,
        plan=P.group_plan,
    output:
        directory(P.group_model("{name}")),
    wildcard_constraints:
        name=GROUP_MODEL,
    params:
        cfg=cfg_slice("train"),
    log:
        P.log("train_group_model", "{name}"),
    benchmark:
        P.benchmark("train_group_model", "{name}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train-group --cfg {params.cfg:q} --data {input.data} --plan {input.plan}"
        " --name {wildcards.name} --out {output} --threads {threads} --no-progress > {log} 2>&1"


rule group_regenerate:
    input:
        plan=P.group_plan,
        model=group_model_dir,
        targets=P.targets,
    output:
        P.group_samples("{name}"),
    wildcard_constraints:
        name=rf"{ORIGINAL}|{GROUP_MODEL}",
    params:
        cfg=cfg_slice("group_regenerate"),
    log:
        P.log("group_regenerate", "{name}"),
    benchmark:
        P.benchmark("group_regenerate", "{name}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr group-regenerate --cfg {params.cfg:q} --plan {input.plan}"
        " --model {input.model} --targets {input.targets} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule group_report:
    input:
        plan=P.group_plan,
        samples=[P.group_samples(m) for m in CF.group_models],
        reference=P.group_samples(ORIGINAL),
        classifier=P.classifier,
        emergence=P.emergence,
    output:
        csv=report(
            P.report("group_removal.csv"),
            caption="../report/group_removal.rst",
            category="Evaluation",
            subcategory="Group removal",
            labels={"result": "group removal", "format": "CSV"},
        ),
        targets=P.report("group_removal_targets.csv"),
        pairs=P.report("group_removal_pairs.csv"),
    params:
        cfg=cfg_slice("cf_report"),
    log:
        P.log("group_report"),
    benchmark:
        P.benchmark("group_report")
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "diffattr group-report --cfg {params.cfg:q} --plan {input.plan}"
        " --samples {input.samples} --reference {input.reference}"
        " --classifier {input.classifier} --emergence {input.emergence}"
        " --out-csv {output.csv} --out-targets {output.targets} --out-pairs {output.pairs}"
        " > {log} 2>&1"


# Drawn from the stored report only (nothing depends on it).
rule group_figure:
    input:
        table=P.report("group_removal.csv"),
        cases=P.report("group_removal_targets.csv"),
    output:
        report(
            DRAWN.figure("group_removal.png"),
            caption="../report/group_removal.rst",
            category="Evaluation",
            subcategory="Group removal",
            labels={"result": "group removal", "format": "figure"},
        ),
    params:
        cfg=cfg_slice("report_figures"),
    log:
        DRAWN.log("group_figure"),
    benchmark:
        DRAWN.benchmark("group_figure")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "diffattr group-figure --cfg {params.cfg:q} --table {input.table} --cases {input.cases}"
        " --out-figure {output} > {log} 2>&1"

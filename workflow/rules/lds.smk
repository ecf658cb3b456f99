# Linear datamodeling score: subsets, subset models (one job per subset × seed), ground truth,
# the report.


rule lds_subsets:
    input:
        P.data,
    output:
        P.subsets,
    params:
        cfg=cfg_slice("lds_subsets"),
    log:
        P.log("lds_subsets"),
    benchmark:
        P.benchmark("lds_subsets")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr lds-subsets --cfg {params.cfg:q} --data {input} --out {output} > {log} 2>&1"


rule train_subset_model:
    input:
        data=P.data,
        subsets=P.subsets,
    output:
        directory(P.subset_model("{subset}", "{seed}")),
    params:
        cfg=subset_train_cfg(),
    log:
        P.log("train_subset_model", "s{subset}-r{seed}"),
    benchmark:
        P.benchmark("train_subset_model", "s{subset}-r{seed}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train-subset --cfg {params.cfg:q} --data {input.data} --out {output}"
        " --subsets {input.subsets} --subset {wildcards.subset} --seed-index {wildcards.seed}"
        " --threads {threads} --no-progress > {log} 2>&1"


rule ground_truth:
    input:
        models=subset_models_of,
        targets=P.targets,
    output:
        P.ground_truth("{subset}"),
    params:
        cfg=cfg_slice("ground_truth"),
    log:
        P.log("ground_truth", "s{subset}"),
    benchmark:
        P.benchmark("ground_truth", "s{subset}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr ground-truth --cfg {params.cfg:q} --models {input.models}"
        " --targets {input.targets} --out {output} --threads {threads} > {log} 2>&1"


rule memorization_reference:
    input:
        data=P.data,
        subsets=P.subsets,
        targets=P.targets,
    output:
        P.memorization,
    params:
        cfg=cfg_slice("memorization_reference"),
    log:
        P.log("memorization_reference"),
    benchmark:
        P.benchmark("memorization_reference")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr memorization-reference --cfg {params.cfg:q} --data {input.data}"
        " --subsets {input.subsets} --targets {input.targets} --out {output} --no-progress"
        " > {log} 2>&1"


rule train_regime_model:
    input:
        data=P.data,
        subsets=P.subsets,
    output:
        directory(P.regime_model),
    params:
        cfg=subset_train_cfg(),
    log:
        P.log("train_regime_model"),
    benchmark:
        P.benchmark("train_regime_model")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train-regime --cfg {params.cfg:q} --data {input.data} --out {output}"
        " --subsets {input.subsets} --threads {threads} --no-progress > {log} 2>&1"


rule regime_diagnostics:
    input:
        data=P.data,
        subsets=P.subsets,
        models=[P.subset_model(REGIME_SUBSET, 0), P.regime_model],
        targets=P.targets,
    output:
        P.regime,
    params:
        cfg=cfg_slice("regime_diagnostics"),
    log:
        P.log("regime_diagnostics"),
    benchmark:
        P.benchmark("regime_diagnostics")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr regime --cfg {params.cfg:q} --data {input.data} --subsets {input.subsets}"
        " --models {input.models} --targets {input.targets} --out {output}"
        " --threads {threads} --no-progress > {log} 2>&1"


rule lds_report:
    input:
        unpack(lds_report_inputs),
    output:
        csv=report(
            P.report("lds.csv"),
            caption="../report/lds.rst",
            category="Evaluation",
            subcategory="LDS",
            labels={"result": "LDS per step, every row", "format": "CSV"},
        ),
        json=P.report("lds.json"),
    params:
        cfg=cfg_slice("lds_report"),
        memorization=lambda wildcards, input: (
            f"--memorization {input.memorization}" if "memorization" in input.keys() else ""
        ),
        regime=lambda wildcards, input: (
            f"--regime {input.regime}" if "regime" in input.keys() else ""
        ),
    log:
        P.log("lds_report"),
    benchmark:
        P.benchmark("lds_report")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "diffattr lds-report --cfg {params.cfg:q} --subsets {input.subsets}"
        " --ground-truth {input.ground_truth} --scores {input.scores}"
        " --train-features {input.train_features} --target-features {input.target_features}"
        " --member-scores {input.member_scores} {params.memorization} {params.regime}"
        " --out-csv {output.csv} --out-json {output.json}"
        " > {log} 2>&1"


# Drawn from the stored report only (nothing depends on it): forcing it retrains nothing.
rule lds_figures:
    input:
        table=P.report("lds.csv"),
        details=P.report("lds.json"),
    output:
        html=report(
            DRAWN.report("lds.html"),
            caption="../report/lds.rst",
            category="Evaluation",
            subcategory="LDS",
            labels={"result": "LDS per step, the rows to read", "format": "table"},
        ),
        figure=report(
            DRAWN.figure("lds.png"),
            caption="../report/lds.rst",
            category="Evaluation",
            subcategory="LDS",
            labels={"result": "LDS per step", "format": "figure"},
        ),
    params:
        cfg=cfg_slice("report_figures"),
    log:
        DRAWN.log("lds_figures"),
    benchmark:
        DRAWN.benchmark("lds_figures")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=15,
    shell:
        "diffattr lds-figures --cfg {params.cfg:q} --table {input.table}"
        " --details {input.details} --out-figure {output.figure} --out-html {output.html}"
        " > {log} 2>&1"

# Data, full-model training and target sampling.


rule prepare_data:
    output:
        P.data,
    params:
        cfg=RUN_CONFIG.slice("prepare_data", () if RUN_CONFIG.dataset.reads_seed else ("seed",)),
    log:
        P.log("prepare_data"),
    benchmark:
        P.benchmark("prepare_data")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr prepare-data --cfg {params.cfg:q} --out {output} > {log} 2>&1"


# Drawn from data.h5 only (nothing depends on it).
rule data_figure:
    input:
        P.data,
    output:
        report(
            DRAWN.figure("data.png"),
            caption="../report/data.rst",
            category="Data",
            labels={"figure": "training data"},
        ),
    params:
        cfg=cfg_slice("report_figures"),
    log:
        DRAWN.log("data_figure"),
    benchmark:
        DRAWN.benchmark("data_figure")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr data-figure --cfg {params.cfg:q} --data {input} --out-figure {output}"
        " > {log} 2>&1"


if RUN_CONFIG.train.pretrained:

    rule import_model:
        input:
            lambda wildcards: RUN_CONFIG.train.pretrained[int(wildcards.model)],
        output:
            directory(P.model("{model}")),
        params:
            cfg=cfg_slice("import_model"),
        log:
            P.log("import_model", "m{model}"),
        benchmark:
            P.benchmark("import_model", "m{model}")
        conda:
            ENV
        resources:
            mem_mb=4000,
            runtime=30,
        shell:
            "diffattr import-model --cfg {params.cfg:q} --source {input} --out {output}"
            " > {log} 2>&1"

else:

    rule train_model:
        input:
            P.data,
        output:
            directory(P.model("{model}")),
        params:
            cfg=cfg_slice("train"),
        log:
            P.log("train_model", "m{model}"),
        benchmark:
            P.benchmark("train_model", "m{model}")
        threads: 1
        conda:
            ENV
        resources:
            mem_mb=4000,
            runtime=120,
        shell:
            "diffattr train --cfg {params.cfg:q} --data {input} --out {output}"
            " --model-index {wildcards.model} --threads {threads} > {log} 2>&1"


rule sample_targets:
    input:
        model=P.model(0),
        data=P.data,
    output:
        P.targets,
    params:
        cfg=cfg_slice("sample"),
    log:
        P.log("sample_targets"),
    benchmark:
        P.benchmark("sample_targets")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr sample --cfg {params.cfg:q} --model {input.model} --data {input.data}"
        " --out {output} --threads {threads} > {log} 2>&1"

# Counterfactual retraining: classifier, feature emergence, removal plan, one model per case
# (plus the seed floor), paired resampling from x_t, the report.


rule train_classifier:
    input:
        f"{RUN}/data.h5",
    output:
        directory(f"{RUN}/classifier"),
    params:
        cfg=cfg_json("seed", counterfactual=["classifier"]),
    log:
        f"{RUN}/logs/train_classifier.log",
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
        model=f"{RUN}/models/m0",
        targets=f"{RUN}/targets.h5",
        classifier=f"{RUN}/classifier",
    output:
        h5=f"{RUN}/counterfactual/emergence.h5",
        csv=report(
            f"{RUN}/reports/emergence.csv",
            caption="../report/emergence.rst",
            category="Evaluation",
            subcategory="Feature emergence",
        ),
        figure=report(
            f"{RUN}/figures/emergence.png",
            caption="../report/emergence.rst",
            category="Evaluation",
            subcategory="Feature emergence",
        ),
    params:
        cfg=cfg_json("seed", "targets", counterfactual=["samples"]),
    log:
        f"{RUN}/logs/emergence.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr emergence --cfg {params.cfg:q} --model {input.model} --targets {input.targets}"
        " --classifier {input.classifier} --out {output.h5} --out-csv {output.csv}"
        " --out-figure {output.figure} --threads {threads} > {log} 2>&1"


rule cf_plan:
    input:
        data=f"{RUN}/data.h5",
        emergence=f"{RUN}/counterfactual/emergence.h5",
        scores=expand(f"{RUN}/scores/{{method}}.h5", method=CF_SCORED or METHODS[:1]),
    output:
        f"{RUN}/counterfactual/plan.h5",
    params:
        cfg=cfg_json("seed", counterfactual=["targets", "steps", "methods", "k"]),
        cases=len(CF_CASES),
    log:
        f"{RUN}/logs/cf_plan.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr cf-plan --cfg {params.cfg:q} --data {input.data} --emergence {input.emergence}"
        " --scores {input.scores} --expected-cases {params.cases} --out {output} > {log} 2>&1"


rule train_cf_model:
    input:
        data=f"{RUN}/data.h5",
        plan=f"{RUN}/counterfactual/plan.h5",
    output:
        directory(f"{RUN}/counterfactual/models/c{{case}}"),
    params:
        cfg=train_cfg(),
    log:
        f"{RUN}/logs/train_cf_model/c{{case}}.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train --cfg {params.cfg:q} --data {input.data} --out {output}"
        " --keep {input.plan}:keep:{wildcards.case} --seed-tag model-0"
        " --threads {threads} --no-progress > {log} 2>&1"


rule train_cf_floor:
    input:
        f"{RUN}/data.h5",
    output:
        directory(f"{RUN}/counterfactual/models/floor"),
    params:
        cfg=train_cfg(),
    log:
        f"{RUN}/logs/train_cf_floor.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train --cfg {params.cfg:q} --data {input} --out {output}"
        " --seed-tag model-0-reseed --threads {threads} --no-progress > {log} 2>&1"


rule cf_resample:
    input:
        plan=f"{RUN}/counterfactual/plan.h5",
        original=f"{RUN}/models/m0",
        model=f"{RUN}/counterfactual/models/{{name}}",
        targets=f"{RUN}/targets.h5",
    output:
        f"{RUN}/counterfactual/samples/{{name}}.h5",
    wildcard_constraints:
        name=r"c\d+|floor",
    params:
        cfg=cfg_json("seed", "targets", counterfactual=["samples", "delta"]),
    log:
        f"{RUN}/logs/cf_resample/{{name}}.log",
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
        plan=f"{RUN}/counterfactual/plan.h5",
        samples=expand(f"{RUN}/counterfactual/samples/c{{case}}.h5", case=CF_CASES),
        floor=f"{RUN}/counterfactual/samples/floor.h5",
        classifier=f"{RUN}/classifier",
        targets=f"{RUN}/targets.h5",
        emergence=f"{RUN}/counterfactual/emergence.h5",
    output:
        csv=report(
            f"{RUN}/reports/counterfactual.csv",
            caption="../report/counterfactual.rst",
            category="Evaluation",
            subcategory="Counterfactual",
        ),
        cases=f"{RUN}/reports/counterfactual_cases.csv",
        metrics=report(
            f"{RUN}/figures/counterfactual_metrics.png",
            caption="../report/counterfactual.rst",
            category="Evaluation",
            subcategory="Counterfactual",
        ),
        samples=report(
            f"{RUN}/figures/counterfactual_samples.png",
            caption="../report/counterfactual.rst",
            category="Evaluation",
            subcategory="Counterfactual",
        ),
    params:
        cfg=cfg_json("seed", counterfactual=["steps"]),
    log:
        f"{RUN}/logs/cf_report.log",
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "diffattr cf-report --cfg {params.cfg:q} --plan {input.plan} --samples {input.samples}"
        " --floor {input.floor} --classifier {input.classifier} --targets {input.targets}"
        " --emergence {input.emergence} --out-csv {output.csv} --out-cases {output.cases}"
        " --out-figure-metrics {output.metrics} --out-figure-samples {output.samples}"
        " > {log} 2>&1"

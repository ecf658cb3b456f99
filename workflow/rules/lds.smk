# Linear datamodeling score: subsets, subset models (one job per subset × seed), ground truth,
# the report.


rule lds_subsets:
    input:
        f"{RUN}/data.h5",
    output:
        f"{RUN}/lds/subsets.h5",
    params:
        cfg=cfg_json("seed", lds=["tuning", "reporting", "alpha"]),
    log:
        f"{RUN}/logs/lds_subsets.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr lds-subsets --cfg {params.cfg:q} --data {input} --out {output} > {log} 2>&1"


rule train_subset_model:
    input:
        data=f"{RUN}/data.h5",
        subsets=f"{RUN}/lds/subsets.h5",
    output:
        directory(f"{RUN}/lds/models/s{{subset}}-r{{seed}}"),
    params:
        cfg=subset_train_cfg(),
    log:
        f"{RUN}/logs/train_subset_model/s{{subset}}-r{{seed}}.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train --cfg {params.cfg:q} --data {input.data} --out {output}"
        " --keep {input.subsets}:masks:{wildcards.subset} --seed-tag lds-seed-{wildcards.seed}"
        " --threads {threads} --no-progress > {log} 2>&1"


rule ground_truth:
    input:
        models=subset_models_of,
        targets=f"{RUN}/targets.h5",
    output:
        f"{RUN}/lds/ground_truth/s{{subset}}.h5",
    params:
        cfg=cfg_json("seed", "device", lds=["draws", "final_timesteps", "final_noise"]),
    log:
        f"{RUN}/logs/ground_truth/s{{subset}}.log",
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
        data=f"{RUN}/data.h5",
        subsets=f"{RUN}/lds/subsets.h5",
        targets=f"{RUN}/targets.h5",
    output:
        f"{RUN}/lds/memorization.h5",
    params:
        cfg=cfg_json("seed", "diffusion", lds=["draws"]),
    log:
        f"{RUN}/logs/memorization_reference.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr memorization-reference --cfg {params.cfg:q} --data {input.data}"
        " --subsets {input.subsets} --targets {input.targets} --out {output} > {log} 2>&1"


rule lds_report:
    input:
        unpack(lds_report_inputs),
    output:
        csv=report(
            f"{RUN}/reports/lds.csv",
            caption="../report/lds.rst",
            category="Evaluation",
            subcategory="LDS",
        ),
        json=f"{RUN}/reports/lds.json",
        figure=report(
            f"{RUN}/figures/lds.png",
            caption="../report/lds.rst",
            category="Evaluation",
            subcategory="LDS",
        ),
    params:
        cfg=cfg_json("seed", "lds"),
        memorization=lambda wildcards, input: (
            f"--memorization {input.memorization}" if "memorization" in input.keys() else ""
        ),
    log:
        f"{RUN}/logs/lds_report.log",
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
        " {params.memorization}"
        " --out-csv {output.csv} --out-json {output.json} --out-figure {output.figure}"
        " > {log} 2>&1"

# Data, full-model training and target sampling.


rule prepare_data:
    output:
        f"{RUN}/data.h5",
    params:
        cfg=cfg_json("dataset", "device"),
    log:
        f"{RUN}/logs/prepare_data.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr prepare-data --cfg {params.cfg:q} --out {output} > {log} 2>&1"


rule train_model:
    input:
        f"{RUN}/data.h5",
    output:
        directory(f"{RUN}/models/m{{model}}"),
    params:
        cfg=train_cfg(),
    log:
        f"{RUN}/logs/train_model/m{{model}}.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr train --cfg {params.cfg:q} --data {input} --out {output}"
        " --seed-tag model-{wildcards.model} --threads {threads} > {log} 2>&1"


rule sample_targets:
    input:
        model=f"{RUN}/models/m0",
        data=f"{RUN}/data.h5",
    output:
        f"{RUN}/targets.h5",
    params:
        cfg=cfg_json("seed", "device", "targets", attribution=["steps"]),
    log:
        f"{RUN}/logs/sample_targets.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr sample --cfg {params.cfg:q} --model {input.model}/final --data {input.data}"
        " --out {output}"
        " --threads {threads} > {log} 2>&1"

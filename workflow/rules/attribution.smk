# Features, kernels, scores and the attribution figures.


rule featurize_train:
    input:
        data=f"{RUN}/data.h5",
        model=model_dir_of,
    output:
        f"{RUN}/features/train/{{output}}/{{member}}/shard{{shard}}.h5",
    params:
        cfg=cfg_json(
            "seed", "device", "dataset", attribution=["K", "batch_size", "projection", "precision"]
        ),
        shards=len(SHARDS),
    log:
        f"{RUN}/logs/featurize_train/{{output}}-{{member}}-{{shard}}.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr featurize-train --cfg {params.cfg:q} --data {input.data} --model {input.model}"
        " --member {wildcards.member} --output {wildcards.output} --shard {wildcards.shard}"
        " --shards {params.shards} --out {output} --threads {threads} > {log} 2>&1"


rule kernel:
    input:
        shards_of_kernel,
    output:
        f"{RUN}/kernels/{{output}}/{{member}}.h5",
    params:
        cfg=cfg_json(attribution=["lambda", "block_size"]),
    log:
        f"{RUN}/logs/kernel/{{output}}-{{member}}.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=30,
    shell:
        "diffattr kernel --cfg {params.cfg:q} --features {input} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule featurize_targets:
    input:
        targets=f"{RUN}/targets.h5",
        model=model_dir_of,
    output:
        f"{RUN}/features/targets/{{method}}/{{member}}.h5",
    params:
        cfg=cfg_json(
            "seed", "device", attribution=["K", "R", "batch_size", "projection", "precision"]
        ),
    log:
        f"{RUN}/logs/featurize_targets/{{method}}-{{member}}.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr featurize-targets --cfg {params.cfg:q} --model {input.model}"
        " --member {wildcards.member} --method {wildcards.method} --targets {input.targets}"
        " --out {output} --threads {threads} > {log} 2>&1"


rule score:
    input:
        unpack(score_inputs),
    output:
        f"{RUN}/scores/{{method}}.h5",
    params:
        cfg=cfg_json("seed", attribution=["lambda", "K", "R", "block_size"]),
    log:
        f"{RUN}/logs/score/{{method}}.log",
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=8000,
        runtime=60,
    shell:
        "diffattr score --cfg {params.cfg:q} --method {wildcards.method} --data {input.data}"
        " --targets {input.targets} --kernels {input.kernels}"
        " --target-features {input.target_features}"
        " --train-features {input.train_features} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule figure_attributions:
    input:
        scores=f"{RUN}/scores/{{method}}.h5",
        targets=f"{RUN}/targets.h5",
        data=f"{RUN}/data.h5",
    output:
        report(
            directory(f"{RUN}/figures/attributions/{{method}}"),
            patterns=["{name}.png"],
            caption="../report/attributions.rst",
            category="Attributions",
            subcategory="{method}",
        ),
    params:
        cfg=cfg_json("figures"),
    log:
        f"{RUN}/logs/figure_attributions/{{method}}.log",
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr figure-attributions --cfg {params.cfg:q} --scores {input.scores}"
        " --targets {input.targets} --data {input.data} --out {output} > {log} 2>&1"

# Features, kernels, scores and the attribution figures.


rule featurize_train:
    input:
        data=P.data,
        model=model_dir_of,
    output:
        P.train_features("{output}", "{member}", "{shard}"),
    params:
        cfg=featurize_train_cfg,
        shards=len(SHARDS),
    log:
        P.log("featurize_train", "{output}-{member}-{shard}"),
    benchmark:
        P.benchmark("featurize_train", "{output}-{member}-{shard}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=120,
    shell:
        "diffattr featurize-train --cfg {params.cfg:q} --data {input.data} --model {input.model}"
        " --member {wildcards.member} --model-output {wildcards.output} --shard {wildcards.shard}"
        " --shards {params.shards} --out {output} --threads {threads} > {log} 2>&1"


rule kernel:
    input:
        shards_of_kernel,
    output:
        P.kernel("{output}", "{member}"),
    params:
        cfg=cfg_slice("kernel"),
    log:
        P.log("kernel", "{output}-{member}"),
    benchmark:
        P.benchmark("kernel", "{output}-{member}")
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
        targets=P.targets,
        model=model_dir_of,
    output:
        P.target_features("{method}", "{member}"),
    params:
        cfg=cfg_slice("featurize_targets"),
    log:
        P.log("featurize_targets", "{method}-{member}"),
    benchmark:
        P.benchmark("featurize_targets", "{method}-{member}")
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


rule member_scores:
    input:
        data=P.data,
        targets=P.targets,
        model=model_dir_of,
    output:
        P.member_scores("{method}", "{member}{piece}"),
    wildcard_constraints:
        piece=r"(\.t\d+\.s\d+)?",
    params:
        cfg=member_cfg,
    log:
        P.log("member_scores", "{method}-{member}{piece}"),
    benchmark:
        P.benchmark("member_scores", "{method}-{member}{piece}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=lambda wildcards: member_method(wildcards.method).resources["mem_mb"],
        runtime=lambda wildcards: member_method(wildcards.method).resources["runtime"],
    shell:
        "diffattr member-scores --cfg {params.cfg:q} --method {wildcards.method}"
        " --data {input.data} --model {input.model} --member {wildcards.member}"
        " --targets {input.targets} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule score:
    input:
        unpack(score_inputs),
    output:
        P.scores("{method}"),
    params:
        cfg=lambda wildcards: RUN_CONFIG.slice("score", unused_score_keys(wildcards.method)),
        lds=lds_option,
    log:
        P.log("score", "{method}"),
    benchmark:
        P.benchmark("score", "{method}")
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
        " --train-features {input.train_features} --member-scores {input.member_scores}"
        " {params.lds} --out {output} --threads {threads} > {log} 2>&1"


# attribution.top_k: one job per method and training shard keeps the shard's K strongest of each
# sign per (step, target); one merge job per method keeps the K strongest of their union.
rule score_shard:
    input:
        unpack(score_inputs),
    output:
        P.top_k_shard("{method}", "{shard}"),
    params:
        cfg=lambda wildcards: RUN_CONFIG.slice("score_shard", unused_score_keys(wildcards.method)),
        shards=len(SHARDS),
    log:
        P.log("score_shard", "{method}-{shard}"),
    benchmark:
        P.benchmark("score_shard", "{method}-{shard}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr score-shard --cfg {params.cfg:q} --method {wildcards.method}"
        " --data {input.data} --targets {input.targets} --kernels {input.kernels}"
        " --target-features {input.target_features}"
        " --train-features {input.train_features} --member-scores {input.member_scores}"
        " --shard {wildcards.shard} --shards {params.shards} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule merge_top_k:
    input:
        lambda wildcards: [P.top_k_shard(wildcards.method, s) for s in SHARDS],
    output:
        P.top_k("{method}"),
    params:
        cfg=cfg_slice("merge_top_k"),
    log:
        P.log("merge_top_k", "{method}"),
    benchmark:
        P.benchmark("merge_top_k", "{method}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=30,
    shell:
        "diffattr merge-top-k --cfg {params.cfg:q} --shard-files {input} --out {output}"
        " > {log} 2>&1"


# Scores with the λ the LDS tuned per step (what figures and counterfactual removals use)
use rule score as tuned_scores with:
    input:
        unpack(score_inputs),
        lds=P.report("lds.json"),
    output:
        P.tuned_scores("{method}"),
    log:
        P.log("tuned_scores", "{method}"),
    benchmark:
        P.benchmark("tuned_scores", "{method}")


rule figure_attributions:
    input:
        scores=lambda wildcards: downstream_scores(wildcards.method),
        targets=P.targets,
        data=P.data,
    output:
        report(
            directory(P.attribution_figures("{method}")),
            patterns=["{name}.png"],
            caption="../report/attributions.rst",
            category="Attributions",
            subcategory="{method}",
            labels={"method": "{method}", "target": "{name}"},
        ),
    params:
        cfg=cfg_slice("figure_attributions"),
    log:
        P.log("figure_attributions", "{method}"),
    benchmark:
        P.benchmark("figure_attributions", "{method}")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr figure-attributions --cfg {params.cfg:q} --scores {input.scores}"
        " --targets {input.targets} --data {input.data} --out {output} > {log} 2>&1"

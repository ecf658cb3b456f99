# Extra target sets (extra_targets): more targets scored against the run's stored training
# features and kernels; only the targets' own trajectories and features are computed.


rule sample_extra_targets:
    input:
        model=P.model(0),
        data=P.data,
    output:
        P.extra("{target_set}").targets,
    params:
        cfg=cfg_slice("sample"),
        source=extra_source,
    log:
        P.log("sample_extra_targets", "{target_set}"),
    benchmark:
        P.benchmark("sample_extra_targets", "{target_set}")
    threads: 1
    conda:
        ENV
    resources:
        mem_mb=4000,
        runtime=60,
    shell:
        "diffattr sample-extra-targets --cfg {params.cfg:q} --model {input.model}"
        " --data {input.data} --target-set {wildcards.target_set} {params.source}"
        " --out {output} --threads {threads} > {log} 2>&1"


rule featurize_extra_targets:
    input:
        targets=P.extra("{target_set}").targets,
        model=model_dir_of,
    output:
        P.extra("{target_set}").target_features("{method}", "{member}"),
    params:
        cfg=cfg_slice("featurize_targets"),
    log:
        P.log("featurize_extra_targets", "{target_set}-{method}-{member}"),
    benchmark:
        P.benchmark("featurize_extra_targets", "{target_set}-{method}-{member}")
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


rule score_extra:
    input:
        unpack(extra_score_inputs),
    output:
        P.extra("{target_set}").scores("{method}"),
    params:
        cfg=cfg_slice("score"),
        lds=lambda wildcards, input: f"--lds {input.lds}" if "lds" in input.keys() else "",
    log:
        P.log("score_extra", "{target_set}-{method}"),
    benchmark:
        P.benchmark("score_extra", "{target_set}-{method}")
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
        " --train-features {input.train_features} {params.lds} --out {output}"
        " --threads {threads} > {log} 2>&1"


rule figure_extra:
    input:
        scores=P.extra("{target_set}").scores("{method}"),
        targets=P.extra("{target_set}").targets,
        data=P.data,
    output:
        directory(P.extra("{target_set}").attribution_figures("{method}")),
    params:
        cfg=cfg_slice("figure_attributions"),
    log:
        P.log("figure_extra", "{target_set}-{method}"),
    benchmark:
        P.benchmark("figure_extra", "{target_set}-{method}")
    conda:
        ENV
    resources:
        mem_mb=2000,
        runtime=10,
    shell:
        "diffattr figure-attributions --cfg {params.cfg:q} --scores {input.scores}"
        " --targets {input.targets} --data {input.data} --out {output} > {log} 2>&1"
